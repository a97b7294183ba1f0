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

    def batchnorm(self, name, bottom, top=None, factor: float = 3.75, eps: float = 1e-5,
                  mean_scale: float = 0.5) -> str:
        """Stored statistics are mean·factor, var·factor and the moving-average factor itself (Caffe's layout)."""
        c = self.channels[bottom]
        mean, var = self.randn(c, scale=mean_scale), self.uniform(0.3, 2.0, c)
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


# ------------------------------------------------------------------------------------------------------------------
# Test-made nets (shared by the forward, folding, explainer and relevance tests)
# ------------------------------------------------------------------------------------------------------------------
def resnet_block(header="layer", seed=1) -> NetBuilder:
    """Conv → BN → Scale → ReLU, then a block with a two-conv branch and a projection shortcut (convolutions
    without bias, as in ResNet), Eltwise SUM, ReLU, global AVE pooling, InnerProduct, Softmax. BN and Scale in place."""
    b = NetBuilder((1, 3, 12, 12), header=header, name="resnet_block", seed=seed)
    b.conv("conv1", "data", 8, 3, pad=[1])
    b.batchnorm("bn_conv1", "conv1", top="conv1", factor=3.75)
    b.scale("scale_conv1", "conv1", top="conv1")
    b.same("conv1_relu", "ReLU", "conv1", top="conv1")
    b.conv("res2a_branch1", "conv1", 6, 1, bias=False, stride=[2])
    b.batchnorm("bn2a_branch1", "res2a_branch1", top="res2a_branch1", factor=0.125, eps=1e-3)
    b.scale("scale2a_branch1", "res2a_branch1", top="res2a_branch1")
    b.conv("res2a_branch2a", "conv1", 5, 3, bias=False, pad=[1], stride=[2])
    b.batchnorm("bn2a_branch2a", "res2a_branch2a", top="res2a_branch2a", factor=999.98)
    b.scale("scale2a_branch2a", "res2a_branch2a", top="res2a_branch2a")
    b.same("res2a_branch2a_relu", "ReLU", "res2a_branch2a", top="res2a_branch2a")
    b.conv("res2a_branch2b", "res2a_branch2a", 6, 3, bias=False, pad=[1])
    b.batchnorm("bn2a_branch2b", "res2a_branch2b", top="res2a_branch2b", factor=1.0)
    b.scale("scale2a_branch2b", "res2a_branch2b", top="res2a_branch2b")
    b.same("res2a", "Eltwise", ["res2a_branch1", "res2a_branch2b"], eltwise_param={"operation": "SUM"})
    b.same("res2a_relu", "ReLU", "res2a", top="res2a")
    b.same("pool", "Pooling", "res2a", pooling_param={"pool": "AVE", "global_pooling": True})
    b.inner_product("fc", "pool", 5, 6)
    b.same("prob", "Softmax", "fc")
    return b


def pooling_zoo() -> NetBuilder:
    """Grouped and dilated convolution, Concat, LRN both ways, MAX/AVE pooling with padding and ceil-mode edges,
    Sigmoid, Dropout (not in place), TanH, Flatten, InnerProduct, Softmax."""
    b = NetBuilder((1, 6, 12, 12), name="zoo", seed=2)
    b.conv("conv_g", "data", 8, 3, group=2, pad=[1])
    b.conv("conv_d", "data", 4, 3, pad=[2], dilation=[2])
    b.add("cat", "Concat", ["conv_g", "conv_d"])
    b.channels["cat"] = 12
    # k stays at its default 1: OpenCV ignores Caffe's k (see test_lrn_matches_caffe_definition)
    b.same("lrn_across", "LRN", "cat",
           lrn_param={"local_size": 5, "alpha": 0.5, "beta": 0.75, "norm_region": "ACROSS_CHANNELS"})
    # 12 → ceil((12 + 2 − 3)/2) + 1 = 7: the last window starts at 11 and covers one real row
    b.same("pool_max", "Pooling", "lrn_across", pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1})
    b.same("lrn_within", "LRN", "pool_max",
           lrn_param={"local_size": 3, "alpha": 0.5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"})
    # 7 → 4, the last window covers rows 5, 6 and one padding row (counted in the divisor)
    b.same("pool_ave", "Pooling", "lrn_within", pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1})
    b.same("sigmoid", "Sigmoid", "pool_ave")
    b.same("drop", "Dropout", "sigmoid", dropout_param={"dropout_ratio": 0.5})
    b.same("tanh", "TanH", "drop")
    b.add("flat", "Flatten", "tanh")
    b.inner_product("fc", "flat", 7, 12 * 4 * 4)
    b.same("prob", "Softmax", "fc")
    return b


def images(shape, n=1, seed=7, scale=50.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, *shape[1:])) * scale).astype(np.float32)


