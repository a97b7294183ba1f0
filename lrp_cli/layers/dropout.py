"""Dropout at test time: the identity (Caffe scales during training only)."""

from __future__ import annotations

from .base import Layer


class Dropout(Layer):
    """Forward, relevance and gradient are all the identity (also when not in place, unlike the original)."""

    type = "Dropout"

    def forward(self, bottoms):
        return [bottoms[0]], {}

    _relevance_lrp = Layer._relevance_identity
    _relevance_gradient = Layer._relevance_identity
