"""Convolution (Caffe semantics: cross-correlation, groups, padding, stride, dilation)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .base import check_shape, pair, require_blobs
from .linear import LinearLayer
from .windows import correlate, correlate_transposed


class Convolution(LinearLayer):
    """z[n,m] = Σ_{c in group(m), i, j} w[m,c,i,j]·x[n,c,h·sh+i·dh−ph, w·sw+j·dw−pw] + b[m].

    weight: M×(C/group)×kh×kw, bias: M. Input N×C×H×W → output N×M×Ho×Wo.
    """

    type = "Convolution"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.convolution_param
        if len(p.kernel_size) > 2 or len(p.stride) > 2 or len(p.pad) > 2 or len(p.dilation) > 2:
            raise ModelError(f"{self.describe()}: only 2-D convolution is supported")
        self.kernel = pair(p.kernel_size, p.kernel_h, p.kernel_w, 0)
        if min(self.kernel) <= 0:
            raise ModelError(f"{self.describe()}: kernel size must be positive")
        self.stride = pair(p.stride, p.stride_h, p.stride_w, 1)
        self.pad = pair(p.pad, p.pad_h, p.pad_w, 0)
        self.dilation = pair(p.dilation, 0, 0, 1)
        self.group = int(p.group) or 1
        self.num_output = int(p.num_output)
        if self.num_output % self.group:
            raise ModelError(f"{self.describe()}: num_output {self.num_output} is not a multiple of group {self.group}")
        require_blobs(self, 2 if p.bias_term else 1)
        w = self.blobs[0]
        cin_group = w.size // (self.num_output * self.kernel[0] * self.kernel[1]) if w.size else 0
        self.weight = check_shape(self, "weight", w, (self.num_output, cin_group, *self.kernel))
        self.bias = check_shape(self, "bias", self.blobs[1], (self.num_output,)) if p.bias_term else None

    def check_input(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.weight.shape[1] * self.group:
            raise ModelError(
                f"{self.describe()}: input shape {shape[1:]} does not fit weights {self.weight.shape} "
                f"with group {self.group}"
            )

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        self.check_input(x.shape)
        return correlate(x, weight, self.stride, self.pad, self.dilation, self.group)

    def linear_transposed(self, signal: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        return correlate_transposed(signal, weight, input_shape[2:], self.stride, self.pad, self.dilation, self.group)

    @property
    def flat_divisor(self) -> int:
        return self.kernel[0] * self.kernel[1]
