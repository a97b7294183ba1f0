"""Sigmoid: y = 1/(1 + e^−x)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Pass
from .base import Layer, handles


class Sigmoid(Layer):
    """Relevance passes unchanged (the original allows only this, for formulas 0 and 2); gradient R·y(1−y)."""

    type = "Sigmoid"

    def forward(self, bottoms):
        x = bottoms[0]
        return [(0.5 * np.tanh(0.5 * x) + 0.5).astype(x.dtype)], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(Gradient, reads=("tops",))
    def _gradient(self, rule, saved, top_relevance):
        y = saved.tops[0]
        return [top_relevance[0] * y * (1 - y)]
