"""Reshape with Caffe's 0 (copy this dimension) and −1 (infer) codes, on axes ``axis`` … ``axis+num_axes``."""

from __future__ import annotations

from ..errors import ModelError
from ..rules import Gradient, Pass
from .base import Layer, handles


class Reshape(Layer):
    """A reshape; relevance and gradient are reshaped back."""

    type = "Reshape"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.reshape_param
        self.dims = [int(d) for d in p.shape.dim]
        self.axis = int(p.axis)
        self.num_axes = int(p.num_axes)

    def forward(self, bottoms):
        x = bottoms[0]
        start = self.axis % (x.ndim + 1) if self.axis < 0 else self.axis
        end = x.ndim if self.num_axes == -1 else start + self.num_axes
        middle = [x.shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        shape = list(x.shape[:start]) + middle + list(x.shape[end:])
        try:
            return [x.reshape(shape)], {}
        except ValueError:
            raise ModelError(f"{self.describe()}: cannot reshape {x.shape} to {tuple(shape)}") from None

    pass_through = handles(Pass, Gradient)(Layer.pass_through)


