"""Local response normalisation (ACROSS_CHANNELS and WITHIN_CHANNEL)."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, LrnRule, Pass
from .base import Layer, handles
from .windows import Windows1D, window_sums, window_sums_adjoint

ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


def _channel_window_sum(v: np.ndarray, before: int, after: int) -> np.ndarray:
    """out[:, c] = Σ_{c' = c−before}^{c+after} v[:, c'] over valid channels (float64 running sums)."""
    c = v.shape[1]
    cum = np.zeros((v.shape[0], c + 1) + v.shape[2:], np.float64)
    np.cumsum(v, axis=1, dtype=np.float64, out=cum[:, 1:])
    idx = np.arange(c)
    hi = np.minimum(idx + after + 1, c)
    lo = np.maximum(idx - before, 0)
    return cum[:, hi] - cum[:, lo]


class LRN(Layer):
    """ACROSS_CHANNELS: s_c = k + (α/n)·Σ_{c' in window(c)} x_c'², y_c = x_c·s_c^−β (window c−pre … c+post).
    WITHIN_CHANNEL: s = 1 + (α/n²)·Σ_{n×n window} x², y = x·s^−β.

    Relevance LrnRule (the original's rule, §5.4.7, across channels):
    R_in[c] = R[c]·x_c·(k + (α/n)·x_c²)^−β + x_c²·Σ_{c' ≠ c, |c'−c| ≤ pre} −2(α/n)β·s_c'^(−β−1)·x_c'·R[c'].
    WITHIN_CHANNEL has no such rule in the original (it read an unset buffer); there LrnRule passes relevance
    unchanged. Pass (``lrn_relevance identity``) passes it unchanged for both. Gradient is the exact derivative.
    """

    type = "LRN"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.lrn_param
        self.size = int(p.local_size)
        self.alpha = float(p.alpha)
        self.beta = float(p.beta)
        self.k = float(p.k)
        self.region = int(p.norm_region)
        if self.size < 1 or self.size % 2 == 0:
            raise self.fail(f"local_size {self.size} must be odd and positive (as in Caffe)")
        self.pre = (self.size - 1) // 2
        self.post = self.size - 1 - self.pre

    def _within_windows(self, x):
        return (
            Windows1D.caffe(x.shape[2], self.size, 1, self.pre),
            Windows1D.caffe(x.shape[3], self.size, 1, self.pre),
        )

    def forward(self, bottoms):
        x = bottoms[0]
        if self.region == ACROSS_CHANNELS:
            sums = _channel_window_sum(x * x, self.pre, self.post)
            scale = (self.k + self.alpha / self.size * sums).astype(x.dtype)
        else:
            rows, cols = self._within_windows(x)
            scale = (1 + self.alpha / self.size**2 * window_sums(x * x, rows, cols)).astype(x.dtype)
        return [x * scale ** np.float32(-self.beta)], {"scale": scale}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(LrnRule, reads=("bottoms", "state"))
    def _lrn_rule(self, rule, saved, top_relevance):
        if self.region != ACROSS_CHANNELS:
            return self.pass_through(rule, saved, top_relevance)
        x, r, scale = saved.bottoms[0], top_relevance[0], saved.extra["scale"]
        a_n, b = np.float32(self.alpha / self.size), np.float32(self.beta)
        diagonal = r * x * (np.float32(self.k) + a_n * x * x) ** -b
        cross = np.float32(-2) * a_n * b * scale ** (-b - 1) * x * r
        neighbours = _channel_window_sum(cross, self.pre, self.pre) - cross
        return [(diagonal + x * x * neighbours).astype(x.dtype)]

    @handles(Gradient)
    def _gradient(self, rule, saved, top_relevance):
        x, dy, scale, y = saved.bottoms[0], top_relevance[0], saved.extra["scale"], saved.tops[0]
        b = np.float32(self.beta)
        if self.region == ACROSS_CHANNELS:
            ratio = dy * y / scale
            # channels c' whose window contains c: c − post … c + pre
            acc = _channel_window_sum(ratio, self.post, self.pre)
            return [(dy * scale**-b - np.float32(2 * self.alpha * self.beta / self.size) * x * acc).astype(x.dtype)]
        rows, cols = self._within_windows(x)
        inner = dy * x * (-b) * scale ** (-b - 1)
        acc = window_sums_adjoint(inner, rows, cols)
        return [(dy * scale**-b + 2 * x * np.float32(self.alpha / self.size**2) * acc).astype(x.dtype)]
