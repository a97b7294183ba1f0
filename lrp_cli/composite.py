"""Which rule each layer gets — decided here and nowhere else.

The original demonstrator's formula table (spec §5.5) says which rule every convolution and inner-product layer
gets, by its Caffe layer index; the per-layer-type choices below say what every other layer does under a formula.
:func:`assign_rules` turns both into one rule per node, once per explainer; ``lrp-demo --show-rules CONFIG`` prints
the result (:func:`describe_rules`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .canonize import Absorbed
from .errors import RelevanceError
from .layers.eltwise import MAX as ELTWISE_MAX
from .layers.eltwise import PROD as ELTWISE_PROD
from .layers.linear import LinearLayer
from .layers.pooling import MAX as POOL_MAX
from .layers.scale import GatedScale
from .net import Net, Node
from .rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Folded,
    Gradient,
    Guided,
    LinearRule,
    LrnRule,
    Pass,
    Positive,
    Probabilities,
    Proportional,
    Rule,
    Transposed,
    WinnerTakesAll,
    WSquare,
    ZBox,
)

LRN_RELEVANCE = ("original", "identity")


@dataclass(frozen=True)
class RelevanceSettings:
    """The config's relevance settings (their config keys in brackets)."""

    formula: int  # relpropformulatype
    epsilon: float = 1.0  # epsstab
    beta: float = 1.0  # alphabeta_beta (α = 1 + β)
    aux: int = 0  # auxiliaryvariable_maxlayerindexforflatdistinconv
    last_layer_index: int = -1  # lastlayerindex
    first_layer_index: int = 0  # firstlayerindex
    lrn_relevance: str = "original"  # lrn_relevance

    def check(self) -> Formula:
        """The formula of these settings, after checking every setting (RelevanceError naming its config key)."""
        entry = formula(self.formula)
        if self.lrn_relevance not in LRN_RELEVANCE:
            raise RelevanceError(f"lrn_relevance must be one of {', '.join(LRN_RELEVANCE)}, got "
                                 f"{self.lrn_relevance!r}", key="lrn_relevance")
        if not self.epsilon >= 0:
            raise RelevanceError(f"epsstab must be non-negative (got {self.epsilon})", key="epsstab")
        if not self.beta >= 0:  # the original aborts on it in α-β, conv w² and z^B layers; the config refuses it
            raise RelevanceError(f"alphabeta_beta must be non-negative (got {self.beta})", key="alphabeta_beta")
        if entry.needs_aux and self.aux < 0:
            raise RelevanceError(
                f"formula '{entry.description}' needs auxiliaryvariable_maxlayerindexforflatdistinconv ≥ 0 "
                f"(got {self.aux})", key="auxiliaryvariable_maxlayerindexforflatdistinconv")
        return entry


# -- the formula table (spec §5.5) ------------------------------------------------------------------------------------
RuleMaker = Callable[[RelevanceSettings], LinearRule]


def epsilon(settings: RelevanceSettings) -> LinearRule:
    return Epsilon(settings.epsilon)


def alpha_beta(settings: RelevanceSettings) -> LinearRule:
    """α-β with the configured β."""
    return AlphaBeta(settings.beta)


def alpha_beta_0(settings: RelevanceSettings) -> LinearRule:
    return AlphaBeta(0.0)


def alpha_beta_1(settings: RelevanceSettings) -> LinearRule:
    return AlphaBeta(1.0)


def flat(settings: RelevanceSettings) -> LinearRule:
    return Flat()


def w_square(settings: RelevanceSettings) -> LinearRule:
    return WSquare()


def z_box(settings: RelevanceSettings) -> LinearRule:
    return ZBox()


def transposed(settings: RelevanceSettings) -> LinearRule:
    return Transposed()


@dataclass(frozen=True)
class LinearChoice:
    """Which rule a convolution or inner-product layer gets, by its Caffe layer index.

    Checked in this order: ``at_first`` (index == firstlayerindex), ``at_or_below_aux`` (index ≤ aux),
    ``above_fc6`` (index > the fc6 index: 15 in CaffeNet, the first InnerProduct in other nets), then ``default``.
    """

    default: RuleMaker
    at_first: RuleMaker | None = None
    at_or_below_aux: RuleMaker | None = None
    above_fc6: RuleMaker | None = None

    def choose(self, index: int, settings: RelevanceSettings, fc6_index: int) -> RuleMaker:
        if self.at_first and index == settings.first_layer_index:
            return self.at_first
        if self.at_or_below_aux and index <= settings.aux:
            return self.at_or_below_aux
        if self.above_fc6 and index > fc6_index:
            return self.above_fc6
        return self.default


