"""ReLU6 (MobileNet forks): y = min(max(x, 0), 6)."""

from __future__ import annotations

import numpy as np

from .base import Layer


class ReLU6(Layer):
    """An element-wise activation like ReLU, so the same relevance modes: ``lrp`` passes relevance unchanged (the
    LRP rules treat activations as identity: relevance is split at the linear layers); ``gradient`` is the
    derivative R·[0 < x < 6]; ``positive`` (deconvnet) max(R, 0); ``guided`` max(R, 0)·[0 < x < 6]."""

    type = "ReLU6"

    def forward(self, bottoms):
        return [np.clip(bottoms[0], 0, 6)], {}

    _relevance_lrp = Layer._relevance_identity

    @staticmethod
    def _active(x):
        return (x > 0) & (x < 6)

    def _relevance_gradient(self, saved, top_relevance):
        return [np.where(self._active(saved.bottoms[0]), top_relevance[0], np.float32(0))]

    def _relevance_positive(self, saved, top_relevance):
        return [np.maximum(top_relevance[0], 0)]

    def _relevance_guided(self, saved, top_relevance):
        return [np.where(self._active(saved.bottoms[0]), np.maximum(top_relevance[0], 0), np.float32(0))]
