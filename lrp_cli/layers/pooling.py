"""Pooling: MAX and AVE with Caffe's windows (output size rounded up or down), padding and global pooling."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, Proportional, Rule, WinnerTakesAll
from .base import Layer, handles, pair
from .windows import Windows1D, pad_spatial, window_sums, window_sums_adjoint, window_view

MAX, AVE = 0, 1


class Pooling(Layer):
    """MAX: y_j = max of window j (argmax = first maximum in row-major scan; a window holding NaN gives NaN, won by
    its first NaN); AVE: y_j = Σ_window x / size_j.

    Relevance: MAX WinnerTakesAll, R_i = Σ_{j: argmax_j = i} R_j; AVE Proportional,
    R_i = Σ_{j ∋ i} x_i·R_j/s_j with s_j = Σ_{window j} x, where |s_j| < 1e-6 adds x_i instead (the original's rule).
    Gradient: MAX routes to the argmax; AVE spreads R_j/size_j over the window. N×C×H×W → N×C×Ho×Wo.
    """

    type = "Pooling"

    #: bytes per block of planes: window values in the MAX forward pass, float64 sums in its relevance
    BLOCK_BYTES = 1 << 21

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.pooling_param
        self.method = int(p.pool)
        if self.method not in (MAX, AVE):
            raise ModelError(f"{self.describe()}: only MAX and AVE pooling are supported")
        self.global_pooling = bool(p.global_pooling)
        self.kernel = pair(p.kernel_size, p.kernel_h, p.kernel_w, 0)
        self.stride = pair(p.stride, p.stride_h, p.stride_w, 1)
        self.pad = pair(p.pad, p.pad_h, p.pad_w, 0)
        if not self.global_pooling and min(self.kernel) <= 0:
            raise ModelError(f"{self.describe()}: kernel size must be positive")
        given = [getattr(p, f) for f in ("stride", "stride_h", "stride_w") if p.HasField(f)]
        if min(self.stride) < 1 or min(given, default=1) < 1:
            raise self.fail(f"stride {tuple(given) if given else self.stride} must be at least 1")
        if not self.global_pooling and any(pad >= k for pad, k in zip(self.pad, self.kernel, strict=True)):
            raise self.fail(f"pad {self.pad} must be smaller than the kernel {self.kernel} (as in Caffe)")
        self.ceil = self._rounds_up(p)

    def output_shapes(self, bottoms):
        """N×C×H×W → N×C×Ho×Wo (Caffe's window counts; 1×1 for global pooling)."""
        shape = bottoms[0]
        if len(shape) != 4:
            raise self.fail(f"needs a 4-D input, got shape {shape}")
        if self.global_pooling:
            return [(*shape[:2], 1, 1)]
        out = []
        for size, k, s, p in zip(shape[2:], self.kernel, self.stride, self.pad, strict=True):
            if size + 2 * p < k:
                raise self.fail(f"the kernel {k} is larger than the padded input {size} + 2·{p}")
            out.append(Windows1D.count_of(size, k, s, p, self.ceil))
        return [(*shape[:2], *out)]

    def _rounds_up(self, p) -> bool:
        """Whether the output size is rounded up: BVLC's ``round_mode`` (CEIL, the default, or FLOOR) or the forks'
        ``ceil_mode`` (true, the default, or false); a file giving both must give the same."""
        ceil_round = p.round_mode == p.CEIL
        if p.HasField("ceil_mode") and p.HasField("round_mode") and p.ceil_mode != ceil_round:
            raise ModelError(
                f"{self.describe()}: gives round_mode {p.RoundMode.Name(p.round_mode)} and ceil_mode "
                f"{str(p.ceil_mode).lower()}, which contradict each other"
            )
        return bool(p.ceil_mode) if p.HasField("ceil_mode") else ceil_round

    def windows(self, shape) -> tuple[Windows1D, Windows1D]:
        h, w = shape[2], shape[3]
        if self.global_pooling:
            return Windows1D.caffe(h, h, 1, 0), Windows1D.caffe(w, w, 1, 0)
        return (
            Windows1D.caffe(h, self.kernel[0], self.stride[0], self.pad[0], self.ceil),
            Windows1D.caffe(w, self.kernel[1], self.stride[1], self.pad[1], self.ceil),
        )

    def _sums(self, x, rows, cols):
        """Σ of x over every window (float64): a plain sum for global pooling, prefix sums otherwise."""
        if self.global_pooling:
            return x.sum(axis=(2, 3), dtype=np.float64, keepdims=True)
        return window_sums(x, rows, cols)

    def _spread(self, v, rows, cols, shape):
        """The adjoint of :meth:`_sums`: each input gets the Σ of v over the windows that contain it."""
        if self.global_pooling:
            return np.broadcast_to(v, shape)
        return window_sums_adjoint(v, rows, cols)

    def forward(self, bottoms):
        x = bottoms[0]
        rows, cols = self.windows(x.shape)
        if self.method == AVE:
            sizes = rows.size[:, None] * cols.size[None, :]
            return [(self._sums(x, rows, cols) / sizes).astype(x.dtype)], {"windows": (rows, cols)}
        n, c, h, w = x.shape
        kh, kw = (h, w) if self.global_pooling else self.kernel
        sh, sw = (1, 1) if self.global_pooling else self.stride
        ph, pw = (0, 0) if self.global_pooling else self.pad
        ho, wo = rows.count, cols.count
        xp = pad_spatial(
            x, ph, max(0, (ho - 1) * sh + kh - ph - h), pw, max(0, (wo - 1) * sw + kw - pw - w), value=-np.inf
        )
        # the window values tap-major (kh·kw)×planes×Ho×Wo: long contiguous rows to copy and to reduce over; in
        # blocks of planes (images × channels) through one reused buffer of about BLOCK_BYTES, which stays in cache
        # for the reductions below (memory traffic, not a loop over pixels or kernel offsets)
        planes = xp.reshape(1, n * c, *xp.shape[2:])
        taps = np.arange(kh * kw)
        rank_type = np.uint8 if kh * kw < 256 else np.int64
        ranks = (kh * kw - taps).astype(rank_type).reshape(-1, 1, 1, 1)
        block = max(1, min(n * c, self.BLOCK_BYTES // (kh * kw * ho * wo * x.itemsize)))
        patches = np.empty((kh, kw, block, ho, wo), x.dtype)
        y = np.empty((n * c, ho, wo), x.dtype)
        offset = np.empty((n * c, ho, wo), np.int64)
        for lo in range(0, n * c, block):
            hi = min(n * c, lo + block)
            view = window_view(planes[:, lo:hi], (kh, kw), (sh, sw), (1, 1), (ho, wo))[0].transpose(1, 2, 0, 3, 4)
            part = patches[:, :, : hi - lo]
            part[...] = view
            part = part.reshape(kh * kw, hi - lo, ho, wo)
            np.max(part, axis=0, out=y[lo:hi])
            # first maximum in row-major order of the window: the largest of (kh·kw − tap) over the taps equal to y
            first = (part == y[lo:hi]).view(np.uint8) * ranks
            offset[lo:hi] = kh * kw - first.max(axis=0).astype(np.int64)
            # a window holding NaN has the maximum NaN, which equals no tap: its winner is the first NaN (an image
            # whose values overflowed is reported by the explainer; it must not break the others of its batch)
            lost = offset[lo:hi] == kh * kw
            if lost.any():
                first_nan = (np.isnan(part).view(np.uint8) * ranks).max(axis=0)
                offset[lo:hi][lost] = kh * kw - first_nan[lost].astype(np.int64)
        y = y.reshape(n, c, ho, wo)
        offset = offset.reshape(n, c, ho, wo)
        # per-plane index of the winner: window origin + the tap's offset within the window
        origin = (np.arange(ho)[:, None] * sh - ph) * w + (np.arange(wo)[None, :] * sw - pw)
        return [y], {"argmax": origin + (taps // kw * w + taps % kw)[offset], "windows": (rows, cols)}

    def _to_argmax(self, saved, r):
        """R_i = Σ of R_j over the windows j whose winner is i: float64 sums (bincount), in blocks of planes of
        about BLOCK_BYTES so that the sums stay in cache (each plane's bins, and their order, as for one call)."""
        x = saved.bottoms[0]
        n, c, h, w = x.shape
        argmax = saved.extra["argmax"].reshape(n * c, -1)
        weights = r.reshape(n * c, -1)
        out = np.empty((n * c, h * w), x.dtype)
        block = max(1, min(n * c, self.BLOCK_BYTES // (8 * h * w)))
        planes = np.arange(block, dtype=np.int64)[:, None] * (h * w)
        for lo in range(0, n * c, block):
            hi = min(n * c, lo + block)
            index = (argmax[lo:hi] + planes[: hi - lo]).ravel()
            sums = np.bincount(index, weights=weights[lo:hi].ravel(), minlength=(hi - lo) * h * w)
            out[lo:hi] = sums.reshape(hi - lo, h * w)
        return out.reshape(x.shape)

    def supports(self, rule: Rule) -> bool:
        """MAX pooling takes WinnerTakesAll, AVE pooling Proportional; both the Gradient."""
        wanted = WinnerTakesAll if self.method == MAX else Proportional
        return isinstance(rule, (wanted, Gradient))

    @handles(WinnerTakesAll, reads=("state",))
    def _winner_takes_all(self, rule, saved, top_relevance):
        return [self._to_argmax(saved, top_relevance[0])]

    @handles(Proportional, reads=("bottoms", "state"))
    def _proportional(self, rule, saved, top_relevance):
        r = top_relevance[0]
        x = saved.bottoms[0]
        rows, cols = saved.extra["windows"]
        sums = self._sums(x, rows, cols)
        small = np.abs(sums) < 1e-6
        ratio = np.where(small, 0.0, r / np.where(small, 1.0, sums)) + small
        return [(x * self._spread(ratio, rows, cols, x.shape)).astype(x.dtype)]

    @handles(Gradient, reads=("state",))
    def _gradient(self, rule, saved, top_relevance):
        r = top_relevance[0]
        if self.method == MAX:
            return [self._to_argmax(saved, r)]
        rows, cols = saved.extra["windows"]
        sizes = rows.size[:, None] * cols.size[None, :]
        return [self._spread(r / sizes, rows, cols, saved.bottoms[0].shape).astype(r.dtype)]
