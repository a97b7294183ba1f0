"""The numpy forward pass against OpenCV's Caffe importer (cv2.dnn), on SqueezeNet v1.1 and on test-made nets.

OpenCV is the oracle where it implements Caffe's semantics; where it does not, a slow literal numpy
implementation of Caffe's definition is the oracle instead (said so at each place).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from conftest import REFERENCE, SHARED
from netbuilder import NetBuilder, fc_head, images, pooling_zoo, resnet_block, small_classifier

from lrp_cli.caffe import MeanImage, load_model
from lrp_cli.errors import ModelError
from lrp_cli.net import Net
from lrp_cli.preprocess import preprocess_image

SQUEEZENET = SHARED / "models" / "squeezenet_v1.1"
TOLERANCE = 1e-4


def constant_mean(size: int = 256) -> MeanImage:
    """B=104, G=117, R=123 everywhere, in MeanImage's flat[b, r + c·height] layout."""
    values = np.array([[104.0], [117.0], [123.0]])
    return MeanImage(np.repeat(values, size * size, axis=1), size, size)


def opencv_forward(prototxt, caffemodel, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Outputs of the named layers. Fusion is off: with it OpenCV folds BatchNorm/Scale/ReLU into the convolution
    and, asked for a fused in-place BatchNorm's output, returns uninitialised memory (seen: values ~1e31)."""
    cv_net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel))
    cv_net.enableFusion(False)
    cv_net.setInput(np.ascontiguousarray(x, dtype=np.float32))
    return dict(zip(names, cv_net.forward(names), strict=True))


def layer_output(net: Net, forward, name: str) -> np.ndarray:
    """What layer ``name`` wrote (its first top), also when later in-place layers overwrote the blob."""
    index = next(n.index for n in net.nodes if n.name == name)
    return forward.saved[index].tops[0]


def relative_difference(ours: np.ndarray, theirs: np.ndarray) -> float:
    theirs = np.asarray(theirs, np.float64).reshape(ours.shape)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def assert_matches_opencv(prototxt, caffemodel, x, names, tolerance=TOLERANCE) -> dict[str, float]:
    net = Net(load_model(prototxt, caffemodel))
    forward = net.forward(x)
    theirs = opencv_forward(prototxt, caffemodel, x, names)
    differences = {}
    for name in names:
        ours = layer_output(net, forward, name)
        assert ours.size == theirs[name].size, (name, ours.shape, theirs[name].shape)
        differences[name] = relative_difference(ours, theirs[name])
    assert max(differences.values()) < tolerance, differences
    return differences


# ------------------------------------------------------------------------------------------------------------------
# SqueezeNet v1.1 on real photos
# ------------------------------------------------------------------------------------------------------------------
PHOTOS = [
    (SHARED / "data" / "images" / "goldfish2.jpg", 1, 0.9),  # goldfish
    (SHARED / "data" / "images" / "espresso1.jpg", 967, 0.5),  # espresso
    (REFERENCE / "someimages" / "volcano2.jpg", 980, 0.9),  # volcano
]


@pytest.fixture(scope="module")
def squeezenet_run():
    net = Net(load_model(SQUEEZENET / "deploy.prototxt", SQUEEZENET / "squeezenet_v1.1.caffemodel"))
    assert net.input_shape == (1, 3, 227, 227)
    blobs = np.stack([preprocess_image(path, 256, (227, 227), constant_mean()).blob for path, _, _ in PHOTOS])
    return net, blobs, net.forward(blobs)


def test_squeezenet_classifies_the_photos(squeezenet_run):
    net, _, forward = squeezenet_run
    assert net.output_names == ["prob"]
    prob = forward.outputs["prob"].reshape(len(PHOTOS), -1)
    assert prob.shape == (3, 1000)
    np.testing.assert_allclose(prob.sum(axis=1), 1, atol=1e-5)
    for row, (path, label, minimum) in zip(prob, PHOTOS, strict=True):
        assert row.argmax() == label, (path.name, row.argmax())
        assert row[label] > minimum, (path.name, row[label])
    synsets = (SHARED / "models" / "imagenet" / "synset_words.txt").read_text().splitlines()
    assert "goldfish" in synsets[1] and "espresso" in synsets[967] and "volcano" in synsets[980]


