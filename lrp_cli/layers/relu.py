"""ReLU: y = max(x, 0) + negative_slope·min(x, 0)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Guided, Pass, Positive
from .base import Layer, handles


class ReLU(Layer):
    """Relevance: unchanged (Pass), max(R, 0) (Positive, deconvnet), max(R, 0)·[x > 0] (Guided),
    or the derivative R·([x > 0] + slope·[x ≤ 0]) (Gradient)."""

    type = "ReLU"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.negative_slope = np.float32(param.relu_param.negative_slope)

    def forward(self, bottoms):
        x = bottoms[0]
        y = np.maximum(x, 0)
        if self.negative_slope:
            y += self.negative_slope * np.minimum(x, 0)
        return [y], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(Positive, reads=())
    def _positive(self, rule, saved, top_relevance):
        return [np.maximum(top_relevance[0], 0)]

    @handles(Guided, reads=("bottoms",))
    def _guided(self, rule, saved, top_relevance):
        return [np.maximum(top_relevance[0], 0) * (saved.bottoms[0] > 0)]

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        x, r = saved.bottoms[0], top_relevance[0]
        if self.negative_slope:
            return [np.where(x > 0, r, self.negative_slope * r)]
        return [np.where(x > 0, r, np.float32(0))]