def fc_head() -> NetBuilder:
    """Rectangular convolution (kernel_h/w, stride_h/w, pad_h/w), a transposed InnerProduct followed by
    BatchNorm → Scale → ReLU (a fold on a 2-D blob), InnerProduct."""
    b = NetBuilder((1, 3, 9, 8), seed=14)
    b.add("rect", "Convolution", "data", None, [b.randn(4, 3, 3, 2, scale=0.4), b.randn(4, scale=0.1)],
          convolution_param={"num_output": 4, "kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 1,
                             "pad_h": 1, "pad_w": 0})
    b.channels["rect"] = 4
    fan_in = 4 * 5 * 7
    b.add("ipt", "InnerProduct", "rect", None, [b.randn(fan_in, 6, scale=fan_in**-0.5), b.randn(6, scale=0.1)],
          inner_product_param={"num_output": 6, "transpose": True})
    b.channels["ipt"] = 6
    b.batchnorm("bn", "ipt", top="ipt")
    b.scale("sc", "ipt", top="ipt")
    b.same("relu", "ReLU", "ipt", top="ipt")
    b.inner_product("fc", "ipt", 3, 6)
    return b


def small_classifier(header: str) -> NetBuilder:
    b = NetBuilder((1, 3, 10, 10), header=header, seed=5)
    b.conv("conv1", "data", 6, 3, stride=[1], pad=[1])
    b.same("relu1", "ReLU", "conv1", top="conv1")
    b.same("norm1", "LRN", "conv1", lrn_param={"local_size": 3, "alpha": 0.1, "beta": 0.75})
    b.same("pool1", "Pooling", "norm1", pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    b.inner_product("fc1", "pool1", 8, 6 * 5 * 5)
    b.same("relu2", "ReLU", "fc1", top="fc1")
    b.same("drop", "Dropout", "fc1", top="fc1", dropout_param={"dropout_ratio": 0.5})
    b.inner_product("fc2", "fc1", 4, 8)
    b.same("prob", "Softmax", "fc2")
    return b


def zoo_like(zero_bias: bool) -> NetBuilder:
    """conv → ReLU → depthwise (ConvolutionDepthwise, no group, stride 2) → hard-swish (Power, ReLU6, Power,
    Eltwise PROD) → ShuffleChannel → Slice (2 | 4 channels) → [a; SE gate by a two-bottom Scale on conv_b;
    Axpy(gate, conv_b, proj)] → Concat → ReLU → MAX pooling (floor) → InnerProduct → Softmax."""
    b = NetBuilder((1, 4, 10, 10), seed=23)

    def conv(name, bottom, cout, kernel=1, **extra):
        top = b.conv(name, bottom, cout, kernel, bias=not zero_bias, **extra)
        return top

    conv("conv0", "data", 6, 3, pad=[1])
    b.same("relu0", "ReLU", "conv0", top="conv0")
    blobs = [b.randn(6, 1, 3, 3, scale=0.5)] + ([] if zero_bias else [b.randn(6, scale=0.1)])
    b.add("dw1", "ConvolutionDepthwise", "conv0", None, blobs, convolution_param={
        "num_output": 6, "kernel_size": [3], "stride": [2], "pad": [1], "bias_term": not zero_bias})
    b.channels["dw1"] = 6
    b.same("plus3", "Power", "dw1", power_param={"shift": 3.0})
    b.same("clip", "ReLU6", "plus3")
    b.same("sixth", "Power", "clip", power_param={"scale": 1 / 6})
    b.same("hswish", "Eltwise", ["dw1", "sixth"], eltwise_param={"operation": "PROD"})
    b.same("shuffle", "ShuffleChannel", "hswish", shuffle_channel_param={"group": 2})
    b.add("slice", "Slice", "shuffle", ["part_a", "part_b"], (), slice_param={"axis": 1, "slice_point": [2]})
    b.channels.update(part_a=2, part_b=4)
    conv("conv_b", "part_b", 4)
    conv("proj", "part_b", 4)
    b.same("squeeze", "Pooling", "conv_b", pooling_param={"pool": "AVE", "global_pooling": True})
    b.inner_product("fc_down", "squeeze", 2, 4)
    b.same("fc_relu", "ReLU", "fc_down", top="fc_down")
    b.inner_product("fc_up", "fc_down", 4, 2)
    b.same("gate", "Sigmoid", "fc_up")
    b.same("scaled", "Scale", ["conv_b", "gate"], scale_param={"axis": 0})
    conv("up", "squeeze", 4)
    b.same("gate2", "Sigmoid", "up")
    b.same("axpy", "Axpy", ["gate2", "scaled", "proj"])
    b.add("cat", "Concat", ["part_a", "scaled", "axpy"])
    b.channels["cat"] = 10
    b.same("relu_cat", "ReLU", "cat", top="cat")
    b.same("pool", "Pooling", "cat", pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2, "ceil_mode": False})
    b.add("fc", "InnerProduct", "pool", None,
          [b.randn(5, 10 * 2 * 2, scale=0.3)] + ([] if zero_bias else [b.randn(5, scale=0.1)]),
          inner_product_param={"num_output": 5, "bias_term": not zero_bias})
    b.channels["fc"] = 5
    b.same("prob", "Softmax", "fc")
    return b


