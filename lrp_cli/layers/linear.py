"""What convolution and inner product share: the linear-map interface that the relevance rules use."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer, Saved


class LinearLayer(Layer):
    """A layer z = W·x + b. Subclasses provide ``linear`` (W·x for any W of the weight's shape) and its adjoint.

    The rules of :mod:`lrp_cli.rules` see only this interface: ``weight``, ``bias``, ``linear``,
    ``linear_transposed``, ``bias_view`` and ``flat_divisor``.
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
        """A copy of this layer with other weights (used to fold BatchNorm/Scale for relevance)."""
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.weight, twin.bias = weight, bias
        return twin

    def forward(self, bottoms: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        z = self.linear(bottoms[0], self.weight)
        if self.bias is not None:
            z += self.bias_view(self.bias, z.ndim)
        return [z], {}

    def relevance(self, mode: Any, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
        from ..rules import LinearRule, Transposed

        if mode == "gradient":
            mode = Transposed()
        if not isinstance(mode, LinearRule):
            return super().relevance(mode, saved, top_relevance)
        op = saved.extra.get("folded", self)
        z = saved.extra.get("folded_output", saved.tops[0])
        return [mode.relevance(op, saved.bottoms[0], z, top_relevance[0])]
