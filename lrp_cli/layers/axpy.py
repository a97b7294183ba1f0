"""Axpy (SENet): y = a ⊙ x + z, with a one gate value per image and channel."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, LinearRule, Transposed
from .base import Layer, handles
from .eltwise import StackedSum
from .gates import sum_to_shape


class Axpy(Layer):
    """Bottoms (a, x, z): a N×C×1×1 (the squeeze-and-excitation gate), x and z N×C×H×W; y = a ⊙ x + z.

    Relevance (see :mod:`lrp_cli.layers.gates`): a is a gate, held constant; y is then a sum of two addends,
    a ⊙ x (the block's output) and z (the shortcut), and relevance is first split between them by the linear rule
    a residual sum gets (as Eltwise SUM), then the gated addend passes all of its share to x (one-input neurons),
    and a gets none; Transposed: R_x = a ⊙ R, R_z = R; Gradient: R_a = Σ_{h,w} x ⊙ R, R_x = a ⊙ R, R_z = R.
    """

    type = "Axpy"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        if len(param.bottom) != 3:
            raise ModelError(f"{self.describe()}: needs three bottoms (gate a, signal x, addend y), has "
                             f"{len(param.bottom)}")

    def output_shapes(self, bottoms):
        a, x, z = bottoms
        size = 1
        for d in a:
            size *= d
        if x != z or a[:2] != x[:2] or size != x[0] * x[1]:
            raise self.fail(f"bottom shapes {a}, {x}, {z} do not fit a·x + y (a: N×C×1×1, x and y: N×C×H×W)")
        return [x]

    def forward(self, bottoms):
        a, x, z = bottoms
        self.output_shapes([a.shape, x.shape, z.shape])
        gate = a.reshape(x.shape[:2] + (1,) * (x.ndim - 2))
        y = gate * x
        y += z
        return [y], {}

    @staticmethod
    def _gate(saved):
        a, x = saved.bottoms[:2]
        return a.reshape(x.shape[:2] + (1,) * (x.ndim - 2))

    @handles(LinearRule, reads=("bottoms", "tops"))
    def _split(self, rule, saved, top_relevance):
        """y as the two addends a ⊙ x and z, split by ``rule``; the gated addend's share goes to x whole."""
        x, z = saved.bottoms[1:]
        to_x, to_z = StackedSum(np.ones(2)).split(rule, [self._gate(saved) * x, z], saved.tops[0], top_relevance[0])
        return [np.zeros_like(saved.bottoms[0]), to_x, to_z]

    @handles(Transposed, reads=("bottoms",))
    def _transposed(self, rule, saved, top_relevance):
        r = top_relevance[0]
        return [np.zeros_like(saved.bottoms[0]), self._gate(saved) * r, r.copy()]

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        a, x = saved.bottoms[:2]
        r = top_relevance[0]
        return [sum_to_shape(x * r, a.shape), self._gate(saved) * r, r.copy()]
