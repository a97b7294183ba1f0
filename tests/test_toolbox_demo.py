"""lrp-toolbox-demo and examples/toolbox_mini.py (the manual's mini example)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from conftest import SHARED
from PIL import Image

from lrp_cli.toolbox import data_io, model_io
from lrp_cli.toolbox import modules as M
from lrp_cli.toolbox.demo import main

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "toolbox"
DIGITS = SHARED / "data/mnist/test_images_first1000.npy"
LENET = SHARED / "data/toolbox-models/LeNet-5.txt"


def test_demo_writes_the_original_cnn_demo_images_and_only_into_out(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, [str(DIGITS), str(LENET), "-n", "2", "--param", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "heatmap_0000.npy", "heatmap_0000.png", "heatmap_0001.npy", "heatmap_0001.png", "out"]
    for i in range(2):  # epsilon 1, predicted class: the original lrp_cnn_demo.py's settings
        np.testing.assert_array_equal(np.asarray(Image.open(out / f"heatmap_{i:04d}.png")),
                                      np.asarray(Image.open(DATA / f"cnn_demo_{i}.png"))[:, :, :3])
    assert np.load(out / "heatmap_0000.npy").shape == (1, 32, 32, 1)


def test_demo_options_and_errors(tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, [str(DIGITS), str(LENET), "-n", "1", "--lrp-var", "alphabeta", "--target", "3",
                              "--out", str(tmp_path / "a")])
    assert ok.exit_code == 0 and "predicted 7" in ok.output
    for args, message in (
        ([str(tmp_path / "none.npy"), str(LENET)], "none.npy: no such data file"),
        ([str(DIGITS), str(SHARED / "data/toolbox-models/xor_net_small.txt")], "input must be N x 2"),
        ([str(DIGITS), str(LENET), "--lrp-var", "zB"], "unknown lrp variant 'zB'"),
        ([str(DIGITS), str(LENET), "--target", "12"], "target class 12"),
    ):
        result = runner.invoke(main, [*args, "--out", str(tmp_path / "b")])
        assert result.exit_code == 1
        assert message in result.output and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def seeded_mlp():
    """The MLP the fixture generator used for the original's mini run (numpy's legacy RandomState, seed 2024)."""
    rs = np.random.RandomState(2024)
    l1 = M.Linear.from_weights(rs.normal(0, 784**-0.5, (784, 16)), rs.normal(0, 0.1, 16))
    l2 = M.Linear.from_weights(rs.normal(0, 0.25, (16, 10)), rs.normal(0, 0.1, 10))
    return M.Sequential([l1, M.Rect(), l2, M.SoftMax()])


def test_the_manuals_mini_example_runs_and_matches_the_original(tmp_path):
    model_io.write(seeded_mlp(), tmp_path / "mlp.txt")
    data_io.write(np.load(DIGITS)[:3].astype(np.float64), tmp_path / "test_images.txt")
    subprocess.run([sys.executable, str(ROOT / "examples/toolbox_mini.py"), str(tmp_path / "mlp.txt"),
                    str(tmp_path / "test_images.txt"), str(tmp_path / "hm_py.png")], check=True, cwd=tmp_path)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "hm_py.png")),
                                  np.asarray(Image.open(DATA / "mini_hm.png"))[:, :, :3])