@dataclass(frozen=True)
class Formula:
    """One ``relpropformulatype``: the rules of linear layers, the ReLU rule, and the gradient variants."""

    description: str
    convolution: LinearChoice
    inner_product: LinearChoice
    relu: Rule = Pass()
    gradient: bool = False  # 11 and 99: the exact gradient of the score-weighted output
    l2_norm: bool = False  # 99: per-pixel L2 norm over the channels

    @property
    def needs_aux(self) -> bool:
        return any(c.at_or_below_aux for c in (self.convolution, self.inner_product))


_HIGH_LOW = LinearChoice(alpha_beta_1, above_fc6=alpha_beta_0)
_GRADIENT = LinearChoice(transposed)

FORMULAS: dict[int, Formula] = {
    0: Formula("epsilon-LRP", LinearChoice(epsilon), LinearChoice(epsilon)),
    2: Formula("alpha-beta-LRP, alpha = 1 + beta", LinearChoice(alpha_beta), LinearChoice(alpha_beta)),
    6: Formula("alpha-beta + z^B on the first layer", LinearChoice(alpha_beta, at_first=z_box), _HIGH_LOW),
    8: Formula("epsilon + z^B on the first layer", LinearChoice(epsilon, at_first=z_box), _HIGH_LOW),
    11: Formula("gradient x score", _GRADIENT, _GRADIENT, relu=Gradient(), gradient=True),
    18: Formula("z^B first layer, alpha-beta (beta 1 up to fc6, 0 above)",
                LinearChoice(alpha_beta_1, at_first=z_box, above_fc6=alpha_beta_0), _HIGH_LOW),
    22: Formula("alpha-beta, beta 1 up to fc6, 0 above", _HIGH_LOW, _HIGH_LOW),
    26: Formula("deconvnet (Zeiler)", LinearChoice(transposed), LinearChoice(transposed), relu=Positive()),
    54: Formula("epsilon, flat at and below aux", LinearChoice(epsilon, at_or_below_aux=flat),
                LinearChoice(epsilon, at_or_below_aux=flat)),
    56: Formula("epsilon, w^2 at and below aux", LinearChoice(epsilon, at_or_below_aux=w_square),
                LinearChoice(epsilon, at_or_below_aux=w_square)),
    58: Formula("alpha-beta, flat at and below aux", LinearChoice(alpha_beta, at_or_below_aux=flat),
                LinearChoice(alpha_beta, at_or_below_aux=flat)),
    60: Formula("alpha-beta, w^2 at and below aux", LinearChoice(alpha_beta, at_or_below_aux=w_square),
                LinearChoice(alpha_beta, at_or_below_aux=w_square)),
    99: Formula("sensitivity (L2 norm of gradient x score)", _GRADIENT, _GRADIENT, Gradient(), True, True),
    100: Formula("composite: alpha-beta convolutions, epsilon fully connected", LinearChoice(alpha_beta),
                 LinearChoice(epsilon)),
    102: Formula("composite, flat at and below aux", LinearChoice(alpha_beta, at_or_below_aux=flat),
                 LinearChoice(epsilon, at_or_below_aux=flat)),
    104: Formula("composite, w^2 at and below aux", LinearChoice(alpha_beta, at_or_below_aux=w_square),
                 LinearChoice(epsilon, at_or_below_aux=w_square)),
    114: Formula("epsilon above aux, alpha-beta at and below", LinearChoice(epsilon, at_or_below_aux=alpha_beta),
                 LinearChoice(epsilon, at_or_below_aux=alpha_beta)),
    166: Formula("guided backprop", LinearChoice(transposed), LinearChoice(transposed), relu=Guided()),
}


def formula(number: int) -> Formula:
    """The table entry for ``relpropformulatype``, or a RelevanceError listing the supported numbers."""
    try:
        return FORMULAS[number]
    except KeyError:
        supported = ", ".join(str(n) for n in sorted(FORMULAS))
        raise RelevanceError(f"unknown relpropformulatype {number} (supported: {supported})",
                             key="relpropformulatype") from None


# -- the per-layer-type choices ---------------------------------------------------------------------------------------
def fc6_index(net: Net) -> int:
    """The original's hard-coded fc6 index 15, generalised: the first InnerProduct (15 in CaffeNet)."""
    inner = [n.index for n in net.nodes if n.type == "InnerProduct"]
    return inner[0] if inner else 15


