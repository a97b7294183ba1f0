"""Dropout at test time: the identity (Caffe scales during training only)."""

from __future__ import annotations

from ..rules import Gradient, Pass
from .base import Layer, handles


class Dropout(Layer):
    """Forward, relevance and gradient are all the identity (also when not in place, unlike the original)."""

    type = "Dropout"

    def forward(self, bottoms):
        return [bottoms[0]], {}

    pass_through = handles(Pass, Gradient, reads=())(Layer.pass_through)
