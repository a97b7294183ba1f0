"""InnerProduct (fully connected): the input is flattened from ``axis`` on."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import _ratio_or_zero
from .base import check_shape, require_blobs
from .linear import LinearLayer


def _rows_times(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through BLAS's matrix-matrix product even for a single row: its matrix-vector product sums in
    another order, which would make an image's result depend (in the last bits) on the batch size."""
    if a.shape[0] == 1:
        return (np.concatenate([a, a]) @ b)[:1]
    return a @ b


def _rows_times_transposed(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """a @ wᵀ for a weight w (J×K, C-contiguous), computed as (w @ aᵀ)ᵀ: with few rows of a, OpenBLAS streams the
    large weight faster this way round (fc6 of CaffeNet, 5 rows: about 30% faster). Like :func:`_rows_times`, a
    single row goes through the matrix-matrix product too."""
    if a.shape[0] == 1:
        return np.ascontiguousarray((w @ np.concatenate([a, a]).T).T[:1])
    return np.ascontiguousarray((w @ a.T).T)


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

    def output_shapes(self, bottoms):
        """N×… (K values per image) → N×J."""
        size = int(np.prod(bottoms[0][1:], dtype=np.int64))
        if size != self.weight.shape[1]:
            raise self.fail(f"input has {size} values per image, weights expect {self.weight.shape[1]}")
        return [(bottoms[0][0], self.num_output)]

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != weight.shape[1]:
            raise ModelError(f"{self.describe()}: input has {flat.shape[1]} values per image, weights expect "
                             f"{weight.shape[1]}")
        return _rows_times_transposed(flat, weight)

    def linear_transposed(self, signal: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        return _rows_times(signal, weight).reshape(input_shape)

    @property
    def flat_divisor(self) -> int:
        return self.weight.shape[1]

    #: rows of the weight per block of :meth:`alpha_beta` (about 4 MB of weights)
    BLOCK_BYTES = 1 << 22

    def alpha_beta(self, x, relevance, alpha, beta, mixed, state=None):
        """The α-β rule (see :class:`lrp_cli.rules.AlphaBeta`); for an input x ≥ 0 fused over blocks of outputs:

        per block of rows of W (cache-sized): w⁺, w⁻, z⁺ = x·w⁺ᵀ + b⁺, z⁻ = x·w⁻ᵀ + b⁻, and the adjoint
        α·(R/z⁺)·w⁺ − β·(R/z⁻)·w⁻ accumulated; R_in = x ⊙ the sum. Output j depends only on row j, so the
        blocks are independent: W is read once, instead of w⁺ and w⁻ twice each, and no copies of the
        parts are kept (fc6 of CaffeNet: 151 MB each). Inputs with negative values take the generic step.
        """
        if mixed:
            return super().alpha_beta(x, relevance, alpha, beta, mixed, state)
        flat = x.reshape(x.shape[0], -1)
        r = relevance.reshape(relevance.shape[0], -1)
        j, k = self.weight.shape
        step = max(1, self.BLOCK_BYTES // (4 * k))
        coefficient = np.zeros_like(flat)
        for lo in range(0, j, step):  # blocks of rows: memory traffic, not a loop over neurons
            w = self.weight[lo : lo + step]
            w_pos = np.maximum(w, 0)
            z_pos = _rows_times_transposed(flat, w_pos)
            if self.bias is not None:
                z_pos += np.maximum(self.bias[lo : lo + step], 0)
            coefficient += _rows_times(_ratio_or_zero(r[:, lo : lo + step], z_pos, alpha), w_pos)
            if beta > 0:
                w_neg = w - w_pos
                z_neg = _rows_times_transposed(flat, w_neg)
                if self.bias is not None:
                    z_neg += np.minimum(self.bias[lo : lo + step], 0)
                coefficient += _rows_times(_ratio_or_zero(r[:, lo : lo + step], z_neg, -beta), w_neg)
        coefficient *= flat
        return coefficient.reshape(x.shape)
