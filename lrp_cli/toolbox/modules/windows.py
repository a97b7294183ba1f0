"""Sliding windows over NHWC float64 batches: the window view (im2col) and its adjoint (col2im).

The toolbox's layers are channels-last and have no padding, dilation or groups, so these are simpler than the
Caffe engine's NCHW helpers in :mod:`lrp_cli.layers.windows` (which also pad, dilate and group); the adjoint below
uses the same idea — one strided view and reduction per stride phase, no loop over pixels or kernel offsets.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ShapeError


def output_size(size: int, window: int, stride: int) -> int:
    """Valid windows along one axis: floor((size − window) / stride) + 1."""
    return (size - window) // stride + 1


def check_fits(x_shape: tuple, window: tuple[int, int], stride: tuple[int, int], layer: str) -> None:
    """Raise :class:`ShapeError` unless x_shape is N×H×W×D with at least one whole window and positive strides."""
    if len(x_shape) != 4:
        raise ShapeError(f"{layer}: input must be N x H x W x D (channels last), got shape {tuple(x_shape)}")
    if min(stride) < 1 or min(window) < 1:
        raise ShapeError(f"{layer}: window {tuple(window)} and stride {tuple(stride)} must be positive")
    if x_shape[1] < window[0] or x_shape[2] < window[1]:
        raise ShapeError(f"{layer}: input {x_shape[1]}x{x_shape[2]} is smaller than the window {window[0]}x{window[1]}")


def window_view(x: np.ndarray, window: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Read-only view N×Ho×Wo×h×w×D of x (N×H×W×D): view[n,i,j,a,b,c] = x[n, i·s0 + a, j·s1 + b, c]."""
    n, h, w, d = x.shape
    ho, wo = output_size(h, window[0], stride[0]), output_size(w, window[1], stride[1])
    sn, sh, sw, sd = x.strides
    return as_strided(
        x,
        shape=(n, ho, wo, window[0], window[1], d),
        strides=(sn, sh * stride[0], sw * stride[1], sh, sw, sd),
        writeable=False,
    )


def col2im(cols: np.ndarray, input_hw: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """The adjoint of :func:`window_view`: out[n, y, x, c] = Σ cols[n, i, j, a, b, c] over y = i·s0 + a, x = j·s1 + b.

    cols: N×Ho×Wo×h×w×D → N×H×W×D; positions no window covers get 0. Per stride phase (p, q) the taps
    a = p + s0·u, b = q + s1·v land on rows y = p + s0·r, x = q + s1·t with i = r − u, j = t − v: a sum along
    diagonals of the zero-padded columns, read through one strided view (loop over the s0·s1 phases only).
    """
    n, ho, wo, kh, kw, d = cols.shape
    s0, s1 = stride
    h, w = input_hw
    out = np.zeros((n, h, w, d), np.result_type(cols.dtype, np.float64))
    for p in range(min(s0, kh)):
        for q in range(min(s1, kw)):
            taps = cols[:, :, :, p::s0, q::s1, :]  # N×Ho×Wo×U×V×D
            nu, nv = taps.shape[3], taps.shape[4]
            rows, columns = ho + nu - 1, wo + nv - 1  # phase rows r = i + u reached by some window
            padded = np.zeros((n, ho + 2 * (nu - 1), wo + 2 * (nv - 1), nu, nv, d), out.dtype)
            padded[:, nu - 1 : nu - 1 + ho, nv - 1 : nv - 1 + wo] = taps
            st = padded.strides
            # diag[n, r, t, u, v, c] = padded[n, r − u + nu − 1, t − v + nv − 1, u, v, c]
            diag = as_strided(
                padded[:, nu - 1 :, nv - 1 :],
                shape=(n, rows, columns, nu, nv, d),
                strides=(st[0], st[1], st[2], st[3] - st[1], st[4] - st[2], st[5]),
                writeable=False,
            )
            target = out[:, p::s0, q::s1]
            rows, columns = min(rows, target.shape[1]), min(columns, target.shape[2])
            target[:, :rows, :columns] += diag[:, :rows, :columns].sum(axis=(3, 4))
    return out
