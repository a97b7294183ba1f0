"""Bad inputs through the real command line: one clear line naming the file and the problem, no traceback,
a non-zero exit, no stray or partial files, and nothing written outside the output folder.

Every row of ``CASES`` stages a small working tree (the tiny reference net, two good photos), spoils one
thing, runs ``lrp-demo`` and checks the whole outcome:

- ``fatal`` rows: exit status 1, stderr is exactly one line ``lrp-demo: error: <message>``, stdout empty,
  and no output folder at all.
- ``entry`` rows (a bad list line or image between two good ones): the bad entry is reported as
  ``lrp-demo: failed: <message>`` right away and again under the summary line, the two good entries are
  explained completely, exit status 1, and the output folder holds their outputs and nothing else.

In every row "Traceback" never appears and the tree around the output folder (including the folders
above the working directory, where a ``..`` entry would land) is unchanged, file by file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE, reference_models_dir
from PIL import Image

from lrp_cli.cli import lrp_demo

PROG = "lrp-demo"
SUFFIXES = ("_heatmap.png", "_toptenscores.txt", "_rawhm.txt", "_as_inputted_into_the_dnn.png")

BASE_CONFIG = {
    "param_file": "models/tiny/deploy.prototxt",
    "model_file": "models/tiny/tiny_seed3.caffemodel",
    "mean_file": "models/imagenet_mean_const.binaryproto",
    "synsetfile": "models/synsets_10.txt",
    "use_mean_file_asbinaryprotoblob": "1",
    "lastlayerindex": "-2",
    "firstlayerindex": "0",
    "numclasses": "10",
    "baseimgsize": "36",
    "standalone_outpath": "./output",
    "standalone_rootpath": "someimages",
    "epsstab": "1",
    "alphabeta_beta": "1",
    "relpropformulatype": "100",
    "auxiliaryvariable_maxlayerindexforflatdistinconv": "0",
}
GOOD_LINES = ["someimages/good1.jpg -1", "someimages/good2.png 3"]
GOOD_IMAGES = ["someimages/good1.jpg", "someimages/good2.png"]


def _photo(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width * height * 3).reshape(height, width, 3)
    noise = rng.integers(0, 60, size=(height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _jpeg_bytes(width=64, height=48, seed=0) -> bytes:
    buffer = io.BytesIO()
    _photo(width, height, seed).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _huge_png_header(width=100_000, height=100_000) -> bytes:
    """A valid PNG signature and IHDR announcing width x height RGB pixels, with no real pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"")) + \
        _png_chunk(b"IEND", b"")


