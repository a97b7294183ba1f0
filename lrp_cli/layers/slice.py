"""Slice: one blob cut into consecutive parts along ``axis`` (the inverse of Concat)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, Pass
from .base import Layer, handles


class Slice(Layer):
    """Top k = bottom[..., p_(k−1) : p_k, ...] along ``axis`` (default 1; the legacy ``slice_dim`` when ``axis`` is
    not given), cut at ``slice_point`` p_1 < … < p_(K−1); without slice points, K equal parts.

    Relevance and gradient: the inverse of Concat, which is the same map in reverse — the tops' relevance is
    concatenated back along the axis (a top that received none contributes zeros). Nothing is created or lost.
    """

    type = "Slice"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.slice_param
        self.axis = int(p.axis) if p.HasField("axis") or not p.HasField("slice_dim") else int(p.slice_dim)
        self.points = [int(s) for s in p.slice_point]
        self.top_count = len(param.top)
        if self.points and len(self.points) != self.top_count - 1:
            raise ModelError(
                f"{self.describe()}: {len(self.points)} slice point(s) for {self.top_count} tops; need one fewer "
                "than the tops"
            )

    def bounds(self, size: int) -> list[int]:
        """The cut positions along an axis of ``size`` (checked: increasing, inside the axis)."""
        if not self.points:
            if size % self.top_count:
                raise ModelError(f"{self.describe()}: cannot cut {size} into {self.top_count} equal parts")
            return [size // self.top_count * k for k in range(1, self.top_count)]
        if any(b <= a for a, b in zip([0, *self.points], [*self.points, size], strict=True)):
            raise ModelError(f"{self.describe()}: slice points {self.points} do not increase within 0…{size}")
        return self.points

    def output_shapes(self, bottoms):
        shape = bottoms[0]
        if not -len(shape) <= self.axis < len(shape):
            raise self.fail(f"axis {self.axis} is out of range for a {len(shape)}-D input")
        axis = self.axis % len(shape)
        cuts = [0, *self.bounds(shape[axis]), shape[axis]]
        return [(*shape[:axis], hi - lo, *shape[axis + 1 :]) for lo, hi in zip(cuts, cuts[1:], strict=False)]

    def forward(self, bottoms):
        x = bottoms[0]
        axis = self.axis % x.ndim
        return np.split(x, self.bounds(x.shape[axis]), axis=axis), {}

    @handles(Pass, Gradient, reads=())
    def _concatenate(self, rule, saved, top_relevance):
        return [np.concatenate(top_relevance, axis=self.axis % saved.bottoms[0].ndim)]
