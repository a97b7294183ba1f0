"""Vectorised sliding-window helpers shared by convolution and pooling (no loops over pixels or offsets).

Shapes follow Caffe: images are N×C×H×W float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pad_spatial(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` (N×C×H×W) with a constant; returns ``x`` itself when nothing is padded."""
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def window_view(
    xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int], out: tuple[int, int]
) -> np.ndarray:
    """A strided view N×C×kh×kw×Ho×Wo of the padded input: [n,c,i,j,h,w] = xp[n,c,h·sh+i·dh,w·sw+j·dw]."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    return as_strided(
        xp,
        shape=(n, c, kernel[0], kernel[1], out[0], out[1]),
        strides=(sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]),
        writeable=False,
    )


def correlate(
    x: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    group: int = 1,
) -> np.ndarray:
    """Caffe's convolution without bias: cross-correlation through im2col and one batched BLAS matmul.

    x: N×C×H×W, weight: M×(C/group)×kh×kw → N×M×Ho×Wo with Ho = (H + 2·ph − ((kh−1)·dh + 1)) // sh + 1.
    """
    n, c, h, w = x.shape
    m, cg, kh, kw = weight.shape
    ho = (h + 2 * pad[0] - ((kh - 1) * dilation[0] + 1)) // stride[0] + 1
    wo = (w + 2 * pad[1] - ((kw - 1) * dilation[1] + 1)) // stride[1] + 1
    xp = pad_spatial(x, pad[0], pad[0], pad[1], pad[1])
    if kh == kw == 1 and stride == (1, 1):
        cols = xp.reshape(n, group, cg, ho * wo)
    else:
        view = window_view(xp, (kh, kw), stride, dilation, (ho, wo))
        cols = view.reshape(n, group, cg * kh * kw, ho * wo)
    kernel = weight.reshape(group, m // group, cg * kh * kw)
    out = np.matmul(kernel, cols)  # N×G×(M/G)×L
    return out.reshape(n, m, ho, wo)


def correlate_transposed(
    signal: np.ndarray,
    weight: np.ndarray,
    input_hw: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    group: int = 1,
) -> np.ndarray:
    """The adjoint of :func:`correlate` (col2im of Wᵀ·signal): out[n,c,y,x] = Σ_{m,i,j} s[n,m,ho,wo]·w[m,c,i,j].

    signal: N×M×Ho×Wo → N×C×H×W; whatever lands on padding is discarded. Computed as a stride-1 correlation
    of the zero-padded signal with the flipped kernel, once per stride phase (sh·sw BLAS calls, 1 for stride 1).
    """
    n, m = signal.shape[:2]
    _, cg, kh, kw = weight.shape
    c = cg * group
    h, w = input_hw
    if dilation != (1, 1):
        dilated = np.zeros((m, cg, (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), weight.dtype)
        dilated[:, :, :: dilation[0], :: dilation[1]] = weight
        weight, kh, kw = dilated, dilated.shape[2], dilated.shape[3]
    hp, wp = h + 2 * pad[0], w + 2 * pad[1]
    ho, wo = signal.shape[2:]
    out = np.zeros((n, c, hp, wp), dtype=np.result_type(signal, weight))
    sh, sw = stride
    for a in range(min(sh, hp)):  # one BLAS call per stride phase, not per kernel offset
        taps_h = -(-(kh - a) // sh) if a < kh else 0
        rows = -(-(hp - a) // sh)
        for b in range(min(sw, wp)):
            taps_w = -(-(kw - b) // sw) if b < kw else 0
            cols = -(-(wp - b) // sw)
            if taps_h == 0 or taps_w == 0:
                continue
            sub = weight[:, :, a::sh, b::sw][:, :, ::-1, ::-1]  # M×Cg×taps_h×taps_w, flipped
            # per group: (M/G)×Cg → Cg×(M/G), so the signal plays the input and C the output channels
            flipped = sub.reshape(group, m // group, cg, taps_h, taps_w).transpose(0, 2, 1, 3, 4)
            flipped = np.ascontiguousarray(flipped).reshape(c, m // group, taps_h, taps_w)
            need_h, need_w = rows + taps_h - 1, cols + taps_w - 1
            padded = pad_spatial(
                signal, taps_h - 1, max(0, need_h - (taps_h - 1) - ho), taps_w - 1, max(0, need_w - (taps_w - 1) - wo)
            )[:, :, :need_h, :need_w]
            out[:, :, a::sh, b::sw] = correlate(padded, flipped, group=group)
    return out[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w]


@dataclass(frozen=True)
class Windows1D:
    """Caffe's pooling windows along one axis: window j covers input [start[j], end[j]) (clipped to the input).

    ``first[i]``, ``last[i]``: the range of windows that contain input position i (empty when first > last).
    ``size[j]``: Caffe's AVE divisor (window clipped to size+pad, padding cells counted).
    """

    start: np.ndarray
    end: np.ndarray
    size: np.ndarray
    first: np.ndarray
    last: np.ndarray

    @staticmethod
    def caffe(length: int, kernel: int, stride: int, pad: int) -> Windows1D:
        out = -(-(length + 2 * pad - kernel) // stride) + 1  # ceil mode
        if pad > 0 and (out - 1) * stride >= length + pad:
            out -= 1  # the last window may not start inside the padding
        j = np.arange(out)
        raw_start = j * stride - pad
        raw_end = np.minimum(raw_start + kernel, length + pad)
        size = raw_end - raw_start
        start = np.maximum(raw_start, 0)
        end = np.minimum(raw_end, length)
        i = np.arange(length)
        first = np.maximum(-((kernel - 1 - i - pad) // stride), 0)  # ceil((i + pad − kernel + 1) / stride)
        last = np.minimum((i + pad) // stride, out - 1)
        return Windows1D(start, end, size, first, last)

    @property
    def count(self) -> int:
        return len(self.start)


def _integral(x: np.ndarray) -> np.ndarray:
    """Zero-led 2-D prefix sums over the last two axes, in float64."""
    p = np.zeros(x.shape[:-2] + (x.shape[-2] + 1, x.shape[-1] + 1), np.float64)
    np.cumsum(np.cumsum(x, axis=-2, dtype=np.float64), axis=-1, out=p[..., 1:, 1:])
    return p


def _box(p: np.ndarray, lo_h, hi_h, lo_w, hi_w) -> np.ndarray:
    """Sum over [lo_h, hi_h) × [lo_w, hi_w) from prefix sums ``p`` (index arrays broadcast over rows/columns)."""
    lo_h, hi_h = lo_h[:, None], hi_h[:, None]
    return p[..., hi_h, hi_w] - p[..., lo_h, hi_w] - p[..., hi_h, lo_w] + p[..., lo_h, lo_w]


def window_sums(x: np.ndarray, rows: Windows1D, cols: Windows1D) -> np.ndarray:
    """Σ of x over every (clipped) pooling window: N×C×H×W → N×C×Ho×Wo, float64."""
    return _box(_integral(x), rows.start, rows.end, cols.start, cols.end)


def window_sums_adjoint(v: np.ndarray, rows: Windows1D, cols: Windows1D) -> np.ndarray:
    """Adjoint of :func:`window_sums`: out[i] = Σ of v[j] over the windows j that contain input i, float64."""
    lo_h, hi_h = rows.first, np.maximum(rows.last + 1, rows.first)
    lo_w, hi_w = cols.first, np.maximum(cols.last + 1, cols.first)
    return _box(_integral(v), lo_h, hi_h, lo_w, hi_w)