class Stage:
    """A working directory ``<tmp>/a/b/work`` with models/, someimages/, config.txt and filelist.txt."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.work = tmp / "a" / "b" / "work"
        models = self.work / "models"
        (models / "tiny").mkdir(parents=True)
        shutil.copy(REFERENCE / "models" / "tiny" / "deploy.prototxt", models / "tiny")
        cached = reference_models_dir("tiny")
        shutil.copy(cached / "tiny" / "tiny_seed3.caffemodel", models / "tiny")
        shutil.copy(cached / "imagenet_mean_const.binaryproto", models)
        shutil.copy(REFERENCE / "models" / "synsets_10.txt", models)
        images = self.work / "someimages"
        images.mkdir()
        (images / "good1.jpg").write_bytes(_jpeg_bytes(64, 48, seed=1))
        _photo(40, 52, seed=2).save(images / "good2.png")
        self.config()
        self.filelist(GOOD_LINES)

    def path(self, rel: str) -> Path:
        return self.work / rel

    def write(self, rel: str, data: bytes | str) -> Path:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        return p

    def edit(self, rel: str, old: str, new: str) -> None:
        text = self.path(rel).read_text()
        assert old in text, (rel, old)
        self.path(rel).write_text(text.replace(old, new, 1))

    def config(self, drop=(), head: str = "", tail: str = "", **values) -> None:
        pairs = {**BASE_CONFIG, **values}
        body = "".join(f"{k}\n{v}\n\n" for k, v in pairs.items() if k not in drop)
        self.write("config.txt", head + body + tail)

    def filelist(self, lines) -> None:
        self.write("filelist.txt", "".join(line + "\n" for line in lines))


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "fatal" or "entry"
    setup: Callable[[Stage], None]
    message: str  # regex for the one message (after "lrp-demo: error: " / "lrp-demo: failed: ")
    bad_line: str | None = None  # entry rows: the list line placed between the two good ones
    args: tuple[str, ...] = ()
    subprocess: bool = False  # run the installed console script in a real process
    blocked: str | None = None  # entry rows: a pre-existing directory under the output folder (kept)


def _nothing(stage: Stage) -> None:
    pass


def _bad_image(data: bytes, rel: str = "someimages/bad.jpg"):
    return lambda stage: stage.write(rel, data)


def _good_copy(rel: str):
    return lambda stage: stage.write(rel, _jpeg_bytes(50, 70, seed=3))


def _config(**kw):
    return lambda stage: stage.config(**kw)


def _truncated_caffemodel(stage: Stage) -> None:
    p = stage.path("models/tiny/tiny_seed3.caffemodel")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _blocked_output(stage: Stage) -> None:
    stage.write("someimages/bad.jpg", _jpeg_bytes(50, 70, seed=3))
    stage.path("output/someimages/bad.jpg_rawhm.txt").mkdir(parents=True)


def _escape(stage: Stage) -> None:
    # someimages/../../../escape.jpg from the working directory is <tmp>/a/escape.jpg; its outputs would be
    # ./output/someimages/../../../escape.jpg_* = <tmp>/a/b/escape.jpg_*, outside the output folder
    (stage.tmp / "a" / "escape.jpg").write_bytes(_jpeg_bytes(50, 70, seed=4))


F = re.escape  # literal parts of a message

CASES = [
    # -- config ----------------------------------------------------------------------------------------------------
    Case("config-missing", "fatal", _nothing, r"nope\.txt: config file does not exist",
         args=("nope.txt", "filelist.txt", ".")),
    Case("config-is-directory", "fatal", lambda s: s.path("confdir").mkdir(),
         r"confdir: is a directory, not a config file", args=("confdir", "filelist.txt", ".")),
    Case("config-missing-key", "fatal", lambda s: s.config(drop=("numclasses",)),
         r"config\.txt: numclasses: missing key \(all 15 keys are required.*\)"),
    Case("config-key-on-last-line", "fatal",
         lambda s: s.config(drop=("epsstab",), tail="epsstab"),
         r"config\.txt line 43: epsstab: key is on the last line, its value line is missing"),
    Case("config-empty-value-line", "fatal", _config(epsstab="\n1"),
         r"config\.txt line \d+: epsstab: empty value line \(the value must be on the line right after the key\)"),
    Case("config-whitespace-only-line", "fatal",
         lambda s: s.config(drop=("numclasses",), head=" \t  \n\t\n"),
         r"config\.txt: numclasses: missing key .*"),
    Case("config-int-not-numeric", "fatal", _config(numclasses="ten"),
         r"config\.txt line \d+: numclasses: value 'ten' is not an integer"),
    Case("config-int-is-1.5", "fatal", _config(lastlayerindex="1.5"),
         r"config\.txt line \d+: lastlayerindex: value '1\.5' is not an integer"),
    Case("config-unknown-formula-31", "fatal", _config(relpropformulatype="31"),
         r"config\.txt line \d+ \(relpropformulatype\): unknown relpropformulatype 31 \(supported: .*\)"),
    Case("config-aux-negative-formula-54", "fatal",
         _config(relpropformulatype="54", auxiliaryvariable_maxlayerindexforflatdistinconv="-1"),
         r"config\.txt line 43 \(auxiliaryvariable_maxlayerindexforflatdistinconv\): formula 'epsilon, flat at and "
         r"below aux' needs auxiliaryvariable_maxlayerindexforflatdistinconv ≥ 0 \(got -1\)"),
    Case("config-negative-beta-formula-2", "fatal", _config(relpropformulatype="2", alphabeta_beta="-0.5"),
         r"config\.txt line \d+: alphabeta_beta: value -0\.5 is negative \(β must be ≥ 0; α = 1 \+ β\)"),
    Case("config-mean-mode-3", "fatal", _config(use_mean_file_asbinaryprotoblob="3"),
         r"config\.txt line \d+: use_mean_file_asbinaryprotoblob: value 3 is not 0 \(text mean\), 1 .*"),
    Case("config-first-not-below-last", "fatal", _config(firstlayerindex="5", lastlayerindex="3"),
         r"config\.txt line \d+ \(firstlayerindex\): firstlayerindex 5 must be ≥ 0 and below the start layer "
         r"index 3"),
    Case("config-lastlayerindex-minus-3", "fatal", _config(lastlayerindex="-3"),
         r"config\.txt line \d+ \(lastlayerindex\): bad lastlayerindex -3 \(use -1, -2 or a layer index\)"),
    Case("config-lastlayerindex-beyond-net", "fatal", _config(lastlayerindex="9"),
         r"config\.txt line \d+ \(lastlayerindex\): lastlayerindex 9 is beyond the last layer \(8\)"),
    Case("config-numclasses-too-large", "fatal", _config(numclasses="11"),
         r"config\.txt line \d+ \(numclasses\): numclasses 11 exceeds the 10 outputs of blob 'prob'"),
    Case("config-baseimgsize-too-small", "fatal", _config(baseimgsize="30"),
         r"config\.txt line \d+ \(baseimgsize\): baseimgsize 30 is smaller than the net input 32×32"),
    Case("config-empty-rootpath", "fatal", _config(standalone_rootpath=""),
         r"config\.txt line \d+: standalone_rootpath: empty value line .*", subprocess=True),
    Case("config-param-file-missing", "fatal", _config(param_file="models/tiny/missing.prototxt"),
         r"config\.txt line \d+: param_file: file models/tiny/missing\.prototxt not found \(looked for .*\)"),
    # -- model files -----------------------------------------------------------------------------------------------
    Case("prototxt-syntax-error", "fatal",
         lambda s: s.edit("models/tiny/deploy.prototxt", "num_output: 8", "num_output: eight"),
         r"/.*/models/tiny/deploy\.prototxt: line 15, column \d+: .*Couldn't parse integer: eight",
         subprocess=True),
    Case("prototxt-unknown-layer-type", "fatal",
         lambda s: s.edit("models/tiny/deploy.prototxt", 'type: "ReLU"', 'type: "Frobnicate"'),
         r"/.*/models/tiny/deploy\.prototxt: layer 'relu1' has unsupported type 'Frobnicate' \(supported: .*\)"),
    Case("caffemodel-truncated", "fatal", _truncated_caffemodel,
         r"/.*/models/tiny/tiny_seed3\.caffemodel: truncated or corrupt caffemodel, in layer 'ip1': "
         r"the file ends \d+ bytes early"),
    Case("caffemodel-blob-shape-mismatch", "fatal",
         lambda s: s.edit("models/tiny/deploy.prototxt", "num_output: 8", "num_output: 6"),
         r"/.*/models/tiny/tiny_seed3\.caffemodel: layer 'conv1' \(Convolution\) blob 0 has shape \(8, 3, 5, 5\), "
         r"the prototxt implies \(6, 3, 5, 5\) \(.*deploy\.prototxt\)"),
    Case("mean-file-garbage", "fatal",
         lambda s: s.write("models/imagenet_mean_const.binaryproto", b"\xff\xfe this is no mean \x00\x01" * 7),
         r"/.*/models/imagenet_mean_const\.binaryproto: not a binaryproto mean file: .*"),
    # -- file list -------------------------------------------------------------------------------------------------
    Case("filelist-missing", "fatal", _nothing, r"nolist\.txt: file list does not exist",
         args=("config.txt", "nolist.txt", ".")),
    Case("filelist-is-directory", "fatal", lambda s: s.path("listdir").mkdir(),
         r"listdir: file list is not a regular file", args=("config.txt", "listdir", ".")),
    Case("shard-3-of-2", "fatal", _nothing, F("--shard '3/2': need 0 ≤ I < N"), args=("--shard", "3/2")),
    Case("list-line-without-target", "entry", _good_copy("someimages/bad.jpg"),
         r"filelist\.txt line 2: no target after 'someimages/bad\.jpg' \(expected '<path> <class>'\)",
         bad_line="someimages/bad.jpg"),
    Case("list-target-not-numeric", "entry", _good_copy("someimages/bad.jpg"),
         r"filelist\.txt line 2: target 'abc' is not an integer .*", bad_line="someimages/bad.jpg abc"),
    Case("list-class-out-of-range", "entry", _good_copy("someimages/bad.jpg"),
         r"filelist\.txt line 2: class 10 for someimages/bad\.jpg is out of range \(the start layer has 10 outputs\)",
         bad_line="someimages/bad.jpg 10", args=("--batch-size", "3")),
    # -- images ----------------------------------------------------------------------------------------------------
    Case("image-missing", "entry", _nothing,
         r"someimages/bad\.jpg: cannot read image: No such file or directory", bad_line="someimages/bad.jpg -1",
         subprocess=True),
    Case("image-empty-file", "entry", _bad_image(b""), r"someimages/bad\.jpg: cannot read image: empty file",
         bad_line="someimages/bad.jpg -1"),
    Case("image-truncated-jpeg", "entry", _bad_image(_jpeg_bytes()[:700]),
         r"someimages/bad\.jpg: truncated image data \(.*\)", bad_line="someimages/bad.jpg -1",
         args=("--batch-size", "3")),
    Case("image-text-named-jpg", "entry", _bad_image(b"just some text, not a picture\n"),
         r"someimages/bad\.jpg: cannot read image: not a recognised image file", bad_line="someimages/bad.jpg -1",
         args=("--jobs", "2")),
    Case("image-decompression-bomb", "entry", _bad_image(_huge_png_header(), "someimages/bomb.png"),
         r"someimages/bomb\.png: image too large: .*", bad_line="someimages/bomb.png -1"),
    Case("npy-wrong-shape", "entry",
         lambda s: np.save(s.path("someimages/blob.npy"), np.zeros((3, 10, 10), np.float32)),
         r"someimages/blob\.npy: expected a numeric array of shape \(3, 32, 32\), got float32 \(3, 10, 10\)",
         bad_line="someimages/blob.npy -1"),
    # -- output placement ------------------------------------------------------------------------------------------
    Case("rootpath-not-in-image-path", "entry", _good_copy("otherimages/bad.jpg"),
         r"\./otherimages/bad\.jpg: rootpath 'someimages' does not occur in the image path",
         bad_line="otherimages/bad.jpg -1"),
    Case("entry-climbs-out-of-output-folder", "entry", _escape,
         r"\./someimages/\.\./\.\./\.\./escape\.jpg: output \./output/someimages/\.\./\.\./\.\./escape\.jpg_\w+"
         r"\.\w+ would lie outside the output folder \./output", bad_line="someimages/../../../escape.jpg -1",
         subprocess=True),
    Case("output-blocked-by-directory", "entry", _blocked_output,
         r"\./output/someimages/bad\.jpg_rawhm\.txt: cannot write: a directory of that name is in the way",
         bad_line="someimages/bad.jpg -1",
         blocked="someimages/bad.jpg_rawhm.txt"),
]


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every file and folder under root (except below ``skip``) with its kind, size and content hash."""
    found = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in dirs:
            found[str((here / name).relative_to(root))] = ("dir",)
        for name in files:
            p = here / name
            found[str(p.relative_to(root))] = ("file", p.stat().st_size, zlib.crc32(p.read_bytes()))
    return found


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _check_outputs(stage: Stage, case: Case) -> None:
    """The output folder holds exactly the complete outputs of the good entries (plus a pre-made blocker)."""
    out = stage.path("output")
    if case.kind == "fatal":
        assert not out.exists(), _tree(out)
        return
    expected = {"someimages"} | {f"{image}{suffix}" for image in GOOD_IMAGES for suffix in SUFFIXES}
    if case.blocked:
        expected.add(case.blocked)
    assert _tree(out) == expected
    for image in GOOD_IMAGES:
        base = out / image
        for suffix in ("_heatmap.png", "_as_inputted_into_the_dnn.png"):
            with Image.open(f"{base}{suffix}") as png:
                png.load()
                assert png.mode == "RGB" and png.size == (32, 32)
        ranked = Path(f"{base}_toptenscores.txt").read_text().splitlines()
        assert len(ranked) == 10 and sorted(int(line.split()[0]) for line in ranked) == list(range(10))
        raw = Path(f"{base}_rawhm.txt").read_text().split("\n")
        assert raw[:2] == ["3", "32 32"] and len(raw) == 2 + 3 * 32 + 1
        assert all(len(line.split()) == 32 for line in raw[2:-1])
    if case.blocked:
        assert not any((out / case.blocked).iterdir())


