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

    def output_shapes(self, bottoms):
        shape = bottoms[0]
        ndim = len(shape)
        if not (-ndim <= self.axis < ndim and -ndim <= self.end_axis < ndim):
            raise self.fail(f"axes {self.axis}…{self.end_axis} are out of range for a {ndim}-D input")
        axis, end = self.axis % ndim, self.end_axis % ndim
        if end < axis:
            raise self.fail(f"end_axis {self.end_axis} comes before axis {self.axis}")
        merged = 1
        for size in shape[axis : end + 1]:
            merged *= size
        return [(*shape[:axis], merged, *shape[end + 1 :])]

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.reshape(self.output_shapes([x.shape])[0])], {}

    pass_through = handles(Pass, Gradient, reads=())(Layer.pass_through)
