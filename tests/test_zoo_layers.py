"""The layers and schema fields the Model Zoo nets need, against slow literal versions and OpenCV.

- Schema: the forks' ``ceil_mode`` and ``shuffle_channel_param`` parse; an unknown field is one line naming the
  prototxt, the layer and the field; ``round_mode`` and ``ceil_mode`` are honoured (output sizes and values equal
  OpenCV's) and a contradiction between them is an error.
- Layers (forward and every relevance mode) against literal loops: pooling with floor rounding, Slice,
  ShuffleChannel, the depthwise convolution (every linear rule against the dense-matrix formulas of
  tests/test_rules.py), ReLU6, Power, and the gates Axpy, Scale with a second bottom and Eltwise PROD.
- A small net with all of them, read from prototxt + caffemodel: conservation of ε-relevance with zero biases,
  formula 11 = score × numerical gradient, a batch equal to one image at a time.
"""

from __future__ import annotations

import itertools
import zlib

import cv2
import numpy as np
import pytest
from google.protobuf import text_format
from netbuilder import NetBuilder, explainer, logits64, score_gradient, zoo_like
from test_rules import RULES, ConvCase, check_rule, conv_layer, conv_param

from lrp_cli.caffe import caffe_pb2, load_model, read_prototxt
from lrp_cli.errors import ModelError
from lrp_cli.layers import Saved
from lrp_cli.layers.axpy import Axpy
from lrp_cli.layers.convolution import Convolution
from lrp_cli.layers.eltwise import Eltwise
from lrp_cli.layers.pooling import Pooling
from lrp_cli.layers.power import Power
from lrp_cli.layers.relu6 import ReLU6
from lrp_cli.layers.scale import GatedScale, Scale
from lrp_cli.layers.shuffle_channel import ShuffleChannel
from lrp_cli.layers.slice import Slice
from lrp_cli.layers.windows import correlate, depthwise_correlate, depthwise_correlate_transposed
from lrp_cli.net import Net
from lrp_cli.rules import (
    AlphaBeta,
    Epsilon,
    Gradient,
    Guided,
    Pass,
    Positive,
    Proportional,
    Transposed,
    WinnerTakesAll,
)


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0, "degenerate test data: the literal result is all zero"
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / scale)


def layer_param(type_name: str, bottoms=("x",), tops=("y",), **fields) -> caffe_pb2.LayerParameter:
    """A LayerParameter from text-format fields, e.g. slice_param='axis: 1 slice_point: 2'."""
    param = caffe_pb2.LayerParameter(name=type_name.lower(), type=type_name, bottom=list(bottoms), top=list(tops))
    for key, value in fields.items():
        text_format.Parse(value, getattr(param, key))
    return param


# ---------------------------------------------------------------------------------------------------------------
# Schema: fork fields and unknown fields


def test_fork_fields_parse(tmp_path):
    path = tmp_path / "fork.prototxt"
    path.write_text(
        'name: "fork"\ninput: "data"\ninput_shape { dim: 1 dim: 6 dim: 8 dim: 8 }\n'
        'layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"\n'
        "  pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }\n"
        'layer { name: "shuffle" type: "ShuffleChannel" bottom: "pool" top: "shuffle"\n'
        "  shuffle_channel_param { group: 3 } }\n"
        'layer { name: "pool2" type: "Pooling" bottom: "shuffle" top: "pool2"\n'
        "  pooling_param { pool: AVE kernel_size: 2 round_mode: FLOOR } }\n"
    )
    net = read_prototxt(path)
    assert net.layer[0].pooling_param.HasField("ceil_mode") and not net.layer[0].pooling_param.ceil_mode
    assert net.layer[1].shuffle_channel_param.group == 3
    assert net.layer[2].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert not net.layer[2].pooling_param.HasField("ceil_mode") and net.layer[2].pooling_param.ceil_mode  # default
    # the schema's numbers: the fork's for shuffle_channel_param; ceil_mode moved off BVLC's round_mode (13)
    fields = caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_name
    assert fields["round_mode"].number == 13 and fields["ceil_mode"].number == 1013
    assert caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name["shuffle_channel_param"].number == 164


