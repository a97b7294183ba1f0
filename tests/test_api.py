"""The Python API (lrp_cli.load / load_caffe / Model.explain): the README's example as written, the same bytes as
lrp-demo, every input kind, batches, per-call settings, and the CLI's error messages as exceptions."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE, ROOT, reference_models_dir
from PIL import Image

import lrp_cli
from lrp_cli.cli import lrp_demo
from lrp_cli.outputs import format_rawhm, format_topten

CONFIG = ROOT / "configs" / "config_sequential.txt"
PHOTOS = sorted((ROOT / "someimages").glob("*.jpg"))


@pytest.fixture(scope="module")
def model():
    return lrp_cli.load(CONFIG)


@pytest.fixture(scope="module")
def cli_outputs(tmp_path_factory):
    """lrp-demo over the shipped photos with the shipped config (formula 100), and with formula 0."""
    work = tmp_path_factory.mktemp("cli")
    for name in ("configs", "models", "someimages"):
        (work / name).symlink_to(ROOT / name)
    (work / "list.txt").write_text("".join(f"someimages/{p.name} -1\n" for p in PHOTOS))
    config0 = work / "config0.txt"
    config0.write_text(CONFIG.read_text().replace("relpropformulatype\n100", "relpropformulatype\n0")
                       .replace("../models", str(ROOT / "models")).replace("./lrp_output", "./out0"))
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        for config in ("configs/config_sequential.txt", str(config0)):
            result = CliRunner().invoke(lrp_demo, [config, "list.txt", ".", "--quiet"])
            assert result.exit_code == 0, result.output
    return work


def read(path: Path) -> bytes:
    return path.read_bytes()


def test_readme_example_runs_as_written_and_equals_the_cli(tmp_path, monkeypatch, cli_outputs):
    code = re.search(r"## From Python.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    for name in ("configs", "models", "someimages"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    result = namespace["result"]
    assert (tmp_path / "goldfish_overlay.png").stat().st_size > 1000
    assert result.top5[0][:2] == (1, "n01443537 goldfish, Carassius auratus")
    assert namespace["heatmap"].shape == (227, 227)
    written = cli_outputs / "lrp_output" / "someimages" / "goldfish2.jpg"
    assert format_rawhm(result.rawhm).encode() == read(Path(f"{written}_rawhm.txt"))
    assert format_topten(result.top10).encode() == read(Path(f"{written}_toptenscores.txt"))


def test_every_photo_equals_the_cli_byte_for_byte(model, cli_outputs, tmp_path):
    """explain() on the shipped photos gives lrp-demo's rawhm and top-10, and save() writes its very files."""
    results = model.explain(PHOTOS)
    for photo, result in zip(PHOTOS, results, strict=True):
        base = cli_outputs / "lrp_output" / "someimages" / photo.name
        files = result.save(tmp_path)
        assert [Path(f).name for f in files] == [f"{photo.name}{s}" for s in (
            "_heatmap.png", "_toptenscores.txt", "_rawhm.txt", "_as_inputted_into_the_dnn.png")]
        for file in files:
            assert read(Path(file)) == read(Path(f"{base}{Path(file).name[len(photo.name):]}")), file
    # per-call settings: formula 0 for this call only equals the CLI with formula 0 in its config
    eps = model.explain(PHOTOS[:2], formula=0)
    for photo, result in zip(PHOTOS[:2], eps, strict=True):
        base = cli_outputs / "out0" / "someimages" / photo.name
        assert format_rawhm(result.rawhm).encode() == read(Path(f"{base}_rawhm.txt"))
    assert model.settings.formula == 100  # the override did not stick
    assert lrp_cli.load(CONFIG, formula=0).explain(PHOTOS[0]).rawhm.tobytes() == eps[0].rawhm.tobytes()


