"""``lrp-demo --show-rules CONFIG``: the rule of every layer, pinned by golden files (tests/golden/rules_*.txt).

The golden files were checked by hand against the formula table of spec §5.5 (CaffeNet: conv1 … fc8 at the
indices of layer_index_caffenet.txt, fc6 = 15) and the per-layer-type choices of lrp_cli/composite.py. To update
them after a deliberate change: ``LRP_CLI_UPDATE_GOLDEN=1 python -m pytest tests/test_show_rules.py``, then read
the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REFERENCE, ROOT, reference_models_dir

from lrp_cli.cli import lrp_demo

GOLDEN = Path(__file__).parent / "golden"

NETS = {
    "tiny": ("models/tiny/deploy.prototxt", "tiny/tiny_seed3.caffemodel", -2, 10),
    "caffenet": ("models/caffenet/deploy_sequential.prototxt", "caffenet/caffenet_seed1.caffemodel", -2, 1000),
    "googlenet": ("models/googlenet/deploy1.prototxt", "googlenet/googlenet_seed2.caffemodel", -2, 1000),
}

# (net, relpropformulatype, aux, extra settings)
CASES = [
    ("tiny", 0, 0, {}),
    ("tiny", 6, 3, {}),
    ("tiny", 11, 0, {}),
    ("tiny", 26, 0, {}),
    ("tiny", 100, 0, {"lrn_relevance": "identity"}),
    ("caffenet", 100, 0, {}),
    ("caffenet", 18, 0, {}),
    ("caffenet", 54, 4, {}),
    ("caffenet", 114, 8, {"firstlayerindex": 2}),
    ("caffenet", 166, 0, {}),
    ("googlenet", 100, 0, {}),
    ("googlenet", 99, 0, {}),
    ("squeezenet", 100, 0, {}),
    ("squeezenet", 2, 0, {}),
]


def config_text(net: str, formula: int, aux: int, extra: dict) -> str:
    if net == "squeezenet":
        prototxt = ROOT / "models" / "squeezenet_v1.1" / "deploy.prototxt"
        caffemodel = ROOT / "models" / "squeezenet_v1.1" / "squeezenet_v1.1.caffemodel"
        last, classes = -1, 1000
    else:
        proto, model, last, classes = NETS[net]
        prototxt, caffemodel = REFERENCE / proto, reference_models_dir(net) / model
    pairs = {
        "param_file": prototxt, "model_file": caffemodel,
        "mean_file": ROOT / "models/imagenet/mean_bgr_104_117_123.txt",
        "use_mean_file_asbinaryprotoblob": 0, "lastlayerindex": last, "firstlayerindex": 0, "numclasses": classes,
        "baseimgsize": 256, "standalone_outpath": "./out", "standalone_rootpath": "images",
        "synsetfile": REFERENCE / "models/synsets_1000.txt", "epsstab": 0.5, "alphabeta_beta": 1,
        "relpropformulatype": formula, "auxiliaryvariable_maxlayerindexforflatdistinconv": aux, **extra,
    }  # fmt: skip
    return "".join(f"{key}\n{value}\n\n" for key, value in pairs.items())


@pytest.mark.parametrize("net,formula,aux,extra", CASES, ids=[f"{c[0]}_f{c[1]}" for c in CASES])
def test_rule_assignment_is_pinned(tmp_path, net, formula, aux, extra):
    config = tmp_path / "config.txt"
    config.write_text(config_text(net, formula, aux, extra))
    result = CliRunner().invoke(lrp_demo, ["--show-rules", str(config)])
    assert result.exit_code == 0, result.output
    golden = GOLDEN / f"rules_{net}_f{formula}.txt"
    if os.environ.get("LRP_CLI_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(result.output)
    assert result.output == golden.read_text()


def test_show_rules_reports_a_bad_config_in_one_line(tmp_path):
    config = tmp_path / "config.txt"
    config.write_text(config_text("tiny", 54, -1, {}))
    result = CliRunner().invoke(lrp_demo, ["--show-rules", str(config)])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "auxiliaryvariable_maxlayerindexforflatdistinconv" in result.output and "got -1" in result.output


def test_every_layer_in_range_is_listed_with_a_rule(tmp_path):
    """The table lists every layer from the start down to the input; only the Input layer has no rule."""
    config = tmp_path / "config.txt"
    config.write_text(config_text("googlenet", 0, 0, {}))
    output = CliRunner().invoke(lrp_demo, ["--show-rules", str(config)]).output
    rows = [line.split() for line in output.splitlines() if not line.startswith("#")]
    indices = [int(row[0]) for row in rows]
    assert indices == list(range(indices[0], -1, -1))
    assert all(len(row) >= 4 and row[3] != "-" for row in rows if row[2] != "Input")
