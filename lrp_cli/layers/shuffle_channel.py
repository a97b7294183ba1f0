"""ShuffleChannel (ShuffleNet): the channels of G groups interleaved."""

from __future__ import annotations

from ..errors import ModelError
from ..rules import Gradient, Pass
from .base import Layer, handles


class ShuffleChannel(Layer):
    """With C = G·K channels read as a G×K grid (group g, position k), top channel k·G + g = bottom channel
    g·K + k: a transpose of that grid (``shuffle_channel_param.group`` = G). N×C×H×W → N×C×H×W.

    Relevance and gradient: a permutation moves values without mixing them, so relevance goes back through the
    inverse permutation (the K×G grid transposed back); every rule agrees, and the sum is kept exactly.
    """

    type = "ShuffleChannel"

    def __init__(self, name, param, blobs):
        super().__init__(name, param, blobs)
        self.group = int(param.shuffle_channel_param.group)
        if self.group < 1:
            raise ModelError(f"{self.describe()}: group must be at least 1")

    def output_shapes(self, bottoms):
        shape = bottoms[0]
        if len(shape) < 2 or shape[1] % self.group:
            raise self.fail(f"{shape[1] if len(shape) > 1 else 0} channels do not split into {self.group} groups")
        return [shape]

    @staticmethod
    def _transpose_grid(x, rows: int):
        """Channels read as rows × (C / rows), transposed (a copy): N×C×… → N×C×…."""
        n, c = x.shape[:2]
        grid = x.reshape(n, rows, c // rows, *x.shape[2:])
        return grid.swapaxes(1, 2).reshape(x.shape)

    def forward(self, bottoms):
        x = bottoms[0]
        if x.ndim < 2 or x.shape[1] % self.group:
            raise ModelError(f"{self.describe()}: {x.shape[1]} channels do not split into {self.group} groups")
        return [self._transpose_grid(x, self.group)], {}

    @handles(Pass, Gradient, reads=())
    def _unshuffle(self, rule, saved, top_relevance):
        r = top_relevance[0]
        return [self._transpose_grid(r, r.shape[1] // self.group)]
