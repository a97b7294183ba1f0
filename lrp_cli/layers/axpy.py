"""Axpy (SENet): y = a ⊙ x + z, with a one gate value per image and channel."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .base import Layer
from .gates import is_rule, is_transposed, sum_to_shape
from .linear import LinearLayer


class _Addends(LinearLayer):
    """The sum of K addends stacked on axis 1 (N×K×…), as a linear layer with weights 1: what a rule splits."""

    def __init__(self, count: int):  # no prototxt layer behind it
        self.name, self.param, self.blobs = "addends", None, ()
        self.weight, self.bias = np.ones(count, np.float32), None

    def linear(self, x, weight):
        return np.tensordot(x, weight, axes=([1], [0]))

    def linear_transposed(self, signal, weight, input_shape):
        return signal[:, None] * weight.reshape((1, -1) + (1,) * (len(input_shape) - 2))

    @property
    def flat_divisor(self):
        return len(self.weight)


class Axpy(Layer):
    """Bottoms (a, x, z): a N×C×1×1 (the squeeze-and-excitation gate), x and z N×C×H×W; y = a ⊙ x + z.

    Relevance (see :mod:`lrp_cli.layers.gates`): a is a gate, held constant; y is then a sum of two addends,
    a ⊙ x (the block's output) and z (the shortcut), and relevance is first split between them, then the gated
    addend passes all of its share to x (one-input neurons), and a gets none:
    - ``lrp``: the split in proportion to the addends, R_x = (a ⊙ x)·R/y, R_z = z·R/y (the ε-rule's split with
      ε = 0, "y = 0 → no division": conserves exactly);
    - a LinearRule (what the net hands to an Eltwise SUM): that rule over the two addends, as Eltwise SUM;
      Transposed: R_x = a ⊙ R, R_z = R;
    - ``gradient``: R_a = Σ_{h,w} x ⊙ R, R_x = a ⊙ R, R_z = R.
    """

    type = "Axpy"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        if len(param.bottom) != 3:
            raise ModelError(f"{self.describe()}: needs three bottoms (gate a, signal x, addend y), has "
                             f"{len(param.bottom)}")

    def forward(self, bottoms):
        a, x, z = bottoms
        if x.shape != z.shape or a.shape[:2] != x.shape[:2] or a.size != x.shape[0] * x.shape[1]:
            raise ModelError(
                f"{self.describe()}: bottom shapes {a.shape}, {x.shape}, {z.shape} do not fit a·x + y "
                "(a: N×C×1×1, x and y: N×C×H×W)"
            )
        gate = a.reshape(x.shape[:2] + (1,) * (x.ndim - 2))
        y = gate * x
        y += z
        return [y], {}

    @staticmethod
    def _gate(saved):
        a, x = saved.bottoms[:2]
        return a.reshape(x.shape[:2] + (1,) * (x.ndim - 2))

    def _split(self, saved, r, rule):
        """Relevance R of y split by ``rule`` between the addends a ⊙ x and z: [R_x, R_z]."""
        x, z = saved.bottoms[1:]
        stacked = np.stack([self._gate(saved) * x, z], axis=1)
        parts = rule.relevance(_Addends(2), stacked, saved.tops[0], r)
        return [parts[:, 0], parts[:, 1]]

    def _relevance_lrp(self, saved, top_relevance):
        from ..rules import Epsilon

        return [np.zeros_like(saved.bottoms[0]), *self._split(saved, top_relevance[0], Epsilon(0.0))]

    _relevance_identity = _relevance_lrp

    def _relevance_gradient(self, saved, top_relevance):
        a, x = saved.bottoms[:2]
        r = top_relevance[0]
        return [sum_to_shape(x * r, a.shape), self._gate(saved) * r, r.copy()]

    def supports(self, mode):
        return is_rule(mode) or super().supports(mode)

    def relevance(self, mode, saved, top_relevance):
        if is_transposed(mode):
            r = top_relevance[0]
            return [np.zeros_like(saved.bottoms[0]), self._gate(saved) * r, r.copy()]
        if is_rule(mode):
            return [np.zeros_like(saved.bottoms[0]), *self._split(saved, top_relevance[0], mode)]
        return super().relevance(mode, saved, top_relevance)
