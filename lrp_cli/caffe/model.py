"""Join a deploy prototxt and a caffemodel into one checked, immutable net description."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from lrp_cli.caffe import caffe_pb2
from lrp_cli.caffe.caffemodel import read_caffemodel
from lrp_cli.caffe.prototxt import read_prototxt
from lrp_cli.errors import ModelError


@dataclass(frozen=True)
class InputDef:
    """A net input blob and its declared shape (usually N, C, H, W)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class LayerDef:
    """One layer in prototxt order: its parameters and its weights (float32, checked shapes)."""

    name: str
    type: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]
    param: caffe_pb2.LayerParameter = field(repr=False)
    blobs: tuple[np.ndarray, ...] = field(repr=False)


@dataclass(frozen=True, eq=False)
class NetDef:
    """A net ready to build: inputs (legacy declarations and Input layers) and all layers.

    An ``Input`` layer stays in ``layers`` (it has a Caffe layer index) and its tops are also
    listed in ``inputs``. Legacy ``input:`` declarations appear in ``inputs`` only.
    """

    name: str
    inputs: tuple[InputDef, ...]
    layers: tuple[LayerDef, ...] = field(repr=False)
    source: str = "<prototxt>"  # the prototxt path, for messages about the net's layers


def load_model(prototxt_path: str | os.PathLike, caffemodel_path: str | os.PathLike) -> NetDef:
    """Read both files and match weights to layers by name (TEST phase, V1 nets upgraded)."""
    net = read_prototxt(prototxt_path)
    weights = read_caffemodel(caffemodel_path)
    return build_net_def(net, weights, os.fspath(prototxt_path), os.fspath(caffemodel_path))


def build_net_def(
    net: caffe_pb2.NetParameter,
    weights: dict[str, list[np.ndarray]],
    prototxt: str = "<prototxt>",
    caffemodel: str = "<caffemodel>",
) -> NetDef:
    """NetDef of an already read (upgraded, filtered) net and its caffemodel blobs."""
    inputs = [
        InputDef(name, tuple(int(d) for d in shape.dim)) for name, shape in zip(net.input, net.input_shape, strict=True)
    ]
    channels = {i.name: (i.shape[1] if len(i.shape) > 1 else None) for i in inputs}
    layers = []
    for layer in net.layer:
        if layer.type in DEPTHWISE_TYPES:
            layer = _as_convolution(layer, channels, prototxt)
        if layer.type == "Input":
            for top, shape in zip(layer.top, _input_layer_shapes(layer, prototxt), strict=True):
                inputs.append(InputDef(top, shape))
                channels[top] = shape[1] if len(shape) > 1 else None
        blobs = _checked_blobs(layer, weights.get(layer.name), channels, prototxt, caffemodel)
        layers.append(LayerDef(layer.name, layer.type, tuple(layer.bottom), tuple(layer.top), layer, tuple(blobs)))
        _track_channels(layer, channels)
    return NetDef(net.name, tuple(inputs), tuple(layers), prototxt)


#: The forks' depthwise convolution types: Convolutions with one group per input channel.
DEPTHWISE_TYPES = ("ConvolutionDepthwise", "DepthwiseConvolution")


def _as_convolution(layer, channels, prototxt) -> caffe_pb2.LayerParameter:
    """A depthwise layer as the Convolution it is, ``group`` = its input's channels when not given.

    The net chooses linear rules and folds BatchNorm/Scale by the type name "Convolution", so the layer takes it.
    """
    converted = caffe_pb2.LayerParameter()
    converted.CopyFrom(layer)
    converted.type = "Convolution"
    p = converted.convolution_param
    if not p.HasField("group"):
        count = channels.get(layer.bottom[0]) if len(layer.bottom) else None
        if count is None:
            raise ModelError(
                f"{prototxt}: layer '{layer.name}' ({layer.type}) gives no group and its input's channel count is "
                "not known from the prototxt; give convolution_param.group"
            )
        p.group = count
    return converted