def _run(stage: Stage, case: Case) -> tuple[int, str, str]:
    args = list(case.args)
    if not args or args[0].startswith("--"):
        args = ["config.txt", "filelist.txt", ".", *args]
    if case.subprocess:
        script = Path(sys.executable).with_name(PROG)
        command = [str(script)] if script.exists() else [sys.executable, "-c",
                                                          "from lrp_cli.cli import main; main()"]
        done = subprocess.run(command + args, cwd=stage.work, capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONWARNINGS="default"))
        return done.returncode, done.stdout, done.stderr
    result = CliRunner().invoke(lrp_demo, args, catch_exceptions=True)
    # an exception that escaped the command (anything but its own sys.exit) is a traceback for the user
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, monkeypatch):
    stage = Stage(tmp_path)
    case.setup(stage)
    if case.kind == "entry":
        stage.filelist([GOOD_LINES[0], case.bad_line, GOOD_LINES[1]])
    monkeypatch.chdir(stage.work)
    before = _snapshot(tmp_path, stage.path("output"))

    status, stdout, stderr = _run(stage, case)

    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = stderr.splitlines()
    if case.kind == "fatal":
        assert status == 1, stderr
        assert len(lines) == 1, stderr
        assert re.fullmatch(f"{PROG}: error: {case.message}", lines[0]), lines[0]
    else:
        assert status == 1, stderr
        assert len(lines) == 3, stderr
        assert re.fullmatch(f"{PROG}: failed: {case.message}", lines[0]), lines[0]
        assert re.fullmatch(rf"{PROG}: 2 done, 1 failed in \d+\.\d s", lines[1]), lines[1]
        assert lines[2] == lines[0]
    assert _snapshot(tmp_path, stage.path("output")) == before
    _check_outputs(stage, case)