def rule_of(node: Node, entry: Formula, settings: RelevanceSettings, fc6: int) -> Rule:
    """The rule of one node: the formula table for convolution and inner product; for every other layer its
    type's choice. Structural layers (Split, Concat, Slice, ShuffleChannel, Flatten, Reshape, Dropout) and the
    element-wise PReLU, Sigmoid, TanH and Power pass relevance unchanged under the LRP formulas; gates (Eltwise
    PROD, a Scale with a second bottom) pass it to their signal; under the gradient formulas every layer takes its
    derivative."""
    if node.type in ("Convolution", "InnerProduct"):
        choice = entry.convolution if node.type == "Convolution" else entry.inner_product
        return choice.choose(node.index, settings, fc6)(settings)
    if isinstance(node.layer, Absorbed):
        return Folded(into=node.layer.into)
    if entry.gradient:
        return Gradient()
    if node.type in ("ReLU", "ReLU6"):
        return entry.relu
    if node.type == "LRN":
        return LrnRule() if settings.lrn_relevance == "original" else Pass()
    if node.type == "Pooling":
        return WinnerTakesAll() if node.layer.method == POOL_MAX else Proportional()
    if node.type == "Softmax":
        return Probabilities()
    if node.type == "Eltwise" and node.layer.operation == ELTWISE_MAX:
        return WinnerTakesAll()
    if (node.type == "Eltwise" and node.layer.operation == ELTWISE_PROD) or isinstance(node.layer, GatedScale):
        return Transposed() if entry.convolution.default is transposed else Pass()  # a gate (layers/gates.py)
    if node.type in ("Eltwise", "Axpy"):  # residual sums: the rule the formula gives convolutions at this index
        return _sum_rule(entry.convolution.choose(node.index, settings, fc6)(settings))
    if isinstance(node.layer, LinearLayer):  # BatchNorm and Scale not folded into a linear layer
        return Transposed() if entry.convolution.default is transposed else Epsilon(settings.epsilon)
    return Pass()


def _sum_rule(rule: LinearRule) -> LinearRule:
    """A residual sum y = Σ_k c_k·x_k gets the linear rule of its position, α-β in its conserving form: with two
    inputs one part (z⁺ or z⁻) is often empty, where plain α-β would hand on α·R (or −β·R); and unlike ε, α-β
    never divides by a sum whose inputs cancel (ε amplified |R| 15–19× there)."""
    if isinstance(rule, AlphaBeta):
        return AlphaBeta(rule.beta, conserving=True)
    return rule


def assign_rules(net: Net, settings: RelevanceSettings, start: int, first: int) -> list[Rule | None]:
    """One rule per node of ``net`` (a canonized net: :func:`lrp_cli.canonize.fold_batch_norm`): None outside
    [first, start] and for the Input layer; a RelevanceError naming the layer when a layer cannot apply its rule."""
    entry = settings.check()
    fc6 = fc6_index(net)
    rules: list[Rule | None] = []
    for node in net.nodes:
        if not first <= node.index <= start or node.type == "Input":
            rules.append(None)
            continue
        rule = rule_of(node, entry, settings, fc6)
        if not node.layer.supports(rule):
            raise RelevanceError(
                f"layer '{node.name}' ({node.type}, index {node.index}) has no relevance rule for formula "
                f"{settings.formula} ('{entry.description}'): it cannot apply '{rule}'", key="relpropformulatype")
        rules.append(rule)
    return rules


def bind_input_bounds(rules: list[Rule | None], low, high) -> list[Rule | None]:
    """The rules with the z^B rule bound to a batch's input bounds (l = −mean, h = 255 − mean per image)."""
    return [rule.with_bounds(low, high) if isinstance(rule, ZBox) else rule for rule in rules]


def describe_rules(net: Net, rules: list[Rule | None], settings: RelevanceSettings, start: int, first: int) -> str:
    """The assignment as a table: layer index, name, type and rule, from the start layer down to ``first``."""
    entry = formula(settings.formula)
    lines = [
        f"# relpropformulatype {settings.formula}: {entry.description}",
        f"# epsilon {settings.epsilon:g}, beta {settings.beta:g}, aux {settings.aux}, "
        f"lrn_relevance {settings.lrn_relevance}",
        f"# relevance from layer {start} ({net.nodes[start].name}) down to layer {first} "
        f"({'the input' if first == 0 else net.nodes[first].name})",
    ]
    width = max(len(n.name) for n in net.nodes)
    kinds = max(len(n.type) for n in net.nodes)
    for index in range(start, first - 1, -1):
        node = net.nodes[index]
        rule = rules[index]
        lines.append(f"{index:5d}  {node.name:<{width}}  {node.type:<{kinds}}  {rule if rule is not None else '-'}")
    return "\n".join(lines) + "\n"