def test_squeezenet_matches_opencv(squeezenet_run):
    net, blobs, forward = squeezenet_run
    theirs = opencv_forward(
        SQUEEZENET / "deploy.prototxt", SQUEEZENET / "squeezenet_v1.1.caffemodel", blobs, ["prob", "pool10", "conv10"]
    )
    # probabilities: absolute (measured 2.3e-6)
    prob = forward.outputs["prob"]
    assert np.abs(prob - theirs["prob"].reshape(prob.shape)).max() < TOLERANCE
    # intermediates relative to their max (measured ~1e-6 for pool10 and 2e-6 for conv10)
    assert relative_difference(forward.blobs["pool10"], theirs["pool10"]) < TOLERANCE
    # conv10 is followed by an in-place ReLU: the blob holds the ReLU's result, the node saved the convolution's
    conv10 = layer_output(net, forward, "conv10")
    assert (conv10 < 0).any()
    assert relative_difference(conv10, theirs["conv10"]) < TOLERANCE
    assert np.array_equal(forward.blobs["conv10"], np.maximum(conv10, 0))


# ------------------------------------------------------------------------------------------------------------------
# Test-made nets
# ------------------------------------------------------------------------------------------------------------------
def test_resnet_block_matches_opencv(tmp_path):
    prototxt, caffemodel = resnet_block().write(tmp_path)
    differences = assert_matches_opencv(
        prototxt, caffemodel, images((1, 3, 12, 12), 2),
        ["prob", "fc", "pool", "res2a", "scale2a_branch2b", "bn2a_branch1", "conv1_relu"],
    )
    assert differences  # measured ≤ 4.1e-6 (conv1_relu)


def test_eltwise_variants_match_opencv(tmp_path):
    b = NetBuilder((1, 4, 6, 6), seed=13)
    b.conv("a", "data", 5, 3, pad=[1])
    b.conv("b", "data", 5, 3, pad=[1])
    b.same("sum", "Eltwise", ["a", "b"], eltwise_param={"operation": "SUM", "coeff": [1.0, -0.5]})
    b.same("prod", "Eltwise", ["a", "b"], eltwise_param={"operation": "PROD"})
    b.same("max", "Eltwise", ["a", "b"], eltwise_param={"operation": "MAX"})
    b.add("cat", "Concat", ["sum", "prod", "max"])
    prototxt, caffemodel = b.write(tmp_path)
    x = images((1, 4, 6, 6), 2, scale=2.0)
    assert_matches_opencv(prototxt, caffemodel, x, ["cat", "sum", "prod", "max"])


def test_rectangular_convolution_and_transposed_inner_product(tmp_path):
    b = fc_head()
    prototxt, caffemodel = b.write(tmp_path)
    x = images((1, 3, 9, 8), 2, scale=2.0)
    assert_matches_opencv(prototxt, caffemodel, x, ["rect"])  # measured 1.8e-7
    net = Net(load_model(prototxt, caffemodel))
    forward = net.forward(x)
    assert forward.blobs["rect"].shape == (2, 4, 5, 7)
    # OpenCV disagrees with Caffe here: it ignores inner_product_param.transpose and reads the stored K×N blob
    # as N×K (measured: its output equals rect·reshape(W, N×K)ᵀ). Caffe's definition: y = x·W with W stored K×N.
    weight, bias = (blob.astype(np.float64) for blob in b.layers[1].blobs)
    expected = forward.blobs["rect"].reshape(2, -1) @ weight + bias
    assert relative_difference(layer_output(net, forward, "ipt"), expected) < 1e-6


def test_batchnorm_uses_the_moving_average_factor(tmp_path):
    """Caffe's BatchNorm divides the stored sums by blob 2: y = (x − m/f)/√(v/f + eps)."""
    b = NetBuilder((1, 3, 4, 4), seed=3)
    b.batchnorm("bn", "data", factor=7.5, eps=1e-3)
    net = Net(load_model(*b.write(tmp_path)))
    x = images((1, 3, 4, 4), 1, scale=3.0)
    mean, var, factor = (blob.astype(np.float64) for blob in b.layers[0].blobs)
    expected = (x - (mean / factor[0])[:, None, None]) / np.sqrt(var / factor[0] + 1e-3)[:, None, None]
    np.testing.assert_allclose(net.forward(x).outputs["bn"], expected, rtol=1e-5, atol=1e-5)


def test_prelu_matches_opencv(tmp_path):
    b = NetBuilder((1, 3, 9, 9), seed=4)
    b.conv("conv1", "data", 4, 3)
    b.same("prelu1", "PReLU", "conv1", blobs=[b.uniform(-0.5, 0.8, 4)])  # per channel
    b.conv("conv2", "conv1", 5, 3)
    b.same("prelu2", "PReLU", "conv2", blobs=[np.array([0.3], np.float32)], prelu_param={"channel_shared": True})
    b.inner_product("fc", "conv2", 3, 5 * 5 * 5)
    prototxt, caffemodel = b.write(tmp_path)
    x = images((1, 3, 9, 9), 2, scale=3.0)
    assert_matches_opencv(prototxt, caffemodel, x, ["fc", "prelu2", "prelu1"])
    net = Net(load_model(prototxt, caffemodel))
    forward = net.forward(x)
    conv2 = layer_output(net, forward, "conv2")
    assert (conv2 < 0).any()
    np.testing.assert_allclose(layer_output(net, forward, "prelu2"), np.where(conv2 > 0, conv2, 0.3 * conv2), 1e-6)


