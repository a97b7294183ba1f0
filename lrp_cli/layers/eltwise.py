"""Eltwise: SUM (with coefficients), PROD, MAX over bottoms of equal shape."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, LinearRule, Pass, Rule, Transposed, WinnerTakesAll
from .base import Layer, handles
from .linear import LinearLayer, linear_reads

PROD, SUM, MAX = 0, 1, 2


class StackedSum(LinearLayer):
    """y = Σ_k c_k·x_k over addends stacked on axis 1 (N×K×… → N×…), as a linear layer with the coefficients c as
    its weight: what a linear rule splits for Eltwise SUM and Axpy."""

    def __init__(self, coefficients: np.ndarray):  # no prototxt layer behind it
        self.name, self.param, self.blobs = "sum", None, ()
        self.weight, self.bias = np.asarray(coefficients, np.float32), None

    def linear(self, x, weight):
        return np.tensordot(x, weight, axes=([1], [0])) if x.ndim > 2 else x @ weight

    def linear_transposed(self, signal, weight, input_shape):
        return np.broadcast_to(signal[:, None], input_shape) * weight.reshape((1, -1) + (1,) * (len(input_shape) - 2))

    @property
    def flat_divisor(self):
        return len(self.weight)

    def split(self, rule: LinearRule, addends: list[np.ndarray], y: np.ndarray, relevance: np.ndarray):
        """The relevance of each addend under ``rule`` (a list in the addends' order)."""
        result = rule.relevance(self, np.stack(addends, axis=1), y, relevance)
        return [result[:, k] for k in range(len(addends))]


class Eltwise(Layer):
    """SUM: y = Σ_k c_k·x_k. For relevance it is a linear map of the stacked bottoms (:class:`StackedSum`), so
    every linear rule applies: the ε-rule gives R_k = c_k·x_k·R/(y ± ε), in proportion to each input's
    contribution. MAX: winner takes all (first maximal bottom).
    PROD: y = x_0 ⊙ x_1 ⊙ …: the first bottom is the signal, every other one a gate held constant (see
    :mod:`lrp_cli.layers.gates`; e.g. MobileNet v3's hard-swish x ⊙ relu6(x + 3)/6): Pass (the LRP formulas) gives
    x_0 all the relevance and the gates none, Transposed gives x_0 (Π gates) ⊙ R, Gradient is the product rule.
    """

    type = "Eltwise"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.eltwise_param
        self.operation = int(p.operation)
        self.coefficients = [float(c) for c in p.coeff]

    def _weights(self, count):
        coeff = self.coefficients or [1.0] * count
        if len(coeff) != count:
            raise ModelError(f"{self.describe()}: {len(coeff)} coefficients for {count} bottoms")
        return np.asarray(coeff, np.float32)

    def output_shapes(self, bottoms):
        if len(set(bottoms)) > 1:
            raise self.fail(f"needs inputs of one shape, got {', '.join(map(str, bottoms))}")
        if self.operation == SUM:
            self._weights(len(bottoms))
        return [bottoms[0]]

    def forward(self, bottoms):
        if self.operation == SUM:
            weight = self._weights(len(bottoms))
            y = bottoms[0] * weight[0]
            for c, b in zip(weight[1:], bottoms[1:], strict=True):
                y += c * b
            return [y], {}
        stacked = np.stack(bottoms, axis=1)
        if self.operation == PROD:
            return [np.prod(stacked, axis=1)], {}
        winner = stacked.argmax(axis=1)
        return [np.take_along_axis(stacked, winner[:, None], axis=1)[:, 0]], {"winner": winner}

    def supports(self, rule: Rule) -> bool:
        """SUM takes every linear rule, MAX WinnerTakesAll, PROD Pass and Transposed (a gate); all the Gradient."""
        if isinstance(rule, Gradient):
            return True
        allowed = {SUM: LinearRule, MAX: WinnerTakesAll, PROD: (Pass, Transposed)}
        return isinstance(rule, allowed[self.operation])

    @handles(LinearRule, reads=linear_reads)
    def _linear_rule(self, rule, saved, top_relevance):
        """SUM: the rule applied to the bottoms stacked along a new axis 1, with the coefficients as weights."""
        return StackedSum(self._weights(len(saved.bottoms))).split(rule, saved.bottoms, saved.tops[0],
                                                                    top_relevance[0])

    @handles(Pass, reads=())
    def _gate_pass(self, rule, saved, top_relevance):
        """PROD under the LRP formulas: the first bottom is the signal, the others gates held constant
        (:mod:`lrp_cli.layers.gates`): the signal takes all the relevance."""
        return [top_relevance[0].copy()] + [np.zeros(b.shape, b.dtype) for b in saved.bottoms[1:]]

    @handles(Transposed, reads=("bottoms",))
    def _transposed(self, rule, saved, top_relevance):
        """SUM: the linear rule (c_k·R to bottom k); PROD: the signal gets the gated R, g ⊙ R, the gates none."""
        if self.operation == SUM:
            return self._linear_rule(rule, saved, top_relevance)
        signal = top_relevance[0].copy()
        for gate in saved.bottoms[1:]:
            signal *= gate
        return [signal] + [np.zeros_like(b) for b in saved.bottoms[1:]]

    @handles(WinnerTakesAll, reads=("state",))
    def _winner_takes_all(self, rule, saved, top_relevance):
        winner, r = saved.extra["winner"], top_relevance[0]
        return [np.where(winner == k, r, np.float32(0)) for k in range(len(saved.bottoms))]

    @handles(Gradient, reads=("bottoms", "state"))
    def _gradient(self, rule, saved, top_relevance):
        r = top_relevance[0]
        if self.operation == SUM:
            return [c * r for c in self._weights(len(saved.bottoms))]
        if self.operation == MAX:
            return self._winner_takes_all(rule, saved, top_relevance)
        out = []
        for k in range(len(saved.bottoms)):
            others = [b for j, b in enumerate(saved.bottoms) if j != k]
            out.append(r * np.prod(np.stack(others), axis=0) if others else r.copy())
        return out
