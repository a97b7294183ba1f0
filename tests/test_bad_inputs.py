"""Bad inputs through the real command line: one clear line naming the file and the problem, no traceback, no hang,
bounded memory, a non-zero exit, no stray, partial or temporary files, no earlier output lost, and nothing written
outside the output folder.

Every row of ``CASES`` stages a small working tree (the tiny reference net, two good photos, and the complete outputs
of an earlier run for another photo), spoils one thing, runs ``lrp-demo`` in a child process under a timeout and
checks the whole outcome:

- ``fatal`` rows: exit status 1, stderr is exactly one line ``lrp-demo: error: <message>``, stdout empty,
  and no output folder at all.
- ``entry`` rows (a bad list line or input between two good ones): the bad entry is reported as
  ``lrp-demo: failed: <message>`` right away and again under the summary line, the two good entries are
  explained completely, exit status 1, and the output folder holds their outputs, the earlier run's outputs
  (byte for byte) and nothing else — no temporary file either.
- ``warning`` rows (a list line that is fine but suspicious, between the two good ones): one line
  ``lrp-demo: warning: <message>`` and the summary, exit status 0, and the output folder as for ``entry`` rows.

Signals are tested in ``test_signals.py``, a Dask cluster's paths in ``test_batch.py``.

In every row "Traceback" never appears, the child's peak RSS (``VmHWM``, see peak_memory.py) stays under 1 GB, it
ends within its timeout, and the tree around the output folder (including the folders above the working
directory, where a ``..`` entry would land) is unchanged, file by file.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE, reference_models_dir
from peak_memory import environment, module_command, peak_bytes
from PIL import Image
from test_preprocess import flat_png

from lrp_cli.caffe import caffe_pb2
from lrp_cli.cli import lrp_demo

PROG = "lrp-demo"
SUFFIXES = ("_heatmap.png", "_toptenscores.txt", "_rawhm.txt", "_as_inputted_into_the_dnn.png")
MAX_RSS = 2**30  # bytes: the peak memory any row may take
TIMEOUT = 60  # seconds of wall time for one row (a hang fails the row, it never blocks the suite)

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
EARLIER = "someimages/earlier.jpg"  # an entry of an earlier run whose complete outputs are in the output folder


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


def _npy_bytes(array: np.ndarray, **kw) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **kw)
    return buffer.getvalue()


def _npy_declaring(shape: tuple[int, ...]) -> bytes:
    """A .npy file whose header declares ``shape`` (float32) while it holds 12 bytes of data."""
    data = _npy_bytes(np.zeros(3, np.float32))
    length = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + length].replace(b"(3,)", repr(shape).encode()).rstrip(b" \n")
    header = header.ljust(((len(header) + 11) // 64 + 1) * 64 - 11) + b"\n"
    return data[:8] + len(header).to_bytes(2, "little") + header + data[10 + length :]


def _earlier_outputs(base: Path) -> None:
    """The complete outputs an earlier run wrote for one entry (content that no run of this table reproduces)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    for suffix in SUFFIXES:
        Path(f"{base}{suffix}").write_bytes(f"earlier run: {base.name}{suffix}\n".encode("utf-8", "surrogateescape"))


class Stage:
    """A working directory ``<tmp>/a/b/work`` with models/, someimages/, config.txt, filelist.txt, and the outputs
    of an earlier run under output/."""

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

    def link(self, rel: str, target: str) -> None:
        self.path(rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, self.path(rel))

    def fifo(self, rel: str) -> None:
        self.path(rel).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.path(rel))

    def sparse(self, rel: str, size: int, start: bytes = b"") -> None:
        """A file of ``size`` bytes that holds ``start`` and then a hole (truncate -s): no disk, no reading."""
        with open(self.path(rel), "wb") as f:
            f.write(start)
            f.truncate(size)

    def edit(self, rel: str, old: str, new: str) -> None:
        text = self.path(rel).read_text()
        assert old in text, (rel, old)
        self.path(rel).write_text(text.replace(old, new, 1))

    def config(self, drop=(), head: str = "", tail: str = "", **values) -> None:
        pairs = {**BASE_CONFIG, **values}
        body = "".join(f"{k}\n{v}\n\n" for k, v in pairs.items() if k not in drop)
        self.write("config.txt", head + body + tail)

    def filelist(self, lines) -> None:
        self.write("filelist.txt", b"".join((line if isinstance(line, bytes) else line.encode("utf-8",
                                             "surrogateescape")) + b"\n" for line in lines))


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    kind: str  # "fatal", "entry" or "warning"
    setup: Callable[[Stage], None]
    message: str  # regex for the one message (after "lrp-demo: error: " / "lrp-demo: failed: ")
    bad_line: str | bytes | None = None  # entry rows: the list line placed between the two good ones
    args: tuple[str, ...] = ()
    blocked: str | None = None  # entry rows: a pre-existing directory under the output folder (kept)
    earlier: str | None = None  # entry rows: the bad entry's output base; an earlier run's outputs there must stay


def _nothing(stage: Stage) -> None:
    pass


def _bad_file(data: bytes, rel: str = "someimages/bad.jpg"):
    return lambda stage: stage.write(rel, data)


def _good_copy(rel: str):
    return lambda stage: stage.write(rel, _jpeg_bytes(50, 70, seed=3))


def _config(**kw):
    return lambda stage: stage.config(**kw)


def _truncated_caffemodel(stage: Stage) -> None:
    p = stage.path("models/tiny/tiny_seed3.caffemodel")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _caffemodel_weight(value: float):
    def setup(stage: Stage) -> None:
        p = stage.path("models/tiny/tiny_seed3.caffemodel")
        net = caffe_pb2.NetParameter.FromString(p.read_bytes())
        layer = next(layer for layer in net.layer if layer.name == "conv1")
        layer.blobs[0].data[17] = value
        p.write_bytes(net.SerializeToString())

    return setup


def _mean_blob(**fields):
    return lambda stage: stage.write("models/imagenet_mean_const.binaryproto",
                                     caffe_pb2.BlobProto(**fields).SerializeToString())


def _blocked_output(stage: Stage) -> None:
    stage.write("someimages/bad.jpg", _jpeg_bytes(50, 70, seed=3))
    stage.path("output/someimages/bad.jpg_rawhm.txt").mkdir(parents=True)


def _escape(stage: Stage) -> None:
    # someimages/../../../escape.jpg from the working directory is <tmp>/a/escape.jpg; its outputs would be
    # ./output/someimages/../../../escape.jpg_* = <tmp>/a/b/escape.jpg_*, outside the output folder
    (stage.tmp / "a" / "escape.jpg").write_bytes(_jpeg_bytes(50, 70, seed=4))


F = re.escape  # literal parts of a message
LONG = "x" * 226 + ".jpg"  # 230 bytes: "_toptenscores.txt" fits 255 bytes, "_as_inputted_into_the_dnn.png" does not
BLOB = "someimages/blob.npy"
BLOB_LINE = f"{BLOB} -1"
ZERO_BLOB = np.zeros((3, 32, 32), np.float32)


