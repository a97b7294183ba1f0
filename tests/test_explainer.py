"""Explainer set-up errors come before any image; start layers, targets and firstlayerindex behave as specified."""

import numpy as np
import pytest
from netbuilder import NetBuilder, explainer, resnet_block

from lrp_cli.caffe import load_model
from lrp_cli.errors import RelevanceError
from lrp_cli.net import Net
from lrp_cli.rules import Folded, Gradient


def build(builder: NetBuilder, tmp_path) -> Net:
    prototxt, caffemodel = builder.write(tmp_path)
    return Net(load_model(prototxt, caffemodel))


def small_net(tmp_path, eltwise="SUM") -> Net:
    b = NetBuilder((1, 3, 8, 8), seed=3)
    b.conv("conv_a", "data", 4, 3, pad=[1])
    b.conv("conv_b", "data", 4, 3, pad=[1])
    b.same("merge", "Eltwise", ["conv_a", "conv_b"], eltwise_param={"operation": eltwise})
    b.same("relu", "ReLU", "merge", top="merge")
    b.same("pool", "Pooling", "merge", pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    b.inner_product("fc", "pool", 5, 64)
    b.same("prob", "Softmax", "fc")
    return build(b, tmp_path)


def test_a_layer_without_a_rule_is_refused_before_any_image(tmp_path, monkeypatch):
    net = small_net(tmp_path, eltwise="PROD")
    explainer(net, 0, 1.0, 1.0, 0, -2, 0, 5)  # PROD has a rule: its first bottom is the signal, the other a gate
    # no layer type lacks a rule for a formula any more, so this one loses all but the gradient
    merge = next(n for n in net.nodes if n.name == "merge")
    monkeypatch.setattr(merge.layer, "supports", lambda rule: isinstance(rule, Gradient))
    with pytest.raises(RelevanceError, match=r"layer 'merge' \(Eltwise, index \d+\) has no relevance rule"):
        explainer(net, 0, 1.0, 1.0, 0, -2, 0, 5)
    explainer(net, 11, 1.0, 1.0, 0, -2, 0, 5)


@pytest.mark.parametrize(
    ("last", "first", "message"),
    [(-3, 0, "bad lastlayerindex -3"), (99, 0, "beyond the last layer"), (-2, 7, "firstlayerindex 7 must be")],
)
def test_bad_layer_indices(tmp_path, last, first, message):
    with pytest.raises(RelevanceError, match=message):
        explainer(small_net(tmp_path), 0, 1.0, 1.0, 0, last, first, 5)


def test_start_layer_rules_and_targets(tmp_path):
    net = small_net(tmp_path)
    softmax = [n.index for n in net.nodes if n.type == "Softmax"][0]
    fc = [n.index for n in net.nodes if n.type == "InnerProduct"][0]
    assert explainer(net, 0, 1.0, 1.0, 0, -1, 0, 5).start == softmax - 1 == fc
    assert explainer(net, 0, 1.0, 1.0, 0, -2, 0, 5).start == fc
    images = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    explanation = explainer(net, 0, 1.0, 1.0, 0, -2, 0, 5).explain(images, [-2, 3])
    assert explanation.classes[0] == list(explanation.ranking[0, :5]) and explanation.classes[1] == [3]
    with pytest.raises(RelevanceError, match="class index 5 is out of range"):
        explainer(net, 0, 1.0, 1.0, 0, -2, 0, 5).explain(images[:1], [5])


def test_softmax_start_layer_passes_the_probabilities(tmp_path):
    """§5.4.8: starting at the Softmax, its relevance step hands down all probabilities, whatever the class."""
    net = small_net(tmp_path)
    softmax = [n.index for n in net.nodes if n.type == "Softmax"][0]
    ex = explainer(net, 0, 1.0, 1.0, 0, softmax, 0, 5)
    images = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype(np.float32)
    a = ex.explain(images, [0]).rawhm
    b = ex.explain(images, [4]).rawhm
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0


def test_first_layer_index_returns_the_relevance_at_that_layers_bottom(tmp_path):
    net = small_net(tmp_path)
    pool = [n for n in net.nodes if n.type == "Pooling"][0]
    images = np.random.default_rng(2).standard_normal((1, 3, 8, 8)).astype(np.float32)
    partial = explainer(net, 2, 1.0, 1.0, 0, -2, pool.index, 5).explain(images, [-1])
    seen = {}
    explainer(net, 2, 1.0, 1.0, 0, -2, 0, 5).explain(images, [-1], on_layer=lambda n, r: seen.update({n.index: r}))
    at_pool_bottom = seen[pool.index][0]  # (1, 4, 8, 8), channels in blob order
    assert partial.rawhm.shape == at_pool_bottom.shape
    np.testing.assert_allclose(partial.rawhm[:, ::-1], at_pool_bottom, rtol=1e-6, atol=1e-7)  # channels reversed
    assert np.abs(partial.rawhm).max() > 0


def test_folded_resnet_block_needs_no_rule_for_batchnorm_and_scale(tmp_path):
    net = build(resnet_block(), tmp_path)
    ex = explainer(net, 100, 1.0, 1.0, 0, -2, 0, 5)
    folded = {n.index for n in net.nodes if n.type in ("BatchNorm", "Scale")}
    assert {i for i, rule in enumerate(ex.rules) if isinstance(rule, Folded)} == folded


@pytest.mark.parametrize("formula", [0, 2, 11, 100])
def test_threads_do_not_change_the_result(tmp_path, formula):
    """Slices of a batch explained in threads (BLAS on one thread each) give the same results. (Byte-identical
    for nets of CaffeNet's size — see test_batch.py; for layers this small OpenBLAS switches to its small-matrix
    kernel depending on the GEMM's size, which moves the last bits.)"""
    from lrp_cli.explain import limit_blas

    net = build(resnet_block(), tmp_path)
    ex = explainer(net, formula, 1.0, 1.0, 0, -2, 0, 5)
    images = np.random.default_rng(4).standard_normal((5, 3, 12, 12)).astype(np.float32)
    targets = [-1, -2, 0, 3, -1]
    with limit_blas(1):
        whole = ex.explain(images, targets)
    threaded = ex.explain(images, targets, threads=2)
    np.testing.assert_allclose(threaded.rawhm, whole.rawhm, rtol=0, atol=1e-6 * np.abs(whole.rawhm).max())
    np.testing.assert_array_equal(threaded.ranking, whole.ranking)
    assert threaded.classes == whole.classes
