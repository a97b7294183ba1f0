"""Concat along ``axis`` (default 1, or the legacy concat_dim)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Pass
from .base import Layer, handles


class Concat(Layer):
    """Forward concatenates; relevance and gradient hand each bottom its slice of the top's relevance."""

    type = "Concat"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.concat_param
        self.axis = int(p.axis) if p.HasField("axis") or not p.HasField("concat_dim") else int(p.concat_dim)

    def output_shapes(self, bottoms):
        """Shapes equal but along ``axis``, where they add up."""
        ndim = len(bottoms[0])
        if not -ndim <= self.axis < ndim:
            raise self.fail(f"axis {self.axis} is out of range for {ndim}-D inputs")
        axis = self.axis % ndim
        rest = {s[:axis] + s[axis + 1 :] for s in bottoms}
        if len(rest) > 1 or {len(s) for s in bottoms} != {ndim}:
            raise self.fail(f"cannot concatenate inputs of shapes {', '.join(map(str, bottoms))} along axis {axis}")
        return [(*bottoms[0][:axis], sum(s[axis] for s in bottoms), *bottoms[0][axis + 1 :])]

    def forward(self, bottoms):
        return [np.concatenate(bottoms, axis=self.axis)], {}

    @handles(Pass, Gradient, reads=())
    def _slices(self, rule, saved, top_relevance):
        bounds = np.cumsum([b.shape[self.axis] for b in saved.bottoms])[:-1]
        return np.split(top_relevance[0], bounds, axis=self.axis)