@pytest.mark.parametrize(
    "net, old, new, layer, field",
    [
        ("densenet121", "ceil_mode: false", "ceil_mode: false\n    pad_type: 1", "pool1", "pad_type"),
        ("shufflenet_g3", "shuffle_channel_param {", "shuffle_channel_param {\n    axis: 1", "shuffle2", "axis"),
        ("nin", "num_output: 96", "num_output: 96\n    lr_scale: 2", "conv1", "lr_scale"),  # a V1 net
    ],
)
def test_unknown_fork_field_is_one_line_naming_prototxt_layer_and_field(shared, tmp_path, net, old, new, layer,
                                                                        field):
    text = (shared / "models" / "zoo" / net / "deploy.prototxt").read_text()
    assert old in text
    path = tmp_path / f"{net}.prototxt"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ModelError) as error:
        read_prototxt(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: line ")
    assert f"layer '{layer}'" in message and f"'{field}'" in message, message


def test_unknown_field_outside_layers_and_bad_values_inside(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "x"\nfoo: 1\n')
    with pytest.raises(ModelError, match=r"line 2, column 1: .*no field named \"foo\"") as error:
        read_prototxt(path)
    assert "layer" not in str(error.value)
    path.write_text('name: "x"\nlayer {\n  name: "p"  # a comment with a brace {\n  type: "Pooling"\n'
                    "  pooling_param { pool: MIN }\n}\n")
    with pytest.raises(ModelError, match=r"line 5, column \d+: layer 'p' \(Pooling\): .*MIN"):
        read_prototxt(path)


# ---------------------------------------------------------------------------------------------------------------
# Pooling: output sizes rounded up (Caffe's default) or down, against OpenCV and literally

POOL_GEOMETRIES = [(30, 3, 2, 0), (30, 3, 2, 1), (29, 2, 2, 0), (7, 3, 2, 1), (8, 3, 3, 1), (9, 4, 3, 2),
                   (112, 3, 2, 1), (5, 5, 1, 2), (10, 2, 3, 0)]  # (size, kernel, stride, pad)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("size", sorted({g[0] for g in POOL_GEOMETRIES}))
def test_pooling_rounding_matches_opencv(tmp_path, size, ceil, method):
    """Output sizes and values equal OpenCV's; our FLOOR is also read from BVLC's ``round_mode: FLOOR`` (OpenCV
    knows only the forks' ``ceil_mode``)."""
    geometries = [g for g in POOL_GEOMETRIES if g[0] == size]
    b = NetBuilder((1, 3, size, size), seed=size)
    for i, (_, kernel, stride, pad) in enumerate(geometries):
        b.same(f"pool{i}", "Pooling", "data", pooling_param={
            "pool": method, "kernel_size": kernel, "stride": stride, "pad": pad, "ceil_mode": ceil})
    prototxt, caffemodel = b.write(tmp_path)
    x = np.random.default_rng(size).normal(size=(2, 3, size, size)).astype(np.float32)
    names = [f"pool{i}" for i in range(len(geometries))]
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    theirs = []
    for image in x:
        cv_net.setInput(image[None])
        theirs.append([np.array(o, copy=True) for o in cv_net.forward(names)])
    variants = [prototxt]
    if not ceil:
        bvlc = tmp_path / "round_mode.prototxt"
        bvlc.write_text(prototxt.read_text().replace("ceil_mode: false", "round_mode: FLOOR"))
        assert "round_mode: FLOOR" in bvlc.read_text() and "ceil_mode" not in bvlc.read_text()
        variants.append(bvlc)
    for path in variants:
        forward = Net(load_model(path, caffemodel)).forward(x)
        for i, name in enumerate(names):
            reference = np.concatenate([t[i] for t in theirs])
            assert forward.blobs[name].shape == reference.shape, (path.name, geometries[i], reference.shape)
            np.testing.assert_allclose(forward.blobs[name], reference, rtol=1e-6, atol=1e-6)
        if size == 30:  # the case: kernel 3, stride 2 gives 15 × 15 rounded up, 14 × 14 rounded down
            assert forward.blobs["pool0"].shape[2:] == ((15, 15) if ceil else (14, 14))


def test_round_mode_and_ceil_mode_must_agree():
    param = layer_param("Pooling", pooling_param="pool: MAX kernel_size: 2 round_mode: FLOOR ceil_mode: true")
    with pytest.raises(ModelError, match="round_mode FLOOR and ceil_mode true"):
        Pooling("pool", param, ())
    agree = layer_param("Pooling", pooling_param="pool: MAX kernel_size: 2 round_mode: FLOOR ceil_mode: false")
    assert not Pooling("pool", agree, ()).ceil


def literal_windows(length, kernel, stride, pad, ceil):
    """[(start, end, size)] per output: Caffe's pooling_layer.cpp, in either rounding."""
    span = (length + 2 * pad - kernel) / stride
    out = (int(np.ceil(span)) if ceil else int(np.floor(span))) + 1
    if pad > 0 and (out - 1) * stride >= length + pad:
        out -= 1
    windows = []
    for p in range(out):
        start = p * stride - pad
        end = min(start + kernel, length + pad)
        windows.append((max(start, 0), min(end, length), end - start))
    return windows


@pytest.mark.parametrize("ceil", [True, False])
@pytest.mark.parametrize("size, kernel, stride, pad", POOL_GEOMETRIES[:6])
def test_pooling_relevance_with_either_rounding_equals_literal(ceil, size, kernel, stride, pad):
    """MAX: winner takes all (first maximum); AVE: in proportion to x_i/Σ_window x. Inputs in no window (floor
    rounding leaves the last rows out) get nothing."""
    rng = np.random.default_rng(size * 7 + kernel)
    x = rng.integers(-4, 5, size=(2, 2, size, size)).astype(np.float32)
    windows = literal_windows(size, kernel, stride, pad, ceil)
    for method in (0, 1):
        param = layer_param("Pooling", pooling_param=f"pool: {'MAX' if method == 0 else 'AVE'} kernel_size: {kernel} "
                                                     f"stride: {stride} pad: {pad} ceil_mode: {str(ceil).lower()}")
        layer = Pooling("pool", param, ())
        (y,), extra = layer.forward([x])
        assert y.shape[2:] == (len(windows), len(windows))
        R = rng.normal(size=y.shape)
        expected_y, expected_r = np.zeros(y.shape), np.zeros(x.shape)
        for n, c, (i, (hs, he, hsize)), (j, (ws, we, wsize)) in itertools.product(
            range(2), range(2), enumerate(windows), enumerate(windows)
        ):
            window = x[n, c, hs:he, ws:we].astype(np.float64)
            if method == 0:
                flat = int(np.argmax(window))  # first maximum in row-major order
                expected_y[n, c, i, j] = window.max()
                expected_r[n, c, hs + flat // window.shape[1], ws + flat % window.shape[1]] += R[n, c, i, j]
            else:
                expected_y[n, c, i, j] = window.sum() / (hsize * wsize)
                s = window.sum()
                expected_r[n, c, hs:he, ws:we] += window * R[n, c, i, j] / s if abs(s) >= 1e-6 else window
        assert relative_error(y, expected_y) <= 1e-6
        got = layer.relevance(WinnerTakesAll() if method == 0 else Proportional(), Saved([x], [y], extra),
                              [R.astype(np.float32)])[0]
        assert relative_error(got, expected_r) <= 1e-5, method
        if not ceil and windows[-1][1] < size:  # nothing, up to the rounding of AVE's float64 prefix sums
            outside = max(np.abs(got[..., windows[-1][1]:, :]).max(), np.abs(got[..., windows[-1][1]:]).max())
            assert outside <= 1e-9 * np.abs(got).max()


# ---------------------------------------------------------------------------------------------------------------
# Slice and ShuffleChannel: exact rearrangements


@pytest.mark.parametrize("fields, tops, bounds", [
    ("axis: 1 slice_point: 2 slice_point: 5", 3, [(0, 2), (2, 5), (5, 7)]),
    ("axis: 1", 1, [(0, 7)]),
    ("slice_dim: 2 slice_point: 1", 2, [(0, 1), (1, 4)]),  # the legacy axis field
    ("axis: -1 slice_point: 3", 2, [(0, 3), (3, 5)]),
])
def test_slice_forward_and_relevance_are_literal(fields, tops, bounds):
    x = np.random.default_rng(1).normal(size=(2, 7, 4, 5)).astype(np.float32)
    layer = Slice("slice", layer_param("Slice", tops=[f"t{k}" for k in range(tops)], slice_param=fields), ())
    outputs, _ = layer.forward([x])
    axis = 1 if "slice_dim" not in fields and "-1" not in fields else (2 if "slice_dim" in fields else 3)
    assert len(outputs) == tops
    for out, (lo, hi) in zip(outputs, bounds, strict=True):
        expected = np.zeros(out.shape, np.float32)
        for index in np.ndindex(out.shape):
            source = list(index)
            source[axis] += lo
            expected[index] = x[tuple(source)]
        assert out.shape[axis] == hi - lo
        np.testing.assert_array_equal(out, expected)
    relevance = [np.random.default_rng(k).normal(size=o.shape).astype(np.float32) for k, o in enumerate(outputs)]
    for mode in (Pass(), Gradient()):
        (back,) = layer.relevance(mode, Saved([x], outputs, {}), relevance)
        for r, (lo, hi) in zip(relevance, bounds, strict=True):
            np.testing.assert_array_equal(np.take(back, range(lo, hi), axis=axis), r)


def test_slice_equal_parts_and_bad_points():
    x = np.arange(2 * 6 * 2 * 2, dtype=np.float32).reshape(2, 6, 2, 2)
    outputs, _ = Slice("s", layer_param("Slice", tops=["a", "b", "c"]), ()).forward([x])
    assert [o.shape[1] for o in outputs] == [2, 2, 2]
    with pytest.raises(ModelError, match="equal parts"):
        Slice("s", layer_param("Slice", tops=["a", "b", "c", "d"]), ()).forward([x])
    with pytest.raises(ModelError, match="do not increase"):
        Slice("s", layer_param("Slice", tops=["a", "b"], slice_param="slice_point: 7"), ()).forward([x])
    with pytest.raises(ModelError, match="one fewer"):
        Slice("s", layer_param("Slice", tops=["a", "b"], slice_param="slice_point: 1 slice_point: 2"), ())


@pytest.mark.parametrize("channels, group", [(12, 3), (12, 4), (6, 1), (6, 6)])
def test_shuffle_channel_is_the_literal_permutation_and_relevance_its_inverse(channels, group):
    rng = np.random.default_rng(channels + group)
    x = rng.normal(size=(2, channels, 3, 2)).astype(np.float32)
    layer = ShuffleChannel("shuffle", layer_param("ShuffleChannel", shuffle_channel_param=f"group: {group}"), ())
    (y,), _ = layer.forward([x])
    per_group = channels // group
    expected = np.empty_like(x)
    for g in range(group):
        for k in range(per_group):
            expected[:, k * group + g] = x[:, g * per_group + k]  # top k·G + g = bottom g·K + k
    np.testing.assert_array_equal(y, expected)
    R = rng.normal(size=y.shape).astype(np.float32)
    for mode in (Pass(), Gradient()):
        (back,) = layer.relevance(mode, Saved([x], [y], {}), [R])
        literal = np.empty_like(R)
        for g in range(group):
            for k in range(per_group):
                literal[:, g * per_group + k] = R[:, k * group + g]
        np.testing.assert_array_equal(back, literal)
    with pytest.raises(ModelError, match="do not split"):
        ShuffleChannel("s", layer_param("ShuffleChannel", shuffle_channel_param="group: 5"), ()).forward([x])


# ---------------------------------------------------------------------------------------------------------------
# Depthwise convolution: every linear rule against the literal dense-matrix formulas of tests/test_rules.py

DEPTHWISE_CASES = [
    ConvCase(4, 4, (3, 3), pad=(1, 1), group=4, hw=(7, 8)),
    ConvCase(6, 6, (3, 3), stride=(2, 2), pad=(1, 1), group=6, hw=(9, 9)),
    ConvCase(3, 6, (3, 3), stride=(2, 2), pad=(1, 1), group=3, hw=(8, 7)),  # two outputs per channel
    ConvCase(4, 4, (5, 5), pad=(2, 2), dilation=2, group=4, hw=(9, 10), bias=False),
    ConvCase(4, 4, (3, 2), stride=(1, 2), pad=(1, 0), group=4, hw=(6, 7)),
    ConvCase(2, 2, (3, 3), stride=(4, 4), pad=(1, 1), group=2, hw=(10, 9)),  # stride > kernel
    ConvCase(4, 4, (1, 1), stride=(2, 2), group=4, hw=(7, 6)),
]


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[c.id for c in DEPTHWISE_CASES])
def test_depthwise_rule_equals_literal_formula(case, rule_name, kind):
    layer, dense = conv_layer(case)
    assert layer.depthwise
    seed = zlib.crc32(f"dw/{case.id}/{rule_name}/{kind}".encode())
    check_rule(layer, dense, rule_name, kind, (case.cin, *case.hw), seed=seed)


def test_depthwise_path_is_the_grouped_convolution():
    """Forward and adjoint equal the one-GEMM-per-group path (float32), and the adjoint identity holds in float64
    for strides, paddings, dilations, kernels larger and smaller than the stride, and two outputs per channel."""
    rng = np.random.default_rng(17)
    for case in DEPTHWISE_CASES:
        layer, dense = conv_layer(case)
        x = rng.normal(size=(3, case.cin, *case.hw)).astype(np.float32)
        ours = layer.forward([x])[0][0]
        grouped = correlate(x, layer.weight, layer.stride, layer.pad, layer.dilation, layer.group)
        grouped += layer.bias.reshape(1, -1, 1, 1) if layer.bias is not None else 0
        assert relative_error(ours, grouped) < 1e-6, case.id
        assert relative_error(ours[0].ravel(), dense.A @ x[0].ravel().astype(np.float64) + dense.b) < 1e-6
    bad = []
    for kh, kw, sh, sw, ph, pw, d, h, w, multiplier in itertools.product(
        (1, 2, 3), (1, 3), (1, 2, 3), (1, 2), (0, 1), (0, 2), (1, 2), (7, 8), (6,), (1, 2)
    ):
        if (kh - 1) * d + 1 > h + 2 * ph or (kw - 1) * d + 1 > w + 2 * pw:
            continue
        x = rng.normal(size=(2, 3, h, w))
        weight = rng.normal(size=(3 * multiplier, 1, kh, kw))
        y = depthwise_correlate(x, weight, (sh, sw), (ph, pw), (d, d))
        s = rng.normal(size=y.shape)
        back = depthwise_correlate_transposed(s, weight, x.shape, (sh, sw), (ph, pw), (d, d))
        assert back.shape == x.shape and y.dtype == back.dtype == np.float64
        if abs(float((y * s).sum()) - float((x * back).sum())) > 1e-9 * (np.abs(y * s).sum() + 1):
            bad.append((kh, kw, sh, sw, ph, pw, d, h, w, multiplier))
    assert not bad, bad[:5]


def test_depthwise_results_do_not_depend_on_the_batch():
    """An image's forward pass, adjoint and α-β relevance are the same bits alone and in a batch (planes are
    reduced in blocks whose composition depends on the batch; each plane's arithmetic must not)."""
    rng = np.random.default_rng(19)
    for case in (DEPTHWISE_CASES[1], DEPTHWISE_CASES[2], ConvCase(24, 24, (3, 3), pad=(1, 1), group=24, hw=(56, 56))):
        weights = (rng.normal(size=(case.cout, 1, *case.kernel)).astype(np.float32),
                   rng.normal(size=case.cout).astype(np.float32))
        layer = Convolution("conv", conv_param(case), weights)
        x = np.maximum(rng.normal(size=(5, case.cin, *case.hw)), 0).astype(np.float32)
        y = layer.forward([x])[0][0]
        R = rng.normal(size=y.shape).astype(np.float32)
        rules = (Epsilon(0.01), AlphaBeta(1.0))
        batch = [layer.relevance(rule, Saved([x], [y], {}), [R])[0] for rule in rules]
        for n in range(5):
            one = layer.forward([x[n : n + 1]])[0][0]
            assert np.array_equal(one[0], y[n]), case.id
            for rule, together in zip(rules, batch, strict=True):
                alone = layer.relevance(rule, Saved([x[n : n + 1]], [one], {}), [R[n : n + 1]])[0]
                assert np.array_equal(alone[0], together[n]), (case.id, rule)


def test_depthwise_types_are_convolutions_with_a_group_per_channel(tmp_path):
    """ConvolutionDepthwise without group gets group = its input's channels; both fork types become
    Convolution nodes when the model is read (the net's linear rules and BatchNorm folding apply)."""
    b = NetBuilder((1, 6, 8, 8), seed=3)
    weights = [b.randn(6, 1, 3, 3), b.randn(6, scale=0.1)]
    b.add("dw_fork", "ConvolutionDepthwise", "data", None, weights,
          convolution_param={"num_output": 6, "kernel_size": [3], "pad": [1]})
    b.add("dw_v3", "DepthwiseConvolution", "dw_fork", None, weights,
          convolution_param={"num_output": 6, "kernel_size": [3], "pad": [1], "group": 6})
    net = Net(load_model(*b.write(tmp_path)))
    for name in ("dw_fork", "dw_v3"):
        node = next(n for n in net.nodes if n.name == name)
        assert node.type == "Convolution" and type(node.layer) is Convolution
        assert node.layer.group == 6 and node.layer.depthwise
    x = b.randn(2, 6, 8, 8)
    grouped = correlate(x, weights[0], (1, 1), (1, 1), (1, 1), 6) + weights[1].reshape(1, -1, 1, 1)
    np.testing.assert_allclose(net.forward(x).blobs["dw_fork"], grouped, rtol=1e-5, atol=1e-5)


def test_depthwise_without_group_and_unknown_channels_is_an_error(tmp_path):
    b = NetBuilder((1, 6, 8, 8), seed=3)
    b.add("flat", "Reshape", "data", None, (), reshape_param={"shape": {"dim": [0, -1, 8, 8]}})
    b.add("dw", "ConvolutionDepthwise", "flat", None, [b.randn(6, 1, 3, 3)],
          convolution_param={"num_output": 6, "kernel_size": [3], "bias_term": False})
    with pytest.raises(ModelError, match="'dw' \\(ConvolutionDepthwise\\) gives no group"):
        load_model(*b.write(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# Element-wise maps: ReLU6 and Power


def test_relu6_forward_and_modes():
    x = np.array([[-2.0, 0.0, 0.5, 5.9, 6.0, 7.5]], np.float32)
    R = np.array([[1.0, -2.0, 3.0, -4.0, 5.0, 6.0]], np.float32)
    layer = ReLU6("r", layer_param("ReLU6"), ())
    (y,), _ = layer.forward([x])
    np.testing.assert_array_equal(y, np.array([[0, 0, 0.5, 5.9, 6, 6]], np.float32))
    saved = Saved([x], [y], {})
    np.testing.assert_array_equal(layer.relevance(Pass(), saved, [R])[0], R)
    np.testing.assert_array_equal(layer.relevance(Gradient(), saved, [R])[0], [[0, 0, 3, -4, 0, 0]])
    np.testing.assert_array_equal(layer.relevance(Positive(), saved, [R])[0], [[1, 0, 3, 0, 5, 6]])
    np.testing.assert_array_equal(layer.relevance(Guided(), saved, [R])[0], [[0, 0, 3, 0, 0, 0]])


@pytest.mark.parametrize("power, scale, shift", [(1, 1, 3), (1, 1 / 6, 0), (2, 0.5, 1), (0.5, 2, 4), (3, -1, 0.5),
                                                 (0, 2, 1), (1, 1, 0)])
def test_power_forward_and_derivative(power, scale, shift):
    param = layer_param("Power", power_param=f"power: {power} scale: {scale} shift: {shift}")
    layer = Power("p", param, ())
    x = np.random.default_rng(2).uniform(0.1, 3, size=(2, 3, 4)).astype(np.float32)
    (y,), _ = layer.forward([x])
    s, t, p = np.float64(np.float32(scale)), np.float64(np.float32(shift)), float(power)
    expected = np.ones_like(x, np.float64) if p == 0 else (t + s * x.astype(np.float64)) ** p
    assert relative_error(y, expected) < 1e-6 and y.dtype == np.float32 and y is not x
    R = np.random.default_rng(3).normal(size=x.shape).astype(np.float32)
    saved = Saved([x], [y], {})
    np.testing.assert_array_equal(layer.relevance(Pass(), saved, [R])[0], R)
    gradient = layer.relevance(Gradient(), saved, [R])[0]
    if p == 0:
        np.testing.assert_array_equal(gradient, 0)
    else:
        assert relative_error(gradient, R * p * s * (t + s * x.astype(np.float64)) ** (p - 1)) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Gates: the signal takes all relevance, the gate none (LRP rules); the product rule for gradients


def test_axpy_forward_and_relevance_are_literal():
    rng = np.random.default_rng(4)
    a = rng.uniform(0, 1, size=(2, 3, 1, 1)).astype(np.float32)
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    z = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    layer = Axpy("axpy", layer_param("Axpy", bottoms=("a", "x", "z")), ())
    (y,), _ = layer.forward([a, x, z])
    literal = np.empty(x.shape)
    for n, c in itertools.product(range(2), range(3)):
        literal[n, c] = float(a[n, c, 0, 0]) * x[n, c].astype(np.float64) + z[n, c]  # SENet: top = z + a·x
    assert relative_error(y, literal) < 1e-6
    R = rng.normal(size=y.shape).astype(np.float32)
    saved = Saved([a, x, z], [y], {})
    ax = a.astype(np.float64) * x
    # ε = 0: the split in proportion to the addends a·x and z (y = 0 is not divided)
    ratio = np.where(y != 0, R / np.where(y != 0, y, 1), R)
    got = layer.relevance(Epsilon(0.0), saved, [R])
    np.testing.assert_array_equal(got[0], 0)
    assert relative_error(got[1], ax * ratio) < 1e-5 and relative_error(got[2], z * ratio) < 1e-5
    assert abs(float(got[1].sum() + got[2].sum()) - float(R.sum())) < 1e-4 * np.abs(R).sum()
    # any linear rule (residual sums get the formula's): that rule over the two addends
    d = y + np.where(y >= 0, 0.5, -0.5)
    got = layer.relevance(Epsilon(0.5), saved, [R])
    assert relative_error(got[1], ax * R / d) < 1e-5 and relative_error(got[2], z * R / d) < 1e-5
    got = layer.relevance(AlphaBeta(1.0), saved, [R])
    parts = np.stack([ax, z])
    positive, negative = np.maximum(parts, 0), np.minimum(parts, 0)
    zp, zn = positive.sum(axis=0), negative.sum(axis=0)
    literal = (2 * positive * np.where(zp > 0, R / np.where(zp > 0, zp, 1), 0)
               - negative * np.where(zn < 0, R / np.where(zn < 0, zn, 1), 0))
    assert relative_error(got[1], literal[0]) < 1e-5 and relative_error(got[2], literal[1]) < 1e-5
    got = layer.relevance(Transposed(), saved, [R])
    np.testing.assert_array_equal(got[0], 0)
    assert relative_error(got[1], a * R) < 1e-7 and np.array_equal(got[2], R)
    # gradient: ∂y/∂a = Σ_hw x·R, ∂y/∂x = a·R, ∂y/∂z = R
    got = layer.relevance(Gradient(), saved, [R])
    assert relative_error(got[0], (x.astype(np.float64) * R).sum(axis=(2, 3), keepdims=True)) < 1e-6
    assert relative_error(got[1], a * R) < 1e-7 and np.array_equal(got[2], R)
    assert got[0].shape == a.shape
    with pytest.raises(ModelError, match="do not fit"):
        layer.forward([a[:, :2], x, z])


@pytest.mark.parametrize("axis, factor_shape", [(0, (2, 3)), (1, (3,)), (1, (3, 4)), (-3, (3, 4, 5))])
def test_scale_with_a_second_bottom(axis, factor_shape):
    rng = np.random.default_rng(axis + len(factor_shape))
    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    s = rng.uniform(0.1, 1, size=factor_shape).astype(np.float32)
    layer = Scale("gate", layer_param("Scale", bottoms=("x", "s"), scale_param=f"axis: {axis}"), ())
    assert isinstance(layer, GatedScale) and layer.type == "Scale"
    (y,), _ = layer.forward([x, s])
    start = axis % 4
    literal = np.empty(x.shape)
    for index in np.ndindex(x.shape):
        literal[index] = x[index] * float(s[index[start : start + len(factor_shape)]])
    assert relative_error(y, literal) < 1e-7
    R = rng.normal(size=y.shape).astype(np.float32)
    saved = Saved([x, s], [y], {})
    got = layer.relevance(Pass(), saved, [R])  # the rule a gate gets under the LRP formulas
    np.testing.assert_array_equal(got[0], R)
    assert got[1].shape == s.shape and not got[1].any()
    assert not layer.supports(Epsilon(0.01)) and not layer.supports(AlphaBeta(1.0))
    got = layer.relevance(Transposed(), saved, [R])
    assert relative_error(got[0], literal / x * R) < 1e-6 and not got[1].any()
    got = layer.relevance(Gradient(), saved, [R])
    gate_gradient = np.zeros(factor_shape)
    for index in np.ndindex(x.shape):
        gate_gradient[index[start : start + len(factor_shape)]] += float(x[index]) * float(R[index])
    assert relative_error(got[0], literal / x * R) < 1e-6 and relative_error(got[1], gate_gradient) < 1e-5
    with pytest.raises(ModelError, match="does not match"):
        layer.forward([x, s[..., :1] if s.ndim > 1 else s[:2]])


def test_scale_with_a_second_bottom_and_bias_is_refused():
    with pytest.raises(ModelError, match="second bottom and bias_term"):
        Scale("gate", layer_param("Scale", bottoms=("x", "s"), scale_param="bias_term: true"), ())


def test_eltwise_prod_gate_rules():
    rng = np.random.default_rng(6)
    bottoms = [rng.normal(size=(2, 3, 4)).astype(np.float32) for _ in range(3)]
    layer = Eltwise("prod", layer_param("Eltwise", bottoms=("a", "b", "c"), eltwise_param="operation: PROD"), ())
    (y,), extra = layer.forward(bottoms)
    R = rng.normal(size=y.shape).astype(np.float32)
    saved = Saved(bottoms, [y], extra)
    got = layer.relevance(Pass(), saved, [R])  # the rule a gate gets under the LRP formulas
    np.testing.assert_array_equal(got[0], R)
    assert not got[1].any() and not got[2].any()
    assert not layer.supports(Epsilon(0.01)) and not layer.supports(AlphaBeta(1.0))
    got = layer.relevance(Transposed(), saved, [R])
    assert relative_error(got[0], R * bottoms[1].astype(np.float64) * bottoms[2]) < 1e-6 and not got[1].any()
    got = layer.relevance(Gradient(), saved, [R])  # the product rule, for every bottom
    assert relative_error(got[1], R * bottoms[0].astype(np.float64) * bottoms[2]) < 1e-6


# ---------------------------------------------------------------------------------------------------------------
# A net with every new layer, read from prototxt + caffemodel


def zoo_like_net(tmp_path, zero_bias: bool) -> Net:
    folder = tmp_path / ("zero_bias" if zero_bias else "bias")
    folder.mkdir()
    return Net(load_model(*zoo_like(zero_bias).write(folder)))


IMAGES = np.random.default_rng(8).normal(size=(3, 4, 10, 10)).astype(np.float32)


def test_zoo_like_net_conserves_epsilon_relevance(tmp_path):
    """ε → 0 and zero biases: every layer the whole relevance passes conserves it (the gates hand the gate branch
    nothing, Axpy splits in proportion, Slice/Concat/ShuffleChannel only move it)."""
    net = zoo_like_net(tmp_path, zero_bias=True)
    ex = explainer(net, 0, 1e-9, 0.0, 0, -1, 0, 5)
    sums = {}

    def record(node, bottoms):
        sums[node.name] = sum(float(r.astype(np.float64).sum()) for r in bottoms)

    explanation = ex.explain(IMAGES[:1], [-1], on_layer=record)
    logits = net.forward(IMAGES[:1]).blobs["fc"][0]
    seed = float(logits[explanation.classes[0][0]])
    assert abs(seed) > 0.05
    for name in ("fc", "pool", "cat", "slice", "shuffle", "hswish", "dw1", "relu0", "conv0"):
        assert abs(sums[name] - seed) <= 2e-5 * abs(seed), (name, sums[name], seed)
    assert sums["gate"] == 0 and sums["clip"] == 0  # the gate branches get nothing
    assert abs(explanation.rawhm.sum() - seed) <= 2e-5 * abs(seed)


def test_zoo_like_net_gradient_formula_is_score_times_numerical_gradient(tmp_path):
    net = zoo_like_net(tmp_path, zero_bias=False)
    explanation = explainer(net, 11, 1.0, 0.0, 0, -1, 0, 5).explain(IMAGES[:2], [3, -1])
    h = 1e-5
    for n in range(2):
        x = IMAGES[n : n + 1].astype(np.float64)
        logits = logits64(net, x, "fc")[0]
        weights = np.zeros(5)
        for c in explanation.classes[n]:
            weights[c] = logits[c]
        numeric = score_gradient(net, x, weights, "fc", h)
        got = explanation.rawhm[n][::-1]
        assert relative_error(got, numeric[0]) <= 1e-4


@pytest.mark.parametrize("number", [0, 2, 11, 26, 100, 166])
def test_zoo_like_net_batch_equals_one_by_one(tmp_path, number):
    net = zoo_like_net(tmp_path, zero_bias=False)
    ex = explainer(net, number, 0.5, 1.0, 0, -1, 0, 5)
    targets = [-1, 2, -2]
    batch = ex.explain(IMAGES, targets)
    assert np.isfinite(batch.rawhm).all()
    for n, target in enumerate(targets):
        one = ex.explain(IMAGES[n : n + 1], [target])
        scale = np.abs(one.rawhm[0]).max()
        assert scale > 0
        if number == 11:  # the gradient also flows through the gate's 1×1 convolution of a 1×1 map, where
            # Convolution's GEMM over one image and over three rounds differently (last bits)
            assert np.abs(batch.rawhm[n] - one.rawhm[0]).max() <= 1e-6 * scale, n
        else:
            assert np.array_equal(batch.rawhm[n], one.rawhm[0]), (number, n)  # the same bits
