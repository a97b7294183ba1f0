"""Reshape with Caffe's 0 (copy this dimension) and −1 (infer) codes, on axes ``axis`` … ``axis+num_axes``."""

from __future__ import annotations

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

    def output_shapes(self, bottoms):
        """Caffe's rule: dims 0 copy the input's, one −1 takes what is left, over axes axis … axis+num_axes."""
        shape = bottoms[0]
        ndim = len(shape)
        start = self.axis % (ndim + 1) if self.axis < 0 else self.axis
        end = ndim if self.num_axes == -1 else start + self.num_axes
        if not 0 <= start <= end <= ndim or self.dims.count(-1) > 1 or any(d < -1 for d in self.dims):
            raise self.fail(f"cannot apply shape {self.dims} (axis {self.axis}, num_axes {self.num_axes}) to {shape}")
        if any(d == 0 and start + i >= ndim for i, d in enumerate(self.dims)):
            raise self.fail(f"a 0 in shape {self.dims} copies an axis {shape} does not have")
        middle = [shape[start + i] if d == 0 else d for i, d in enumerate(self.dims)]
        total = 1
        for size in shape[start:end]:
            total *= size
        known = 1
        for size in middle:
            known *= size if size != -1 else 1
        if -1 in middle:
            if known == 0 or total % known:
                raise self.fail(f"cannot reshape {shape} to {tuple(middle)}")
            middle[middle.index(-1)] = total // known
        elif known != total:
            raise self.fail(f"cannot reshape {shape} to {tuple(middle)}")
        return [(*shape[:start], *middle, *shape[end:])]

    def forward(self, bottoms):
        x = bottoms[0]
        return [x.reshape(self.output_shapes([x.shape])[0])], {}

    pass_through = handles(Pass, Gradient, reads=())(Layer.pass_through)


