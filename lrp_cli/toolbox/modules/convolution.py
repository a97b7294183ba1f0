"""2-D convolution on NHWC batches (toolbox python/modules/convolution.py): valid windows, no padding.

Y[n,i,j,f] = Σ_{a,b,c} X[n, i·s0 + a, j·s1 + b, c] · W[a,b,c,f] + B[f], W of shape h×w×d×n (a cross-correlation).
Forward is one GEMM over the window columns; every LRP rule is "input × col2im(signal · Wᵀ)" for a per-output
signal, which equals the original's per-window accumulation of messages z = x·w (overlapping windows add up).
"""

from __future__ import annotations

import numpy as np

from ..errors import ShapeError
from .module import Module, as_float64, check_relevance, stabilizer_sign
from .windows import check_fits, col2im, window_view


class Convolution(Module):
    """Convolution(filtersize=(h, w, d, n), stride=(s0, s1)); W drawn from N(0, 1/(h·w·d)) as the original, B = 0."""

    _PICKLED = ("lrp_var", "lrp_param", "fh", "fw", "fd", "n", "stride", "W", "B")

    def __init__(self, filtersize=(5, 5, 3, 32), stride=(2, 2)):
        super().__init__()
        self.fh, self.fw, self.fd, self.n = (int(v) for v in filtersize)
        self.stride = tuple(int(s) for s in stride)
        self.W = np.random.normal(0, 1.0 / (self.fh * self.fw * self.fd) ** 0.5, tuple(filtersize))
        self.B = np.zeros([self.n])

    @classmethod
    def from_weights(cls, W, B, stride) -> Convolution:
        """A layer holding W (h×w×d×n) and B (n), without drawing random numbers."""
        layer = cls.__new__(cls)
        Module.__init__(layer)
        layer.W, layer.B = np.asarray(W, np.float64), np.asarray(B, np.float64)
        layer.fh, layer.fw, layer.fd, layer.n = layer.W.shape
        layer.stride = tuple(int(s) for s in stride)
        return layer

    @property
    def _name(self) -> str:
        return f"Convolution {self.fh} {self.fw} {self.fd} {self.n}"

    def _columns(self, X) -> np.ndarray:
        """The window columns (N·Ho·Wo)×(h·w·d) of X."""
        view = window_view(X, self.W.shape[:2], self.stride)
        return view.reshape(-1, self.W.shape[0] * self.W.shape[1] * self.W.shape[2])

    def _correlate(self, X, W) -> np.ndarray:
        """Σ over each window of X·W without bias: N×Ho×Wo×n."""
        view = window_view(X, W.shape[:2], self.stride)
        return (self._columns(X) @ W.reshape(-1, W.shape[3])).reshape(view.shape[:3] + (W.shape[3],))

    def _adjoint(self, S, W) -> np.ndarray:
        """col2im(S · Wᵀ): out[n,y,x,c] = Σ over the windows (i,j) covering (y,x) of Σ_f W[a,b,c,f] S[n,i,j,f]."""
        hf, wf, df, nf = W.shape
        cols = (S.reshape(-1, nf) @ W.reshape(-1, nf).T).reshape(S.shape[:3] + (hf, wf, df))
        return col2im(cols, self.X.shape[1:3], self.stride)

    def forward(self, X, lrp_aware=False):
        """Y (N×Ho×Wo×n) for X (N×H×W×d). lrp_aware is accepted and has no effect."""
        X = as_float64(X, self._name)
        check_fits(X.shape, self.W.shape[:2], self.stride, self._name)
        if X.shape[3] != self.W.shape[2]:
            raise ShapeError(f"{self._name}: input has {X.shape[3]} channels, the filters {self.W.shape[2]}")
        self.X = X
        self.Y = self._correlate(X, self.W) + self.B
        return self.Y

    def backward(self, DY):
        """Stores DY; returns dE/dX = col2im(DY · Wᵀ) (no rescaling)."""
        self._require_forward("X")
        self.DY = np.asarray(DY, np.float64)
        return self._adjoint(self.DY, self.W)

    def update(self, lrate):
        """W −= lrate · dW / sqrt(h·w·d·Hy·Wy), B −= lrate · dB / sqrt(Hy·Wy) with dW = Σ windows ⊗ DY."""
        _, hy, wy, nf = self.DY.shape
        dw = (self._columns(self.X).T @ self.DY.reshape(-1, nf)).reshape(self.W.shape)
        db = self.DY.sum(axis=(0, 1, 2))
        self.W -= lrate * dw / (self.fh * self.fw * self.fd * hy * wy) ** 0.5
        self.B -= lrate * db / (hy * wy) ** 0.5

    def _relevance(self, R):
        self._require_forward("X", "Y")
        return check_relevance(R, self.Y.shape, self._name)

    def _simple_lrp(self, R):
        """Messages z R / (Y + 1e-16 s(Y)), Y the stored output (bias included)."""
        R = self._relevance(R)
        return self.X * self._adjoint(R / (self.Y + 1e-16 * stabilizer_sign(self.Y)), self.W)

    def _simple_lrp_slow(self, R):
        """As simple, with the denominator re-summed as Σz + B."""
        R = self._relevance(R)
        z = self._correlate(self.X, self.W) + self.B
        return self.X * self._adjoint(R / (z + 1e-16 * stabilizer_sign(z)), self.W)

    def _epsilon_lrp(self, R, epsilon):
        """Messages z R / (Y + ε s(Y))."""
        R = self._relevance(R)
        return self.X * self._adjoint(R / (self.Y + epsilon * stabilizer_sign(self.Y)), self.W)

    def _epsilon_lrp_slow(self, R, epsilon):
        """As epsilon, with the denominator re-summed."""
        R = self._relevance(R)
        z = self._correlate(self.X, self.W) + self.B
        return self.X * self._adjoint(R / (z + epsilon * stabilizer_sign(z)), self.W)

    def _flat_lrp(self, R):
        """Every one of the h·w·d window inputs gets R_f / (h·w·d) from each filter f."""
        R = self._relevance(R)
        return self._adjoint(R, np.full(self.W.shape, 1.0 / (self.fh * self.fw * self.fd)))

    def _ww_lrp(self, R):
        """Window input (a,b,c) gets W[a,b,c,f]² / Σ_{a,b,c} W[·,·,·,f]² · R_f (independent of X)."""
        R = self._relevance(R)
        w2 = self.W**2
        return self._adjoint(R, w2 / w2.sum(axis=(0, 1, 2)))

    def _split_share(self, s_pos, s_neg) -> np.ndarray:
        """Σ over windows and filters of z⁺·s_pos + z⁻·s_neg (z = x·w split by sign; s_* N×Ho×Wo×n or None)."""
        xp, xn = np.maximum(self.X, 0), np.minimum(self.X, 0)
        wp, wn = np.maximum(self.W, 0), np.minimum(self.W, 0)
        out = np.zeros_like(self.X)
        if s_pos is not None:
            out += xp * self._adjoint(s_pos, wp) + xn * self._adjoint(s_pos, wn)
        if s_neg is not None:
            out += xp * self._adjoint(s_neg, wn) + xn * self._adjoint(s_neg, wp)
        return out

    def _split_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """(Σz⁺, Σz⁻) per window and filter, without bias."""
        xp, xn = np.maximum(self.X, 0), np.minimum(self.X, 0)
        wp, wn = np.maximum(self.W, 0), np.minimum(self.W, 0)
        return (self._correlate(xp, wp) + self._correlate(xn, wn), self._correlate(xp, wn) + self._correlate(xn, wp))

    def _alphabeta_lrp(self, R, alpha):
        """α-β with β = 1 − α, per window as Linear's: D⁺ = Σz⁺ + B⁺ + 1e-16, D⁻ = Y − D⁺ − 1e-16; β = 0: α term
        only; α = 0: z⁻ R / (Σz⁻ + B⁻ + 1e-16) — note +1e-16 here where Linear subtracts (the original's)."""
        R = self._relevance(R)
        beta = 1 - alpha
        z_pos, z_neg = self._split_sums()
        d_pos = z_pos + np.maximum(self.B, 0) + 1e-16
        if alpha * beta != 0:
            d_neg = self.Y - d_pos - 1e-16
            return self._split_share(alpha * (R / d_pos), beta * (R / d_neg))
        if alpha:
            return self._split_share(R / d_pos, None)
        return self._split_share(None, R / (z_neg + np.minimum(self.B, 0) + 1e-16))

    def _alphabeta_lrp_slow(self, R, alpha):
        """α-β without stabilisers; as in the original, a window whose denominator of some filter is 0 (a 0/0 →
        NaN there) contributes nothing to that term at all (its NaN sums are replaced by 0)."""
        R = self._relevance(R)
        beta = 1 - alpha
        z_pos, z_neg = self._split_sums()
        signals = []
        for weight, denominator in ((alpha, z_pos + np.maximum(self.B, 0)), (beta, z_neg + np.minimum(self.B, 0))):
            if weight == 0:
                signals.append(None)
                continue
            dead_window = (denominator == 0).any(axis=3, keepdims=True)
            with np.errstate(divide="ignore", invalid="ignore"):
                signal = weight * (R / np.where(denominator == 0, 1, denominator))
            signals.append(np.where(dead_window, 0.0, signal))
        return self._split_share(*signals)
