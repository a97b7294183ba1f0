"""Caffe's internal layer index (Split layers included) reproduced exactly for the reference nets."""

import pytest
from conftest import REFERENCE, SHARED, reference_models_dir

from lrp_cli.caffe import load_model
from lrp_cli.net import Net

NETS = {
    "tiny": ("tiny/deploy.prototxt", "tiny/tiny_seed3.caffemodel"),
    "caffenet": ("caffenet/deploy_sequential.prototxt", "caffenet/caffenet_seed1.caffemodel"),
    "googlenet": ("googlenet/deploy1.prototxt", "googlenet/googlenet_seed2.caffemodel"),
}


def expected_table(model):
    rows = []
    for line in (REFERENCE / "models" / f"layer_index_{model}.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            index, name, kind = line.split()
            rows.append((int(index), name, kind))
    return rows


@pytest.mark.parametrize("model", sorted(NETS))
def test_layer_index_matches_caffe(model):
    prototxt, caffemodel = NETS[model]
    net = Net(load_model(REFERENCE / "models" / prototxt, reference_models_dir(model) / caffemodel))
    assert net.layer_table() == expected_table(model)


def test_googlenet_has_151_entries_and_split_layers_feed_every_branch():
    table = expected_table("googlenet")
    assert len(table) == 151
    net = Net(load_model(REFERENCE / "models" / NETS["googlenet"][0], reference_models_dir("googlenet") /
                         NETS["googlenet"][1]))
    splits = [n for n in net.nodes if n.type == "Split"]
    assert splits and all(len(n.tops) > 1 for n in splits)
    # after split insertion no blob name is read by two layers, except along in-place chains
    readers = {}
    for n in net.nodes:
        for b in n.bottoms:
            readers.setdefault(b, []).append(n)
    for blob, nodes in readers.items():
        assert all(reader.tops == reader.bottoms for reader in nodes[:-1]), blob


def test_input_layer_counts_as_layer_zero():
    folder = SHARED / "models" / "squeezenet_v1.1"
    net = Net(load_model(folder / "deploy.prototxt", folder / "squeezenet_v1.1.caffemodel"))
    assert net.nodes[0].type == "Input"
    assert net.input_shape[1:] == (3, 227, 227)
    assert net.resolve_start(-1) == [n.index for n in net.nodes if n.type == "Softmax"][0] - 1