@pytest.mark.parametrize("case", ["tiny_f100", "caffenet_f0_eps1"])
def test_reference_cases_equal_the_cli(case, tmp_path):
    """The original's reference cases (config, list and photos as given to it): the API's rawhm and top-10 are the
    bytes lrp-demo writes."""
    reference_models_dir("tiny", "caffenet")
    case_dir = REFERENCE / "cases" / case
    config = case_dir / "config.txt"
    models = tmp_path / "models"
    shutil.copytree(REFERENCE / "models", models)
    for blob in reference_models_dir("tiny", "caffenet").rglob("*"):
        if blob.is_file():
            target = models / blob.relative_to(reference_models_dir("tiny", "caffenet"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(blob)
    (tmp_path / "someimages").symlink_to(REFERENCE / "someimages")
    shutil.copy(config, tmp_path / "config.txt")
    shutil.copy(case_dir / "filelist.txt", tmp_path / "filelist.txt")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--quiet"]).exit_code == 0
        model = lrp_cli.load("config.txt")
        lines = [line.rsplit(None, 1) for line in Path("filelist.txt").read_text().splitlines() if line.strip()]
        results = model.explain([f"./{path}" for path, _ in lines], [int(t) for _, t in lines])
    for (path, _), result in zip(lines, results, strict=True):
        base = tmp_path / "output" / path
        assert format_rawhm(result.rawhm).encode() == read(Path(f"{base}_rawhm.txt")), path
        assert format_topten(result.top10).encode() == read(Path(f"{base}_toptenscores.txt")), path


def test_inputs_of_every_kind_in_one_mixed_batch(model, tmp_path):
    """A path, a PIL image, uint8 arrays (RGB, RGBA, grey), a .npy blob path and a float blob array, of different
    sizes, in one list: each equals the same input explained alone."""
    photo = PHOTOS[1]
    rgb = np.asarray(Image.open(PHOTOS[2]).convert("RGB"))
    rgba = np.dstack([rgb[:200, :300], np.full((200, 300), 255, np.uint8)])
    grey = np.asarray(Image.open(PHOTOS[3]).convert("L"))
    blob = model.prepare(PHOTOS[4]).blob
    np.save(tmp_path / "blob.npy", blob)
    inputs = [photo, Image.open(photo), rgb, rgba, grey, tmp_path / "blob.npy", blob]
    together = model.explain(inputs, [-1, -1, 3, -2, -1, -1, 7], batch_size=3)
    assert [r.classes[0] for r in together[2:3]] == [3] and len(together[3].classes) == 5
    alone = [model.explain(i, t) for i, t in zip(inputs, [-1, -1, 3, -2, -1, -1, 7], strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert a.classes == b.classes and list(a.ranking[:10]) == list(b.ranking[:10])
        np.testing.assert_allclose(a.rawhm, b.rawhm, rtol=0, atol=1e-6 * np.abs(b.rawhm).max())
    # a path, its PIL image and its pixels are the same input: the same bytes
    assert together[0].rawhm.tobytes() == together[1].rawhm.tobytes()
    assert model.explain(np.asarray(Image.open(photo))).rawhm.tobytes() == together[0].rawhm.tobytes()
    assert together[5].rawhm.tobytes() == together[6].rawhm.tobytes()
    assert together[5].image() is None and together[0].image().shape == (227, 227, 3)
    assert together[0].to_pil().size == (227, 227)


def test_errors_are_the_documented_exceptions_with_the_cli_messages(model, tmp_path):
    broken = tmp_path / "someimages" / "broken.jpg"
    broken.parent.mkdir()
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(lrp_cli.ImageError) as api_error:
        model.explain(broken)
    (tmp_path / "list.txt").write_text("someimages/broken.jpg -1\n")
    cli = CliRunner().invoke(lrp_demo, [str(CONFIG), str(tmp_path / "list.txt"), str(tmp_path), "--quiet"])
    assert cli.exit_code == 1
    assert f"lrp-demo: failed: {api_error.value}" in cli.stderr.splitlines()
    with pytest.raises(lrp_cli.ImageError, match="missing.npy: cannot read input blob: No such file"):
        model.explain(tmp_path / "missing.npy")
    with pytest.raises(lrp_cli.ConfigError, match=r"unknown setting 'alpha'"):
        model.explain(PHOTOS[0], alpha=2)
    with pytest.raises(lrp_cli.ConfigError, match=r"^formula=3: unknown relpropformulatype 3 \(supported: 0, 2"):
        model.explain(PHOTOS[0], formula=3)
    with pytest.raises(lrp_cli.ConfigError, match=r"^beta \(alphabeta_beta\): expected a number"):
        model.explain(PHOTOS[0], beta="one")
    with pytest.raises(lrp_cli.RelevanceError, match=r"class 1000 is out of range \(the start layer has 1000"):
        model.explain(PHOTOS[0], 1000)
    with pytest.raises(lrp_cli.ImageError, match=r"float array is a preprocessed input blob"):
        model.explain(np.zeros((10, 10, 3), np.float32))
    assert issubclass(lrp_cli.OutputError, lrp_cli.LrpError)


def test_config_errors_name_the_config_line(tmp_path):
    text = CONFIG.read_text().replace("relpropformulatype\n100", "relpropformulatype\n3").replace(
        "../models", str(ROOT / "models"))
    config = tmp_path / "config.txt"
    config.write_text(text)
    with pytest.raises(lrp_cli.ConfigError) as error:
        lrp_cli.load(config)
    cli = CliRunner().invoke(lrp_demo, [str(config), "-", "."], input="")
    assert cli.stderr.strip() == f"lrp-demo: error: {error.value}"
    assert re.match(rf"{re.escape(str(config))} line \d+ \(relpropformulatype\): unknown relpropformulatype 3",
                    str(error.value))


def test_load_caffe_equals_the_config(model):
    direct = lrp_cli.load_caffe(ROOT / "models/squeezenet_v1.1/deploy.prototxt",
                                ROOT / "models/squeezenet_v1.1/squeezenet_v1.1.caffemodel", mean=(104, 117, 123),
                                synsets=ROOT / "models/imagenet/synset_words.txt")
    a, b = direct.explain(PHOTOS[0]), model.explain(PHOTOS[0])
    assert a.rawhm.tobytes() == b.rawhm.tobytes() and a.top5 == b.top5
    assert direct.rules() == model.rules()
    assert "alpha-beta(alpha=1, beta=0)" in direct.rules(beta=0)


def test_quickstart_example_runs_offline(tmp_path):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[PHOTOS.index(ROOT / "someimages" / "goldfish2.jpg")].startswith("goldfish2.jpg: goldfish, Carassius")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(f"{p.stem}_overlay.png" for p in PHOTOS)
    assert lines[-1].startswith("cat1.jpg with formula 0: heatmap (227, 227)")
