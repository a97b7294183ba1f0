"""Sum and max pooling on NHWC batches (toolbox python/modules/sumpool.py, maxpool.py): valid windows only.

LRP spreads each output's relevance over its window; a per-window share is turned into input relevance with
col2im (overlapping windows add up, as in the original's accumulation).
"""

from __future__ import annotations

import numpy as np

from .module import Module, as_float64, check_relevance, stabilizer_sign
from .windows import check_fits, col2im, window_view


def spread(values: np.ndarray, pool: tuple[int, int], stride: tuple[int, int], input_hw) -> np.ndarray:
    """Every input of window (n,i,j,·) receives values[n,i,j,c]: col2im of the broadcast N×Ho×Wo×D array."""
    n, ho, wo, d = values.shape
    cols = np.broadcast_to(values[:, :, :, None, None, :], (n, ho, wo, pool[0], pool[1], d))
    return col2im(cols, input_hw, stride)


class _Pool(Module):
    _PICKLED = ("lrp_var", "lrp_param", "pool", "stride")

    def __init__(self, pool=(2, 2), stride=(2, 2)):
        super().__init__()
        self.pool = tuple(int(p) for p in pool)
        self.stride = tuple(int(s) for s in stride)

    @property
    def _name(self) -> str:
        return f"{type(self).__name__} {self.pool[0]} {self.pool[1]}"

    def _windows(self, X) -> np.ndarray:
        return window_view(X, self.pool, self.stride)

    def _spread(self, values) -> np.ndarray:
        return spread(values, self.pool, self.stride, self.X.shape[1:3])

    def _take_input(self, X) -> np.ndarray:
        X = as_float64(X, self._name)
        check_fits(X.shape, self.pool, self.stride, self._name)
        self.X = X
        return X

    def _relevance(self, R):
        self._require_forward("X", "Y")
        return check_relevance(R, self.Y.shape, self._name)

    def _flat_lrp(self, R):
        """Every window input gets R / (h·w)."""
        R = self._relevance(R)
        return self._spread(R / (self.pool[0] * self.pool[1]))

    def _ww_lrp(self, R):
        """No weights: the same as flat."""
        return self._flat_lrp(R)


