"""Fully connected layer Y = X W + B (toolbox python/modules/linear.py), W of shape m×n (inputs × outputs).

LRP with messages z_ij = x_i w_ij: every rule below is computed as x_i · Σ_j w_ij s_j for a per-output signal s
(one GEMM), never as the N×m×n tensor of messages. Splitting x and w by sign, the positive messages are
z⁺ = x⁺w⁺ + x⁻w⁻ and the negative ones z⁻ = x⁺w⁻ + x⁻w⁺.
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .module import Module, as_float64, check_relevance, stabilizer_sign


def positive_negative_sums(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Σ_i z⁺_ij, Σ_i z⁻_ij) for z_ij = x_i w_ij, x: N×m, w: m×n → two N×n arrays."""
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    return xp @ wp + xn @ wn, xp @ wn + xn @ wp


def positive_negative_share(x: np.ndarray, w: np.ndarray, s_pos: np.ndarray, s_neg: np.ndarray) -> np.ndarray:
    """Σ_j z⁺_ij s_pos_j + Σ_j z⁻_ij s_neg_j for z_ij = x_i w_ij (N×m); s_pos/s_neg N×n or None (= 0)."""
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    wp, wn = np.maximum(w, 0), np.minimum(w, 0)
    out = np.zeros_like(x)
    if s_pos is not None:
        out += xp * (s_pos @ wp.T) + xn * (s_pos @ wn.T)
    if s_neg is not None:
        out += xp * (s_neg @ wn.T) + xn * (s_neg @ wp.T)
    return out


