"""What convolution, inner product, Eltwise SUM and the per-channel affine layers share: the linear-map interface
through which every linear rule (:mod:`lrp_cli.rules`) is applied."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..rules import Gradient, LinearRule, Transposed, alpha_beta_generic
from .base import Layer, handles


def linear_reads(rule: LinearRule) -> tuple[str, ...]:
    """What a linear rule's step reads: the input x, the output z (:attr:`lrp_cli.rules.LinearRule.reads`), and
    the layer's state (its forward caches)."""
    return (*(["bottoms"] if "x" in rule.reads else []), *(["tops"] if "z" in rule.reads else []), "state")


class LinearLayer(Layer):
    """A layer z = W·x + b. Subclasses provide ``linear`` (W·x for any W of the weight's shape) and its adjoint.

    The rules see only this interface: ``weight``, ``bias``, ``linear``, ``linear_transposed``, ``bias_view``,
    ``flat_divisor`` and ``alpha_beta``. ``alpha_beta`` is the one fused-kernel protocol: the base class computes
    the α-β rule with the generic step; convolution and inner product override it with kernels that stay in their
    GEMM layout.
    """

    weight: np.ndarray
    bias: np.ndarray | None

    def linear(self, x: np.ndarray, weight: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def linear_transposed(self, signal: np.ndarray, weight: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def bias_view(bias: np.ndarray, ndim: int) -> np.ndarray:
        """A per-output-channel vector shaped to broadcast against an output of ``ndim`` axes."""
        return bias.reshape((1, -1) + (1,) * (ndim - 2))

    @property
    def flat_divisor(self) -> int:
        """What the original's flat rule divides by (convolution: k_h·k_w; inner product: the fan-in K)."""
        raise NotImplementedError

    def with_parameters(self, weight: np.ndarray, bias: np.ndarray | None) -> LinearLayer:
        """A copy of this layer with other weights (the BatchNorm/Scale fold of :mod:`lrp_cli.canonize`)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.weight, twin.bias = weight, bias
        return twin

    def forward(self, bottoms: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        z = self.linear(bottoms[0], self.weight)
        if self.bias is not None:
            z += self.bias_view(self.bias, z.ndim)
        return [z], {}

    def alpha_beta(
        self, x: np.ndarray, relevance: np.ndarray, alpha, beta, mixed: bool, state: dict | None = None
    ) -> np.ndarray:
        """The α-β rule (:class:`lrp_cli.rules.AlphaBeta`) for inputs x (N×…) that are either all ≥ 0 (``mixed``
        False) or each have negative values (``mixed`` True); ``state``: this layer's forward state for these very
        inputs, or None. The base class takes the generic step."""
        return alpha_beta_generic(self, x, relevance, alpha, beta)

    @handles(LinearRule, reads=linear_reads)
    def _linear_rule(self, rule, saved, top_relevance):
        return [rule.relevance(self, saved.bottoms[0], saved.tops[0], top_relevance[0], saved.extra)]

    @handles(Gradient, reads=())
    def _gradient(self, rule, saved, top_relevance):
        """The derivative of a linear map is its transpose."""
        return [Transposed().relevance(self, saved.bottoms[0], saved.tops[0], top_relevance[0])]
