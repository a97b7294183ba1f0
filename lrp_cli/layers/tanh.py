"""TanH: y = tanh(x)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Pass
from .base import Layer, handles


class TanH(Layer):
    """Relevance passes unchanged; gradient R·(1 − y²)."""

    type = "TanH"

    def forward(self, bottoms):
        return [np.tanh(bottoms[0])], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(Gradient, reads=("tops",))
    def _gradient(self, rule, saved, top_relevance):
        y = saved.tops[0]
        return [top_relevance[0] * (1 - y * y)]