def _blob(data: bytes):
    return _bad_file(data, BLOB)


def _blob_values(**where):
    """A (3, 32, 32) blob with one value replaced: e.g. _blob_values(value=np.nan)."""
    array = ZERO_BLOB.astype(where.get("dtype", np.float32))
    array[1, 2, 3] = where["value"]
    return _blob(_npy_bytes(array))


#: ±3e38 in a checkerboard: finite, but conv1's sums overflow to +Inf and −Inf, which meet as NaN in max pooling
SIGNED_3E38 = np.where(np.indices((3, 32, 32)).sum(axis=0) % 2 == 0, 3e38, -3e38).astype(np.float32)
OUTPATH = r"config\.txt line \d+ \(standalone_outpath\)"


def _fatal_model(rel: str, problem: str) -> str:
    return rf"/.*/{F(rel)}: {problem}"


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
         r"config\.txt line \d+: standalone_rootpath: empty value line .*"),
    Case("config-param-file-missing", "fatal", _config(param_file="models/tiny/missing.prototxt"),
         r"config\.txt line \d+: param_file: file models/tiny/missing\.prototxt not found \(looked for .*\)"),
    # -- model files -----------------------------------------------------------------------------------------------
    Case("prototxt-syntax-error", "fatal",
         lambda s: s.edit("models/tiny/deploy.prototxt", "num_output: 8", "num_output: eight"),
         r"/.*/models/tiny/deploy\.prototxt: line 15, column \d+: .*Couldn't parse integer: eight"),
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
    # -- the net's layers: parameters and shapes checked when it is built, before any image ------------------------
    *[Case(f"net-{name}", "fatal", lambda s, old=old, new=new: s.edit("models/tiny/deploy.prototxt", old, new),
           rf"/.*/models/tiny/deploy\.prototxt: {message}")
      for name, old, new, message in [
          ("conv-stride-0", "kernel_size: 5\n    stride: 1", "kernel_size: 5\n    stride: 0",
           F("layer 'conv1' (Convolution): stride (0, 0) and dilation (1, 1) must be at least 1")),
          ("conv-dilation-0", "kernel_size: 5\n    stride: 1", "kernel_size: 5\n    dilation: 0",
           F("layer 'conv1' (Convolution): stride (1, 1) and dilation (0, 0) must be at least 1")),
          ("conv-pad-2^32-1", "kernel_size: 5\n    stride: 1", "kernel_size: 5\n    pad: 4294967295",
           r"net 'TinyNet': its blobs would take .* GiB per image by layer 'conv1' .*; lrp_cli holds at most 4 GiB"),
          ("input-height-0", "dim: 32\n  dim: 32", "dim: 0\n  dim: 32",
           F("net 'TinyNet': the input shape (1, 3, 0, 32) must have positive dimensions")),
          ("input-2^32x2^32", "dim: 32\n  dim: 32", "dim: 4294967296\n  dim: 4294967296",
           r"net 'TinyNet': its blobs would take .* GiB per image by layer 'conv1' \(input \(3, 4294967296, "
           r"4294967296\)\); lrp_cli holds at most 4 GiB"),
          ("input-smaller-than-kernel", "dim: 32\n  dim: 32", "dim: 4\n  dim: 4",
           F("layer 'conv1' (Convolution): the kernel's extent 5 is larger than the padded input 4 + 2·0")),
          ("lrn-local-size-0", "local_size: 5", "local_size: 0",
           F("layer 'norm2' (LRN): local_size 0 must be odd and positive (as in Caffe)")),
          ("lrn-local-size-even", "local_size: 5", "local_size: 4",
           F("layer 'norm2' (LRN): local_size 4 must be odd and positive (as in Caffe)")),
          ("pool-stride-0", "kernel_size: 2\n    stride: 2", "kernel_size: 2\n    stride: 0",
           F("layer 'pool1' (Pooling): stride (0,) must be at least 1")),
          ("pool-kernel-larger-than-input", "kernel_size: 3\n    stride: 2", "kernel_size: 30\n    stride: 2",
           F("layer 'pool2' (Pooling): the kernel 30 is larger than the padded input 12 + 2·0")),
          ("pool-pad-not-below-kernel", "kernel_size: 2\n    stride: 2", "kernel_size: 2\n    stride: 2\n    pad: 2",
           F("layer 'pool1' (Pooling): pad (2, 2) must be smaller than the kernel (2, 2) (as in Caffe)")),
          ("softmax-axis-out-of-range", 'type: "Softmax"', 'type: "Softmax"\n  softmax_param { axis: 5 }',
           F("layer 'prob' (Softmax): axis 5 is out of range for a 2-D input")),
          ("group-not-dividing", "group: 2", "group: 3",
           F("layer 'conv2' (Convolution): num_output 16 is not a multiple of group 3")),
          ("concat-shape-mismatch", 'type: "Softmax"\n  bottom: "ip1"',
           'type: "Concat"\n  bottom: "ip1"\n  bottom: "pool2"',
           F("layer 'prob' (Concat): cannot concatenate inputs of shapes (1, 10), (1, 16, 6, 6) along axis 1")),
          ("eltwise-shape-mismatch", 'type: "Softmax"\n  bottom: "ip1"',
           'type: "Eltwise"\n  bottom: "ip1"\n  bottom: "pool2"',
           F("layer 'prob' (Eltwise): needs inputs of one shape, got (1, 10), (1, 16, 6, 6)")),
      ]],
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
         r"someimages/bad\.jpg: cannot read image: No such file or directory", bad_line="someimages/bad.jpg -1"),
    Case("image-empty-file", "entry", _bad_file(b""), r"someimages/bad\.jpg: cannot read image: empty file",
         bad_line="someimages/bad.jpg -1"),
    Case("image-truncated-jpeg", "entry", _bad_file(_jpeg_bytes()[:700]),
         r"someimages/bad\.jpg: truncated image data \(.*\)", bad_line="someimages/bad.jpg -1",
         args=("--batch-size", "3")),
    Case("image-text-named-jpg", "entry", _bad_file(b"just some text, not a picture\n"),
         r"someimages/bad\.jpg: cannot read image: not a recognised image file", bad_line="someimages/bad.jpg -1",
         args=("--jobs", "2")),
    Case("image-decompression-bomb", "entry", _bad_file(_huge_png_header(), "someimages/bomb.png"),
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
         r"\.\w+ would lie outside the output folder \./output", bad_line="someimages/../../../escape.jpg -1"),
    Case("output-blocked-by-directory", "entry", _blocked_output,
         r"\./output/someimages/bad\.jpg_rawhm\.txt: cannot write: a directory of that name is in the way",
         bad_line="someimages/bad.jpg -1",
         blocked="someimages/bad.jpg_rawhm.txt"),
    # -- hostile: config files -------------------------------------------------------------------------------------
    Case("config-utf16", "fatal", lambda s: s.write("config.txt", s.path("config.txt").read_text().encode("utf-16")),
         F("config.txt: the config file is UTF-16 text (little-endian byte-order mark); save it as UTF-8 or ASCII")),
    Case("config-binary", "fatal", lambda s: shutil.copy(s.path("models/tiny/tiny_seed3.caffemodel"),
                                                         s.path("config.txt")),
         F("config.txt: the config file is binary data (it holds NUL bytes), not text")),
    Case("config-fifo", "fatal", lambda s: s.fifo("fifo.txt"),
         F("fifo.txt: cannot read config file: not a regular file (a named pipe (FIFO))"),
         args=("fifo.txt", "filelist.txt", ".")),
    Case("config-dev-zero", "fatal", lambda s: s.link("zero.txt", "/dev/zero"),
         F("zero.txt: cannot read config file: not a regular file (a character device)"),
         args=("zero.txt", "filelist.txt", ".")),
    Case("config-symlink-loop", "fatal", lambda s: s.link("loop.txt", "loop.txt"),
         F("loop.txt: cannot read config file: Too many levels of symbolic links"),
         args=("loop.txt", "filelist.txt", ".")),
    Case("config-empty", "fatal", lambda s: s.write("config.txt", b""),
         F("config.txt: cannot read config file: empty file")),
    Case("config-sparse-1G", "fatal", lambda s: s.sparse("config.txt", 2**30, s.path("config.txt").read_bytes()),
         F("config.txt: config file is 1.0 GiB, larger than the most a config file can be (1.0 MiB)")),
    Case("config-beta-1e38", "fatal", _config(alphabeta_beta="1e38"),
         r"config\.txt line \d+: alphabeta_beta: value 1e38 is too large \(β must be below 2\^24 = 16777216: .*\)"),
    Case("config-beta-2^24", "fatal", _config(relpropformulatype="2", alphabeta_beta="16777216"),
         r"config\.txt line \d+: alphabeta_beta: value 16777216 is too large .*"),
    Case("config-baseimgsize-100000", "fatal", _config(baseimgsize="100000"),
         r"config\.txt line \d+ \(baseimgsize\): baseimgsize 100000 is above the largest allowed, 512: resized images "
         r"are limited to --max-pixels / 48 = 262144 pixels \(--max-pixels 12582912\)"),
    Case("config-baseimgsize-8000", "fatal", _config(baseimgsize="8000"),
         r"config\.txt line \d+ \(baseimgsize\): baseimgsize 8000 is above the largest allowed, 512: .*"),
    Case("config-baseimgsize-over-raised-limit", "fatal", _config(baseimgsize="1001"),
         r"config\.txt line \d+ \(baseimgsize\): baseimgsize 1001 is above the largest allowed, 1000: .*",
         args=("--max-pixels", "48000000")),
    Case("config-numclasses-int32-max", "fatal", _config(numclasses="2147483647"),
         r"config\.txt line \d+ \(numclasses\): numclasses 2147483647 exceeds the 10 outputs of blob 'prob'"),
    Case("config-synsets-dev-urandom", "fatal",
         lambda s: (s.link("models/urandom.txt", "/dev/urandom"), s.config(synsetfile="models/urandom.txt")),
         r"config\.txt line \d+: synsetfile: models/urandom\.txt is not a regular file \(.*\)"),
    # -- hostile: model, prototxt and mean files -------------------------------------------------------------------
    Case("caffemodel-sparse-100G", "fatal", lambda s: s.sparse("models/tiny/tiny_seed3.caffemodel", 100 * 2**30),
         _fatal_model("models/tiny/tiny_seed3.caffemodel",
                      F("caffemodel is 100.0 GiB, larger than Caffe's protobuf limit for a caffemodel (2.0 GiB)"))),
    Case("caffemodel-zero-padded-to-2G", "fatal",
         lambda s: s.sparse("models/tiny/tiny_seed3.caffemodel", 2**31 - 1,
                            s.path("models/tiny/tiny_seed3.caffemodel").read_bytes()),
         _fatal_model("models/tiny/tiny_seed3.caffemodel", F("truncated or corrupt caffemodel, after 3 layer(s): field "
                                                             "number 0 (zero bytes where a field should begin)"))),
    Case("caffemodel-nan-weight", "fatal", _caffemodel_weight(float("nan")),
         _fatal_model("models/tiny/tiny_seed3.caffemodel",
                      F("layer 'conv1' blob 0 holds 1 non-finite weight(s) (NaN, ±Inf or beyond the float32 range)"))),
    Case("caffemodel-inf-weight", "fatal", _caffemodel_weight(float("-inf")),
         _fatal_model("models/tiny/tiny_seed3.caffemodel", r"layer 'conv1' blob 0 holds 1 non-finite weight\(s\) .*")),
    Case("caffemodel-is-the-prototxt", "fatal",
         _config(model_file="models/tiny/deploy.prototxt"),
         _fatal_model("models/tiny/deploy.prototxt", r"truncated or corrupt caffemodel, .*")),
    Case("caffemodel-fifo", "fatal", lambda s: (s.path("models/tiny/tiny_seed3.caffemodel").unlink(),
                                                s.fifo("models/tiny/tiny_seed3.caffemodel")),
         r"config\.txt line \d+: model_file: models/tiny/tiny_seed3\.caffemodel is not a regular file \(.*\)"),
    Case("prototxt-is-the-caffemodel", "fatal", _config(param_file="models/tiny/tiny_seed3.caffemodel"),
         _fatal_model("models/tiny/tiny_seed3.caffemodel",
                      F("the prototxt is binary data (it holds NUL bytes), not text (is it a caffemodel?)"))),
    Case("prototxt-utf16", "fatal",
         lambda s: s.write("models/tiny/deploy.prototxt",
                           s.path("models/tiny/deploy.prototxt").read_text().encode("utf-16")),
         _fatal_model("models/tiny/deploy.prototxt",
                      F("the prototxt is UTF-16 text (little-endian byte-order mark); save it as UTF-8"))),
    Case("prototxt-sparse-1G", "fatal", lambda s: s.sparse("models/tiny/deploy.prototxt", 2**30),
         _fatal_model("models/tiny/deploy.prototxt",
                      F("prototxt is 1.0 GiB, larger than the most a prototxt can be (16.0 MiB)"))),
    Case("mean-nan", "fatal", _mean_blob(shape=caffe_pb2.BlobShape(dim=[1, 3, 1, 1]), data=[104, float("nan"), 123]),
         _fatal_model("models/imagenet_mean_const.binaryproto", F("the mean holds 1 non-finite value(s) (NaN, ±Inf or "
                                                                  "beyond the float32 range)"))),
    Case("mean-text-inf", "fatal",
         lambda s: (s.write("models/mean.txt", "3 1 1\n104 inf 123\n"),
                    s.config(mean_file="models/mean.txt", use_mean_file_asbinaryprotoblob="0")),
         _fatal_model("models/mean.txt", r"the mean holds 1 non-finite value\(s\) .*")),
    Case("mean-npy-3e6x1e6", "fatal",
         lambda s: s.write("models/imagenet_mean_const.binaryproto", _npy_declaring((3, 10**6, 10**6))),
         _fatal_model("models/imagenet_mean_const.binaryproto",
                      F("mean image 3 x 1000000 x 1000000 would take 21.8 TiB, above the 256.0 MiB memory budget for "
                        "one array"))),
    Case("mean-binaryproto-3e6x1e6", "fatal",
         _mean_blob(shape=caffe_pb2.BlobShape(dim=[1, 3, 10**6, 10**6]), data=[1.0, 2.0, 3.0]),
         _fatal_model("models/imagenet_mean_const.binaryproto", r"mean image 3 x 1000000 x 1000000 would take .*")),
    Case("mean-sparse-100G", "fatal", lambda s: s.sparse("models/imagenet_mean_const.binaryproto", 100 * 2**30),
         _fatal_model("models/imagenet_mean_const.binaryproto",
                      F("mean file is 100.0 GiB, larger than the most a mean file can be (64.0 MiB)"))),
    # -- hostile: file lists ---------------------------------------------------------------------------------------
    Case("filelist-fifo", "fatal", lambda s: s.fifo("listfifo"), r"listfifo: file list is not a regular file",
         args=("config.txt", "listfifo", ".")),
    Case("filelist-dev-zero", "fatal", lambda s: s.link("zerolist", "/dev/zero"),
         r"zerolist: file list is not a regular file", args=("config.txt", "zerolist", ".")),
    Case("filelist-1G-without-newline", "fatal", lambda s: s.sparse("filelist.txt", 2**30),
         r"filelist\.txt line 1: longer than 65536 bytes, not a file list line \(reading stopped\)"),
    Case("list-line-nul-byte", "entry", _good_copy("someimages/bad.jpg"),
         r"\./someimages/ba\\x00d\.jpg: the path contains a NUL byte", bad_line="someimages/ba\0d.jpg -1"),
    Case("list-line-nul-byte-skip-existing", "entry", _good_copy("someimages/bad.jpg"),
         r"\./someimages/ba\\x00d\.jpg: the path contains a NUL byte", bad_line="someimages/ba\0d.jpg -1",
         args=("--skip-existing",)),
    Case("list-line-nul-byte-in-blob", "entry", _blob(_npy_bytes(ZERO_BLOB)),
         r"\./someimages/bl\\x00ob\.npy: the path contains a NUL byte", bad_line="someimages/bl\0ob.npy -1",
         args=("--batch-size", "4")),
    Case("list-line-not-utf8", "entry", lambda s: s.write(os.fsdecode(b"someimages/bad\xff.jpg"), b""),
         r"someimages/bad\\xff\.jpg: cannot read image: empty file", bad_line=b"someimages/bad\xff.jpg -1",
         earlier=os.fsdecode(b"someimages/bad\xff.jpg")),
    # -- hostile: images -------------------------------------------------------------------------------------------
    Case("image-9000x9000-png", "entry", _bad_file(flat_png(9000, 9000), "someimages/flat.png"),
         r"someimages/flat\.png: image too large: 9000x9000 = 81000000 pixels exceeds the limit of 12582912 "
         r"\(--max-pixels\)", bad_line="someimages/flat.png -1", earlier="someimages/flat.png"),
    Case("image-over-a-lowered-limit", "entry", _bad_file(flat_png(300, 250), "someimages/wide.png"),
         r"someimages/wide\.png: image too large: 300x250 = 75000 pixels exceeds the limit of 70000 \(--max-pixels\)",
         bad_line="someimages/wide.png -1", args=("--max-pixels", "70000")),
    Case("image-float-tiff", "entry",
         lambda s: Image.fromarray(np.ones((40, 40), np.float32)).save(s.path("someimages/f.tif"), format="TIFF"),
         r"someimages/f\.tif: unsupported image: 32-bit floating-point samples \(e\.g\. a float TIFF\); convert it "
         r"to 8 or 16 bits per sample", bad_line="someimages/f.tif -1", earlier="someimages/f.tif"),
    Case("image-fifo", "entry", lambda s: s.fifo("someimages/bad.jpg"),
         r"someimages/bad\.jpg: cannot read image: not a regular file \(a named pipe \(FIFO\)\)",
         bad_line="someimages/bad.jpg -1", earlier="someimages/bad.jpg"),
    Case("image-dev-zero", "entry", lambda s: s.link("someimages/bad.jpg", "/dev/zero"),
         r"someimages/bad\.jpg: cannot read image: not a regular file \(a character device\)",
         bad_line="someimages/bad.jpg -1"),
    Case("image-dev-urandom", "entry", lambda s: s.link("someimages/bad.jpg", "/dev/urandom"),
         r"someimages/bad\.jpg: cannot read image: not a regular file \(a character device\)",
         bad_line="someimages/bad.jpg -1", args=("--jobs", "2")),
    Case("image-symlink-loop", "entry", lambda s: s.link("someimages/bad.jpg", "bad.jpg"),
         r"someimages/bad\.jpg: cannot read image: Too many levels of symbolic links",
         bad_line="someimages/bad.jpg -1"),
    Case("image-is-a-directory", "entry", lambda s: s.path("someimages/bad.jpg").mkdir(),
         r"someimages/bad\.jpg: cannot read image: not a regular file \(a directory\)",
         bad_line="someimages/bad.jpg -1"),
    Case("image-sparse-1G", "entry", lambda s: s.sparse("someimages/bad.jpg", 2**30),
         r"someimages/bad\.jpg: cannot read image: not a recognised image file", bad_line="someimages/bad.jpg -1"),
    Case("image-corrupt-earlier-outputs-kept", "entry", _bad_file(_jpeg_bytes()[:300]),
         r"someimages/bad\.jpg: .*", bad_line="someimages/bad.jpg -1", earlier="someimages/bad.jpg"),
    # -- hostile: .npy input blobs ---------------------------------------------------------------------------------
    Case("npy-empty", "entry", _blob(b""), r"someimages/blob\.npy: cannot read input blob: empty file",
         bad_line=BLOB_LINE, args=("--batch-size", "4"), earlier=BLOB),
    Case("npy-empty-skip-existing", "entry", _blob(b""), r"someimages/blob\.npy: cannot read input blob: empty file",
         bad_line=BLOB_LINE, args=("--skip-existing", "--batch-size", "4")),
    Case("npy-fifo", "entry", lambda s: s.fifo(BLOB),
         r"someimages/blob\.npy: cannot read input blob: not a regular file \(a named pipe \(FIFO\)\)",
         bad_line=BLOB_LINE, args=("--batch-size", "4")),
    Case("npy-dev-zero", "entry", lambda s: s.link(BLOB, "/dev/zero"),
         r"someimages/blob\.npy: cannot read input blob: not a regular file \(a character device\)",
         bad_line=BLOB_LINE),
    Case("npy-dev-urandom", "entry", lambda s: s.link(BLOB, "/dev/urandom"),
         r"someimages/blob\.npy: cannot read input blob: not a regular file \(a character device\)",
         bad_line=BLOB_LINE),
    Case("npy-symlink-loop", "entry", lambda s: s.link(BLOB, "blob.npy"),
         r"someimages/blob\.npy: cannot read input blob: Too many levels of symbolic links", bad_line=BLOB_LINE),
    Case("npy-missing", "entry", _nothing, r"someimages/blob\.npy: cannot read input blob: No such file or directory",
         bad_line=BLOB_LINE),
    Case("npy-declares-1e15-elements", "entry", _blob(_npy_declaring((10**15,))),
         r"someimages/blob\.npy: expected a numeric array of shape \(3, 32, 32\), got float32 \(1000000000000000,\)",
         bad_line=BLOB_LINE, args=("--batch-size", "4"), earlier=BLOB),
    Case("npy-declares-the-net-shape-but-is-short", "entry", _blob(_npy_declaring((3, 32, 32))),
         r"someimages/blob\.npy: truncated \.npy array: the header declares 12288 bytes of data, the file holds 12",
         bad_line=BLOB_LINE),
    Case("npy-huge-declaration-then-1G-hole", "entry", lambda s: s.sparse(BLOB, 2**30, _npy_declaring((2**40, 3))),
         r"someimages/blob\.npy: expected a numeric array of shape \(3, 32, 32\), got float32 \(1099511627776, 3\)",
         bad_line=BLOB_LINE),
    Case("npy-text", "entry", _blob(b"0.5 0.25\n1 2\n"), r"someimages/blob\.npy: not a \.npy array: it is a text file",
         bad_line=BLOB_LINE),
    Case("npy-pickle", "entry", _blob(__import__("pickle").dumps({"blob": [1.0]})),
         r"someimages/blob\.npy: not a \.npy array: it holds pickled Python data, which is never loaded",
         bad_line=BLOB_LINE),
    Case("npy-object-array", "entry",
         _blob(_npy_bytes(np.full((3, 32, 32), None, dtype=object), allow_pickle=True)),
         r"someimages/blob\.npy: holds pickled Python objects \(dtype object\), not real numbers", bad_line=BLOB_LINE),
    Case("npy-complex", "entry", _blob(_npy_bytes(ZERO_BLOB.astype(np.complex128))),
         r"someimages/blob\.npy: holds complex numbers \(dtype complex128\), not real numbers", bad_line=BLOB_LINE),
    Case("npy-nan", "entry", _blob_values(value=np.nan),
         r"someimages/blob\.npy: holds 1 non-finite value\(s\) \(NaN or ±Inf\); an input blob must be finite",
         bad_line=BLOB_LINE, args=("--batch-size", "4"), earlier=BLOB),
    Case("npy-inf", "entry", _blob_values(value=-np.inf),
         r"someimages/blob\.npy: holds 1 non-finite value\(s\) \(NaN or ±Inf\); an input blob must be finite",
         bad_line=BLOB_LINE),
    Case("npy-float64-beyond-float32", "entry", _blob_values(value=3.5e38, dtype=np.float64),
         r"someimages/blob\.npy: holds 1 non-finite value\(s\) \(beyond the float32 range\); an input blob must be "
         r"finite", bad_line=BLOB_LINE),
    # -- hostile: output names -------------------------------------------------------------------------------------
    Case("output-name-over-255-bytes", "entry", _good_copy(f"someimages/{LONG}"),
         rf"someimages/{LONG}: output file name …x{{17}}\.jpg_as_inputted_into_the_dnn\.png is 259 bytes long, above "
         r"the 255-byte limit", bad_line=f"someimages/{LONG} -1"),
    # -- hostile: the output folder, checked before any image ------------------------------------------------------
    Case("output-folder-dev-null", "fatal", _config(standalone_outpath="/dev/null"),
         OUTPATH + F(": the output folder /dev/null is not a folder (a character device)")),
    Case("output-folder-is-a-file", "fatal",
         lambda s: (s.write("notafolder.txt", "x\n"), s.config(standalone_outpath="./notafolder.txt")),
         OUTPATH + F(": the output folder ./notafolder.txt is not a folder (a regular file)")),
    Case("output-folder-below-a-file", "fatal",
         lambda s: (s.write("notafolder.txt", "x\n"), s.config(standalone_outpath="./notafolder.txt/out")),
         OUTPATH + F(": cannot create the output folder ./notafolder.txt/out: notafolder.txt is not a folder (a "
                     "regular file)")),
    Case("output-folder-read-only", "fatal", _config(standalone_outpath="/sys/lrp-demo-output"),
         OUTPATH + F(": cannot create the output folder /sys/lrp-demo-output: /sys is not writable (Permission "
                     "denied)")),
    Case("output-folder-broken-symlink", "fatal",
         lambda s: (s.link("gone", "nowhere/output"), s.config(standalone_outpath="gone/out")),
         OUTPATH + F(": cannot create the output folder gone/out: gone is a broken symbolic link")),
    # -- hostile: two entries with the same outputs (a warning: the later overwrites the earlier) -------------------
    Case("list-same-entry-twice", "warning", _nothing,
         F("filelist.txt line 2: someimages/good1.jpg has the same output files as an earlier entry of the list: the "
           "later overwrites the earlier"), bad_line="someimages/good1.jpg -2"),
    Case("list-same-outputs-spelled-otherwise", "warning", _nothing,
         F("filelist.txt line 2: someimages/good1.jpg has the same output files as an earlier entry of the list: the "
           "later overwrites the earlier"), bad_line="someimages/./good1.jpg 4", args=("--jobs", "2")),
    # -- hostile: Dask scheduler addresses (checked before anything is loaded, one line each) ------------------------
    Case("dask-scheduler-not-an-address", "fatal", _nothing,
         F("--scheduler 'not a url': not a Dask scheduler address (expected protocol://host:port, e.g. "
           "tcp://10.0.0.5:8786)"), args=("--backend", "dask", "--scheduler", "not a url")),
    Case("dask-scheduler-alone-implies-dask", "fatal", _nothing,
         F("--scheduler 'tcp://a b:1': not a Dask scheduler address (expected protocol://host:port, e.g. "
           "tcp://10.0.0.5:8786)"), args=("--scheduler", "tcp://a b:1")),
    Case("dask-scheduler-with-loky", "fatal", _nothing,
         F("--scheduler tcp://127.0.0.1:8786: a Dask scheduler needs --backend dask, not --backend loky"),
         args=("--backend", "loky", "--scheduler", "tcp://127.0.0.1:8786")),
    Case("dask-scheduler-unknown-protocol", "fatal", _nothing,
         F("--scheduler 'udp://127.0.0.1:8786': unsupported protocol 'udp' (use tcp, tls, ws, wss)"),
         args=("--scheduler", "udp://127.0.0.1:8786")),
    Case("dask-scheduler-port-out-of-range", "fatal", _nothing,
         F("--scheduler 'tcp://127.0.0.1:70000': port 70000 is not between 1 and 65535"),
         args=("--scheduler", "tcp://127.0.0.1:70000")),
    Case("dask-scheduler-refuses", "fatal", _nothing,
         F("--scheduler tcp://127.0.0.1:1: cannot connect to the Dask scheduler (Connection refused)"),
         args=("--backend", "dask", "--scheduler", "127.0.0.1:1")),
    # -- hostile: values that overflow inside the net (per image, never the batch) ----------------------------------
    Case("npy-3e38-overflows-inside-the-net", "entry", _blob(_npy_bytes(np.full((3, 32, 32), 3e38, np.float32))),
         r"someimages/blob\.npy: the forward pass produced non-finite values \(NaN/Inf\) at layer 'conv1'",
         bad_line=BLOB_LINE, args=("--batch-size", "4"), earlier=BLOB),
    Case("npy-overflow-to-nan-before-max-pooling", "entry", _blob(_npy_bytes(SIGNED_3E38)),
         r"someimages/blob\.npy: the forward pass produced non-finite values \(NaN/Inf\) at layer 'conv1'",
         bad_line=BLOB_LINE, args=("--batch-size", "4")),
    Case("npy-1e20-overflows-in-lrn", "entry", _blob(_npy_bytes(np.full((3, 32, 32), 1e20, np.float32))),
         r"someimages/blob\.npy: the forward pass produced non-finite values \(NaN/Inf\) at layer 'norm2'",
         bad_line=BLOB_LINE, args=("--jobs", "2", "--batch-size", "3")),
]