def test_enough_rows_in_each_group():
    assert len(CASES) >= 30
    groups = {c.id.split("-")[0] for c in CASES}
    assert {"config", "prototxt", "caffemodel", "mean", "filelist", "list", "image", "npy"} <= groups
    assert sum(c.subprocess for c in CASES) >= 3


def test_whitespace_only_lines_in_a_good_config_are_ignored(tmp_path, monkeypatch):
    """The original aborted on a whitespace-only line (§2.1 item 7); here it is a blank line like any other."""
    stage = Stage(tmp_path)
    stage.config(head="   \n\t \t\n", tail=" \n")
    monkeypatch.chdir(stage.work)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--quiet"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"{PROG}: 2 done, 0 failed in \d+\.\d s\n", result.stderr)
    assert len(_tree(stage.path("output/someimages"))) == 8


def test_fail_fast_stops_at_the_bad_image_with_one_line(tmp_path, monkeypatch):
    """--fail-fast, one image per batch: the first good image is done, the bad one is reported once, the last is never
    started (with larger batches the rest of the failing batch is finished first)."""
    stage = Stage(tmp_path)
    stage.write("someimages/bad.jpg", b"")
    stage.filelist([GOOD_LINES[0], "someimages/bad.jpg -1", GOOD_LINES[1]])
    monkeypatch.chdir(stage.work)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--fail-fast", "--quiet",
                                           "--batch-size", "1"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.splitlines()[0] == f"{PROG}: stopping at the first failure (--fail-fast)"
    assert result.stderr.splitlines()[-1] == f"{PROG}: failed: someimages/bad.jpg: cannot read image: empty file"
    assert {p.name for p in stage.path("output/someimages").iterdir()} == {f"good1.jpg{s}" for s in SUFFIXES}


