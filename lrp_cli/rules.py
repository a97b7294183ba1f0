"""Relevance rules: what one backward step through a layer does, as typed values (no layer names, no indices).

Which layer gets which rule is decided in one place, :mod:`lrp_cli.composite`; how a layer applies a rule is the
layer's (each layer type registers one method per rule type it supports, see :func:`lrp_cli.layers.base.handles`).

Rules of linear layers (convolution, inner product, Eltwise SUM, BatchNorm/Scale) share one *generic step*
(:meth:`LinearRule.relevance`), written with modifiers as in the LRP literature. With input x (N×…), weights W,
bias b and output relevance R:

    pairs (ã_k, W̃_k) = modified inputs and weights,   z̃ = Σ_k W̃_k·ã_k + b̃,   s = R ⊘ z̃,   R_in = Σ_k ã_k ⊙ W̃_kᵀ·s

where ⊘ is the rule's division (how it treats z̃ = 0) and ã = None stands for a vector of ones. A rule overrides
only the modifiers it needs. The α-β rule is the sum of two such steps; convolution and inner product compute it
with fused kernels in their GEMM layout instead (:meth:`lrp_cli.layers.linear.LinearLayer.alpha_beta`), which the
tests hold to the same literal formula.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from .errors import RelevanceError

if TYPE_CHECKING:
    from .layers.linear import LinearLayer


class Rule:
    """Base of all rules. ``str(rule)`` is its short description (``--show-rules``).

    ``uses_forward_caches``: whether the layer's step reads what its forward pass cached only to save work (the
    im2col columns of a convolution, :attr:`lrp_cli.layers.base.Layer.forward_caches`); when not, the forward
    pass frees them at once."""

    label = ""
    uses_forward_caches: ClassVar[bool] = False

    def __str__(self) -> str:
        return self.label


# -- rules of non-linear and structural layers ----------------------------------------------------------------------
@dataclass(frozen=True)
class Pass(Rule):
    """Relevance passes through unchanged, following the layer's structure (identity, reshape, slices of a concat,
    the sum over the copies of a split). The LRP rule of ReLU, Dropout, Flatten, Reshape, Sigmoid, TanH, PReLU."""

    label = "pass"


@dataclass(frozen=True)
class Folded(Pass):
    """A BatchNorm or Scale layer folded into the linear layer ``into`` (see :mod:`lrp_cli.canonize`)."""

    into: str = ""

    def __str__(self) -> str:
        return f"folded into {self.into}"


@dataclass(frozen=True)
class Gradient(Rule):
    """The exact derivative of the layer (formulas 11 and 99: the score-weighted gradient)."""

    label = "gradient"


@dataclass(frozen=True)
class Positive(Rule):
    """ReLU passes max(R, 0) (deconvnet, Zeiler & Fergus; formula 26)."""

    label = "positive (deconvnet)"


@dataclass(frozen=True)
class Guided(Rule):
    """ReLU passes max(R, 0)·[x > 0] (guided backprop; formula 166)."""

    label = "guided"


@dataclass(frozen=True)
class WinnerTakesAll(Rule):
    """MAX pooling / Eltwise MAX: each output's relevance goes to its first maximal input."""

    label = "winner-takes-all"


@dataclass(frozen=True)
class Proportional(Rule):
    """AVE pooling: R_i = Σ_{windows j ∋ i} x_i·R_j/s_j with s_j = Σ_window x (the original's rule, §5.4.6)."""

    label = "proportional"


@dataclass(frozen=True)
class LrnRule(Rule):
    """The original's relevance rule for local response normalisation (§5.4.7)."""

    label = "lrn (the original's rule)"


@dataclass(frozen=True)
class Probabilities(Rule):
    """Softmax: the relevance becomes the layer's output, the probabilities, whatever came in (the original's)."""

    label = "probabilities"


