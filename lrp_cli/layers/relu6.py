"""ReLU6 (MobileNet forks): y = min(max(x, 0), 6)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Guided, Pass, Positive
from .base import Layer, handles


class ReLU6(Layer):
    """An element-wise activation like ReLU, so the same rules: Pass (the LRP rules treat activations as identity:
    relevance is split at the linear layers); Gradient, the derivative R·[0 < x < 6]; Positive (deconvnet)
    max(R, 0); Guided max(R, 0)·[0 < x < 6]."""

    type = "ReLU6"

    def forward(self, bottoms):
        return [np.clip(bottoms[0], 0, 6)], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @staticmethod
    def _active(x):
        return (x > 0) & (x < 6)

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        return [np.where(self._active(saved.bottoms[0]), top_relevance[0], np.float32(0))]

    @handles(Positive, reads=())
    def _positive(self, rule, saved, top_relevance):
        return [np.maximum(top_relevance[0], 0)]

    @handles(Guided, reads=("bottoms",))
    def _guided(self, rule, saved, top_relevance):
        return [np.where(self._active(saved.bottoms[0]), np.maximum(top_relevance[0], 0), np.float32(0))]