def residual_net(blocks: int = 3, seed: int = 31, width: int = 32) -> NetBuilder:
    """A ResNet-style net without any bias (convolutions and the classifier without bias terms, BatchNorm with
    zero means and random variances, Scale with random signed γ and no β), ``width`` channels (fan-ins large enough
    that a neuron with contributions of one sign only is rare): conv → BN → Scale → ReLU, then
    ``blocks`` residual blocks (two 3×3 conv-BN-Scale with a ReLU between; identity shortcuts, a 1×1 projection
    with stride 2 in every second block), Eltwise SUM, ReLU; global AVE pooling, InnerProduct, Softmax."""
    b = NetBuilder((1, 3, 16, 16), name="residual", seed=seed)

    def unit(name, bottom, cout, kernel, relu=True, **conv):
        b.conv(name, bottom, cout, kernel, bias=False, **conv)
        b.batchnorm(f"bn_{name}", name, top=name, mean_scale=0.0)
        b.scale(f"scale_{name}", name, top=name, bias=False)
        if relu:
            b.same(f"relu_{name}", "ReLU", name, top=name)
        return name

    x = unit("conv1", "data", width, 3, pad=[1])
    for k in range(blocks):
        stride = 2 if k % 2 else 1
        branch = unit(f"res{k}a", x, width, 3, pad=[1], stride=[stride])
        branch = unit(f"res{k}b", branch, width, 3, relu=False, pad=[1])
        shortcut = unit(f"res{k}s", x, width, 1, relu=False, stride=[stride]) if stride > 1 else x
        x = b.same(f"res{k}", "Eltwise", [branch, shortcut], eltwise_param={"operation": "SUM"})
        b.same(f"res{k}_relu", "ReLU", x, top=x)
    b.same("pool", "Pooling", x, pooling_param={"pool": "AVE", "global_pooling": True})
    b.add("fc", "InnerProduct", "pool", None, [b.randn(5, width, scale=width**-0.5)],
          inner_product_param={"num_output": 5, "bias_term": False})
    b.channels["fc"] = 5
    b.same("prob", "Softmax", "fc")
    return b


def explainer(net, formula: int, epsilon: float = 1.0, beta: float = 1.0, aux: int = 0, last: int = -1,
              first: int = 0, numclasses: int = 5, lrn_relevance: str = "original"):
    """An Explainer of ``net`` with these config settings (relpropformulatype, epsstab, alphabeta_beta, aux,
    lastlayerindex, firstlayerindex, numclasses, lrn_relevance)."""
    from lrp_cli.composite import RelevanceSettings
    from lrp_cli.explain import Explainer

    settings = RelevanceSettings(formula, epsilon, beta, aux, last, first, lrn_relevance)
    return Explainer(net, settings, numclasses)


def logits64(net, x, output: str):
    """The forward pass in float64 (the layers keep their input's precision) for inputs ``x`` (N×C×H×W): blob
    ``output``."""
    blobs = {net.input_name: x}
    for node in net.nodes:
        if node.type == "Input":
            continue
        tops, _ = node.layer.forward([blobs[b] for b in node.bottoms])
        blobs.update(zip(node.tops, tops, strict=True))
        if node.name == output:
            return blobs[output]
    raise AssertionError(f"no layer {output}")


def score_gradient(net, x, weights, output: str, h: float):
    """The slow literal oracle of the gradient formulas: Σ_c weights[c]·∂ output_c / ∂x by central differences of
    :func:`logits64`, one input value at a time. x: 1×C×H×W float64 → 1×C×H×W."""
    numeric = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[index] += h
        minus[index] -= h
        numeric[index] = (logits64(net, plus, output)[0] - logits64(net, minus, output)[0]) @ weights / (2 * h)
    return numeric