def _input_layer_shapes(layer: caffe_pb2.LayerParameter, prototxt: str) -> list[tuple[int, ...]]:
    shapes = [tuple(int(d) for d in s.dim) for s in layer.input_param.shape]
    if len(shapes) == 1:
        shapes = shapes * len(layer.top)
    if len(shapes) != len(layer.top):
        raise ModelError(
            f"{prototxt}: Input layer '{layer.name}' has {len(layer.top)} top(s) but "
            f"{len(layer.input_param.shape)} input_param shape(s); need one, or one per top"
        )
    return shapes


# Layer types whose blob count and shapes are checked; any other type takes its blobs as they are.
_PARAMETERLESS_TYPES = {
    "AbsVal", "ArgMax", "Axpy", "BNLL", "Clip", "Concat", "Crop", "Dropout", "ELU", "Eltwise", "Exp", "Flatten",
    "Input", "LRN", "Log", "MVN", "Pooling", "Power", "ReLU", "ReLU6", "Reduction", "Reshape", "ShuffleChannel",
    "Sigmoid", "Silence", "Slice", "Softmax", "Split", "SPP", "Swish", "TanH", "Threshold", "Tile",
}  # fmt: skip
_CHANNEL_KEEPING_TYPES = {
    "AbsVal", "Axpy", "BatchNorm", "Bias", "BNLL", "Clip", "Dropout", "ELU", "Eltwise", "Exp", "Log", "LRN", "MVN",
    "Pooling", "Power", "PReLU", "ReLU", "ReLU6", "Scale", "ShuffleChannel", "Sigmoid", "Softmax", "Split", "Swish",
    "TanH", "Threshold",
}  # fmt: skip


def _checked_blobs(layer, blobs, channels, prototxt, caffemodel) -> list[np.ndarray]:
    """The layer's caffemodel blobs, reshaped from legacy 4-D where needed; ModelError on mismatch."""
    label = f"layer '{layer.name}' ({layer.type})"
    expected = _expected_shapes(layer, channels, prototxt)
    if expected is None:  # not checked
        return list(blobs or [])
    if not expected:
        if blobs:
            raise ModelError(f"{caffemodel}: {label} has {len(blobs)} blob(s) but takes none")
        return []
    if not blobs:
        raise ModelError(f"{caffemodel}: has no weights for {label}, which needs {len(expected)} blob(s) ({prototxt})")
    if len(blobs) != len(expected):
        raise ModelError(
            f"{caffemodel}: {label} has {len(blobs)} blob(s), the prototxt implies {len(expected)} "
            f"({_describe(expected)}) ({prototxt})"
        )
    checked = []
    for index, (blob, want) in enumerate(zip(blobs, expected, strict=True)):
        fitted = _fit(blob, want)
        if fitted is None:
            raise ModelError(
                f"{caffemodel}: {label} blob {index} has shape {tuple(blob.shape)}, "
                f"the prototxt implies {_describe([want])} ({prototxt})"
            )
        checked.append(fitted)
    return checked


def _describe(shapes) -> str:
    return ", ".join("(" + ", ".join("?" if d is None else str(d) for d in s) + ")" for s in shapes)


def _fit(blob: np.ndarray, want: tuple[int | None, ...]) -> np.ndarray | None:
    """``blob`` if it has shape ``want`` (None = any size), else reshaped from a legacy form, else None.

    Legacy forms are Caffe's old 4-D blobs with leading ones (e.g. 1x1xNxK for an inner product,
    1x1x1xN for a bias): same trailing dimensions once the extra leading ones are dropped.
    """

    def matches(shape):
        return len(shape) == len(want) and all(w is None or w == d for d, w in zip(shape, want, strict=True))

    if matches(blob.shape):
        return blob
    extra = blob.ndim - len(want)
    if extra > 0 and all(d == 1 for d in blob.shape[:extra]) and matches(blob.shape[extra:]):
        return blob.reshape(blob.shape[extra:])
    if None not in want and blob.size == int(np.prod(want)) and blob.ndim != len(want):
        # e.g. a scalar stored as (1, 1, 1, 1); only when the whole shape is known
        return blob.reshape(want)
    return None