def _snapshot(root: Path, skip: Path) -> dict[str, tuple]:
    """Every file and folder under root (except below ``skip``) with its kind, size and content hash; FIFOs and
    symlinks by what they are (never opened)."""
    found = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in dirs:
            found[str((here / name).relative_to(root))] = ("dir",)
        for name in files:
            p = here / name
            if p.is_symlink():
                found[str(p.relative_to(root))] = ("symlink", os.readlink(p))
            elif not p.is_file():
                found[str(p.relative_to(root))] = ("special", p.lstat().st_mode)
            else:
                found[str(p.relative_to(root))] = ("file", p.stat().st_size, _crc(p))
    return found


def _crc(path: Path) -> int:
    if path.stat().st_blocks * 512 < path.stat().st_size:  # sparse: the size says it all, never read the hole
        return -1
    return zlib.crc32(path.read_bytes())


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def _expected_outputs(case: Case) -> set[str]:
    images = [*GOOD_IMAGES, EARLIER] + ([case.earlier] if case.earlier else [])
    names = {"someimages"} | {f"{image}{suffix}" for image in images for suffix in SUFFIXES}
    return names | ({case.blocked} if case.blocked else set())


def _check_outputs(stage: Stage, case: Case, earlier: dict[str, tuple]) -> None:
    """The output folder holds exactly the complete outputs of the good entries, the earlier run's outputs
    unchanged, a pre-made blocker, and nothing else (no temporary file)."""
    out = stage.path("output")
    if case.kind == "fatal":
        assert not out.exists(), _tree(out)
        return
    assert _tree(out) == _expected_outputs(case)
    after = _snapshot(out, out / "nothing")
    assert {k: after[k] for k in earlier} == earlier  # no earlier output lost or changed
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