# -- rules of linear layers ------------------------------------------------------------------------------------------
def _ratio_or_zero(relevance: np.ndarray, total: np.ndarray, scale: np.float32) -> np.ndarray:
    """scale·(R / total) where total ≠ 0, else 0; computed in place in ``total`` (which it overwrites).

    For the α-β sums z⁺ ≥ 0 and z⁻ ≤ 0 by construction, so "z⁺ > 0" and "z⁻ < 0" are exactly "≠ 0"."""
    zero = total == 0
    if zero.any():
        total[zero] = np.inf  # R / ±inf = 0 for finite R
    np.divide(relevance, total, out=total)
    if scale != 1:
        total *= scale
    return total


class LinearRule(Rule):
    """A rule of a linear layer z = W·x + b, as one generic step with modifiers (see the module docstring).

    ``reads``: whether the step reads the values of the input x and of the forward pass's output z (the forward
    pass keeps only those)."""

    reads: ClassVar[tuple[str, ...]] = ("x", "z")

    def pairs(self, x: np.ndarray, weight: np.ndarray) -> list[tuple[np.ndarray | None, np.ndarray]]:
        """The modified (input, weight) pairs; an input of None stands for ones."""
        return [(x, weight)]

    def modified_bias(self, bias: np.ndarray) -> np.ndarray:
        return bias

    def divide(self, relevance: np.ndarray, total: np.ndarray) -> np.ndarray:
        """s = R ⊘ z̃; by default 0 where z̃ = 0 (may overwrite ``total``)."""
        return _ratio_or_zero(relevance, total, np.float32(1))

    def modified_forward(self, layer: LinearLayer, pairs) -> np.ndarray:
        """z̃ = Σ_k W̃_k·ã_k + b̃ (rules with an input of ones override :meth:`signal` instead)."""
        total = None
        for a, w in pairs:
            part = layer.linear(a, w)
            total = part if total is None else total + part
        if layer.bias is not None:
            total += layer.bias_view(self.modified_bias(layer.bias), total.ndim)
        return total

    def signal(self, layer: LinearLayer, pairs, z: np.ndarray, relevance: np.ndarray) -> np.ndarray:
        """s = R ⊘ z̃, the modified forward pass (``z`` is the layer's own output)."""
        return self.divide(relevance, self.modified_forward(layer, pairs))

    @staticmethod
    def spread(layer: LinearLayer, pairs, signal: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """R_in = Σ_k ã_k ⊙ W̃_kᵀ·s, of the input's ``shape``."""
        result = None
        for a, w in pairs:
            part = layer.linear_transposed(signal, w, shape)
            if a is not None:
                part *= a
            result = part if result is None else result + part
        return result

    def relevance(
        self, layer: LinearLayer, x: np.ndarray, z: np.ndarray, relevance: np.ndarray, state: dict | None = None
    ) -> np.ndarray:
        """The generic step: R_in = Σ_k ã_k ⊙ W̃_kᵀ·s. x: the layer's input, z: its output (both N×…), relevance:
        N× the output shape, ``state``: what the layer's forward pass kept (for its fused kernels)."""
        pairs = self.pairs(x, layer.weight)
        return self.spread(layer, pairs, self.signal(layer, pairs, z, relevance), x.shape)


@dataclass(frozen=True)
class Epsilon(LinearRule):
    """ε-rule: R_i = x_i·Σ_j w_ij·R_j/d_j with d_j = z_j + ε·sign(z_j), and d_j = 1 where z_j == 0.

    z is the forward pass's own output (bias included: bias and ε absorb relevance). "z == 0 → no division" is the
    original's behaviour.
    """

    epsilon: float
    reads: ClassVar[tuple[str, ...]] = ("x", "z")

    def __str__(self) -> str:
        return f"epsilon({self.epsilon:g})"

    def signal(self, layer, pairs, z, relevance):
        divisor = np.copysign(np.float32(self.epsilon), z).astype(z.dtype, copy=False)
        divisor += z
        np.putmask(divisor, z == 0, 1)  # z = ±0: not divided (R / 1 = R exactly)
        out = divisor if divisor.dtype == relevance.dtype else np.empty_like(relevance)
        return np.divide(relevance, divisor, out=out)  # in place: 40% faster than a divide with where=


@dataclass(frozen=True)
class _AlphaBetaPart(LinearRule):
    """One half of the α-β rule: the positive (sign +1) or negative (−1) contributions x_i·w_ij and bias part,
    z^± = Σ_i (x_i w_ij)^± + b^±, divided with 0 where z^± = 0 and scaled by α (or −β)."""

    sign: int
    scale: float
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def pairs(self, x, weight):
        w_pos, w_neg = np.maximum(weight, 0), np.minimum(weight, 0)
        x_pos, x_neg = np.maximum(x, 0), np.minimum(x, 0)
        if self.sign > 0:
            return [(x_pos, w_pos), (x_neg, w_neg)]
        return [(x_pos, w_neg), (x_neg, w_pos)]

    def modified_bias(self, bias):
        return np.maximum(bias, 0) if self.sign > 0 else np.minimum(bias, 0)

    def divide(self, relevance, total):
        return _ratio_or_zero(relevance, total, np.float32(self.scale))


def alpha_beta_generic(layer: LinearLayer, x: np.ndarray, relevance: np.ndarray, alpha, beta,
                       conserving: bool = False) -> np.ndarray:
    """The α-β rule as two generic steps, α·(z⁺ part) − β·(z⁻ part): for linear layers without fused kernels.

    ``conserving``: where one part is empty (z⁻ = 0, or z⁺ = 0) the other takes all the relevance (scale 1 instead
    of α or −β), so that Σ R_in = R wherever z⁺ or z⁻ is non-zero, and |R_in| ≤ α·|R| always."""
    positive, negative = _AlphaBetaPart(+1, float(alpha)), _AlphaBetaPart(-1, -float(beta))
    if not conserving:
        z = None  # the parts compute their own modified forward passes
        result = positive.relevance(layer, x, z, relevance)
        if beta > 0:
            result += negative.relevance(layer, x, z, relevance)
        return result
    pairs = positive.pairs(x, layer.weight), negative.pairs(x, layer.weight)
    z_pos, z_neg = positive.modified_forward(layer, pairs[0]), negative.modified_forward(layer, pairs[1])
    scale_pos = np.where(z_neg == 0, np.float32(1), np.float32(alpha)).astype(relevance.dtype)
    scale_neg = np.where(z_pos == 0, np.float32(1), -np.float32(beta)).astype(relevance.dtype)
    result = LinearRule.spread(layer, pairs[0], _ratio_or_zero(relevance * scale_pos, z_pos, np.float32(1)), x.shape)
    result += LinearRule.spread(layer, pairs[1], _ratio_or_zero(relevance * scale_neg, z_neg, np.float32(1)), x.shape)
    return result


@dataclass(frozen=True)
class AlphaBeta(LinearRule):
    """α-β rule with α = 1 + β (the original's "4 cases"):

    z⁺_j = Σ_i max(0, x_i w_ij) + max(0, b_j),  z⁻_j = Σ_i min(0, x_i w_ij) + min(0, b_j)
    R_i = Σ_j [α·max(0, x_i w_ij)/z⁺_j − β·min(0, x_i w_ij)/z⁻_j]·R_j, terms with z⁺ ≤ 0 or z⁻ ≥ 0 dropped.
    The bias sits only in the denominators; nothing is handed back to it. The layer computes it
    (:meth:`~lrp_cli.layers.linear.LinearLayer.alpha_beta`): fused kernels for convolution and inner product,
    :func:`alpha_beta_generic` otherwise.
    """

    beta: float
    conserving: bool = False  # see alpha_beta_generic: for sums (Eltwise), where one part is often empty
    reads: ClassVar[tuple[str, ...]] = ("x",)
    uses_forward_caches: ClassVar[bool] = True  # the fused kernels multiply the forward pass's columns again

    def __post_init__(self):
        if not self.beta >= 0:
            raise RelevanceError(f"alphabeta_beta must be non-negative (got {self.beta})", key="alphabeta_beta")

    def __str__(self) -> str:
        return f"alpha-beta(alpha={1 + self.beta:g}, beta={self.beta:g}{', conserving' if self.conserving else ''})"

    def relevance(self, layer, x, z, relevance, state=None):
        # The computation path is chosen per image (an input with negative values needs the x⁻ terms), so that an
        # image's result never depends on the other images of its batch.
        beta = np.float32(self.beta)
        alpha = np.float32(1) + beta
        if self.conserving:  # no fused kernels: the sums it serves are cheap
            return alpha_beta_generic(layer, x, relevance, alpha, beta, conserving=True)
        negative = (x < 0).reshape(x.shape[0], -1).any(axis=1)
        if negative.any() and not negative.all():
            result = np.empty_like(x)
            for subset in (negative, ~negative):
                result[subset] = layer.alpha_beta(x[subset], relevance[subset], alpha, beta, bool(subset is negative))
            return result
        return layer.alpha_beta(x, relevance, alpha, beta, bool(negative.all()), state)


@dataclass(frozen=True)
class Flat(LinearRule):
    """Flat rule: R_i = Σ_{j reading i} R_j / D, with D = the layer's ``flat_divisor``.

    Convolution: D = k_h·k_w (the original's divisor; multiplies the total by C_in/group);
    inner product: D = K, the full fan-in (conservative). Independent of x and w.
    """

    label = "flat"
    reads: ClassVar[tuple[str, ...]] = ()

    def pairs(self, x, weight):
        return [(None, np.ones_like(weight))]

    def signal(self, layer, pairs, z, relevance):
        return relevance / np.float32(layer.flat_divisor)


@dataclass(frozen=True)
class WSquare(LinearRule):
    """w²-rule: R_i = Σ_j w_ij²/S_j·R_j with S_j = Σ over the whole kernel (or fan-in) of output j of w²."""

    label = "w^2"
    reads: ClassVar[tuple[str, ...]] = ()

    def pairs(self, x, weight):
        return [(None, weight * weight)]

    def signal(self, layer, pairs, z, relevance):
        squares = pairs[0][1]
        sums = squares.reshape(squares.shape[0], -1).sum(axis=1)
        scale = np.where(sums > 0, 1 / np.where(sums > 0, sums, 1), 0).astype(np.float32)
        return relevance * layer.bias_view(scale, relevance.ndim)


@dataclass(frozen=True)
class Transposed(LinearRule):
    """R_i = Σ_j w_ij·R_j: the transposed weights alone (deconvnet / guided backprop step, and the gradient)."""

    label = "transposed"
    reads: ClassVar[tuple[str, ...]] = ()

    def pairs(self, x, weight):
        return [(None, weight)]

    def signal(self, layer, pairs, z, relevance):
        return relevance


@dataclass(frozen=True, eq=False)
class ZBox(LinearRule):
    """z^B rule for the input layer, with per-pixel bounds l ≤ x ≤ h (l = −mean, h = 255 − mean):

    Z_j = Σ_i (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) + max(0, b_j)
    R_i = (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)·R_j/Z_j summed over j; undivided where |Z_j| ≤ 1e-12.
    Computed as the pairs (x − l, w⁺) and (x − h, w⁻) (the same sum, w = w⁺ + w⁻): every term is ≥ 0 for
    l ≤ x ≤ h, so nothing cancels in float32. The bounds belong to the images: the explainer binds them per batch
    (:meth:`with_bounds`); the composite holds the rule without them.
    """

    low: np.ndarray | None = None
    high: np.ndarray | None = None
    reads: ClassVar[tuple[str, ...]] = ("x",)

    def __str__(self) -> str:
        return "z^B(l=-mean, h=255-mean)"

    def with_bounds(self, low: np.ndarray, high: np.ndarray) -> ZBox:
        return ZBox(low, high)

    def pairs(self, x, weight):
        if self.low is None:
            raise RelevanceError("the z^B rule needs the image mean (not available for preprocessed .npy inputs)")
        if self.low.shape != x.shape:
            raise RelevanceError(f"the z^B rule needs input bounds of shape {x.shape}, got {self.low.shape}")
        return [(x - self.low, np.maximum(weight, 0)), (x - self.high, np.minimum(weight, 0))]

    def modified_bias(self, bias):
        return np.maximum(bias, 0)

    def divide(self, relevance, total):
        big = np.abs(total) > 1e-12
        return np.where(big, relevance / np.where(big, total, np.float32(1)), relevance)