def _expected_shapes(layer, channels, prototxt):
    """Blob shapes the layer's parameters imply (None for unknown sizes); None = type not checked."""
    kind = layer.type
    in_channels = channels.get(layer.bottom[0]) if len(layer.bottom) else None
    if kind in _PARAMETERLESS_TYPES:
        return []
    if kind in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        kernel = _kernel_shape(layer, prototxt)
        group = p.group or 1
        per_group_in = in_channels // group if in_channels is not None and in_channels % group == 0 else None
        if kind == "Convolution":
            weights = (p.num_output, per_group_in, *kernel)
        else:
            weights = (in_channels, p.num_output // group, *kernel)
        return [weights, (p.num_output,)] if p.bias_term else [weights]
    if kind == "InnerProduct":
        p = layer.inner_product_param
        weights = (None, p.num_output) if p.transpose else (p.num_output, None)
        return [weights, (p.num_output,)] if p.bias_term else [weights]
    if kind == "Embed":
        p = layer.embed_param
        weights = (p.input_dim, p.num_output)
        return [weights, (p.num_output,)] if p.bias_term else [weights]
    if kind == "BatchNorm":
        return [(in_channels,), (in_channels,), (1,)]
    if kind == "PReLU":
        return [(1,) if layer.prelu_param.channel_shared else (in_channels,)]
    if kind in ("Scale", "Bias"):
        # A second bottom supplies the factor (Scale) or the bias (Bias) instead of a blob.
        own_blob = len(layer.bottom) == 1
        p = layer.scale_param if kind == "Scale" else layer.bias_param
        count = int(own_blob) + int(kind == "Scale" and p.bias_term)
        if count and p.axis == 1 and p.num_axes == 1:
            return [(in_channels,)] * count
        return None if count else []
    if kind == "Parameter":
        return [tuple(int(d) for d in layer.parameter_param.shape.dim)]
    return None


def _kernel_shape(layer, prototxt) -> tuple[int, ...]:
    p = layer.convolution_param
    if p.HasField("kernel_h") or p.HasField("kernel_w"):
        if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise ModelError(f"{prototxt}: layer '{layer.name}' gives only one of kernel_h and kernel_w")
        return (p.kernel_h, p.kernel_w)
    if len(p.kernel_size) == 1:
        return (p.kernel_size[0],) * 2
    if len(p.kernel_size) > 1:
        return tuple(p.kernel_size)
    raise ModelError(f"{prototxt}: layer '{layer.name}' ({layer.type}) has no kernel_size")


def _track_channels(layer, channels: dict[str, int | None]) -> None:
    """Record the channel count of the layer's tops when it follows from the bottoms and params."""
    kind = layer.type
    bottoms = [channels.get(b) for b in layer.bottom]
    if kind in ("Convolution", "Deconvolution"):
        out = layer.convolution_param.num_output
    elif kind == "InnerProduct" and layer.inner_product_param.axis == 1:
        out = layer.inner_product_param.num_output
    elif kind in _CHANNEL_KEEPING_TYPES and bottoms:
        out = bottoms[0]
    elif kind == "Concat" and layer.concat_param.axis == 1 and bottoms and None not in bottoms:
        out = sum(bottoms)
    elif kind == "Slice":
        for top, count in zip(layer.top, _slice_channels(layer, bottoms[0] if bottoms else None), strict=True):
            channels[top] = count
        return
    else:
        out = None
    for top in layer.top:
        if kind != "Input":
            channels[top] = out


def _slice_channels(layer, count: int | None) -> list[int | None]:
    """The channel count of each top of a Slice (None where it does not follow from the prototxt)."""
    p = layer.slice_param
    axis = p.axis if p.HasField("axis") or not p.HasField("slice_dim") else p.slice_dim
    tops = len(layer.top)
    if axis != 1 or count is None:
        return [None] * tops
    if not len(p.slice_point):
        return [count // tops if count % tops == 0 else None] * tops
    bounds = [0, *p.slice_point, count]
    if len(bounds) != tops + 1:
        return [None] * tops
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]
