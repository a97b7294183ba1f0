"""Flatten: N×C×H×W → N×(C·H·W) (axes ``axis`` … ``end_axis`` merged)."""

from __future__ import annotations

from ..rules import Gradient, Pass
from .base import Layer, handles


class Flatten(Layer):
    """A reshape; relevance and gradient are reshaped back."""

    type = "Flatten"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.axis = int(param.flatten_param.axis)
        self.end_axis = int(param.flatten_param.end_axis)

    def forward(self, bottoms):
        x = bottoms[0]
        axis = self.axis % x.ndim
        end = self.end_axis % x.ndim
        shape = x.shape[:axis] + (-1,) + x.shape[end + 1 :]
        return [x.reshape(shape)], {}

    pass_through = handles(Pass, Gradient)(Layer.pass_through)
