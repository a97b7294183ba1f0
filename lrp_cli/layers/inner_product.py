"""InnerProduct (fully connected): the input is flattened from ``axis`` on."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .base import check_shape, require_blobs
from .linear import LinearLayer


class InnerProduct(LinearLayer):
    """z[n,j] = Σ_k w[j,k]·x[n,k] + b[j]; weight J×K (stored K×J when ``transpose``), bias J.

    Input N×… (flattened to N×K from ``axis``; only axis 1 is supported) → output N×J.
    """

    type = "InnerProduct"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.inner_product_param
        if p.axis != 1:
            raise ModelError(f"{self.describe()}: only axis 1 is supported (got {p.axis})")
        self.num_output = int(p.num_output)
        require_blobs(self, 2 if p.bias_term else 1)
        w = self.blobs[0]
        fan_in = w.size // self.num_output if self.num_output else 0
        if p.transpose:
            w = check_shape(self, "weight", w, (fan_in, self.num_output)).T
        self.weight = np.ascontiguousarray(check_shape(self, "weight", w, (self.num_output, fan_in)))
        self.bias = check_shape(self, "bias", self.blobs[1], (self.num_output,)) if p.bias_term else None

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != weight.shape[1]:
            raise ModelError(f"{self.describe()}: input has {flat.shape[1]} values per image, weights expect "
                             f"{weight.shape[1]}")
        return flat @ weight.T

    def linear_transposed(self, signal: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        return (signal @ weight).reshape(input_shape)

    @property
    def flat_divisor(self) -> int:
        return self.weight.shape[1]