def nan_rows_where_zero(result: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    """Rows of result that had a 0/0 share in the original's unstabilised slow rule become NaN (its quirk)."""
    result[(denominators == 0).any(axis=1)] = np.nan
    return result


class Linear(Module):
    """Linear(m, n): W drawn from N(0, 1/m) with numpy's global random state (as the original), B = 0."""

    _PICKLED = ("lrp_var", "lrp_param", "m", "n", "W", "B")

    def __init__(self, m, n):
        super().__init__()
        self.m, self.n = int(m), int(n)
        self.B = np.zeros([self.n])
        self.W = np.random.normal(0, 1.0 * self.m ** (-0.5), [self.m, self.n])

    @classmethod
    def from_weights(cls, W, B) -> Linear:
        """A layer holding the given W (m×n) and B (n), without drawing random numbers."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.W, layer.B = np.asarray(W, np.float64), np.asarray(B, np.float64)
        layer.m, layer.n = layer.W.shape
        return layer

    def forward(self, X, lrp_aware=False):
        """Y = X W + B for X: N×m → N×n. lrp_aware is accepted and has no effect (LRP never needs the messages)."""
        X = as_float64(X, "Linear")
        if X.ndim != 2 or X.shape[1] != self.W.shape[0]:
            raise ShapeError(f"Linear {self.m} {self.n}: input must be N x {self.W.shape[0]}, got {X.shape}")
        self.X = X
        self.Y = X @ self.W + self.B
        return self.Y

    def backward(self, DY):
        """Stores dW = Xᵀ DY, dB = Σ_N DY; returns DY Wᵀ · sqrt(m)/sqrt(n) (the original's rescaled gradient)."""
        self._require_forward("X")
        self.dW = self.X.T @ DY
        self.dB = DY.sum(axis=0)
        return (DY @ self.W.T) * self.m**0.5 / self.n**0.5

    def update(self, lrate):
        """W −= lrate · dW / sqrt(m); B −= lrate · dB / n^(1/4)."""
        self.W -= lrate * self.dW / self.m**0.5
        self.B -= lrate * self.dB / self.n**0.25

    def _relevance(self, R):
        self._require_forward("X", "Y")
        return check_relevance(R, self.Y.shape, f"Linear {self.m} {self.n}")

    def _share(self, R, denominator):
        """R_i = x_i Σ_j w_ij R_j / D_j."""
        return self.X * ((R / denominator) @ self.W.T)

    def _simple_lrp(self, R):
        """R_i = Σ_j z_ij R_j / (Y_j + 1e-16 s(Y_j)), Y the stored output (bias included)."""
        R = self._relevance(R)
        return self._share(R, self.Y + 1e-16 * stabilizer_sign(self.Y))

    def _simple_lrp_slow(self, R):
        """As simple, with the denominator re-summed as Σ_i z_ij + b_j."""
        R = self._relevance(R)
        z = self.X @ self.W + self.B
        return self._share(R, z + 1e-16 * stabilizer_sign(z))

    def _epsilon_lrp(self, R, epsilon):
        """R_i = Σ_j z_ij R_j / (Y_j + ε s(Y_j))."""
        R = self._relevance(R)
        return self._share(R, self.Y + epsilon * stabilizer_sign(self.Y))

    def _epsilon_lrp_slow(self, R, epsilon):
        """As epsilon, with the denominator re-summed."""
        R = self._relevance(R)
        z = self.X @ self.W + self.B
        return self._share(R, z + epsilon * stabilizer_sign(z))

    def _flat_lrp(self, R):
        """R_i = Σ_j R_j / m, the same for every input."""
        R = self._relevance(R)
        return np.repeat((R / self.m).sum(axis=1, keepdims=True), self.m, axis=1)

    def _ww_lrp(self, R):
        """R_i = Σ_j w_ij² R_j / Σ_i' w_i'j² (independent of X)."""
        R = self._relevance(R)
        w2 = self.W**2
        return (R / w2.sum(axis=0)) @ w2.T

    def _alphabeta_lrp(self, R, alpha):
        """α-β with β = 1 − α (α = 2 is α2β1); the original's three branches and stabilisers.

        α·β ≠ 0: D⁺ = Σz⁺ + b⁺ + 1e-16, D⁻ = Y − D⁺ − 1e-16, R_i = Σ_j (α z⁺_ij / D⁺_j + β z⁻_ij / D⁻_j) R_j;
        β = 0: only the α term with D⁺; α = 0: R_i = Σ_j z⁻_ij R_j / (Σz⁻ + b⁻ − 1e-16).
        """
        R = self._relevance(R)
        beta = 1 - alpha
        z_pos, z_neg = positive_negative_sums(self.X, self.W)
        d_pos = z_pos + np.maximum(self.B, 0) + 1e-16
        if alpha * beta != 0:
            d_neg = self.Y - d_pos - 1e-16
            return positive_negative_share(self.X, self.W, alpha * (R / d_pos), beta * (R / d_neg))
        if alpha:
            return positive_negative_share(self.X, self.W, R / d_pos, None)
        d_neg = z_neg + np.minimum(self.B, 0) - 1e-16
        return positive_negative_share(self.X, self.W, None, R / d_neg)

    def _alphabeta_lrp_slow(self, R, alpha):
        """α-β with unstabilised denominators Σz⁺ + b⁺ and Σz⁻ + b⁻; a zero one makes the sample's R NaN (as the
        original, which divides 0 by 0 there); a term whose weight α or β is 0 is skipped."""
        R = self._relevance(R)
        beta = 1 - alpha
        z_pos, z_neg = positive_negative_sums(self.X, self.W)
        result = np.zeros_like(self.X)
        with np.errstate(divide="ignore", invalid="ignore"):
            if alpha != 0:
                d_pos = z_pos + np.maximum(self.B, 0)
                share = positive_negative_share(self.X, self.W, alpha * (R / np.where(d_pos == 0, 1, d_pos)), None)
                result += nan_rows_where_zero(share, d_pos)
            if beta != 0:
                d_neg = z_neg + np.minimum(self.B, 0)
                share = positive_negative_share(self.X, self.W, None, beta * (R / np.where(d_neg == 0, 1, d_neg)))
                result += nan_rows_where_zero(share, d_neg)
        return result
