"""Split: one blob copied to several consumers (Caffe inserts these where a blob feeds several layers)."""

from __future__ import annotations

from .base import Layer


class Split(Layer):
    """Forward copies the bottom to every top; relevance (and gradient) sums the tops' relevance."""

    type = "Split"

    def __init__(self, name, param, blobs, top_count: int = 0):
        super().__init__(name, param, blobs)
        self.top_count = top_count or len(param.top)

    def forward(self, bottoms):
        return [bottoms[0]] * self.top_count, {}

    def _relevance_lrp(self, saved, top_relevance):
        present = [r for r in top_relevance if r is not None]
        total = present[0].copy()
        for r in present[1:]:
            total += r
        return [total]

    _relevance_gradient = _relevance_lrp
