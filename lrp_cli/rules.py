"""Relevance rules for linear layers, and the formula table of the original demonstrator (as data).

Notation: input x (N×…), weights w (a linear map W with adjoint Wᵀ), bias b, pre-activation z = W·x + b,
relevance R at the output. ``op`` is a :class:`~lrp_cli.layers.linear.LinearLayer`; ``op.linear(x, w)``
is W·x without bias and ``op.linear_transposed(s, w, shape)`` is Wᵀ·s. A rule knows nothing of layer names.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RelevanceError


class LinearRule:
    """One relevance step through a linear layer: R_in = rule(op, x, z, R), shapes of x and z."""

    def relevance(self, op, x: np.ndarray, z: np.ndarray, relevance: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def _bias(op, ndim: int, part=None) -> np.ndarray | float:
    if op.bias is None:
        return np.float32(0)
    b = op.bias if part is None else part(op.bias)
    return op.bias_view(b, ndim)


def _positive(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0)


def _negative(a: np.ndarray) -> np.ndarray:
    return np.minimum(a, 0)


# The optional fused op methods (see lrp_cli.layers.linear.LinearLayer), with fallbacks for ops without them.


def _blocks(op, xs: list[np.ndarray], weights: list[list[np.ndarray]]) -> list[np.ndarray]:
    """out_p = Σ_q W_pq·x_q (no bias)."""
    return [sum(op.linear(x, w) for x, w in zip(xs, row, strict=True)) for row in weights]


def _transposed_blocks(op, signals: list[np.ndarray], weights: list[list[np.ndarray]], shape) -> list[np.ndarray]:
    """r_q = Σ_p W_pqᵀ·s_p."""
    return [
        sum(op.linear_transposed(s, row[q], shape) for s, row in zip(signals, weights, strict=True))
        for q in range(len(weights[0]))
    ]


def _ratio_or_zero(relevance: np.ndarray, total: np.ndarray, scale: np.float32) -> np.ndarray:
    """scale·(R / total) where total ≠ 0, else 0; computed in place in ``total`` (which it overwrites).

    For the α-β sums z⁺ ≥ 0 and z⁻ ≤ 0 by construction, so "z⁺ > 0" and "z⁻ < 0" are exactly "≠ 0"."""
    zero = total == 0
    has_zero = bool(zero.any())
    if has_zero:
        total[zero] = np.inf  # R / ±inf = 0 for finite R
    np.divide(relevance, total, out=total)
    if scale != 1:
        total *= scale
    return total


@dataclass(frozen=True)
class Epsilon(LinearRule):
    """ε-rule: R_i = x_i·Σ_j w_ij·R_j/d_j with d_j = z_j + ε·sign(z_j), and d_j = 1 where z_j == 0.

    z includes the bias; bias and ε absorb relevance. ("z == 0 → no division" is the original's behaviour.)
    """

    epsilon: float

    def relevance(self, op, x, z, relevance):
        eps = np.float32(self.epsilon)
        divisor = z + np.copysign(eps, z).astype(z.dtype, copy=False)  # z = ±0 is not divided (below)
        signal = relevance.copy()
        np.divide(relevance, divisor, out=signal, where=z != 0)
        coefficient = op.linear_transposed(signal, op.weight, x.shape)
        coefficient *= x
        return coefficient


@dataclass(frozen=True)
class AlphaBeta(LinearRule):
    """α-β rule with α = 1 + β (the original's "4 cases"):

    z⁺_j = Σ_i max(0, x_i w_ij) + max(0, b_j),  z⁻_j = Σ_i min(0, x_i w_ij) + min(0, b_j)
    R_i = Σ_j [α·max(0, x_i w_ij)/z⁺_j − β·min(0, x_i w_ij)/z⁻_j]·R_j, terms with z⁺ ≤ 0 or z⁻ ≥ 0 dropped.
    The bias sits only in the denominators; nothing is handed back to it.
    """

    beta: float

    def relevance(self, op, x, z, relevance):
        # Computed as blocks over the input parts (x⁺, x⁻) and output parts (z⁺, z⁻):
        #   z⁺ = w⁺·x⁺ + w⁻·x⁻ + b⁺,  z⁻ = w⁻·x⁺ + w⁺·x⁻ + b⁻   (one stacked GEMM),
        #   s⁺ = α·R/z⁺, s⁻ = −β·R/z⁻,  R = x⁺·(w⁺ᵀs⁺ + w⁻ᵀs⁻) + x⁻·(w⁻ᵀs⁺ + w⁺ᵀs⁻)   (one stacked adjoint GEMM).
        # x⁻ = 0 (ReLU outputs, pooled ReLU outputs) drops the second column; β = 0 drops the second row.
        # The computation path is chosen per image (an input with negative values needs the x⁻ column), so that
        # an image's result never depends on the other images of its batch.
        negative = (x < 0).reshape(x.shape[0], -1).any(axis=1)
        if negative.any() and not negative.all():
            result = np.empty_like(x)
            for subset in (negative, ~negative):
                result[subset] = self.relevance(op, x[subset], z[subset], relevance[subset])
            return result
        beta = np.float32(self.beta)
        alpha = np.float32(1) + beta
        mixed = bool(negative.all())
        fused = getattr(op, "alpha_beta_nonnegative", None)
        if fused is not None and not mixed:
            return fused(x, relevance, alpha, beta)
        fused_mixed = getattr(op, "alpha_beta_mixed", None)
        if fused_mixed is not None and mixed:
            return fused_mixed(x, relevance, alpha, beta)
        w_pos, w_neg = op.weight_parts()
        if mixed:
            xs = [_positive(x), _negative(x)]
            weights = [[w_pos, w_neg], [w_neg, w_pos]]
        else:
            xs = [x]
            weights = [[w_pos], [w_neg]]
        if beta == 0:
            weights = weights[:1]
        totals = _blocks(op, xs, weights)
        z_pos = totals[0]
        if op.bias is not None:
            z_pos += _bias(op, z_pos.ndim, _positive)
        signals = [_ratio_or_zero(relevance, z_pos, alpha)]
        if beta > 0:
            z_neg = totals[1]
            if op.bias is not None:
                z_neg += _bias(op, z_neg.ndim, _negative)
            signals.append(_ratio_or_zero(relevance, z_neg, -beta))
        coefficients = _transposed_blocks(op, signals, weights, x.shape)
        result = coefficients[0]
        result *= xs[0]
        if len(xs) > 1:
            coefficients[1] *= xs[1]
            result += coefficients[1]
        return result


@dataclass(frozen=True)
class Flat(LinearRule):
    """Flat rule: R_i = Σ_{j reading i} R_j / D, with D = op.flat_divisor.

    Convolution: D = k_h·k_w (the original's divisor; multiplies the total by C_in/group);
    inner product: D = K, the full fan-in (conservative). Independent of x and w.
    """

    def relevance(self, op, x, z, relevance):
        ones = np.ones_like(op.weight)
        return op.linear_transposed(relevance / np.float32(op.flat_divisor), ones, x.shape)


@dataclass(frozen=True)
class WSquare(LinearRule):
    """w²-rule: R_i = Σ_j w_ij²/S_j·R_j with S_j = Σ over the whole kernel (or fan-in) of output j of w²."""

    def relevance(self, op, x, z, relevance):
        squares = op.weight * op.weight
        sums = squares.reshape(squares.shape[0], -1).sum(axis=1)
        scale = np.where(sums > 0, 1 / np.where(sums > 0, sums, 1), 0).astype(np.float32)
        return op.linear_transposed(relevance * op.bias_view(scale, relevance.ndim), squares, x.shape)


@dataclass(frozen=True)
class Transposed(LinearRule):
    """R_i = Σ_j w_ij·R_j: the transposed weights alone (deconvnet / guided backprop step, and the gradient)."""

    def relevance(self, op, x, z, relevance):
        return op.linear_transposed(relevance, op.weight, x.shape)


@dataclass(frozen=True, eq=False)
class ZBox(LinearRule):
    """z^B rule for the input layer, with per-pixel bounds l ≤ x ≤ h (l = −mean, h = 255 − mean):

    Z_j = Σ_i (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij) + max(0, b_j)
    R_i = (x_i w_ij − l_i w⁺_ij − h_i w⁻_ij)·R_j/Z_j summed over j; undivided where |Z_j| ≤ 1e-12.
    Computed as (x − l)·w⁺ + (x − h)·w⁻ (the same sum, w = w⁺ + w⁻): every term is ≥ 0 for l ≤ x ≤ h, so nothing
    cancels in float32.
    """

    low: np.ndarray
    high: np.ndarray

    def relevance(self, op, x, z, relevance):
        if self.low.shape != x.shape:
            raise RelevanceError(f"the z^B rule needs input bounds of shape {x.shape}, got {self.low.shape}")
        w_pos, w_neg = _positive(op.weight), _negative(op.weight)
        above_low, below_high = x - self.low, x - self.high
        total = op.linear(above_low, w_pos) + op.linear(below_high, w_neg)
        total += _bias(op, total.ndim, _positive)
        big = np.abs(total) > 1e-12
        signal = np.where(big, relevance / np.where(big, total, np.float32(1)), relevance)
        return above_low * op.linear_transposed(signal, w_pos, x.shape) + below_high * op.linear_transposed(
            signal, w_neg, x.shape
        )


# ---------------------------------------------------------------------------------------------------------------
# The formula table (spec §5.5)


@dataclass(frozen=True)
class LinearChoice:
    """Which rule a convolution or inner-product layer gets, by its Caffe layer index.

    Checked in this order: ``at_first`` (index == firstlayerindex), ``at_or_below_aux`` (index ≤ aux),
    ``above_fc6`` (index > the fc6 index, 15 in CaffeNet), then ``default``.
    Rule names: epsilon, alphabeta (configured β), alphabeta_beta0, alphabeta_beta1, flat, wsquare, zbox,
    transposed.
    """

    default: str
    at_first: str | None = None
    at_or_below_aux: str | None = None
    above_fc6: str | None = None


@dataclass(frozen=True)
class Formula:
    """One ``relpropformulatype``: the rules of linear layers, the ReLU mode, and the gradient variants."""

    description: str
    convolution: LinearChoice
    inner_product: LinearChoice
    relu: str = "lrp"
    gradient: bool = False  # 11 and 99: the exact gradient of the score-weighted output
    l2_norm: bool = False  # 99: per-pixel L2 norm over the channels

    def rule_names(self) -> set[str]:
        names = set()
        for choice in (self.convolution, self.inner_product):
            names.update(n for n in vars(choice).values() if n)
        return names

    @property
    def needs_aux(self) -> bool:
        return any(c.at_or_below_aux for c in (self.convolution, self.inner_product))


_HIGH_LOW = LinearChoice("alphabeta_beta1", above_fc6="alphabeta_beta0")
_GRADIENT = LinearChoice("transposed")

FORMULAS: dict[int, Formula] = {
    0: Formula("epsilon-LRP", LinearChoice("epsilon"), LinearChoice("epsilon")),
    2: Formula("alpha-beta-LRP, alpha = 1 + beta", LinearChoice("alphabeta"), LinearChoice("alphabeta")),
    6: Formula("alpha-beta + z^B on the first layer", LinearChoice("alphabeta", at_first="zbox"), _HIGH_LOW),
    8: Formula("epsilon + z^B on the first layer", LinearChoice("epsilon", at_first="zbox"), _HIGH_LOW),
    11: Formula("gradient x score", _GRADIENT, _GRADIENT, relu="gradient", gradient=True),
    18: Formula(
        "z^B first layer, alpha-beta (beta 1 up to fc6, 0 above)",
        LinearChoice("alphabeta_beta1", at_first="zbox", above_fc6="alphabeta_beta0"),
        _HIGH_LOW,
    ),
    22: Formula("alpha-beta, beta 1 up to fc6, 0 above", _HIGH_LOW, _HIGH_LOW),
    26: Formula("deconvnet (Zeiler)", LinearChoice("transposed"), LinearChoice("transposed"), relu="positive"),
    54: Formula(
        "epsilon, flat at and below aux",
        LinearChoice("epsilon", at_or_below_aux="flat"),
        LinearChoice("epsilon", at_or_below_aux="flat"),
    ),
    56: Formula(
        "epsilon, w^2 at and below aux",
        LinearChoice("epsilon", at_or_below_aux="wsquare"),
        LinearChoice("epsilon", at_or_below_aux="wsquare"),
    ),
    58: Formula(
        "alpha-beta, flat at and below aux",
        LinearChoice("alphabeta", at_or_below_aux="flat"),
        LinearChoice("alphabeta", at_or_below_aux="flat"),
    ),
    60: Formula(
        "alpha-beta, w^2 at and below aux",
        LinearChoice("alphabeta", at_or_below_aux="wsquare"),
        LinearChoice("alphabeta", at_or_below_aux="wsquare"),
    ),
    99: Formula("sensitivity (L2 norm of gradient x score)", _GRADIENT, _GRADIENT, "gradient", True, True),
    100: Formula("composite: alpha-beta convolutions, epsilon fully connected", LinearChoice("alphabeta"),
                 LinearChoice("epsilon")),
    102: Formula(
        "composite, flat at and below aux",
        LinearChoice("alphabeta", at_or_below_aux="flat"),
        LinearChoice("epsilon", at_or_below_aux="flat"),
    ),
    104: Formula(
        "composite, w^2 at and below aux",
        LinearChoice("alphabeta", at_or_below_aux="wsquare"),
        LinearChoice("epsilon", at_or_below_aux="wsquare"),
    ),
    114: Formula(
        "epsilon above aux, alpha-beta at and below",
        LinearChoice("epsilon", at_or_below_aux="alphabeta"),
        LinearChoice("epsilon", at_or_below_aux="alphabeta"),
    ),
    166: Formula("guided backprop", LinearChoice("transposed"), LinearChoice("transposed"), relu="guided"),
}

#: Formulas whose rules read β (and which the original refuses for β < 0).
_USES_BETA = {"alphabeta", "wsquare", "zbox"}


def formula(number: int) -> Formula:
    """The table entry for ``relpropformulatype``, or a RelevanceError listing the supported numbers."""
    try:
        return FORMULAS[number]
    except KeyError:
        supported = ", ".join(str(n) for n in sorted(FORMULAS))
        raise RelevanceError(f"unknown relpropformulatype {number} (supported: {supported})") from None


@dataclass(frozen=True, eq=False)
class RuleSettings:
    """Everything besides the layer index that decides the rule of a linear layer."""

    formula: Formula
    epsilon: float
    beta: float
    aux: int
    first_index: int
    fc6_index: int
    input_bounds: tuple[np.ndarray, np.ndarray] | None = None

    def validate(self) -> None:
        if self.formula.needs_aux and self.aux < 0:
            raise RelevanceError(
                f"formula '{self.formula.description}' needs auxiliaryvariable_maxlayerindexforflatdistinconv ≥ 0 "
                f"(got {self.aux})"
            )
        if self.beta < 0 and self.formula.rule_names() & _USES_BETA:
            raise RelevanceError(f"alphabeta_beta must be non-negative (got {self.beta})")

    def rule_name(self, layer_type: str, index: int) -> str:
        """The table's rule name for a Convolution (or any other linear layer: the inner-product column)."""
        choice = self.formula.convolution if layer_type == "Convolution" else self.formula.inner_product
        if choice.at_first and index == self.first_index:
            return choice.at_first
        if choice.at_or_below_aux and index <= self.aux:
            return choice.at_or_below_aux
        if choice.above_fc6 and index > self.fc6_index:
            return choice.above_fc6
        return choice.default

    def linear_rule(self, layer_type: str, index: int) -> LinearRule:
        name = self.rule_name(layer_type, index)
        if name == "zbox":
            if self.input_bounds is None:
                raise RelevanceError("the z^B rule needs the image mean (not available for preprocessed .npy inputs)")
            return ZBox(*self.input_bounds)
        return _RULE_FACTORIES[name](self)


_RULE_FACTORIES = {
    "epsilon": lambda s: Epsilon(s.epsilon),
    "alphabeta": lambda s: AlphaBeta(s.beta),
    "alphabeta_beta0": lambda s: AlphaBeta(0.0),
    "alphabeta_beta1": lambda s: AlphaBeta(1.0),
    "flat": lambda s: Flat(),
    "wsquare": lambda s: WSquare(),
    "transposed": lambda s: Transposed(),
}
