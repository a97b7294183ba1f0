"""Convolution (Caffe semantics: cross-correlation, groups, padding, stride, dilation)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import _ratio_or_zero
from .base import DERIVED, check_shape, pair, require_blobs
from .linear import LinearLayer
from .windows import (
    adjoint_signal_gemm,
    batch_first,
    channel_major,
    correlate,
    correlate_transposed,
    correlate_transposed_gemm,
    depthwise_correlate,
    depthwise_correlate_transposed,
    dilate_kernel,
    im2col,
)


class Convolution(LinearLayer):
    """z[n,m] = Σ_{c in group(m), i, j} w[m,c,i,j]·x[n,c,h·sh+i·dh−ph, w·sw+j·dw−pw] + b[m].

    weight: M×(C/group)×kh×kw, bias: M. Input N×C×H×W → output N×M×Ho×Wo.
    """

    type = "Convolution"
    forward_caches = ("columns",)

    #: bytes of stacked (x⁺, x⁻) columns per block of positions in the mixed-sign α-β rule
    BLOCK_BYTES = 1 << 22

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.convolution_param
        if len(p.kernel_size) > 2 or len(p.stride) > 2 or len(p.pad) > 2 or len(p.dilation) > 2:
            raise ModelError(f"{self.describe()}: only 2-D convolution is supported")
        self.kernel = pair(p.kernel_size, p.kernel_h, p.kernel_w, 0)
        if min(self.kernel) <= 0:
            raise ModelError(f"{self.describe()}: kernel size must be positive")
        self.stride = pair(p.stride, p.stride_h, p.stride_w, 1)
        self.pad = pair(p.pad, p.pad_h, p.pad_w, 0)
        self.dilation = pair(p.dilation, 0, 0, 1)
        self.group = int(p.group) or 1
        self.num_output = int(p.num_output)
        if min(self.stride) < 1 or min(self.dilation) < 1:
            raise self.fail(f"stride {self.stride} and dilation {self.dilation} must be at least 1")
        if self.num_output < 1:
            raise self.fail("num_output must be at least 1")
        if self.num_output % self.group:
            raise ModelError(f"{self.describe()}: num_output {self.num_output} is not a multiple of group {self.group}")
        require_blobs(self, 2 if p.bias_term else 1)
        w = self.blobs[0]
        cin_group = w.size // (self.num_output * self.kernel[0] * self.kernel[1]) if w.size else 0
        self.weight = check_shape(self, "weight", w, (self.num_output, cin_group, *self.kernel))
        self.bias = check_shape(self, "bias", self.blobs[1], (self.num_output,)) if p.bias_term else None
        #: one group per input channel (MobileNet, ShuffleNet): the depthwise kernels of windows.py instead of
        #: one GEMM per group (forward, adjoint and the fused α-β forms)
        self.depthwise = self.group > 1 and cin_group == 1

    def output_shapes(self, bottoms):
        """N×C×H×W → N×M×Ho×Wo with Ho = (H + 2·ph − ((kh − 1)·dh + 1))//sh + 1 (and Wo so), at least 1."""
        shape = bottoms[0]
        self.check_input(shape)
        out = []
        for size, k, s, p, d in zip(shape[2:], self.kernel, self.stride, self.pad, self.dilation, strict=True):
            extent = (k - 1) * d + 1
            if size + 2 * p < extent:
                raise self.fail(f"the kernel's extent {extent} is larger than the padded input {size} + 2·{p}")
            out.append((size + 2 * p - extent) // s + 1)
        return [(shape[0], self.num_output, *out)]

    def check_input(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 4 or shape[1] != self.weight.shape[1] * self.group:
            raise ModelError(
                f"{self.describe()}: input shape {shape[1:]} does not fit weights {self.weight.shape} "
                f"with group {self.group}"
            )

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        self.check_input(x.shape)
        if self.depthwise:
            return depthwise_correlate(x, weight, self.stride, self.pad, self.dilation)
        return correlate(x, weight, self.stride, self.pad, self.dilation, self.group)

    def linear_transposed(self, signal: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        if self.depthwise:
            return depthwise_correlate_transposed(signal, weight, input_shape, self.stride, self.pad, self.dilation)
        return correlate_transposed(signal, weight, input_shape[2:], self.stride, self.pad, self.dilation, self.group)

    @property
    def flat_divisor(self) -> int:
        return self.kernel[0] * self.kernel[1]

    # -- fused blocks: a whole P×Q block of kernels in one GEMM per group ------------------------------------------
    def _block_kernel(self, weights: list[list[np.ndarray]]) -> np.ndarray:
        """The P×Q block as G×(P·Mg)×(Q·Cg·kh·kw) matrices (rows: part, output; columns: part, input, tap).

        Kept in :data:`DERIVED` while it fits (keyed by the identity of the weight arrays, which the rules reuse)."""
        flat = [w for row in weights for w in row]

        def make() -> np.ndarray:
            g = self.group
            m, cg, kh, kw = self.weight.shape
            p, q = len(weights), len(weights[0])
            block = np.empty((g, p, m // g, q, cg, kh, kw), np.float32)
            for i, row in enumerate(weights):  # P·Q copies of the weight, no per-element loop
                for j, w in enumerate(row):
                    block[:, i, :, j] = w.reshape(g, m // g, cg, kh, kw)
            return block.reshape(g, p * (m // g), q * cg * kh * kw)

        return DERIVED.get(("blocks", len(weights)), flat, make)

    # -- forward that keeps its columns, and the fused α-β rule that reuses them ------------------------------------
    def forward(self, bottoms):
        """z = W·x + b through im2col + one GEMM per group; the columns are kept for the relevance pass (the α-β
        rule multiplies the same columns by w⁺ and w⁻). For a 1×1 kernel over one image they are a view of x."""
        x = bottoms[0]
        if self.depthwise:  # no columns: the depthwise α-β form reads x directly
            return super().forward(bottoms)
        self.check_input(x.shape)
        n = x.shape[0]
        m, cg, kh, kw = self.weight.shape
        columns, (ho, wo) = im2col(x, (kh, kw), self.stride, self.pad, self.dilation, self.group)
        out = np.matmul(self.weight.reshape(self.group, m // self.group, cg * kh * kw), columns)
        z = batch_first(out.reshape(m, -1), n).reshape(n, m, ho, wo)
        if self.bias is not None:
            z += self.bias_view(self.bias, z.ndim)
        return [z], {"columns": columns}

    def weight_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(w⁺, w⁻) = (max(w, 0), min(w, 0)) (kept in :data:`DERIVED` while they fit)."""
        w = self.weight
        return DERIVED.get(("parts",), [w], lambda: (np.maximum(w, 0), np.minimum(w, 0)))

    def alpha_beta(self, x, relevance, alpha, beta, mixed, state=None):
        """The α-β rule (see :class:`lrp_cli.rules.AlphaBeta`) in the GEMM layout throughout, on the forward pass's
        im2col columns when ``state`` holds them (they are the columns of this very x).

        x ≥ 0: [z⁺; z⁻] = [w⁺; w⁻]·cols + [b⁺; b⁻] (one GEMM per group), s⁺ = α·R/z⁺, s⁻ = −β·R/z⁻ in place,
        R_in = x ⊙ [w⁺; w⁻]ᵀ·[s⁺; s⁻] (one GEMM per group and col2im).
        x of any sign (``mixed``): x⁺ and x⁻ as two blocks of columns,
        [z⁺; z⁻] = [[w⁺, w⁻]; [w⁻, w⁺]]·[cols⁺; cols⁻] + [b⁺; b⁻], R_in = x⁺ ⊙ (w⁺ᵀs⁺ + w⁻ᵀs⁻) + x⁻ ⊙ (w⁻ᵀs⁺ + w⁺ᵀs⁻).
        """
        if self.depthwise:
            return self._alpha_beta_depthwise(x, relevance, alpha, beta, mixed)
        columns = state.get("columns") if state else None
        return self._alpha_beta(x, relevance, alpha, beta, mixed, columns)

    def _alpha_beta(self, x, relevance, alpha, beta, mixed, columns):
        n, c, h, w = x.shape
        g = self.group
        m, cg = self.weight.shape[:2]
        mg = m // g
        ho, wo = relevance.shape[2:]
        w_pos, w_neg = self.weight_parts()
        weights = [[w_pos, w_neg], [w_neg, w_pos]] if mixed else [[w_pos], [w_neg]]
        if beta == 0:
            weights = weights[:1]
        p, q = len(weights), len(weights[0])
        kernel = self._block_kernel(weights)
        if columns is None:
            self.check_input(x.shape)
            columns, _ = im2col(x, self.kernel, self.stride, self.pad, self.dilation, g)
        if mixed:
            # the columns of the stacked input (x⁺, x⁻), per group the x⁺ rows then the x⁻ rows, made for a block
            # of positions at a time in one reused buffer of about BLOCK_BYTES (in cache for its GEMM; blocks of
            # positions are memory traffic, not a loop over pixels)
            k, length = columns.shape[1:]
            step = max(1, min(length, self.BLOCK_BYTES // (2 * k * columns.itemsize)))
            stacked = np.empty((g, 2, k, step), columns.dtype)
            totals = np.empty((g, p * mg, length), columns.dtype)
            for lo in range(0, length, step):
                hi = min(length, lo + step)
                part = stacked[..., : hi - lo]
                np.maximum(columns[..., lo:hi], 0, out=part[:, 0])
                np.minimum(columns[..., lo:hi], 0, out=part[:, 1])
                np.matmul(kernel, part.reshape(g, 2 * k, hi - lo), out=totals[..., lo:hi])
            totals = totals.reshape(g, p, mg, -1)
        else:
            totals = np.matmul(kernel, columns).reshape(g, p, mg, -1)
        r = channel_major(relevance, g)
        parts = [(np.maximum, alpha), (np.minimum, -beta)]
        for i in range(p):
            if self.bias is not None:
                totals[:, i] += parts[i][0](self.bias, 0).reshape(g, mg, 1)
            _ratio_or_zero(r, totals[:, i], parts[i][1])
        kh = (self.kernel[0] - 1) * self.dilation[0] + 1
        kw = (self.kernel[1] - 1) * self.dilation[1] + 1
        if self.dilation != (1, 1):
            kernel = dilate_kernel(kernel.reshape(g * p * mg, q * cg, *self.kernel), self.dilation)
            kernel = kernel.reshape(g, p * mg, -1)
        result = correlate_transposed_gemm(
            adjoint_signal_gemm(totals.reshape(g, p * mg, n, ho, wo), (kh, kw), self.stride),
            kernel.transpose(0, 2, 1),
            (n, g * q * cg, h, w),
            (kh, kw),
            (ho, wo),
            self.stride,
            self.pad,
        )
        if not mixed:
            result *= x
            return result
        result = result.reshape(n, g, 2, cg, h, w)
        out = result[:, :, 0].reshape(n, c, h, w) * np.maximum(x, 0)
        out += result[:, :, 1].reshape(n, c, h, w) * np.minimum(x, 0)
        return out

    def _alpha_beta_depthwise(self, x, relevance, alpha, beta, mixed):
        """The α-β rule of a depthwise convolution, with the parts (w⁺, w⁻) stacked as two kernels per channel so
        that x is read once per input part: [z⁺, z⁻] = dw(x, [w⁺, w⁻]) + [b⁺, b⁻] (mixed: dw(x⁺, [w⁺, w⁻]) +
        dw(x⁻, [w⁻, w⁺])), s⁺ = α·R/z⁺, s⁻ = −β·R/z⁻ in place, R_in = x ⊙ dwᵀ([s⁺, s⁻], [w⁺, w⁻]) (mixed:
        x⁺ ⊙ dwᵀ(s, [w⁺, w⁻]) + x⁻ ⊙ dwᵀ(s, [w⁻, w⁺])). dw, dwᵀ: :func:`depthwise_correlate` and its adjoint."""
        self.check_input(x.shape)
        parts = 2 if beta != 0 else 1
        w_pos, w_neg = self.weight_parts()

        def stacked(first, second):  # output channel o·parts + i: part i of output channel o
            return np.stack((first, second)[:parts], axis=1).reshape(-1, 1, *self.kernel)

        direct, crossed = stacked(w_pos, w_neg), stacked(w_neg, w_pos)
        geometry = (self.stride, self.pad, self.dilation)
        if mixed:
            x_pos, x_neg = np.maximum(x, 0), np.minimum(x, 0)
            totals = depthwise_correlate(x_pos, direct, *geometry)
            totals += depthwise_correlate(x_neg, crossed, *geometry)
        else:
            totals = depthwise_correlate(x, direct, *geometry)
        n, _, ho, wo = totals.shape
        split = totals.reshape(n, -1, parts, ho, wo)
        for i, (part, scale) in enumerate(((np.maximum, alpha), (np.minimum, -beta))[:parts]):
            if self.bias is not None:
                split[:, :, i] += part(self.bias, 0).reshape(1, -1, 1, 1)
            _ratio_or_zero(relevance, split[:, :, i], scale)
        if not mixed:
            result = depthwise_correlate_transposed(totals, direct, x.shape, *geometry)
            return result * x
        result = depthwise_correlate_transposed(totals, direct, x.shape, *geometry) * x_pos
        result += depthwise_correlate_transposed(totals, crossed, x.shape, *geometry) * x_neg
        return result

