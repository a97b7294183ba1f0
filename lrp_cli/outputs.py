"""Output names (spec §7.1) and atomic writers for every output file (§7.2, §7.3, §7.5).

Name rule of the original: ``pos = fullpath.find(rootpath)`` (first substring match, not a path
component), output base = ``outpath + "/" + fullpath[pos:]``, suffixes appended to the whole file
name.  On top of that nothing is ever written outside ``outpath``: a base that climbs out of it (via
``..`` or via a symlink already present under it) is an :class:`OutputError` for that entry.

Writers create the parent folders, write to a temporary file in the target folder, flush and fsync
it, then ``os.replace`` it onto the final name; on any failure the temporary file is removed and an
:class:`OutputError` naming the path is raised, so a killed run never leaves a truncated file.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

import numpy as np

from .errors import LrpError
from .gformat import format_g_buffer
from .render import to_uint8

__all__ = [
    "OutputError",
    "OutputPaths",
    "SUFFIXES",
    "atomic_open",
    "expected_outputs",
    "format_g",
    "format_rawhm",
    "format_topten",
    "output_paths",
    "write_npy",
    "write_png",
    "write_rawhm",
    "write_topten",
]

#: Suffix of each output kind, appended to the input's full file name.
SUFFIXES = {
    "heatmap": "_heatmap.png",
    "topten": "_toptenscores.txt",
    "rawhm": "_rawhm.txt",
    "as_inputted": "_as_inputted_into_the_dnn.png",
    "npy": "_rawhm.npy",
}
#: The C++ binary's name of the top-10 file (``--original-names``).
ORIGINAL_TOPTEN_SUFFIX = "_top10scores.txt"


class OutputError(LrpError):
    """An output that cannot be named or written (names the input or output path)."""


@dataclass(frozen=True)
class OutputPaths:
    """Every output file name of one input; ``base`` is ``outpath + "/" + fullpath[pos:]``."""

    base: str
    heatmap: str
    topten: str
    rawhm: str
    as_inputted: str
    npy: str


def _inside(root: str, path: str) -> bool:
    """True when ``path`` (after following existing symlinks and ``..``) lies strictly below ``root``."""
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    try:
        return real != real_root and os.path.commonpath([real_root, real]) == real_root
    except ValueError:
        return False


def output_paths(fullpath: str, outpath: str, rootpath: str, *, original_names: bool = False) -> OutputPaths:
    """Apply the §7.1 rule to an entry's full path; OutputError if rootpath is absent or the result escapes."""
    if not rootpath:
        raise OutputError("standalone_rootpath is empty: cannot place outputs")
    if not outpath:
        raise OutputError("standalone_outpath is empty: cannot place outputs")
    pos = fullpath.find(rootpath)
    if pos < 0:
        raise OutputError(f"{fullpath}: rootpath {rootpath!r} does not occur in the image path")
    base = f"{outpath}/{fullpath[pos:]}"
    topten = ORIGINAL_TOPTEN_SUFFIX if original_names else SUFFIXES["topten"]
    paths = OutputPaths(
        base=base,
        heatmap=base + SUFFIXES["heatmap"],
        topten=base + topten,
        rawhm=base + SUFFIXES["rawhm"],
        as_inputted=base + SUFFIXES["as_inputted"],
        npy=base + SUFFIXES["npy"],
    )
    for p in (paths.heatmap, paths.topten, paths.rawhm, paths.as_inputted, paths.npy):
        if not _inside(outpath, p):
            raise OutputError(f"{fullpath}: output {p} would lie outside the output folder {outpath}")
    return paths


def expected_outputs(
    entry: object,
    outpath: str,
    rootpath: str,
    *,
    minimal: bool = False,
    original_names: bool = False,
    npy: bool = False,
) -> list[str]:
    """Every file an entry (a FileListEntry or a full-path string) produces, in the original's writing
    order (heatmap, top-10, rawhm, as-inputted); ``minimal`` keeps only top-10 and rawhm, ``npy``
    adds the ``.npy`` raw heatmap."""
    fullpath = getattr(entry, "fullpath", entry)
    if not isinstance(fullpath, str):
        raise TypeError(f"expected a file-list entry or a path string, got {type(entry).__name__}")
    p = output_paths(fullpath, outpath, rootpath, original_names=original_names)
    files = [p.topten, p.rawhm] if minimal else [p.heatmap, p.topten, p.rawhm, p.as_inputted]
    if npy:
        files.append(p.npy)
    return files


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary file next to ``path`` for binary writing; on success it replaces ``path``."""
    target = os.fspath(path)
    folder = os.path.dirname(target) or "."
    name = os.path.basename(target)
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        while True:
            tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # honours the umask
                break
            except FileExistsError:
                continue
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as e:
        raise OutputError(f"{target}: cannot write: {e.strerror or e}") from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


def format_g(value: float) -> str:
    """One number as C++ ``ostream << double`` prints it: ``%g`` (6 significant digits), and libstdc++'s
    ``nan`` / ``-nan`` / ``inf`` / ``-inf``."""
    v = float(value)
    if math.isnan(v):
        return "-nan" if math.copysign(1.0, v) < 0 else "nan"
    return f"{v:g}"


def format_rawhm(rawhm: np.ndarray) -> str:
    """The ``_rawhm.txt`` text of a ``(C, H, W)`` array (R, G, B order for the demonstrator): ``C``,
    ``H W``, then C·H lines of W values, each value followed by one space.

    Every value is :func:`format_g` of it widened to double, formatted for the whole array at once
    by :func:`lrp_cli.gformat.format_g_buffer` (numpy, mostly without the GIL).
    """
    a = np.asarray(rawhm)
    if a.ndim != 3:
        raise ValueError(f"raw heatmap must be (C, H, W), got shape {a.shape}")
    c, h, w = a.shape
    head = f"{c}\n{h} {w}\n".encode("ascii")
    return str(format_g_buffer(a.reshape(c * h, w), head), "ascii")


def write_rawhm(path: str | os.PathLike, rawhm: np.ndarray) -> None:
    """Write ``_rawhm.txt`` atomically (format of spec §7.2; values are widened to double first)."""
    _write_bytes(path, format_rawhm(rawhm).encode("ascii"))


def format_topten(ranked: Iterable[tuple[int, float]], count: int = 10) -> str:
    """``<class> <value>`` lines for the first ``count`` (class, value) pairs of a ranking, value ``%g``."""
    lines = []
    for i, (cls, value) in enumerate(ranked):
        if i >= count:
            break
        lines.append(f"{int(cls)} {format_g(value)}\n")
    return "".join(lines)


def write_topten(path: str | os.PathLike, ranked: Iterable[tuple[int, float]], count: int = 10) -> None:
    """Write the top-10 file atomically: min(count, len(ranked)) lines, best first as given.

    Pass the scores as the net produced them (float32); they are widened to double before printing,
    like the original, so the text matches it byte for byte.
    """
    _write_bytes(path, format_topten(ranked, count).encode("ascii"))


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a ``(3, H, W)`` float image in [0, 1] as an 8-bit RGB PNG (clipped, rounded), atomically."""
    from PIL import Image

    pixels = to_uint8(rgb)
    with atomic_open(path) as f:
        Image.fromarray(pixels).save(f, format="PNG")


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as ``.npy`` atomically (for the raw heatmap on request)."""
    with atomic_open(path) as f:
        np.save(f, np.asarray(array), allow_pickle=False)