def test_a_write_failure_midway_keeps_the_earlier_run_s_outputs(tmp_path, monkeypatch):
    """The disk fails on the third file of an entry: none of its new files appear, the complete outputs an earlier
    run wrote for it stay byte for byte, no temporary file is left, and the next entry runs."""
    import lrp_cli.outputs

    stage = Stage(tmp_path)
    stage.write("someimages/bad.jpg", _jpeg_bytes(50, 70, seed=3))
    stage.filelist(["someimages/bad.jpg -1"])
    monkeypatch.chdir(stage.work)
    assert CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--quiet"]).exit_code == 0
    earlier = _snapshot(stage.path("output"), stage.path("nothing"))
    stage.write("someimages/bad.jpg", _jpeg_bytes(70, 50, seed=5))  # a new photo under the same name
    stage.filelist([GOOD_LINES[0], "someimages/bad.jpg -1", GOOD_LINES[1]])
    real = lrp_cli.outputs._stage

    def failing(target, data):
        if target.endswith("bad.jpg_rawhm.txt"):
            raise lrp_cli.outputs.OutputError(f"{target}: cannot write: No space left on device")
        return real(target, data)

    monkeypatch.setattr(lrp_cli.outputs, "_stage", failing)
    result = CliRunner().invoke(lrp_demo, ["config.txt", "filelist.txt", ".", "--quiet"])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[-1] == (
        f"{PROG}: failed: ./output/someimages/bad.jpg_rawhm.txt: cannot write: No space left on device")
    after = _snapshot(stage.path("output"), stage.path("nothing"))
    assert {k: v for k, v in after.items() if "bad.jpg" in k} == {k: v for k, v in earlier.items() if "bad.jpg" in k}
    assert sorted(p.name for p in stage.path("output/someimages").iterdir()) == sorted(
        f"{name}{s}" for name in ("good1.jpg", "good2.png", "bad.jpg") for s in SUFFIXES)
