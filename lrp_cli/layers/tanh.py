"""TanH: y = tanh(x)."""

from __future__ import annotations

import numpy as np

from .base import Layer


class TanH(Layer):
    """Relevance passes unchanged; gradient R·(1 − y²)."""

    type = "TanH"

    def forward(self, bottoms):
        return [np.tanh(bottoms[0])], {}

    _relevance_lrp = Layer._relevance_identity

    def _relevance_gradient(self, saved, top_relevance):
        y = saved.tops[0]
        return [top_relevance[0] * (1 - y * y)]
