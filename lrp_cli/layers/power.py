"""Power: y = (shift + scale·x)^power, element-wise."""

from __future__ import annotations

import numpy as np

from ..rules import Gradient, Pass
from .base import Layer, handles


class Power(Layer):
    """Caffe's PowerLayer (``power_param``: power 1, scale 1, shift 0 by default).

    Relevance: an element-wise map, so ``lrp`` passes relevance unchanged (as for every activation: relevance is
    split at the linear layers; e.g. the ``x + 3`` and ``/ 6`` of MobileNet v3's hard-swish gate).
    ``gradient``: the derivative R·power·scale·(shift + scale·x)^(power − 1) (R·scale for power 1, 0 for power 0).
    """

    type = "Power"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        p = param.power_param
        self.power = np.float32(p.power)
        self.scale = np.float32(p.scale)
        self.shift = np.float32(p.shift)

    def _base(self, x):
        return x * self.scale + self.shift if self.scale != 1 or self.shift != 0 else x

    def forward(self, bottoms):
        x = bottoms[0]
        if self.power == 0:
            return [np.ones_like(x)], {}
        base = self._base(x)
        if self.power == 1:
            return [base if base is not x else x.copy()], {}
        return [np.power(base, self.power).astype(x.dtype, copy=False)], {}

    pass_through = handles(Pass, reads=())(Layer.pass_through)

    @handles(Gradient, reads=("bottoms",))
    def _gradient(self, rule, saved, top_relevance):
        r = top_relevance[0]
        if self.power == 0:
            return [np.zeros_like(r)]
        if self.power == 1:
            return [r * self.scale]
        slope = np.power(self._base(saved.bottoms[0]), self.power - 1) * (self.power * self.scale)
        return [(r * slope).astype(r.dtype, copy=False)]