def run_child(args: list[str], cwd: Path, timeout: float = TIMEOUT) -> tuple[int, str, str, int]:
    """Run ``lrp-demo args`` in a child process: (exit status, stdout, stderr, the child's peak RSS in bytes).

    The child is killed (and the row fails) when it runs longer than ``timeout`` seconds."""
    command = [*module_command("lrp_cli"), *args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, tempfile.TemporaryDirectory() as tmp:
        hwm = Path(tmp) / "hwm"
        child = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                 env=environment(hwm, dict(os.environ, PYTHONWARNINGS="default")),
                                 start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(child.pid, signal.SIGKILL)
                os.wait4(child.pid, 0)
                child.returncode = -9
                pytest.fail(f"{PROG} {' '.join(args)} did not finish within {timeout} s")
            time.sleep(0.02)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text = (out.read().decode("utf-8", "replace"), err.read().decode("utf-8", "replace"))
        peak = peak_bytes(hwm)
    return child.returncode, text[0], text[1], peak


def _run(stage: Stage, case: Case) -> tuple[int, str, str]:
    args = list(case.args)
    if not args or args[0].startswith("--"):
        args = ["config.txt", "filelist.txt", ".", *args]
    status, stdout, stderr, peak = run_child(args, stage.work)
    assert peak < MAX_RSS, f"peak RSS {peak / 2**20:.0f} MiB"
    return status, stdout, stderr


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path):
    stage = Stage(tmp_path)
    case.setup(stage)
    if case.kind != "fatal":
        _earlier_outputs(stage.path(f"output/{EARLIER}"))
        if case.earlier:
            _earlier_outputs(stage.path(f"output/{case.earlier}"))
        stage.filelist([GOOD_LINES[0], case.bad_line, GOOD_LINES[1]])
    before = _snapshot(tmp_path, stage.path("output"))
    earlier = _snapshot(stage.path("output"), stage.path("nothing"))

    status, stdout, stderr = _run(stage, case)

    assert "Traceback" not in stdout + stderr
    assert stdout == ""
    lines = stderr.splitlines()
    if case.kind == "fatal":
        assert status == 1, stderr
        assert len(lines) == 1, stderr
        assert re.fullmatch(f"{PROG}: error: {case.message}", lines[0]), lines[0]
    elif case.kind == "warning":
        assert status == 0, stderr
        assert len(lines) == 2, stderr
        assert re.fullmatch(f"{PROG}: warning: {case.message}", lines[0]), lines[0]
        assert re.fullmatch(rf"{PROG}: 3 done, 0 failed in \d+\.\d s", lines[1]), lines[1]
    else:
        assert status == 1, stderr
        assert len(lines) == 3, stderr
        assert re.fullmatch(f"{PROG}: failed: {case.message}", lines[0]), lines[0]
        assert re.fullmatch(rf"{PROG}: 2 done, 1 failed in \d+\.\d s", lines[1]), lines[1]
        assert lines[2] == lines[0]
    assert _snapshot(tmp_path, stage.path("output")) == before
    _check_outputs(stage, case, earlier)


