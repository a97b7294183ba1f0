"""Write small Caffe nets (deploy prototxt + caffemodel) for tests, with caffe_pb2 and seeded random weights.

``NetBuilder`` collects layers as dicts of LayerParameter fields (``convolution_param={"num_output": 4}``,
enums by name) plus their weight arrays, and writes either the V2 format (``layer``, blobs with ``shape``) or the
V1 format (``layers`` with enum types, blobs with the legacy num/channels/height/width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import json_format, text_format

from lrp_cli.caffe import caffe_pb2

V1_TYPES = {
    "Convolution": "CONVOLUTION",
    "ReLU": "RELU",
    "Pooling": "POOLING",
    "InnerProduct": "INNER_PRODUCT",
    "Softmax": "SOFTMAX",
    "LRN": "LRN",
    "Concat": "CONCAT",
    "Dropout": "DROPOUT",
    "Flatten": "FLATTEN",
    "Sigmoid": "SIGMOID",
    "TanH": "TANH",
    "Eltwise": "ELTWISE",
}


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    params: dict
    blobs: list[np.ndarray] = field(default_factory=list)


class NetBuilder:
    """``header``: "layer" (an Input layer), "input_shape" or "input_dim" (legacy ``input:`` declarations)."""

    def __init__(self, input_shape, header: str = "layer", name: str = "testnet", seed: int = 0):
        self.input_shape = tuple(int(d) for d in input_shape)
        self.header = header
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.layers: list[Layer] = []
        self.channels = {"data": self.input_shape[1]}

    # -- random parameters ------------------------------------------------------------------------------------
    def randn(self, *shape, scale: float = 1.0) -> np.ndarray:
        return (self.rng.standard_normal(shape) * scale).astype(np.float32)

    def uniform(self, low, high, *shape) -> np.ndarray:
        return self.rng.uniform(low, high, shape).astype(np.float32)

    # -- layers -----------------------------------------------------------------------------------------------
    def add(self, name, type_, bottoms, tops=None, blobs=(), **params) -> str:
        bottoms = [bottoms] if isinstance(bottoms, str) else list(bottoms)
        tops = [name] if tops is None else ([tops] if isinstance(tops, str) else list(tops))
        self.layers.append(Layer(name, type_, bottoms, tops, params, [np.asarray(b, np.float32) for b in blobs]))
        return tops[0]

    def conv(self, name, bottom, num_output, kernel=3, top=None, bias=True, group=1, **conv_param) -> str:
        cin = self.channels[bottom]
        fan_in = cin // group * kernel * kernel
        blobs = [self.randn(num_output, cin // group, kernel, kernel, scale=fan_in**-0.5)]
        if bias:
            blobs.append(self.randn(num_output, scale=0.1))
        p = {"num_output": num_output, "kernel_size": [kernel], "bias_term": bias, **conv_param}
        if group != 1:
            p["group"] = group
        top = self.add(name, "Convolution", bottom, top, blobs, convolution_param=p)
        self.channels[top] = num_output
        return top

    def batchnorm(self, name, bottom, top=None, factor: float = 3.75, eps: float = 1e-5) -> str:
        """Stored statistics are mean·factor, var·factor and the moving-average factor itself (Caffe's layout)."""
        c = self.channels[bottom]
        mean, var = self.randn(c, scale=0.5), self.uniform(0.3, 2.0, c)
        blobs = [mean * factor, var * factor, np.array([factor], np.float32)]
        top = self.add(name, "BatchNorm", bottom, top, blobs,
                       batch_norm_param={"use_global_stats": True, "eps": eps})
        self.channels[top] = c
        return top

    def scale(self, name, bottom, top=None, bias=True) -> str:
        c = self.channels[bottom]
        blobs = [self.uniform(0.5, 1.5, c) * self.rng.choice([-1, 1], c).astype(np.float32)]
        if bias:
            blobs.append(self.randn(c, scale=0.3))
        top = self.add(name, "Scale", bottom, top, blobs, scale_param={"bias_term": bias})
        self.channels[top] = c
        return top

    def inner_product(self, name, bottom, num_output, fan_in, top=None) -> str:
        blobs = [self.randn(num_output, fan_in, scale=fan_in**-0.5), self.randn(num_output, scale=0.1)]
        top = self.add(name, "InnerProduct", bottom, top, blobs, inner_product_param={"num_output": num_output})
        self.channels[top] = num_output
        return top

    def same(self, name, type_, bottom, top=None, blobs=(), **params) -> str:
        """A channel-keeping layer."""
        top = self.add(name, type_, bottom, top, blobs, **params)
        first = bottom if isinstance(bottom, str) else bottom[0]
        self.channels[top] = self.channels[first]
        return top

    # -- output -----------------------------------------------------------------------------------------------
    def net_parameter(self, v1: bool = False, with_blobs: bool = False) -> caffe_pb2.NetParameter:
        net = caffe_pb2.NetParameter(name=self.name)
        if self.header == "layer":
            if v1:
                raise ValueError("V1 nets have no Input layer; use header='input_dim' or 'input_shape'")
            net.layer.add(name="data", type="Input", top=["data"]).input_param.shape.add(dim=self.input_shape)
        else:
            net.input.append("data")
            if self.header == "input_dim":
                net.input_dim.extend(self.input_shape)
            else:
                net.input_shape.add(dim=self.input_shape)
        for layer in self.layers:
            fields = {"name": layer.name, "bottom": layer.bottoms, "top": layer.tops, **layer.params}
            if v1:
                fields["type"] = V1_TYPES[layer.type]
                message = json_format.ParseDict(fields, net.layers.add())
            else:
                fields["type"] = layer.type
                message = json_format.ParseDict(fields, net.layer.add())
            if with_blobs:
                for array in layer.blobs:
                    blob = message.blobs.add()
                    if v1:  # legacy 4-D shape with leading ones
                        legacy = (1,) * (4 - array.ndim) + array.shape
                        blob.num, blob.channels, blob.height, blob.width = legacy
                    else:
                        blob.shape.dim.extend(array.shape)
                    blob.data.extend(array.ravel().tolist())
        return net

    def write(self, folder, stem: str = "net", v1: bool = False) -> tuple[Path, Path]:
        """Write ``stem.prototxt`` and ``stem.caffemodel`` into ``folder``; returns both paths."""
        folder = Path(folder)
        prototxt, caffemodel = folder / f"{stem}.prototxt", folder / f"{stem}.caffemodel"
        prototxt.write_text(text_format.MessageToString(self.net_parameter(v1)))
        caffemodel.write_bytes(self.net_parameter(v1, with_blobs=True).SerializeToString())
        return prototxt, caffemodel
