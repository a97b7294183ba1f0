"""Softmax along ``axis`` (default 1)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Probabilities
from .base import Layer, handles


class Softmax(Layer):
    """y = e^x / Σ e^x. Relevance (Probabilities, the original's rule): R_in := y, whatever relevance came in.
    Gradient: y·(R − Σ R·y)."""

    type = "Softmax"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.axis = int(param.softmax_param.axis)

    def output_shapes(self, bottoms):
        if not -len(bottoms[0]) <= self.axis < len(bottoms[0]):
            raise self.fail(f"axis {self.axis} is out of range for a {len(bottoms[0])}-D input")
        return [bottoms[0]]

    def forward(self, bottoms):
        x = bottoms[0]
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        return [e / e.sum(axis=self.axis, keepdims=True)], {}

    @handles(Probabilities, reads=("tops",))
    def _probabilities(self, rule, saved, top_relevance):
        return [saved.tops[0].copy()]

    @handles(Gradient, reads=("tops",))
    def _gradient(self, rule, saved, top_relevance):
        y, r = saved.tops[0], top_relevance[0]
        return [y * (r - (r * y).sum(axis=self.axis, keepdims=True))]