def test_enough_rows_in_each_group():
    assert len(CASES) >= 115
    groups = {c.id.split("-")[0] for c in CASES}
    assert {"config", "prototxt", "caffemodel", "mean", "filelist", "list", "image", "npy", "output", "dask"} <= groups
    assert sum(c.earlier is not None for c in CASES) >= 8


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


def test_a_newline_in_the_image_folder_name_stays_on_one_line(tmp_path):
    stage = Stage(tmp_path)
    stage.write("we\nird/someimages/bad.jpg", b"")
    stage.filelist(["someimages/bad.jpg -1"])
    status, stdout, stderr, peak = run_child(["config.txt", "filelist.txt", "we\nird"], stage.work)
    assert status == 1 and stdout == "" and peak < MAX_RSS
    assert stderr.splitlines() == [
        f"{PROG}: failed: we\\nird/someimages/bad.jpg: cannot read image: empty file",
        stderr.splitlines()[1],
        f"{PROG}: failed: we\\nird/someimages/bad.jpg: cannot read image: empty file",
    ]
    assert re.fullmatch(rf"{PROG}: 0 done, 1 failed in \d+\.\d s", stderr.splitlines()[1])


def test_a_long_name_that_fits_only_minimal_output_keeps_its_outputs(tmp_path):
    """Issue 10, defect 7: --minimal-output writes the two files of a 230-byte name; the full run then fails with one
    line before computing anything, and the two files stay as they were."""
    stage = Stage(tmp_path)
    stage.write(f"someimages/{LONG}", _jpeg_bytes(50, 70, seed=3))
    stage.filelist([f"someimages/{LONG} -1"])
    status, _, stderr, _ = run_child(["config.txt", "filelist.txt", ".", "--minimal-output"], stage.work)
    assert status == 0, stderr
    written = _snapshot(stage.path("output"), stage.path("nothing"))
    assert sorted(written) == ["someimages", f"someimages/{LONG}_rawhm.txt", f"someimages/{LONG}_toptenscores.txt"]
    status, stdout, stderr, _ = run_child(["config.txt", "filelist.txt", "."], stage.work)
    assert status == 1 and stdout == "" and "Traceback" not in stderr
    assert stderr.splitlines()[0].endswith("_as_inputted_into_the_dnn.png is 259 bytes long, above the 255-byte limit")
    assert _snapshot(stage.path("output"), stage.path("nothing")) == written


