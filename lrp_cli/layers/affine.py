"""Per-channel affine layers (BatchNorm, Scale) as diagonal linear layers."""

from __future__ import annotations

import numpy as np

from ..rules import LinearRule
from .base import handles
from .linear import LinearLayer, linear_reads


def _affine_reads(rule: LinearRule) -> tuple[str, ...]:
    """x whenever the rule reads x or z (z is recomputed from x), never the output."""
    return tuple(part for part in linear_reads(rule) if part != "tops") + (
        ("bottoms",) if "z" in rule.reads and "x" not in rule.reads else ())


class ChannelAffine(LinearLayer):
    """y[n,c,…] = a_c·x[n,c,…] + b_c. A diagonal linear layer: every linear rule applies to it.

    When it directly follows a convolution or inner product, :mod:`lrp_cli.canonize` folds it into that layer
    for relevance (a → rows of W, a·b + c → bias); consecutive affine layers are merged into one.
    """

    def _view(self, v, ndim):
        return v.reshape((1, -1) + (1,) * (ndim - 2))

    def linear(self, x, weight):
        return x * self._view(weight, x.ndim)

    def linear_transposed(self, signal, weight, input_shape):
        return signal * self._view(weight, len(input_shape))

    def output_shapes(self, bottoms):
        shape = bottoms[0]
        if len(shape) < 2 or shape[1] != self.weight.size:
            raise self.fail(f"has {self.weight.size} channel factors for an input of shape {shape}")
        return [shape]

    def forward(self, bottoms):
        x = bottoms[0]
        y = self.linear(x, self.weight)
        if self.bias is not None:
            y += self.bias_view(self.bias, x.ndim)
        return [y], {}

    def forward_in_place(self, x):
        """:meth:`forward` overwriting ``x`` (the same arithmetic, bit for bit): for an output nobody else holds."""
        np.multiply(x, self._view(self.weight, x.ndim), out=x)
        if self.bias is not None:
            x += self.bias_view(self.bias, x.ndim)

    @property
    def flat_divisor(self):
        return 1

    @handles(LinearRule, reads=_affine_reads)
    def _linear_rule(self, rule, saved, top_relevance):
        """As for every linear layer, but z, where the rule reads it, recomputed from x by this layer's own forward
        pass (element-wise, the same arithmetic): the forward pass need not keep the output."""
        x = saved.bottoms[0]
        z = self.forward([x])[0][0] if "z" in rule.reads else saved.tops[0]
        return [rule.relevance(self, x, z, top_relevance[0], saved.extra)]
