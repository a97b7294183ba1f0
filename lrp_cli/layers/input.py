"""Input: declares the net's input blob (the values come from the caller)."""

from __future__ import annotations

from .base import Layer


class Input(Layer):
    """No computation; the net feeds its top. Relevance stops here (it is the net input)."""

    type = "Input"

    def forward(self, bottoms):
        raise AssertionError("the net feeds Input layers directly")

    def supports(self, mode):
        return True

    def relevance(self, mode, saved, top_relevance):
        return []