def test_v1_net_matches_opencv(tmp_path):
    """V1 ``layers`` with enum types in the prototxt and a V1 caffemodel with legacy 4-D blobs."""
    b = small_classifier("input_dim")
    prototxt, caffemodel = b.write(tmp_path, v1=True)
    assert "layers {" in prototxt.read_text() and "type: CONVOLUTION" in prototxt.read_text()
    x = images((1, 3, 10, 10), 2)
    assert_matches_opencv(prototxt, caffemodel, x, ["prob", "fc2", "pool1", "norm1"])
    # and it is the same net as its V2 twin
    v2 = Net(load_model(*b.write(tmp_path, "v2"))).forward(x).outputs["prob"]
    assert np.array_equal(Net(load_model(prototxt, caffemodel)).forward(x).outputs["prob"], v2)


@pytest.mark.parametrize("header", ["input_dim", "input_shape"])
def test_legacy_input_header_matches_opencv(tmp_path, header):
    prototxt, caffemodel = small_classifier(header).write(tmp_path)
    assert ("input_dim: 10" in prototxt.read_text()) == (header == "input_dim")
    net = Net(load_model(prototxt, caffemodel))
    assert net.input_name == "data" and net.input_shape == (1, 3, 10, 10)
    assert net.nodes[0].name == "conv1"  # no Input layer: conv1 has layer index 0
    assert_matches_opencv(prototxt, caffemodel, images((1, 3, 10, 10), 3), ["prob", "fc2", "pool1"])


def lrn_literal(x: np.ndarray, size, alpha, beta, k, across: bool) -> np.ndarray:
    """Caffe's LRN, one output value at a time (float64)."""
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.empty_like(x)
    half = (size - 1) // 2
    for i in range(n):
        for ch in range(c):
            for r in range(h):
                for col in range(w):
                    if across:
                        lo, hi = max(0, ch - half), min(c, ch + size - half)
                        s = k + alpha / size * (x[i, lo:hi, r, col] ** 2).sum()
                    else:  # AVE pooling of x² with pad (size−1)/2, padding counted in the divisor: always size²
                        window = x[i, ch, max(0, r - half) : r - half + size, max(0, col - half) : col - half + size]
                        s = 1 + alpha / size**2 * (window**2).sum()
                    out[i, ch, r, col] = x[i, ch, r, col] * s**-beta
    return out


def test_zoo_matches_opencv(tmp_path):
    prototxt, caffemodel = pooling_zoo().write(tmp_path)
    x = images((1, 6, 12, 12), 2, scale=2.0)
    names = ["prob", "fc", "flat", "tanh", "drop", "sigmoid", "pool_ave", "lrn_within", "pool_max", "lrn_across",
             "cat", "conv_d", "conv_g"]
    assert_matches_opencv(prototxt, caffemodel, x, names)  # measured ≤ 7e-6 (lrn_across)
    net = Net(load_model(prototxt, caffemodel))
    forward = net.forward(x)
    assert forward.blobs["pool_max"].shape == (2, 12, 7, 7)
    assert forward.blobs["pool_ave"].shape == (2, 12, 4, 4)
    assert np.array_equal(forward.blobs["drop"], forward.blobs["sigmoid"])  # Dropout not in place: identity


@pytest.mark.parametrize("across", [True, False])
def test_lrn_matches_caffe_definition(tmp_path, across):
    """OpenCV disagrees with Caffe here: its LRN reads the parameter 'bias' and ignores Caffe's ``k`` (measured:
    OpenCV's output equals the k = 1 result). So LRN with k ≠ 1 is checked against the literal definition."""
    b = NetBuilder((1, 7, 5, 6), seed=8)
    region = "ACROSS_CHANNELS" if across else "WITHIN_CHANNEL"
    size = 5 if across else 3
    b.same("lrn", "LRN", "data", lrn_param={"local_size": size, "alpha": 0.7, "beta": 0.6, "k": 2.5,
                                            "norm_region": region})
    x = images((1, 7, 5, 6), 2, scale=2.0)
    ours = Net(load_model(*b.write(tmp_path))).forward(x).outputs["lrn"]
    # Caffe's WITHIN_CHANNEL has no k: 1 + α/n²·Σx² (it builds the layer from Power and AVE Pooling layers)
    expected = lrn_literal(x, size, 0.7, 0.6, 2.5 if across else 1.0, across)
    assert relative_difference(ours, expected) < 1e-6