_KILL_MIDWAY = """
import os, signal
import lrp_cli.outputs as outputs
real_commit, commits = outputs._commit, []

def commit(staged):  # the third entry: two of its four files renamed, then the process is killed
    commits.append(staged)
    if len(commits) == 3:
        for item in staged[:2]:
            os.replace(item.tmp, item.target)
        os.kill(os.getpid(), signal.SIGKILL)
    real_commit(staged)

outputs._commit = commit
from lrp_cli.cli import lrp_demo
lrp_demo(prog_name="lrp-demo")
"""


def test_a_run_killed_midway_and_resumed_ends_with_exactly_the_complete_outputs(tmp_path):
    """SIGKILL in the middle of an entry's renames (two files final, two still temporary, one more entry's temporary
    file from another killed writer): the --skip-existing rerun skips the complete entries, redoes the rest, removes
    every temporary file, and its outputs equal those of an uninterrupted run byte for byte."""
    from lrp_cli.outputs import _temp_names

    stage = Stage(tmp_path)
    names = [f"img{n}.{'jpg' if n % 2 else 'png'}" for n in range(6)]
    for n, name in enumerate(names):
        shutil.copy(stage.path(GOOD_IMAGES[n % 2]), stage.path(f"someimages/{name}"))
    stage.filelist([f"someimages/{name} {n % 3 - 1}" for n, name in enumerate(names)])
    args = ["config.txt", "filelist.txt", ".", "--batch-size", "1", "--quiet"]
    killed = subprocess.run([sys.executable, "-c", _KILL_MIDWAY, *args], cwd=stage.work, capture_output=True,
                            text=True, timeout=TIMEOUT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    out = stage.path("output/someimages")
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert len(hidden) == 2 and all(name.startswith(".img2.png_") and name.endswith(".tmp") for name in hidden)
    Path(_temp_names(f"{out}/img4.png_rawhm.txt")[0]).write_bytes(b"half")  # another killed writer's leftover

    status, stdout, stderr, _ = run_child([*args, "--skip-existing"], stage.work)
    assert status == 0 and stdout == "", stderr
    assert re.fullmatch(rf"{PROG}: 4 done, 0 failed, 2 skipped \(outputs exist\) in \d+\.\d s\n", stderr)
    whole = tmp_path / "whole"
    shutil.copytree(stage.work, whole, ignore=shutil.ignore_patterns("output"))
    assert run_child(args, whole)[0] == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}{s}" for name in names for s in SUFFIXES)
    assert _snapshot(out, out / "nothing") == _snapshot(whole / "output/someimages", whole / "nothing")


