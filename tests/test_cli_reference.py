"""lrp-demo end to end from the photos, against what the original program wrote for every reference case."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE, ROOT, reference_models_dir
from PIL import Image

from lrp_cli.cli import lrp_demo

CASES = sorted(p.name for p in (REFERENCE / "cases").iterdir())


def stage(case: str, dest):
    """The case laid out like stage_reference.py does, with the cached caffemodels linked in."""
    spec = json.loads((REFERENCE / "cases" / case / "case.json").read_text())
    models = reference_models_dir(spec["model"])
    shutil.copytree(REFERENCE / "models", dest / "models")
    for item in models.iterdir():
        target = dest / "models" / item.name
        if item.is_dir():
            target.mkdir(exist_ok=True)
            for f in item.iterdir():
                (target / f.name).symlink_to(f)
        elif not target.exists():
            target.symlink_to(item)
    shutil.copytree(REFERENCE / "someimages", dest / "someimages")
    for name in ("config.txt", "filelist.txt"):
        shutil.copy(REFERENCE / "cases" / case / name, dest / name)
    return spec


def read_rawhm(path):
    lines = path.read_text().split("\n")
    channels = int(lines[0])
    h, w = (int(v) for v in lines[1].split())
    values = np.array([[float(v) for v in line.split(" ") if v] for line in lines[2 : 2 + channels * h]])
    return values.reshape(channels, h, w)


def decode16(path):
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image[:, :, ::-1].transpose(2, 0, 1) / scale  # BGR → RGB planes in [0, 1]


_NETS: dict = {}


def has_exact_ties(model: str, case: str, name: str) -> bool:
    """Whether the original's input blob for this image has exactly tied MAX-pooling maxima (see
    test_reference_relevance.py: the original broke those ties by BLAS rounding, so such heatmaps differ more)."""
    from test_reference_relevance import CAFFEMODEL, PROTOTXT, exact_positive_ties, input_case

    from lrp_cli.caffe import load_model
    from lrp_cli.net import Net

    if model not in _NETS:
        _NETS[model] = Net(load_model(REFERENCE / "models" / PROTOTXT[model],
                                      reference_models_dir(model) / CAFFEMODEL[model]))
    blob = np.load(REFERENCE / "cases" / input_case(case, model) / "expected" / f"{name}_input_blob.npz")
    return exact_positive_ties(_NETS[model], _NETS[model].forward(blob["input_blob"][None]))


@pytest.mark.parametrize("case", CASES)
def test_case_from_photos(case, tmp_path, monkeypatch):
    spec = stage(case, tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--original-names", "--quiet"])
    assert result.exit_code == 0, result.output
    expected_dir = REFERENCE / "cases" / case / "expected"
    out = tmp_path / "output" / "someimages"
    heatmaps_compared = heatmaps_present = 0
    for line in (tmp_path / "filelist.txt").read_text().splitlines():
        name = line.split()[0].rsplit("/", 1)[-1]
        # top-10: same format; the top-1 class identical
        ours = (out / f"{name}_top10scores.txt").read_text()
        theirs = (expected_dir / f"{name}_top10scores.txt").read_text()
        assert ours.split()[0] == theirs.split()[0], name
        assert len(ours.splitlines()) == len(theirs.splitlines())
        assert all(len(line.split()) == 2 for line in ours.splitlines())
        # raw heatmap: the original's text layout, numbers correlated r ≥ 0.99
        text = (out / f"{name}_rawhm.txt").read_text()
        assert text.startswith("3\n227 227\n" if "caffenet" in case else "3\n32 32\n")
        assert all(line.endswith(" ") for line in text.split("\n")[2:-1]) and text.endswith(" \n")
        rawhm = read_rawhm(out / f"{name}_rawhm.txt")
        expected = np.load(expected_dir / f"{name}_rawhm.npz")["rawhm"]
        tied = has_exact_ties(spec["model"], case, name)
        assert np.corrcoef(rawhm.ravel(), expected.ravel())[0, 1] >= (0.985 if tied else 0.99), name
        # heatmap pixels: equal to the original's (8-bit) wherever the original did not wrap
        if (expected_dir / f"{name}_heatmap.png").exists():
            ours_png = np.asarray(Image.open(out / f"{name}_heatmap.png").convert("RGB")).transpose(2, 0, 1) / 255.0
            theirs_png = decode16(expected_dir / f"{name}_heatmap.png")
            v = expected.mean(axis=0)
            wrapped = -v / max(v.max(), 1e-30) > 1
            same_input = np.allclose(rawhm, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
            heatmaps_present += 1
            if same_input:  # images whose rawhm differs (exact ties, see test_reference_relevance) differ here too
                heatmaps_compared += 1
                # 8-bit rounding of values that agree to float32 noise: at most one grey level apart
                assert np.abs(ours_png - theirs_png)[:, ~wrapped].max() <= 1 / 255 + 1e-6, name
        if (expected_dir / f"{name}_as_inputted_into_the_dnn.png").exists():
            ours_png = np.asarray(Image.open(out / f"{name}_as_inputted_into_the_dnn.png").convert("RGB"))
            theirs_png = decode16(expected_dir / f"{name}_as_inputted_into_the_dnn.png")
            assert np.abs(ours_png.transpose(2, 0, 1) / 255.0 - theirs_png).max() <= 0.5 / 255 + 1e-6, name
    assert heatmaps_compared >= min(heatmaps_present, 1)


def test_default_names_follow_the_manual(tmp_path, monkeypatch):
    stage("tiny_f100", tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--quiet"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "output" / "someimages").iterdir() if p.name.startswith("cat12"))
    assert names == [
        "cat12.jpg_as_inputted_into_the_dnn.png",
        "cat12.jpg_heatmap.png",
        "cat12.jpg_rawhm.txt",
        "cat12.jpg_toptenscores.txt",
    ]


def test_minimal_output_writes_scores_and_rawhm_only(tmp_path, monkeypatch):
    stage("tiny_f0_eps1", tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--minimal-output", "--quiet"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in (tmp_path / "output" / "someimages").iterdir())
    assert files == sorted(f"{n}_{s}" for n in ("bw1.png", "cat12.jpg", "hare3.jpg")
                           for s in ("rawhm.txt", "toptenscores.txt"))


def test_npy_input_blob_reproduces_the_reference_exactly(tmp_path, monkeypatch):
    """A .npy entry (a preprocessed blob) skips preprocessing: the original's blob gives its heatmap."""
    stage("tiny_f2_beta1", tmp_path)
    monkeypatch.chdir(tmp_path)
    blob = np.load(REFERENCE / "cases" / "inputs_tiny_f100" / "expected" / "hare3.jpg_input_blob.npz")["input_blob"]
    np.save(tmp_path / "someimages" / "hare3.jpg.npy", blob)
    (tmp_path / "blobs.txt").write_text("someimages/hare3.jpg.npy -1\n")
    result = CliRunner().invoke(lrp_demo, ["config.txt", "blobs.txt", ".", "--quiet"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "output" / "someimages"
    assert sorted(p.name for p in out.iterdir()) == [
        "hare3.jpg.npy_heatmap.png", "hare3.jpg.npy_rawhm.txt", "hare3.jpg.npy_toptenscores.txt"
    ]
    rawhm = read_rawhm(out / "hare3.jpg.npy_rawhm.txt")
    expected = np.load(REFERENCE / "cases" / "tiny_f2_beta1" / "expected" / "hare3.jpg_rawhm.npz")["rawhm"]
    assert np.abs(rawhm - expected).max() <= 1e-4 * np.abs(expected).max()


def test_readme_demo_on_the_shipped_model(tmp_path):
    """The README's demo (shipped SqueezeNet, example photos), run from another folder: real heatmaps."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", "from lrp_cli.cli import lrp_demo; lrp_demo()",
         str(ROOT / "configs/config_sequential.txt"), str(ROOT / "testfilelist.txt"), str(ROOT), "--json", "--quiet"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    records = {json.loads(line)["input"]: json.loads(line) for line in out.stdout.splitlines()}
    top1 = {os.path.basename(k): v["top5"][0] for k, v in records.items()}
    assert top1["goldfish2.jpg"]["class"] == 1 and top1["goldfish2.jpg"]["probability"] > 0.9
    assert top1["espresso1.jpg"]["class"] == 967
    assert top1["volcano2.jpg"]["class"] == 980
    for record in records.values():
        assert record["error"] is None
        assert len(record["outputs"]) == 4
        for path in record["outputs"]:
            assert (tmp_path / path).resolve().is_relative_to(tmp_path / "lrp_output")
            assert (tmp_path / path).stat().st_size > 0
        rawhm = read_rawhm(tmp_path / [p for p in record["outputs"] if p.endswith("_rawhm.txt")][0])
        assert rawhm.shape == (3, 227, 227) and np.abs(rawhm).max() > 0