@pytest.mark.parametrize(
    "method, size, kernel, stride, pad, out",
    [
        ("MAX", (12, 12), 3, 2, 1, (7, 7)),  # ceil mode: the last window covers one real row
        ("AVE", (12, 12), 3, 2, 1, (7, 7)),  # ... and one real, two padding-or-outside rows in the divisor
        ("MAX", (5, 7), 3, 3, 1, (2, 3)),  # 5: ceil gives 3, but the third window would start in the padding
        ("AVE", (5, 7), 3, 3, 1, (2, 3)),
        ("AVE", (7, 6), 3, 2, 0, (3, 3)),  # ceil mode without padding: the last column window is clipped
        ("MAX", (6, 9), 2, 2, 1, (4, 5)),  # 9: the sixth window would start in the padding
        ("AVE", (6, 9), 4, 3, 2, (3, 4)),
    ],
)
def test_pooling_edges_match_opencv(tmp_path, method, size, kernel, stride, pad, out):
    b = NetBuilder((1, 3, *size), seed=9)
    b.same("pool", "Pooling", "data",
           pooling_param={"pool": method, "kernel_size": kernel, "stride": stride, "pad": pad})
    prototxt, caffemodel = b.write(tmp_path)
    x = images((1, 3, *size), 2, scale=3.0)
    assert_matches_opencv(prototxt, caffemodel, x, ["pool"])
    ours = Net(load_model(prototxt, caffemodel)).forward(x).outputs["pool"]
    assert ours.shape == (2, 3, *out)
    # Caffe's loops, literally: windows from h·stride − pad, clipped to size + pad for the AVE divisor, then to size
    expected = np.empty(ours.shape)
    for i in range(out[0]):
        for j in range(out[1]):
            h0, w0 = i * stride - pad, j * stride - pad
            h1, w1 = min(h0 + kernel, size[0] + pad), min(w0 + kernel, size[1] + pad)
            divisor = (h1 - h0) * (w1 - w0)
            window = x[:, :, max(h0, 0) : min(h1, size[0]), max(w0, 0) : min(w1, size[1])]
            if method == "MAX":
                expected[:, :, i, j] = window.max(axis=(2, 3))
            else:
                expected[:, :, i, j] = window.sum(axis=(2, 3), dtype=np.float64) / divisor
    assert relative_difference(ours, expected) < 1e-6


@pytest.mark.parametrize("builder", [resnet_block, pooling_zoo, lambda: small_classifier("input_dim")])
def test_batch_equals_single_forwards(tmp_path, builder):
    b = builder()
    net = Net(load_model(*b.write(tmp_path)))
    x = images(b.input_shape, 3, seed=11, scale=5.0)
    batch = net.forward(x)
    for i in range(3):
        single = net.forward(x[i : i + 1])
        for name, value in batch.blobs.items():
            scale = max(float(np.abs(value).max()), 1e-30)
            assert np.abs(single.blobs[name][0] - value[i]).max() <= 1e-6 * scale, name


# ------------------------------------------------------------------------------------------------------------------
# Bad model files
# ------------------------------------------------------------------------------------------------------------------
def test_unknown_layer_type_names_layer_type_and_supported_types(tmp_path):
    b = NetBuilder((1, 3, 6, 6), seed=10)
    b.conv("conv1", "data", 4, 3)
    b.same("swish1", "Swish", "conv1")
    b.same("mystery", "FancyNorm", "swish1")
    netdef = load_model(*b.write(tmp_path))  # the readers take any type; building the net refuses it
    with pytest.raises(ModelError) as info:
        Net(netdef)
    message = str(info.value)
    assert "\n" not in message
    assert "'swish1'" in message and "'Swish'" in message  # the first unsupported layer
    supported = message[message.index("supported") :]
    for kind in ("BatchNorm", "Convolution", "Eltwise", "InnerProduct", "LRN", "PReLU", "Pooling", "Scale"):
        assert kind in supported


def test_convolution_blob_with_wrong_shape(tmp_path):
    b = NetBuilder((1, 3, 6, 6), seed=12)
    b.conv("conv1", "data", 4, 3)
    b.layers[0].blobs[0] = b.randn(4, 3, 5, 5)  # prototxt says 3×3
    prototxt, caffemodel = b.write(tmp_path)
    with pytest.raises(ModelError) as info:
        load_model(prototxt, caffemodel)
    message = str(info.value)
    assert "\n" not in message
    assert str(caffemodel) in message and "'conv1'" in message
    assert "(4, 3, 5, 5)" in message and "(4, 3, 3, 3)" in message