# -- non-finite values arising inside the net: per image, never the batch ---------------------------------------------
@pytest.mark.parametrize("kernel,stride,pad,hw", [(3, 2, 0, (7, 7)), (2, 2, 0, (5, 7)), (3, 2, 1, (6, 6))])
def test_max_pooling_gives_a_window_holding_nan_its_first_nan(kernel, stride, pad, hw):
    """A window holding NaN has the maximum NaN and its first NaN (row-major) as the winner; every other window keeps
    its first maximum. (NaN equals nothing, so before, no tap matched and the winner's index ran off the window.)"""
    from test_rules import caffe_windows, pool_layer

    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, *hw)).astype(np.float32)
    x[0, 1, 1, 2] = x[0, 1, 2, 1] = x[1, 2, -1, -1] = np.nan
    x[1, 0, 0, 0] = np.inf
    (y,), state = pool_layer(0, kernel, stride, pad).forward([x])
    rows, cols = caffe_windows(hw[0], kernel, stride, pad), caffe_windows(hw[1], kernel, stride, pad)
    assert y.shape == (2, 3, len(rows), len(cols))
    for n, c in np.ndindex(2, 3):
        for ph, (hs, he, _) in enumerate(rows):
            for pw, (ws, we, _) in enumerate(cols):
                window = [(x[n, c, h, w], h * hw[1] + w) for h in range(hs, he) for w in range(ws, we)]
                nans = [at for value, at in window if np.isnan(value)]
                if nans:
                    assert np.isnan(y[n, c, ph, pw]) and state["argmax"][n, c, ph, pw] == nans[0]
                else:
                    best = max(value for value, _ in window)
                    first = next(at for value, at in window if value == best)
                    assert y[n, c, ph, pw] == best and state["argmax"][n, c, ph, pw] == first
    assert np.isnan(y).sum() >= 3


@pytest.fixture(scope="module")
def tiny_model():
    from lrp_cli.api import load_caffe

    cached = reference_models_dir("tiny")
    return load_caffe(REFERENCE / "models" / "tiny" / "deploy.prototxt", cached / "tiny" / "tiny_seed3.caffemodel",
                      mean=(104, 117, 123), last_layer=-2, numclasses=10)


