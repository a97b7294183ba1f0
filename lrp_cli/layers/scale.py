"""Scale: y = γ·x (+ β), one factor per channel (axis 1, num_axes 1)."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError
from .affine import ChannelAffine
from .base import require_blobs


class Scale(ChannelAffine):
    """γ = blob0, β = blob1 when bias_term. Only the learned-parameter form (one bottom) on axis 1."""

    type = "Scale"

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
