"""Layers without parameters (toolbox python/modules/rect.py, tanh.py, softmax.py, flatten.py).

Their lrp passes the relevance through unchanged (Flatten reshapes it) whatever the variant.
"""

from __future__ import annotations

import numpy as np

from .module import Module, as_float64


class _PassThrough(Module):
    def lrp(self, R, lrp_var=None, param=None):
        """The identity: relevance passes unchanged (variant and parameter are ignored)."""
        return R


class Rect(_PassThrough):
    """ReLU: Y = max(0, X)."""

    def forward(self, X, lrp_aware=False):
        self.Y = np.maximum(0, as_float64(X, "Rect"))
        return self.Y

    def backward(self, DY):
        """DY · (Y ≠ 0)."""
        self._require_forward("Y")
        return DY * (self.Y != 0)


class Tanh(_PassThrough):
    """Y = tanh(X)."""

    def forward(self, X, lrp_aware=False):
        self.Y = np.tanh(as_float64(X, "Tanh"))
        return self.Y

    def backward(self, DY):
        """DY · (1 − Y²)."""
        self._require_forward("Y")
        return DY * (1.0 - self.Y**2)


class SoftMax(_PassThrough):
    """Y = exp(X) / Σ exp(X) along axis 1.

    Computed with the row maximum subtracted first: equal to the original's formula up to rounding where that is
    finite, and finite where the original overflows to NaN (logits above ~709). backward is the identity, so that
    with the training signal Ypred − Y this is the softmax/cross-entropy gradient (as the original).
    """

    def forward(self, X, lrp_aware=False):
        X = as_float64(X, "SoftMax")
        self.X = X
        e = np.exp(X - X.max(axis=1, keepdims=True))
        self.Y = e / e.sum(axis=1, keepdims=True)
        return self.Y


class Flatten(_PassThrough):
    """N×… → N×prod(…) in C order (for NHWC: channel fastest, then column, then row)."""

    _PICKLED = ("lrp_var", "lrp_param", "inputshape")

    def __init__(self):
        super().__init__()
        self.inputshape = []

    def __init_state__(self):
        super().__init_state__()
        self.inputshape = []

    def forward(self, X, lrp_aware=False):
        X = np.asarray(X)
        self.inputshape = X.shape
        return X.reshape(X.shape[0], -1)

    def backward(self, DY):
        """DY reshaped to the last input's shape."""
        return np.reshape(DY, self.inputshape)

    def lrp(self, R, lrp_var=None, param=None):
        """R reshaped to the last input's shape."""
        return np.reshape(R, self.inputshape)