class SumPool(_Pool):
    """SumPool(pool=(h, w), stride=(s0, s1)): Y = ν · (sum over the window), ν = 1/sqrt(h·w) (not an average)."""

    @property
    def normalizer(self) -> float:
        """ν = 1/sqrt(h·w)."""
        return 1.0 / np.sqrt(self.pool[0] * self.pool[1])

    def forward(self, X, lrp_aware=False):
        """Y[n,i,j,c] = ν Σ_window X."""
        X = self._take_input(X)
        self.Y = self._windows(X).sum(axis=(3, 4)) * self.normalizer
        return self.Y

    def backward(self, DY):
        """Each window input receives DY · ν."""
        self._require_forward("X")
        return self._spread(np.asarray(DY, np.float64) * self.normalizer)

    def _proportional(self, R, denominator, inputs=None):
        """inputs · col2im(R / denominator): each window input's share x / D of the window's relevance."""
        return (self.X if inputs is None else inputs) * self._spread(R / denominator)

    def _simple_lrp(self, R):
        """x R / (Y/ν + 1e-12 s(Y/ν)) — the original's stabiliser here is 1e-12, not 1e-16."""
        R = self._relevance(R)
        sums = self.Y / self.normalizer
        return self._proportional(R, sums + 1e-12 * stabilizer_sign(sums))

    def _simple_lrp_slow(self, R):
        """x R / (Σx + 1e-12 s(Σx)), the window sum re-computed."""
        R = self._relevance(R)
        sums = self._windows(self.X).sum(axis=(3, 4))
        return self._proportional(R, sums + 1e-12 * stabilizer_sign(sums))

    def _epsilon_lrp(self, R, epsilon):
        """x R / (Y/ν + ε s(Y)) (the sign taken from Y, as the original)."""
        R = self._relevance(R)
        return self._proportional(R, self.Y / self.normalizer + epsilon * stabilizer_sign(self.Y))

    def _epsilon_lrp_slow(self, R, epsilon):
        """x R / (Σx + ε s(Σx))."""
        R = self._relevance(R)
        sums = self._windows(self.X).sum(axis=(3, 4))
        return self._proportional(R, sums + epsilon * stabilizer_sign(sums))

    def _alphabeta_lrp(self, R, alpha):
        """β = 1 − α. α·β ≠ 0: α x⁺ R / (Σx⁺ + 1e-16) + β x⁻ R² / (Y/ν − D⁺ − 1e-16) — the R² is the original's
        bug (sumpool.py:358), kept because it shapes its numbers (it vanishes after a Rect, where x⁻ = 0);
        β = 0: x⁺ R / (Σx⁺ + 1e-16); α = 0: x⁻ R / (Σx⁻ − 1e-16)."""
        R = self._relevance(R)
        beta = 1 - alpha
        xp, xn = np.maximum(self.X, 0), np.minimum(self.X, 0)
        windows = self._windows(self.X)
        d_pos = np.maximum(windows, 0).sum(axis=(3, 4)) + 1e-16
        if alpha * beta != 0:
            d_neg = self.Y / self.normalizer - d_pos - 1e-16
            return self._proportional(alpha * R, d_pos, xp) + self._proportional(beta * R * R, d_neg, xn)
        if alpha:
            return self._proportional(R, d_pos, xp)
        return self._proportional(R, np.minimum(windows, 0).sum(axis=(3, 4)) - 1e-16, xn)

    def _alphabeta_lrp_slow(self, R, alpha):
        """α x⁺ R / (Σx⁺ + 1e-16) + β x⁻ R / (Σx⁻ − 1e-16), a term skipped when its weight is 0 (no R² bug)."""
        R = self._relevance(R)
        beta = 1 - alpha
        windows = self._windows(self.X)
        out = np.zeros_like(self.X)
        if alpha != 0:
            out += self._proportional(alpha * R, np.maximum(windows, 0).sum(axis=(3, 4)) + 1e-16, np.maximum(self.X, 0))
        if beta != 0:
            out += self._proportional(beta * R, np.minimum(windows, 0).sum(axis=(3, 4)) - 1e-16, np.minimum(self.X, 0))
        return out


class MaxPool(_Pool):
    """MaxPool(pool=(h, w), stride=(s0, s1)): per-channel window maximum."""

    def forward(self, X, lrp_aware=False):
        """Y[n,i,j,c] = max over the window."""
        X = self._take_input(X)
        self.Y = self._windows(X).max(axis=(3, 4))
        return self.Y

    def _winners(self) -> np.ndarray:
        """N×Ho×Wo×h×w×D: 1.0 where the window input equals the window maximum (ties all count)."""
        return (self._windows(self.X) == self.Y[:, :, :, None, None, :]).astype(np.float64)

    def backward(self, DY):
        """DY in full to every input equal to its window's maximum (each tie gets all of it)."""
        self._require_forward("X", "Y")
        cols = self._winners() * np.asarray(DY, np.float64)[:, :, :, None, None, :]
        return col2im(cols, self.X.shape[1:3], self.stride)

    def _simple_lrp(self, R):
        """R to the inputs equal to the window maximum, split equally among ties."""
        R = self._relevance(R)
        winners = self._winners()
        share = winners / winners.sum(axis=(3, 4), keepdims=True)
        return col2im(share * R[:, :, :, None, None, :], self.X.shape[1:3], self.stride)

    def _simple_lrp_slow(self, R):
        """The same as simple (the original's simple calls its slow variant)."""
        return self._simple_lrp(R)

    def _epsilon_lrp(self, R, epsilon):
        """No weights to stabilise: the same as simple."""
        return self._simple_lrp(R)

    def _alphabeta_lrp(self, R, alpha):
        """One dominant input (or equal ties): the same as simple."""
        return self._simple_lrp(R)
