"""Softmax along ``axis`` (default 1)."""

from __future__ import annotations

import numpy as np

from .base import Layer


class Softmax(Layer):
    """y = e^x / Σ e^x. Relevance (``lrp``, the original's rule): R_in := y, the probabilities, whatever
    relevance came in. Gradient: y·(R − Σ R·y)."""

    type = "Softmax"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.axis = int(param.softmax_param.axis)

    def forward(self, bottoms):
        x = bottoms[0]
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        return [e / e.sum(axis=self.axis, keepdims=True)], {}

    def _relevance_lrp(self, saved, top_relevance):
        return [saved.tops[0].copy()]

    def _relevance_gradient(self, saved, top_relevance):
        y, r = saved.tops[0], top_relevance[0]
        return [y * (r - (r * y).sum(axis=self.axis, keepdims=True))]
