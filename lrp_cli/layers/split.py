"""Split: one blob copied to several consumers (Caffe inserts these where a blob feeds several layers)."""

from __future__ import annotations

from ..rules import Gradient, Pass
from .base import Layer, handles


class Split(Layer):
    """Forward copies the bottom to every top; relevance (and gradient) sums the tops' relevance."""

    type = "Split"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.top_count = len(param.top)

    def output_shapes(self, bottoms):
        return [bottoms[0]] * self.top_count

    def forward(self, bottoms):
        return [bottoms[0]] * self.top_count, {}

    @handles(Pass, Gradient, reads=())
    def _sum(self, rule, saved, top_relevance):
        present = [r for r in top_relevance if r is not None]
        total = present[0].copy()
        for r in present[1:]:
            total += r
        return [total]
