"""BatchNorm/Scale folded into the preceding convolution for relevance: the fold is exact, and relevance with the
engine's folding equals relevance of the same net whose weights were folded by hand."""

from __future__ import annotations

import numpy as np
import pytest
from netbuilder import NetBuilder, fc_head, images, resnet_block
from netbuilder import explainer as make_explainer

from lrp_cli.caffe import load_model
from lrp_cli.canonize import Absorbed, FoldedChain, fold_batch_norm
from lrp_cli.composite import assign_rules
from lrp_cli.net import Net
from lrp_cli.rules import Folded


def hand_folded(block: NetBuilder) -> NetBuilder:
    """The same net without BatchNorm/Scale layers: each convolution gets W·a and (b − μ)·a·γ + β, computed in
    float64 from the builder's own blobs (a = γ/√(σ² + eps) with Caffe's moving-average factor)."""
    folded = NetBuilder(block.input_shape, header=block.header, name="hand_folded")
    pending = {}  # conv layer name → its NetBuilder layer in ``folded``
    producer = {}  # blob name → conv layer name whose (in-place) output it currently is
    for layer in block.layers:
        if layer.type == "Convolution":
            weight = layer.blobs[0].astype(np.float64)
            bias = layer.blobs[1].astype(np.float64) if len(layer.blobs) > 1 else np.zeros(weight.shape[0])
            params = {**layer.params, "convolution_param": {**layer.params["convolution_param"], "bias_term": True}}
            folded.add(layer.name, "Convolution", layer.bottoms, layer.tops, [weight, bias], **params)
            pending[layer.name] = folded.layers[-1]
            producer[layer.tops[0]] = layer.name
        elif layer.type in ("BatchNorm", "Scale"):
            conv = pending[producer[layer.bottoms[0]]]
            weight, bias = (b.astype(np.float64) for b in conv.blobs)
            if layer.type == "BatchNorm":
                mean, var, factor = (b.astype(np.float64) for b in layer.blobs)
                eps = layer.params["batch_norm_param"]["eps"]
                a, c = 1 / np.sqrt(var / factor[0] + eps), -mean / factor[0] / np.sqrt(var / factor[0] + eps)
            else:
                a, c = layer.blobs[0].astype(np.float64), layer.blobs[1].astype(np.float64)
            conv.blobs = [(weight * a[:, None, None, None]).astype(np.float32), (bias * a + c).astype(np.float32)]
            assert layer.tops == layer.bottoms  # in place, so the names downstream stay valid
        else:
            folded.add(layer.name, layer.type, layer.bottoms, layer.tops, layer.blobs, **layer.params)
            for top in layer.tops:
                producer.pop(top, None)
    for conv in pending.values():
        conv.blobs = [np.asarray(b, np.float32) for b in conv.blobs]
    return folded


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    folder = tmp_path_factory.mktemp("folding")
    block = resnet_block()
    engine = Net(load_model(*block.write(folder, "engine")))
    by_hand = Net(load_model(*hand_folded(block).write(folder, "by_hand")))
    return engine, by_hand


def relative(a, b) -> float:
    return float(np.abs(a.astype(np.float64) - b).max() / np.abs(b).max())


def folds(net: Net) -> dict[str, tuple[FoldedChain, list[str]]]:
    """Linear layer name → (its merged node's layer, the names of the absorbed BatchNorm/Scale layers)."""
    canonical = fold_batch_norm(net, 0, len(net.nodes) - 1)
    merged = {n.name: n.layer for n in canonical.nodes if isinstance(n.layer, FoldedChain)}
    return {name: (layer, [n.name for n in canonical.nodes if isinstance(n.layer, Absorbed) and n.layer.into == name])
            for name, layer in merged.items()}


def test_folds_found(nets):
    engine, _ = nets
    found = folds(engine)
    assert {name: absorbed for name, (_, absorbed) in found.items()} == {
        "conv1": ["bn_conv1", "scale_conv1"],
        "res2a_branch1": ["bn2a_branch1", "scale2a_branch1"],
        "res2a_branch2a": ["bn2a_branch2a", "scale2a_branch2a"],
        "res2a_branch2b": ["bn2a_branch2b", "scale2a_branch2b"],
    }
    canonical = fold_batch_norm(engine, 0, len(engine.nodes) - 1)
    assert len(canonical.nodes) == len(engine.nodes)  # layer indices are kept
    absorbed = [n for n in canonical.nodes if isinstance(n.layer, Absorbed)]
    assert {n.type for n in absorbed} == {"BatchNorm", "Scale"} and len(absorbed) == 8
    assert all(n.bottoms == () and n.tops == () for n in absorbed)


