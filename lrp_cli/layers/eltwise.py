"""Eltwise: SUM (with coefficients), PROD, MAX over bottoms of equal shape."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, LinearRule, Rule, WinnerTakesAll
from .base import handles
from .linear import LinearLayer

PROD, SUM, MAX = 0, 1, 2


class Eltwise(LinearLayer):
    """SUM: y = Σ_k c_k·x_k. For relevance it is a linear layer over the stacked bottoms (weight = the
    coefficients), so every linear rule applies: the ε-rule gives R_k = c_k·x_k·R/(y ± ε), in proportion to
    each input's contribution. MAX: winner takes all (first maximal bottom). PROD: gradient only.
    """

    type = "Eltwise"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.eltwise_param
        self.operation = int(p.operation)
        self.coefficients = [float(c) for c in p.coeff]
        self.bias = None
        self.weight = np.ones(0, np.float32)

    def _weights(self, count):
        coeff = self.coefficients or [1.0] * count
        if len(coeff) != count:
            raise ModelError(f"{self.describe()}: {len(coeff)} coefficients for {count} bottoms")
        return np.asarray(coeff, np.float32)

    # linear-layer interface over the stacked bottoms (N×K×…)
    def linear(self, x, weight):
        return np.tensordot(x, weight, axes=([1], [0])) if x.ndim > 2 else x @ weight

    def linear_transposed(self, signal, weight, input_shape):
        return np.broadcast_to(signal[:, None], input_shape) * weight.reshape((1, -1) + (1,) * (len(input_shape) - 2))

    @property
    def flat_divisor(self):
        return len(self.weight)

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
        """SUM takes every linear rule, MAX WinnerTakesAll, all three the Gradient."""
        if isinstance(rule, Gradient):
            return True
        return isinstance(rule, {SUM: LinearRule, MAX: WinnerTakesAll}.get(self.operation, ()))

    @handles(LinearRule)
    def _linear_rule(self, rule, saved, top_relevance):
        """SUM: the rule applied to the bottoms stacked along a new axis 1, with the coefficients as weights."""
        op = self.with_parameters(self._weights(len(saved.bottoms)), None)
        stacked = np.stack(saved.bottoms, axis=1)
        result = rule.relevance(op, stacked, saved.tops[0], top_relevance[0])
        return [result[:, k] for k in range(len(saved.bottoms))]

    @handles(WinnerTakesAll)
    def _winner_takes_all(self, rule, saved, top_relevance):
        winner, r = saved.extra["winner"], top_relevance[0]
        return [np.where(winner == k, r, np.float32(0)) for k in range(len(saved.bottoms))]

    @handles(Gradient)
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
