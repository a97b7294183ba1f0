"""Vectorised sliding-window helpers shared by convolution and pooling (no loops over pixels or offsets).

Shapes follow Caffe: images are N×C×H×W float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


def pad_spatial(x: np.ndarray, top: int, bottom: int, left: int, right: int, value: float = 0.0) -> np.ndarray:
    """Pad the last two axes of ``x`` (…×H×W) with a constant; returns ``x`` itself when nothing is padded."""
    if top == bottom == left == right == 0:
        return x
    h, w = x.shape[-2:]
    out = np.empty(x.shape[:-2] + (h + top + bottom, w + left + right), x.dtype)
    # fill only the border (one pass over the interior instead of np.pad's two)
    out[..., :top, :] = value
    out[..., top + h :, :] = value
    out[..., top : top + h, :left] = value
    out[..., top : top + h, left + w :] = value
    out[..., top : top + h, left : left + w] = x
    return out


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


def _output_hw(h, w, kh, kw, stride, pad, dilation) -> tuple[int, int]:
    ho = (h + 2 * pad[0] - ((kh - 1) * dilation[0] + 1)) // stride[0] + 1
    wo = (w + 2 * pad[1] - ((kw - 1) * dilation[1] + 1)) // stride[1] + 1
    return ho, wo


def im2col(
    x: np.ndarray,
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    group: int = 1,
) -> tuple[np.ndarray, tuple[int, int]]:
    """The patches of x (N×C×H×W) as one matrix per group, with the whole batch side by side:

    cols[g, (c, i, j), (n, h, w)] = xpad[n, g·Cg + c, h·sh + i·dh, w·sw + j·dw], shape G×(Cg·kh·kw)×(N·Ho·Wo),
    so that a convolution is one GEMM per group over the batch. Returns (cols, (Ho, Wo)); one copy of the data.
    """
    n, c, h, w = x.shape
    kh, kw = kernel
    ho, wo = _output_hw(h, w, kh, kw, stride, pad, dilation)
    cg = c // group
    if kh == kw == 1 and stride == (1, 1) and pad == (0, 0):
        cols = x.reshape(n, group, cg, h * w)
        if n == 1:
            return cols.reshape(group, cg, h * w), (ho, wo)
        return np.ascontiguousarray(cols.transpose(1, 2, 0, 3)).reshape(group, cg, n * h * w), (ho, wo)
    xp = pad_spatial(x, pad[0], pad[0], pad[1], pad[1])
    view = window_view(xp, kernel, stride, dilation, (ho, wo))  # N×C×kh×kw×Ho×Wo
    view = view.reshape(n, group, cg, kh, kw, ho, wo).transpose(1, 2, 3, 4, 0, 5, 6)
    cols = np.empty((group, cg, kh, kw, n, ho, wo), x.dtype)
    cols[...] = view
    return cols.reshape(group, cg * kh * kw, n * ho * wo), (ho, wo)


def channel_major(x: np.ndarray, group: int) -> np.ndarray:
    """N×(G·A)×… → G×A×(N·L): every group's channels as rows with the whole batch side by side (the GEMM layout)."""
    n, c = x.shape[:2]
    flat = x.reshape(n, group, c // group, -1)
    if n == 1:
        return flat.reshape(group, c // group, -1)
    return np.ascontiguousarray(flat.transpose(1, 2, 0, 3)).reshape(group, c // group, -1)


def batch_first(out: np.ndarray, n: int) -> np.ndarray:
    """(A, N, …) → (N, A, …) as a C-contiguous array (no copy when N = 1)."""
    out = out.reshape(out.shape[0], n, -1)
    if n == 1:
        return out.reshape(1, out.shape[0], -1)
    return np.ascontiguousarray(out.transpose(1, 0, 2))


def correlate_gemm(
    x: np.ndarray,
    kernel: np.ndarray,
    kernel_hw: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
) -> tuple[np.ndarray, tuple[int, int]]:
    """Convolution with the kernel as G×M'×(Cg·kh·kw) matrices: G×M'×(N·Ho·Wo) (channel-major), (Ho, Wo)."""
    cols, out_hw = im2col(x, kernel_hw, stride, pad, dilation, kernel.shape[0])
    return np.matmul(kernel, cols), out_hw


def correlate(
    x: np.ndarray,
    weight: np.ndarray,
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    group: int = 1,
) -> np.ndarray:
    """Caffe's convolution without bias: cross-correlation through :func:`im2col` and one GEMM per group.

    x: N×C×H×W, weight: M×(C/group)×kh×kw → N×M×Ho×Wo with Ho = (H + 2·ph − ((kh−1)·dh + 1)) // sh + 1.
    """
    n = x.shape[0]
    m, cg, kh, kw = weight.shape
    out, (ho, wo) = correlate_gemm(x, weight.reshape(group, m // group, cg * kh * kw), (kh, kw), stride, pad, dilation)
    return batch_first(out.reshape(m, -1), n).reshape(n, m, ho, wo)


def col2im(
    cols: np.ndarray,
    shape: tuple[int, int, int, int],
    kernel: tuple[int, int],
    out_hw: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The adjoint of :func:`im2col` (dilation 1): cols C×kh×kw×N×Ho×Wo (any layout reshapeable to it) → N×C×H×W,

    out[n, c, y, x] = Σ of cols[c, i, j, n, h, w] over y + ph = h·sh + i, x + pw = w·sw + j. Per stride phase
    (a, b) the taps i ≡ a, j ≡ b land on a sub-grid, where the sum over the taps is a sum along diagonals of
    the tap × position plane: a strided view and one reduction (no loop over kernel offsets).
    """
    n, c, h, w = shape
    kh, kw = kernel
    ho, wo = out_hw
    sh, sw = stride
    hp, wp = h + 2 * pad[0], w + 2 * pad[1]
    cols = cols.reshape(c, kh, kw, n, ho, wo)
    if kh == kw == 1 and stride == (1, 1):
        full = cols.reshape(c, n, ho, wo)
        out = batch_first(full, n).reshape(n, c, ho, wo)
        return out[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w]
    th, tw = -(-kh // sh), -(-kw // sw)  # most taps per phase
    # zero borders of th−1 / tw−1 positions so every diagonal has all its taps in range
    colsp = pad_spatial(cols, th - 1, th - 1, tw - 1, tw - 1)
    out = np.zeros((c, n, hp, wp), cols.dtype)
    sc, si, sj, sn, sy, sx = colsp.strides
    for a in range(min(sh, kh)):
        taps_h = len(range(a, kh, sh))
        rows = len(range(a, hp, sh))
        for b in range(min(sw, kw)):
            taps_w = len(range(b, kw, sw))
            cols_ = len(range(b, wp, sw))
            # out[c, n, a + sh·r, b + sw·q] = Σ_{u, v} cols[c, a + sh·u, b + sw·v, n, r − u, q − v]
            base = colsp[:, a, b, :, th - 1, tw - 1]
            diag = as_strided(
                base,
                shape=(c, n, rows, cols_, taps_h, taps_w),
                strides=(sc, sn, sy, sx, sh * si - sy, sw * sj - sx),
                writeable=False,
            )
            np.sum(diag, axis=(4, 5), out=out[:, :, a::sh, b::sw])
    return batch_first(out, n).reshape(n, c, hp, wp)[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w]


def correlate_transposed_gemm(
    signal: np.ndarray,
    kernel_t: np.ndarray,
    shape: tuple[int, int, int, int],
    kernel_hw: tuple[int, int],
    out_hw: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """The adjoint from channel-major pieces: signal G×M'×(N·Ho·Wo), kernel_t G×(C'·kh·kw)×M' → N×(G·C')×H×W

    (``shape`` = (N, G·C', H, W); dilation 1): one GEMM per group over the batch, then :func:`col2im`."""
    cols = np.matmul(kernel_t, signal)  # G×(C'·kh·kw)×(N·L)
    return col2im(cols, shape, kernel_hw, out_hw, stride, pad)


def dilate_kernel(weight: np.ndarray, dilation: tuple[int, int]) -> np.ndarray:
    """A dilated kernel as an ordinary one with zeros between the taps."""
    if dilation == (1, 1):
        return weight
    m, cg, kh, kw = weight.shape
    dilated = np.zeros((m, cg, (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1), weight.dtype)
    dilated[:, :, :: dilation[0], :: dilation[1]] = weight
    return dilated


def correlate_transposed(
    signal: np.ndarray,
    weight: np.ndarray,
    input_hw: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    pad: tuple[int, int] = (0, 0),
    dilation: tuple[int, int] = (1, 1),
    group: int = 1,
) -> np.ndarray:
    """The adjoint of :func:`correlate`: out[n,c,y,x] = Σ_{m,i,j} s[n,m,ho,wo]·w[m,c,i,j] over the taps that
    read (y, x). signal: N×M×Ho×Wo → N×C×H×W; whatever lands on padding is discarded.

    One GEMM per group, Wᵀ·S over the whole batch (G×(Cg·kh·kw)×(N·Ho·Wo)), then :func:`col2im`.
    """
    n, m, ho, wo = signal.shape
    weight = dilate_kernel(weight, dilation)
    _, cg, kh, kw = weight.shape
    kernel_t = weight.reshape(group, m // group, cg * kh * kw).transpose(0, 2, 1)
    return correlate_transposed_gemm(
        channel_major(signal, group), kernel_t, (n, cg * group, *input_hw), (kh, kw), (ho, wo), stride, pad
    )


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
