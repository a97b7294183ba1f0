"""The forward pass keeps only what the relevance pass reads: the same relevance, bit for bit, as a forward pass
that keeps everything, for every formula on nets with every layer type; and blobs are freed after their last use."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import REFERENCE, reference_models_dir
from netbuilder import explainer, images, pooling_zoo, resnet_block, zoo_like

from lrp_cli.caffe import load_model
from lrp_cli.composite import FORMULAS
from lrp_cli.layers.base import ShapeOnly
from lrp_cli.net import Net
from lrp_cli.rules import ZBox

Z_BOX_FORMULAS = (6, 8, 18)  # the z^B rule needs input bounds


def nets(tmp_path):
    tiny = Net(load_model(REFERENCE / "models/tiny/deploy.prototxt",
                          reference_models_dir("tiny") / "tiny/tiny_seed3.caffemodel"))
    built = {}
    for name, builder in (("resnet_block", resnet_block()), ("pooling_zoo", pooling_zoo()),
                          ("zoo_like", zoo_like(zero_bias=False))):
        folder = tmp_path / name
        folder.mkdir()
        built[name] = Net(load_model(*builder.write(folder)))
    return {"tiny": tiny, **built}


def relevance(ex, forward, bounds=None):
    seed = ex.graph.initial_relevance(forward, ex.start, [[1], [3]])
    rules = ex.rules if bounds is None else [r.with_bounds(*bounds) if isinstance(r, ZBox) else r for r in ex.rules]
    return ex.graph.propagate(forward, rules, ex.start, ex.first, seed)


@pytest.mark.parametrize("formula", sorted(FORMULAS))
def test_trimmed_forward_gives_the_same_relevance(tmp_path, formula):
    for name, net in nets(tmp_path).items():
        ex = explainer(net, formula, epsilon=0.5, beta=1.0, aux=3, last=-1, first=0)
        batch = images(net.input_shape, 2, seed=formula, scale=3.0)
        bounds = None
        if formula in Z_BOX_FORMULAS:
            bounds = (batch - 2, batch + 2)
        full = ex.graph.forward(batch)
        trimmed = ex.graph.forward(batch, ex.rules, keep=ex.graph.nodes[ex.start].tops)
        expected = relevance(ex, full, bounds)
        got = relevance(ex, trimmed, bounds)
        assert np.array_equal(got, expected), (name, formula)
        kept = [s for s in trimmed.saved for part in (s.bottoms, s.tops) for a in part if not isinstance(a, ShapeOnly)]
        everything = [a for s in full.saved for part in (s.bottoms, s.tops) for a in part]
        assert len(kept) < len(everything), (name, formula)  # something was let go
        # the blobs left at the end: the outputs and the start layer's tops, every other one freed after its last use
        assert set(trimmed.blobs) <= {*net.output_names, *ex.graph.nodes[ex.start].tops} | set(net.output_names)
        assert set(full.blobs) > set(trimmed.blobs)
