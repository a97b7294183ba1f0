"""One module per Caffe layer type; importing this package registers them all with :func:`build_layer`."""

from . import (  # noqa: F401  (registration side effect)
    axpy,
    batch_norm,
    concat,
    convolution,
    dropout,
    eltwise,
    flatten,
    inner_product,
    input,
    lrn,
    pooling,
    power,
    prelu,
    relu,
    relu6,
    reshape,
    scale,
    shuffle_channel,
    sigmoid,
    slice,
    softmax,
    split,
    tanh,
)
from .base import Layer, Saved, build_layer

__all__ = ["Layer", "Saved", "build_layer"]
