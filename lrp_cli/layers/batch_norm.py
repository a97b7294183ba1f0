"""BatchNorm with stored statistics (test time): y = (x − μ)/√(σ² + eps), per channel."""

from __future__ import annotations

import numpy as np

from .affine import ChannelAffine
from .base import require_blobs


class BatchNorm(ChannelAffine):
    """μ = blob0·f, σ² = blob1·f with f = 1/blob2 (0 if blob2 is 0): Caffe's moving-average factor.

    A per-channel affine map y = a·x + c with a = 1/√(σ² + eps), c = −μ·a (see :class:`ChannelAffine`).
    """

    type = "BatchNorm"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        require_blobs(self, 3)
        factor = float(self.blobs[2].reshape(-1)[0])
        factor = 0.0 if factor == 0 else 1.0 / factor
        mean = self.blobs[0].reshape(-1).astype(np.float64) * factor
        var = self.blobs[1].reshape(-1).astype(np.float64) * factor
        scale = 1.0 / np.sqrt(var + float(param.batch_norm_param.eps))
        self.weight = scale.astype(np.float32)
        self.bias = (-mean * scale).astype(np.float32)
