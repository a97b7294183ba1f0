"""Scale: y = γ·x (+ β), one factor per channel (axis 1, num_axes 1); or y = x ⊙ s with s a second bottom."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from ..rules import Gradient, Pass, Transposed
from .affine import ChannelAffine
from .base import Layer, handles, require_blobs
from .gates import sum_to_shape


class Scale(ChannelAffine):
    """γ = blob0, β = blob1 when bias_term: the learned-parameter form (one bottom) on axis 1. A Scale with a
    second bottom is a :class:`GatedScale` (made here, so that the type name stays "Scale")."""

    type = "Scale"

    def __new__(cls, *args, **kwargs):
        param = args[1] if len(args) > 1 else kwargs.get("param")
        if cls is Scale and param is not None and len(param.bottom) > 1:
            return GatedScale(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.scale_param
        if len(param.bottom) > 1:
            raise ModelError(f"{self.describe()}: a Scale with a second bottom is not supported")
        if p.axis != 1 or p.num_axes != 1:
            raise ModelError(f"{self.describe()}: only axis 1 with num_axes 1 is supported")
        require_blobs(self, 2 if p.bias_term else 1)
        self.weight = self.blobs[0].reshape(-1)
        self.bias = self.blobs[1].reshape(-1) if p.bias_term else None
        self.weight = np.ascontiguousarray(self.weight)


class GatedScale(Layer, register=False):
    """Scale with a second bottom: y = x ⊙ s, s (bottom 1) broadcast along x (bottom 0) from axis ``axis``:
    s.shape = x.shape[axis : axis + s.ndim] (e.g. axis 0 and s N×C: one factor per image and channel, the
    squeeze-and-excitation gate of MobileNet v3).

    Relevance: s is a gate (see :mod:`lrp_cli.layers.gates`): Pass (the LRP formulas) gives x all the relevance and
    s none; Transposed gives x s ⊙ R; Gradient is the product rule (s ⊙ R to x, Σ x ⊙ R to s).
    """

    type = "Scale"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.scale_param
        if p.bias_term:
            raise ModelError(f"{self.describe()}: a Scale with a second bottom and bias_term is not supported")
        if len(param.bottom) != 2:
            raise ModelError(f"{self.describe()}: takes one or two bottoms, has {len(param.bottom)}")
        self.axis = int(p.axis)

    def _gate_shape(self, x: tuple[int, ...], s: tuple[int, ...]) -> tuple[int, ...]:
        """The shape s takes to broadcast against x (or a ModelError naming both shapes)."""
        if not -len(x) <= self.axis < len(x):
            raise self.fail(f"axis {self.axis} is out of range for a {len(x)}-D input")
        axis = self.axis % len(x)
        size = 1
        for d in s:
            size *= d
        if size == 1:
            return (1,) * len(x)
        if x[axis : axis + len(s)] != tuple(s):
            raise self.fail(f"the factor's shape {s} does not match the input's shape {x} from axis {self.axis}")
        return (1,) * axis + tuple(s) + (1,) * (len(x) - axis - len(s))

    def output_shapes(self, bottoms):
        self._gate_shape(*bottoms)
        return [bottoms[0]]

    def _gate(self, x, s):
        """s reshaped to broadcast against x."""
        return s.reshape(self._gate_shape(x.shape, s.shape))

    def forward(self, bottoms):
        x, s = bottoms
        return [x * self._gate(x, s)], {}

    @handles(Pass, reads=())
    def _to_signal(self, rule, saved, top_relevance):
        return [top_relevance[0].copy(), np.zeros(saved.bottoms[1].shape, saved.bottoms[1].dtype)]

    @handles(Transposed, reads=("bottoms",))
    def _transposed(self, rule, saved, top_relevance):
        x, s = saved.bottoms
        return [top_relevance[0] * self._gate(x, s), np.zeros_like(s)]

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        x, s = saved.bottoms
        r = top_relevance[0]
        return [r * self._gate(x, s), sum_to_shape(x * r, self._gate(x, s).shape).reshape(s.shape)]