def test_canonized_forward_is_the_same_and_the_folded_layer_reproduces_the_chain(nets):
    engine, _ = nets
    x = images(engine.input_shape, 2, seed=3)
    canonical = fold_batch_norm(engine, 0, len(engine.nodes) - 1)
    forward, merged = engine.forward(x), canonical.forward(x)
    for name in engine.output_names:  # the forward pass does not change: same arithmetic, bit for bit
        assert np.array_equal(forward.blobs[name], merged.blobs[name])
    for node in canonical.nodes:
        if isinstance(node.layer, FoldedChain):
            saved = merged.saved[node.index]
            (ours,), _ = node.layer.folded.forward([saved.bottoms[0]])
            assert relative(ours, saved.tops[0]) < 1e-5, node.name  # measured ≤ 3e-7


def test_inner_product_fold(tmp_path):
    """InnerProduct (transposed weights) → BatchNorm → Scale on a 2-D blob folds too, exactly."""
    net = Net(load_model(*fc_head().write(tmp_path)))
    found = folds(net)
    assert {name: absorbed for name, (_, absorbed) in found.items()} == {"ipt": ["bn", "sc"]}
    canonical = fold_batch_norm(net, 0, len(net.nodes) - 1)
    merged = canonical.forward(images(net.input_shape, 2, seed=6, scale=2.0))
    for node in canonical.nodes:
        if isinstance(node.layer, FoldedChain):
            saved = merged.saved[node.index]
            (ours,), _ = node.layer.folded.forward([saved.bottoms[0]])
            assert relative(ours, saved.tops[0]) < 1e-5  # measured 1.9e-7


def test_hand_folded_net_has_the_same_forward(nets):
    engine, by_hand = nets
    x = images(engine.input_shape, 2, seed=4)
    ours, theirs = engine.forward(x), by_hand.forward(x)
    assert len(by_hand.nodes) == len(engine.nodes) - 8
    for blob in ("res2a", "fc", "prob"):
        assert relative(ours.blobs[blob], theirs.blobs[blob]) < 1e-5, blob


def explainer(net, formula, last_layer_index=-2):
    if last_layer_index == "fc":  # an explicit index, different in the two nets
        last_layer_index = next(n.index for n in net.nodes if n.name == "fc")
    return make_explainer(net, formula, epsilon=0.1, beta=1.0, aux=0, last=last_layer_index, first=0, numclasses=5)


# Inputs of unit scale: relevance divides by pre-activations, and where those nearly cancel float32 rounding is
# amplified. With inputs of scale 50 the engine-folded and hand-folded nets (forward equal to 2.5e-7) measured
# 1.5e-5 to 3.3e-5 apart, as much as two hand-folded nets whose weights differ only in float32 rounding (1.1e-5).
@pytest.mark.parametrize("formula", [0, 2, 100])
@pytest.mark.parametrize("last_layer_index", [-2, "fc"])
def test_relevance_with_engine_folding_equals_hand_folding(nets, formula, last_layer_index):
    engine, by_hand = nets
    x = images(engine.input_shape, 2, seed=5, scale=1.0)
    ours = explainer(engine, formula, last_layer_index).explain(x, [-1, 3])
    theirs = explainer(by_hand, formula, last_layer_index).explain(x, [-1, 3])
    assert ours.classes == theirs.classes
    assert ours.classes[1] == [3]
    assert np.abs(ours.rawhm).max() > 0
    assert relative(ours.rawhm, theirs.rawhm) < 1e-5  # measured ≤ 8e-7


@pytest.mark.parametrize("formula", [0, 2])
def test_folding_matters(nets, formula):
    """The comparison above can tell: without the folds (BatchNorm and Scale taking relevance as layers of their
    own, with their own biases absorbing some) the heatmap is clearly different."""
    engine, by_hand = nets
    x = images(engine.input_shape, 2, seed=5, scale=1.0)
    folded = explainer(engine, formula)
    unfolded = explainer(engine, formula)
    unfolded.graph = engine  # the net as it is: BatchNorm and Scale get rules of their own
    unfolded.rules = assign_rules(engine, unfolded.settings, unfolded.start, unfolded.first)
    assert not any(isinstance(rule, Folded) for rule in unfolded.rules)
    assert sum(isinstance(rule, Folded) for rule in folded.rules) == 8
    theirs = explainer(by_hand, formula).explain(x, [-1, 3]).rawhm
    assert relative(folded.explain(x, [-1, 3]).rawhm, theirs) < 1e-5
    assert relative(unfolded.explain(x, [-1, 3]).rawhm, theirs) > 1e-2
