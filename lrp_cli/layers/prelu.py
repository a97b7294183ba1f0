"""PReLU: y = max(x, 0) + a_c·min(x, 0), one learned slope per channel (or one shared)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Pass
from .base import Layer, handles, require_blobs


class PReLU(Layer):
    """Relevance passes unchanged (as for ReLU); the gradient is R·([x > 0] + a_c·[x ≤ 0])."""

    type = "PReLU"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        require_blobs(self, 1)
        self.slope = self.blobs[0].reshape(-1)

    def _slopes(self, x):
        shape = (1, -1) + (1,) * (x.ndim - 2) if self.slope.size > 1 else (1,) * x.ndim
        return self.slope.reshape(shape)

    def output_shapes(self, bottoms):
        shape = bottoms[0]
        if self.slope.size > 1 and (len(shape) < 2 or shape[1] != self.slope.size):
            raise self.fail(f"has {self.slope.size} slopes for an input of shape {shape}")
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        return [np.maximum(x, 0) + self._slopes(x) * np.minimum(x, 0)], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        x, r = saved.bottoms[0], top_relevance[0]
        return [np.where(x > 0, r, self._slopes(x) * r)]
