"""The reference GoogLeNet (Split layers, Concat, LRN, MAX/AVE pooling with padding): forward equal to OpenCV's
Caffe importer, and relevance through its Split layers conserving what it should."""

import cv2
import numpy as np
from conftest import REFERENCE, reference_models_dir
from netbuilder import explainer

from lrp_cli.caffe import load_model
from lrp_cli.net import Net

PROTOTXT = REFERENCE / "models" / "googlenet" / "deploy1.prototxt"


def test_googlenet_forward_agrees_with_opencv():
    caffemodel = reference_models_dir("googlenet") / "googlenet" / "googlenet_seed2.caffemodel"
    net = Net(load_model(PROTOTXT, caffemodel))
    images = np.random.default_rng(5).uniform(-120, 130, (2, 3, 224, 224)).astype(np.float32)
    forward = net.forward(images)
    oracle = cv2.dnn.readNetFromCaffe(str(PROTOTXT), str(caffemodel))
    oracle.enableFusion(False)
    for n in range(2):
        oracle.setInput(images[n : n + 1])
        for blob in ("inception_3a/output", "inception_5b/output", "loss3/classifier"):
            theirs = oracle.forward(blob)
            ours = forward.blobs[blob][n : n + 1]
            assert np.abs(ours - theirs).max() <= 1e-4 * np.abs(theirs).max(), blob
        probabilities = oracle.forward("prob")
        assert np.abs(forward.outputs["prob"][n : n + 1].reshape(probabilities.shape) - probabilities).max() < 1e-5


def test_googlenet_epsilon_relevance_is_conserved_through_splits_and_concats():
    """ε → 0, zero biases: every branch point (Split sums, Concat slices) keeps the total relevance."""
    caffemodel = reference_models_dir("googlenet") / "googlenet" / "googlenet_seed2.caffemodel"
    netdef = load_model(PROTOTXT, caffemodel)
    net = Net(netdef)
    for node in net.nodes:
        if getattr(node.layer, "bias", None) is not None and node.type in ("Convolution", "InnerProduct"):
            node.layer.bias = np.zeros_like(node.layer.bias)
    images = np.random.default_rng(6).uniform(-120, 130, (1, 3, 224, 224)).astype(np.float32)
    ex = explainer(net, 0, 1e-9, 0, 0, -2, 0, 1000, lrn_relevance="identity")
    sums = {}
    explanation = ex.explain(images, [-1], on_layer=lambda node, rs: sums.update(
        {node.index: sum(float(r.astype(np.float64).sum()) for r in rs)}))
    seed = float(net.start_values(net.forward(images), ex.start)[0, explanation.classes[0][0]])
    splits = [n.index for n in net.nodes if n.type == "Split"]
    assert len(splits) > 5
    for index in splits:  # every Split sits on a cut through the whole net
        assert abs(sums[index] - seed) <= 2e-3 * abs(seed), (net.nodes[index].name, sums[index], seed)
    assert abs(explanation.rawhm.sum() - seed) <= 2e-3 * abs(seed)
