"""Whole-net properties of the relevance pass on small random nets built in the test.

- conservation layer by layer: ε → 0 and α-β (β = 0, 1) with zero biases, w² and flat on inner products;
  flat on a convolution multiplies the total by C_in/group;
- formula 11 equals score × the numerical gradient of the class logit (99: its per-pixel L2 norm);
- a batch gives, per image, the result of a one-image call, whatever the other images are.
"""

from __future__ import annotations

import numpy as np
import pytest
from netbuilder import explainer, logits64, score_gradient

from lrp_cli.caffe import InputDef, LayerDef, NetDef, caffe_pb2, load_model
from lrp_cli.net import Net
from lrp_cli.rules import AlphaBeta


def he(rng, shape, fan_in):
    return (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def conv(name, bottom, top, cin, cout, kernel, rng, stride=1, pad=0, group=1, zero_bias=False):
    param = caffe_pb2.LayerParameter(name=name, type="Convolution")
    p = param.convolution_param
    p.num_output, p.group = cout, group
    p.kernel_size.append(kernel)
    p.stride.append(stride)
    p.pad.append(pad)
    w = he(rng, (cout, cin // group, kernel, kernel), cin // group * kernel * kernel)
    b = np.zeros(cout, np.float32) if zero_bias else (rng.normal(size=cout) * 0.1).astype(np.float32)
    return LayerDef(name, "Convolution", (bottom,), (top,), param, (w, b))


def fc(name, bottom, top, fan_in, outputs, rng, zero_bias=False):
    param = caffe_pb2.LayerParameter(name=name, type="InnerProduct")
    param.inner_product_param.num_output = outputs
    w = he(rng, (outputs, fan_in), fan_in)
    b = np.zeros(outputs, np.float32) if zero_bias else (rng.normal(size=outputs) * 0.1).astype(np.float32)
    return LayerDef(name, "InnerProduct", (bottom,), (top,), param, (w, b))


def simple(name, type_name, bottom, top, configure=None):
    param = caffe_pb2.LayerParameter(name=name, type=type_name)
    if configure:
        configure(param)
    return LayerDef(name, type_name, (bottom,), (top,), param, ())


def pool(name, bottom, top, kernel, stride, method=0, pad=0):
    def configure(param):
        param.pooling_param.pool = method
        param.pooling_param.kernel_size = kernel
        param.pooling_param.stride = stride
        param.pooling_param.pad = pad

    return simple(name, "Pooling", bottom, top, configure)


def lrn(name, bottom, top):
    def configure(param):
        param.lrn_param.local_size, param.lrn_param.alpha, param.lrn_param.beta = 5, 0.5, 0.75

    return simple(name, "LRN", bottom, top, configure)


def conservation_net(pad: int, seed: int = 0) -> Net:
    """conv1 (3→8, 3×3) 0, relu 1, MAX pool 2, conv2 (8→6, 3×3, group 2) 3, relu 4, fc1 5, relu 6, fc2 7,
    softmax 8; all biases zero. Wide enough that every output with relevance has both positive and negative
    contributions x_i·w_ij (else α-β with β > 0 hands out α·R_j, which is the rule, not a loss)."""
    rng = np.random.default_rng(seed)
    size = 14
    after1 = size + 2 * pad - 2
    pooled = -(-(after1 - 2) // 2) + 1
    after2 = pooled + 2 * pad - 2
    layers = (
        conv("conv1", "data", "conv1", 3, 8, 3, rng, pad=pad, zero_bias=True),
        simple("relu1", "ReLU", "conv1", "conv1"),
        pool("pool1", "conv1", "pool1", 2, 2),
        conv("conv2", "pool1", "conv2", 8, 6, 3, rng, pad=pad, group=2, zero_bias=True),
        simple("relu2", "ReLU", "conv2", "conv2"),
        fc("fc1", "conv2", "fc1", 6 * after2 * after2, 32, rng, zero_bias=True),
        simple("relu3", "ReLU", "fc1", "fc1"),
        fc("fc2", "fc1", "fc2", 32, 5, rng, zero_bias=True),
        simple("prob", "Softmax", "fc2", "prob"),
    )
    return Net(NetDef("conservation", (InputDef("data", (1, 3, size, size)),), layers))


def layer_sums(ex, images, targets, bounds=None):
    sums = {}

    def record(node, bottoms):
        sums[node.index] = sum(b.astype(np.float64).reshape(b.shape[0], -1).sum(axis=1) for b in bottoms)

    explanation = ex.explain(images, targets, bounds, on_layer=record)
    return explanation, sums


def seeds(net, images, classes):
    forward = net.forward(images)
    logits = forward.blobs["fc2"]
    return np.array([sum(float(logits[n, c]) for c in chosen) for n, chosen in enumerate(classes)])


IMAGES = np.random.default_rng(42).normal(size=(3, 3, 14, 14)).astype(np.float32)
TARGETS = [-1, 2, -2]


@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("formula,epsilon,beta", [(0, 1e-9, 0.0), (2, 1.0, 0.0), (2, 1.0, 1.0), (22, 1.0, 0.5)])
def test_conservation_with_zero_biases(pad, formula, epsilon, beta):
    net = conservation_net(pad)
    ex = explainer(net, formula, epsilon, beta, 0, -1, 0, 5)
    explanation, sums = layer_sums(ex, IMAGES, TARGETS)
    seed = seeds(net, IMAGES, explanation.classes)
    assert np.abs(seed).min() > 0.05
    assert sorted(sums) == list(range(7, -1, -1))[::-1]
    for index, total in sums.items():
        np.testing.assert_allclose(total, seed, rtol=2e-5, err_msg=f"layer {index}")
    np.testing.assert_allclose(explanation.rawhm.reshape(3, -1).sum(axis=1), seed, rtol=2e-5)


def test_flat_and_wsquare_conservation_factors():
    """Flat: inner products conserve, a convolution multiplies by C_in/group (3 for conv1, 4 for conv2); w²
    conserves everywhere when no kernel entry lands on padding."""
    net = conservation_net(pad=0)
    for number, factors in ((54, {7: 1, 5: 1, 3: 4, 0: 12}), (56, {7: 1, 5: 1, 3: 1, 0: 1})):
        ex = explainer(net, number, 1.0, 0.0, 7, -1, 0, 5)  # aux 7: every linear layer gets the lower rule
        explanation, sums = layer_sums(ex, IMAGES, TARGETS)
        seed = seeds(net, IMAGES, explanation.classes)
        current = 1
        for index in range(7, -1, -1):
            current = factors.get(index, current)
            np.testing.assert_allclose(sums[index], seed * current, rtol=1e-5, err_msg=f"{number} layer {index}")
    # flat and w² do not depend on the input at the layer, only on the relevance above it
    ex = explainer(net, 54, 1.0, 0.0, 0, -1, 0, 5)  # flat only on conv1, ε above
    explanation, sums = layer_sums(ex, IMAGES, TARGETS)
    np.testing.assert_allclose(sums[0], sums[1] * 3, rtol=1e-5)


def test_flat_with_padding_loses_the_padding_share():
    """Output j hands C_in·(its in-bounds kernel entries)/(k_h·k_w)·R_j to the input: the padding share is lost."""
    net = conservation_net(pad=1)
    ex = explainer(net, 54, 1e-9, 0.0, 0, -1, 0, 5)
    relevance = {}

    def record(node, bottoms):
        relevance[node.index] = bottoms[0].astype(np.float64)

    ex.explain(IMAGES, TARGETS, on_layer=record)
    above = relevance[1]  # relevance at conv1's output (ReLU is the identity), N×8×14×14
    inside = np.array([2] + [3] * 12 + [2])  # in-bounds taps per output row/column of a 3×3 kernel with pad 1
    share = 3 * np.outer(inside, inside) / 9
    expected = (above * share).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(relevance[0].reshape(3, -1).sum(axis=1), expected, rtol=1e-5)
    assert np.all(np.abs(expected - 3 * above.reshape(3, -1).sum(axis=1)) > 1e-3 * np.abs(expected))


# ---------------------------------------------------------------------------------------------------------------
# Formula 11 = score × gradient, checked with central finite differences in float64


def gradient_net(seed=1) -> Net:
    rng = np.random.default_rng(seed)
    layers = (
        conv("conv1", "data", "conv1", 3, 4, 3, rng, pad=1),
        simple("relu1", "ReLU", "conv1", "conv1"),
        pool("pool1", "conv1", "pool1", 3, 2),  # 8 → 4 (ceil mode)
        lrn("norm1", "pool1", "norm1"),
        conv("conv2", "norm1", "conv2", 4, 4, 3, rng, pad=1, group=2),
        simple("relu2", "ReLU", "conv2", "conv2"),
        pool("pool2", "conv2", "pool2", 2, 2, method=1),  # AVE 4 → 2
        fc("fc1", "pool2", "fc1", 16, 10, rng),
        simple("relu3", "ReLU", "fc1", "fc1"),
        fc("fc2", "fc1", "fc2", 10, 6, rng),
        simple("prob", "Softmax", "fc2", "prob"),
    )
    return Net(NetDef("gradient", (InputDef("data", (1, 3, 8, 8)),), layers))


def test_gradient_formula_is_score_times_numerical_gradient():
    net = gradient_net()
    images = np.random.default_rng(3).normal(size=(2, 3, 8, 8)).astype(np.float32)
    targets = [4, -2]
    explanation = explainer(net, 11, 1.0, 0.0, 0, -1, 0, 6).explain(images, targets)
    norm = explainer(net, 99, 1.0, 0.0, 0, -1, 0, 6).explain(images, targets)
    assert explanation.classes[0] == [4] and len(explanation.classes[1]) == 5
    h = 1e-6
    for n in range(2):
        x = images[n : n + 1].astype(np.float64)
        logits = logits64(net, x, "fc2")[0]
        weights = np.zeros(6)
        for c in explanation.classes[n]:
            weights[c] = logits[c]  # the score of the class, held fixed
        numeric = score_gradient(net, x, weights, "fc2", h)
        got = explanation.rawhm[n][::-1]  # rawhm is channel-reversed
        error = np.abs(got - numeric[0]).max() / np.abs(numeric).max()
        assert error <= 1e-5, error
        np.testing.assert_allclose(norm.rawhm[n], np.broadcast_to(np.sqrt((got**2).sum(axis=0)), got.shape),
                                   rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# A batch equals one-by-one


def caffenet_like(seed=2) -> Net:
    """Input 3×12×12; conv1 0, relu1 1 (in place), norm1 2, pool1 3, conv2 4 (group 2), relu2 5, pool2 6,
    fc3 7, relu3 8, fc4 9, prob 10."""
    rng = np.random.default_rng(seed)
    layers = (
        conv("conv1", "data", "conv1", 3, 8, 3, rng, pad=1),
        simple("relu1", "ReLU", "conv1", "conv1"),
        lrn("norm1", "conv1", "norm1"),
        pool("pool1", "norm1", "pool1", 3, 2),  # 12 → 6
        conv("conv2", "pool1", "conv2", 8, 8, 3, rng, pad=1, group=2),
        simple("relu2", "ReLU", "conv2", "conv2"),
        pool("pool2", "conv2", "pool2", 2, 2),  # 6 → 3
        fc("fc3", "pool2", "fc3", 72, 16, rng),
        simple("relu3", "ReLU", "fc3", "fc3"),
        fc("fc4", "fc3", "fc4", 16, 10, rng),
        simple("prob", "Softmax", "fc4", "prob"),
    )
    return Net(NetDef("caffenet_like", (InputDef("data", (1, 3, 12, 12)),), layers))


BATCH_TARGETS = [-1, -2, 0, 3]
BATCH_CASES = [(f, 0) for f in (0, 2, 6, 8, 11, 18, 22, 26, 99, 100, 166)] + [
    (f, aux) for f in (54, 56, 58, 60, 102, 104, 114) for aux in (0, 1)
]


@pytest.fixture(scope="module")
def batch_setup():
    rng = np.random.default_rng(9)
    mean = rng.uniform(0.5, 3.5, size=(4, 3, 12, 12)).astype(np.float32)
    images = (rng.uniform(0, 4, size=mean.shape).astype(np.float32) - mean).astype(np.float32)
    others = (rng.uniform(0, 4, size=mean.shape).astype(np.float32) - mean).astype(np.float32)
    bounds = ((-mean).astype(np.float32), (np.float32(4) - mean).astype(np.float32))
    return caffenet_like(), images, others, bounds


@pytest.mark.parametrize("number,aux", BATCH_CASES)
def test_batch_equals_one_by_one(number, aux, batch_setup):
    net, images, others, (low, high) = batch_setup
    ex = explainer(net, number, 0.5, 1.0, aux, -1, 0, 10)
    with_bounds = number in (6, 8, 18)
    batch = ex.explain(images, BATCH_TARGETS, (low, high) if with_bounds else None)
    assert batch.rawhm.shape == images.shape
    for n, target in enumerate(BATCH_TARGETS):
        one = ex.explain(images[n : n + 1], [target],
                                (low[n : n + 1], high[n : n + 1]) if with_bounds else None)
        assert one.classes[0] == batch.classes[n]
        np.testing.assert_array_equal(one.ranking[0], batch.ranking[n])
        scale = np.abs(one.rawhm[0]).max()
        assert scale > 0
        assert np.abs(batch.rawhm[n] - one.rawhm[0]).max() <= 1e-6 * scale, (number, aux, n)
    # image 0 does not depend on the other images in its batch
    mixed = np.concatenate([images[:1], others[1:]])
    again = ex.explain(mixed, BATCH_TARGETS, (low, high) if with_bounds else None)
    assert np.abs(again.rawhm[0] - batch.rawhm[0]).max() <= 1e-6 * np.abs(batch.rawhm[0]).max()
    assert len(batch.classes[1]) == 5 and batch.classes[2] == [0] and batch.classes[3] == [3]


def test_prototxt_and_caffemodel_round_trip(tmp_path):
    """The conservation net written as prototxt + caffemodel and loaded back explains identically."""
    from google.protobuf import text_format

    net = conservation_net(pad=1)
    deploy = caffe_pb2.NetParameter(name="conservation")
    deploy.input.append("data")
    deploy.input_shape.add().dim.extend([1, 3, 14, 14])
    weights = caffe_pb2.NetParameter(name="conservation")
    for node in net.nodes:
        layer = deploy.layer.add()
        layer.CopyFrom(node.layer.param)
        layer.bottom.extend(node.bottoms)
        layer.top.extend(node.tops)
        stored = weights.layer.add()
        stored.name, stored.type = node.name, node.type
        for blob in node.layer.blobs:
            proto = stored.blobs.add()
            proto.shape.dim.extend(blob.shape)
            proto.data.extend(blob.ravel().tolist())
    (tmp_path / "deploy.prototxt").write_text(text_format.MessageToString(deploy))
    (tmp_path / "net.caffemodel").write_bytes(weights.SerializeToString())
    loaded = Net(load_model(tmp_path / "deploy.prototxt", tmp_path / "net.caffemodel"))
    assert loaded.layer_table() == net.layer_table()
    a = explainer(net, 100, 1.0, 1.0, 0, -1, 0, 5).explain(IMAGES, TARGETS)
    b = explainer(loaded, 100, 1.0, 1.0, 0, -1, 0, 5).explain(IMAGES, TARGETS)
    np.testing.assert_array_equal(a.rawhm, b.rawhm)


# ---------------------------------------------------------------------------------------------------------------
# Residual nets: the α-β formulas conserve through residual sums (zero biases, random BatchNorm statistics)


@pytest.mark.parametrize("formula,beta", [(2, 1.0), (2, 0.0), (2, 0.5), (22, 1.0), (100, 1.0), (100, 0.25)])
def test_alpha_beta_conserves_on_residual_nets(tmp_path, formula, beta):
    """Every layer conserves (α − β = 1 wherever both parts are present; the residual sums in the conserving
    form), so the input holds the seed within 1e-2; the ε-rule of the fully connected layer (formula 100) with
    zero bias and a small ε does too."""
    from netbuilder import images, residual_net

    net = Net(load_model(*residual_net().write(tmp_path)))
    x = images(net.input_shape, 4, seed=formula, scale=40.0)
    ex = explainer(net, formula, 1e-6, beta, 0, -1, 0, 5)
    explanation = ex.explain(x, [-1, 0, 2, -1])
    seed = seeds_of(net, x, explanation.classes)
    assert np.abs(seed).min() > 1e-3
    totals = explanation.rawhm.reshape(len(x), -1).sum(axis=1)
    np.testing.assert_allclose(totals, seed, rtol=1e-2)
    # the plain α-β on the sums hands on α·R where both inputs share a sign: far from conserving
    sums = [i for i, rule in enumerate(ex.rules) if net.nodes[i].type == "Eltwise"]
    assert sums and all(ex.rules[i].conserving for i in sums)
    if beta > 0:
        for i in sums:
            ex.rules[i] = AlphaBeta(ex.rules[i].beta)
        plain = ex.explain(x, [-1, 0, 2, -1]).rawhm.reshape(len(x), -1).sum(axis=1)
        assert np.abs(plain - seed).max() > 0.1 * np.abs(seed).max()


def seeds_of(net, x, classes) -> np.ndarray:
    logits = net.forward(x).blobs["fc"]
    return np.array([sum(float(logits[n, c]) for c in chosen) for n, chosen in enumerate(classes)])