def test_an_image_that_overflows_in_the_net_fails_alone(tiny_model):
    """Finite blobs whose values overflow float32 inside the net get a problem naming the first layer that produced
    NaN or ±Inf; the other images of the batch are exactly what they are in a batch of good images (of the same size:
    for nets this small OpenBLAS's kernel, and so the last bits, can depend on the batch size); the API raises."""
    from lrp_cli.api import Prepared
    from lrp_cli.errors import RelevanceError

    rng = np.random.default_rng(3)
    good = [rng.uniform(-120, 130, (3, 32, 32)).astype(np.float32) for _ in range(5)]
    bad = {"3e38": np.full((3, 32, 32), 3e38, np.float32), "signed": SIGNED_3E38,
           "1e20": np.full((3, 32, 32), 1e20, np.float32)}
    blobs = [good[0], *bad.values(), good[1]]
    batch = tiny_model.explain_inputs([Prepared(f"blob{n}", b) for n, b in enumerate(blobs)], [-1] * len(blobs))
    clean = tiny_model.explain_inputs([Prepared(f"good{n}", b) for n, b in enumerate([good[0], *good[2:], good[1]])],
                                      [-1] * len(blobs))
    assert [e.problem for e in batch] == [
        None,
        "the forward pass produced non-finite values (NaN/Inf) at layer 'conv1'",
        "the forward pass produced non-finite values (NaN/Inf) at layer 'conv1'",
        "the forward pass produced non-finite values (NaN/Inf) at layer 'norm2'",
        None,
    ]
    for n in (0, len(blobs) - 1):
        assert clean[n].problem is None and np.isfinite(clean[n].rawhm).all()
        np.testing.assert_array_equal(batch[n].rawhm, clean[n].rawhm)
        np.testing.assert_array_equal(batch[n].scores, clean[n].scores)
    with pytest.raises(RelevanceError, match=r"^blob1: the forward pass produced non-finite values \(NaN/Inf\) at "
                                             r"layer 'conv1'$"):
        batch[1].save("/nonexistent")  # refused before anything is written
    with pytest.raises(RelevanceError, match=r"^<array>: the forward pass produced .* at layer 'conv1'$"):
        tiny_model.explain([good[0], bad["3e38"]])


def test_relevance_that_comes_out_non_finite_is_a_problem_of_its_image(tiny_model, monkeypatch):
    """A finite forward pass whose relevance is NaN or ±Inf for one image (here made so) is that image's problem."""
    from lrp_cli.api import Prepared
    from lrp_cli.net import Net

    real = Net.propagate

    def propagate(self, *args, **kwargs):
        relevance = real(self, *args, **kwargs).copy()
        relevance[1, 0, 3, 4] = np.inf
        return relevance

    monkeypatch.setattr(Net, "propagate", propagate)
    rng = np.random.default_rng(4)
    blobs = [rng.uniform(-120, 130, (3, 32, 32)).astype(np.float32) for _ in range(3)]
    batch = tiny_model.explain_inputs([Prepared(f"blob{n}", b) for n, b in enumerate(blobs)], [-1, -2, 3])
    assert [e.problem for e in batch] == [
        None, "the relevance came out non-finite (NaN/Inf) although the forward pass was finite", None]


@pytest.mark.parametrize("reply", [b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\n\r\n", None],
                         ids=["web-server", "silent"])
def test_a_port_where_no_dask_scheduler_listens_is_one_line(tmp_path, reply):
    """Something else listens at the scheduler's address: a web server answers (the handshake fails at once), or
    nothing ever answers (Dask's client would wait without end; here: one line after the 10 s connect timeout), and
    nothing waits at exit for a connection that never was."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(reply)

    if reply is not None:
        threading.Thread(target=answer, daemon=True).start()
    stage = Stage(tmp_path)
    try:
        status, stdout, stderr, peak = run_child(["config.txt", "filelist.txt", ".", "--scheduler",
                                                  f"tcp://127.0.0.1:{port}"], stage.work)
    finally:
        server.close()
    assert status == 1 and stdout == "" and peak < MAX_RSS, stderr
    problem = (r"no Dask scheduler answered there \(the answer is not Dask's protocol: \w+\)" if reply else
               r"cannot connect to the Dask scheduler \(connected, but nothing answered within 10 s\)")
    assert re.fullmatch(rf"{PROG}: error: --scheduler tcp://127\.0\.0\.1:{port}: {problem}\n", stderr), stderr
    assert not stage.path("output").exists()


@pytest.mark.parametrize(("shard", "warned"), [(None, [3, 4, 5]), ("0/2", [3, 5]), ("1/2", [4])])
def test_each_duplicate_is_warned_once_by_the_shard_that_runs_it(tmp_path, monkeypatch, shard, warned):
    """Entries whose outputs an earlier entry also writes get one warning each (the third occurrence too), from the
    shard that runs them; the run goes on and exits 0."""
    stage = Stage(tmp_path)
    stage.filelist([*GOOD_LINES, "someimages/good1.jpg -2", "someimages//good1.jpg 4", "someimages/good2.png 3"])
    monkeypatch.chdir(stage.work)
    args = ["config.txt", "filelist.txt", ".", "--quiet", *(["--shard", shard] if shard else [])]
    result = CliRunner().invoke(lrp_demo, args)
    assert result.exit_code == 0, result.output
    shown = {3: "someimages/good1.jpg", 4: "someimages/good1.jpg", 5: "someimages/good2.png"}
    assert result.stderr.splitlines()[:-1] == [
        f"{PROG}: warning: filelist.txt line {line}: {shown[line]} has the same output files as an earlier entry of "
        "the list: the later overwrites the earlier" for line in warned]
    assert re.fullmatch(rf"{PROG}: \d done, 0 failed in \d+\.\d s", result.stderr.splitlines()[-1])


def test_the_duplicate_check_keeps_eight_bytes_per_entry():
    """The set of output-name hashes behind the duplicate warnings: exact membership over sorted runs, and about
    8 bytes per key however many (no Python object per entry)."""
    from lrp_cli.cli import _SeenKeys

    seen = _SeenKeys()
    keys = np.random.default_rng(5).integers(0, 2**63, 50_000, dtype=np.int64).tolist()
    assert all(seen.add(k) for k in keys)
    assert not any(seen.add(k) for k in keys[::97])
    assert seen.add(2**63 + 5) and not seen.add(2**63 + 5)
    assert len(seen.fresh) < seen.FRESH and sum(run.nbytes for run in seen.runs) <= 8 * len(keys)
    assert len(seen.runs) <= np.log2(len(keys) / seen.FRESH) + 2


@pytest.mark.parametrize("args", [("--jobs", "2"), ("--jobs", "2", "--fail-fast")], ids=["error", "fail-fast"])
def test_a_run_stopped_early_with_workers_ends_cleanly(tmp_path, args):
    """A fatal list error after chunks were queued to two workers, or --fail-fast: the workers are killed, no
    traceback of loky's threads (cancelling queued chunks, or shutdown(kill_workers=True), raced with them), no
    temporary file, one error line last."""
    stage = Stage(tmp_path)
    for n in range(12):
        os.symlink("good1.jpg", stage.path(f"someimages/img{n}.jpg"))
    bad = ["someimages/missing.jpg -1"] if "--fail-fast" in args else []
    stage.filelist([*bad, *(f"someimages/img{n}.jpg -1" for n in range(12)), "x" * 70_000])
    status, stdout, stderr, peak = run_child(["config.txt", "filelist.txt", ".", "--batch-size", "1", *args],
                                             stage.work)
    assert status == 1 and stdout == "" and peak < MAX_RSS, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    last = (f"{PROG}: failed: someimages/missing.jpg: cannot read image: No such file or directory" if bad else
            f"{PROG}: error: filelist.txt line 13: longer than 65536 bytes, not a file list line (reading stopped)")
    assert stderr.splitlines()[-1] == last
    out = stage.path("output/someimages")
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")] if out.exists() else True
