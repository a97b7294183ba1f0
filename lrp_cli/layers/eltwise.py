"""Eltwise: SUM (with coefficients), PROD, MAX over bottoms of equal shape."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .linear import LinearLayer

PROD, SUM, MAX = 0, 1, 2


class Eltwise(LinearLayer):
    """SUM: y = Σ_k c_k·x_k. For relevance it is a linear layer over the stacked bottoms (weight = the
    coefficients), so every linear rule applies: the ε-rule gives R_k = c_k·x_k·R/(y ± ε), in proportion to
    each input's contribution. MAX: winner takes all (first maximal bottom).
    PROD: y = x_0 ⊙ x_1 ⊙ …: the first bottom is the signal, every other one a gate held constant (see
    :mod:`lrp_cli.layers.gates`; e.g. MobileNet v3's hard-swish x ⊙ relu6(x + 3)/6): the LRP rules give x_0 all
    the relevance and the gates none, Transposed gives x_0 (Π gates) ⊙ R, ``gradient`` is the product rule.
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

    def supports(self, mode):
        from ..rules import LinearRule

        if self.operation == SUM:
            return isinstance(mode, LinearRule) or mode == "gradient"
        if self.operation == PROD:
            return isinstance(mode, LinearRule) or mode in ("gradient", "lrp", "identity")
        return self.operation == MAX or mode == "gradient"

    def relevance(self, mode, saved, top_relevance):
        from ..rules import LinearRule

        r = top_relevance[0]
        if self.operation == SUM and (isinstance(mode, LinearRule) or mode == "gradient"):
            if mode == "gradient":
                return [c * r for c in self._weights(len(saved.bottoms))]
            op = self.with_parameters(self._weights(len(saved.bottoms)), None)
            stacked = np.stack(saved.bottoms, axis=1)
            result = mode.relevance(op, stacked, saved.tops[0], r)
            return [result[:, k] for k in range(len(saved.bottoms))]
        if self.operation == MAX:
            winner = saved.extra["winner"]
            return [np.where(winner == k, r, np.float32(0)) for k in range(len(saved.bottoms))]
        if self.operation == PROD and mode != "gradient" and self.supports(mode):
            return self._gated_relevance(mode, saved.bottoms, r)
        if self.operation == PROD and mode == "gradient":
            out = []
            for k in range(len(saved.bottoms)):
                others = [b for j, b in enumerate(saved.bottoms) if j != k]
                out.append(r * np.prod(np.stack(others), axis=0) if others else r.copy())
            return out
        return super(LinearLayer, self).relevance(mode, saved, top_relevance)

    @staticmethod
    def _gated_relevance(mode, bottoms, r):
        """PROD under an LRP rule or Transposed: the first bottom is the signal, the others gates held constant."""
        from .gates import is_transposed

        signal = r.copy()
        if is_transposed(mode):
            for gate in bottoms[1:]:
                signal *= gate
        return [signal] + [np.zeros_like(b) for b in bottoms[1:]]
