"""What convolution and inner product share: the linear-map interface that the relevance rules use."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Layer, Saved


class LinearLayer(Layer):
    """A layer z = W·x + b. Subclasses provide ``linear`` (W·x for any W of the weight's shape) and its adjoint.

    The rules of :mod:`lrp_cli.rules` see only this interface: ``weight``, ``bias``, ``linear``,
    ``linear_transposed``, ``bias_view``, ``flat_divisor`` and ``weight_parts``; a layer may also offer fused
    α-β forms (``alpha_beta_nonnegative``, ``alpha_beta_mixed``) that the α-β rule uses when present.
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
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if not k.startswith("_cache")})
        twin.weight, twin.bias = weight, bias
        return twin

    # -- optional fused forms used by the rules ------------------------------------------------------------------
    def weight_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(w⁺, w⁻) = (max(w, 0), min(w, 0)), computed once per weight array (weights do not change)."""
        cached = self.__dict__.get("_cache_parts")
        if cached is None or cached[0] is not self.weight:
            cached = (self.weight, np.maximum(self.weight, 0), np.minimum(self.weight, 0))
            self._cache_parts = cached
        return cached[1], cached[2]

    def forward(self, bottoms: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, Any]]:
        z = self.linear(bottoms[0], self.weight)
        if self.bias is not None:
            z += self.bias_view(self.bias, z.ndim)
        return [z], {}

    def supports(self, mode: Any) -> bool:
        from ..rules import LinearRule

        return isinstance(mode, LinearRule) or mode == "gradient" or super().supports(mode)

    def relevance(self, mode: Any, saved: Saved, top_relevance: list[np.ndarray]) -> list[np.ndarray]:
        from ..rules import LinearRule, Transposed

        if mode == "gradient":
            mode = Transposed()
        if not isinstance(mode, LinearRule):
            return super().relevance(mode, saved, top_relevance)
        op = saved.extra.get("folded", self)  # the net passes the folded layer and its output (see Net.propagate)
        return [mode.relevance(op, saved.bottoms[0], saved.tops[0], top_relevance[0])]
