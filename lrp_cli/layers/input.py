"""Input: declares the net's input blob (the values come from the caller)."""

from __future__ import annotations

from .base import Layer


class Input(Layer):
    """No computation: the net feeds its top with the images. Relevance ends here (it has no rule)."""

    type = "Input"

    def forward(self, bottoms):
        raise AssertionError("the net feeds Input layers directly")
