"""Output names (spec §7.1) and atomic writers for every output file (§7.2, §7.3, §7.5).

Name rule of the original: ``pos = fullpath.find(rootpath)`` (first substring match, not a path
component), output base = ``outpath + "/" + fullpath[pos:]``, suffixes appended to the whole file
name.  On top of that nothing is ever written outside ``outpath``: a base that climbs out of it (via
``..`` or via a symlink already present under it) is an :class:`OutputError` for that entry.

Writers create the parent folders, write to a temporary file in the target folder, flush and fsync
it, then ``os.replace`` it onto the final name; on any failure the temporary file is removed and an
:class:`OutputError` naming the path is raised, so a killed run never leaves a truncated file.
:func:`write_files` does this for all outputs of an entry at once (every file or none, and an earlier
run's complete outputs are never removed because this run failed); :func:`remove_stale_temps` removes
what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import math
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO

import numpy as np

from .errors import LrpError
from .files import display_path
from .gformat import format_g_buffer
from .render import to_uint8

try:
    import fcntl
except ImportError:  # no flock (Windows): temporary files of killed runs are then left alone
    fcntl = None

__all__ = [
    "OutputError",
    "OutputPaths",
    "SUFFIXES",
    "atomic_open",
    "check_output_name",
    "format_g",
    "format_rawhm",
    "format_topten",
    "npy_bytes",
    "output_files",
    "output_paths",
    "png_bytes",
    "rawhm_bytes",
    "remove_stale_temps",
    "write_files",
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
    "overlay": "_overlay.png",
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
    overlay: str  # the heatmap over the crop, for report.html

    def every_kind(self) -> list[str]:
        """Every file any run could write for this input (both top-10 names): what stale temporaries are for."""
        return [self.heatmap, self.base + SUFFIXES["topten"], self.base + ORIGINAL_TOPTEN_SUFFIX, self.rawhm,
                self.as_inputted, self.npy, self.overlay]


def _inside(real_root: str, path: str) -> bool:
    """True when ``path`` (after following existing symlinks and ``..``) is ``real_root`` or lies below it."""
    real = os.path.realpath(path)
    try:
        return os.path.commonpath([real_root, real]) == real_root
    except ValueError:
        return False


def output_paths(fullpath: str, outpath: str, rootpath: str, *, original_names: bool = False) -> OutputPaths:
    """Apply the §7.1 rule to an entry's full path; OutputError if rootpath is absent or the result escapes."""
    if not rootpath:
        raise OutputError("standalone_rootpath is empty: cannot place outputs")
    if not outpath:
        raise OutputError("standalone_outpath is empty: cannot place outputs")
    if "\0" in fullpath or "\0" in outpath:
        raise OutputError(f"{display_path(fullpath)}: the path contains a NUL byte")
    pos = fullpath.find(rootpath)
    if pos < 0:
        raise OutputError(f"{display_path(fullpath)}: rootpath {rootpath!r} does not occur in the image path")
    base = f"{outpath}/{fullpath[pos:]}"
    topten = ORIGINAL_TOPTEN_SUFFIX if original_names else SUFFIXES["topten"]
    paths = OutputPaths(
        base=base,
        heatmap=base + SUFFIXES["heatmap"],
        topten=base + topten,
        rawhm=base + SUFFIXES["rawhm"],
        as_inputted=base + SUFFIXES["as_inputted"],
        npy=base + SUFFIXES["npy"],
        overlay=base + SUFFIXES["overlay"],
    )
    # Every name is the base plus a slash-free suffix, so all share one folder and none is "." or "..": the
    # folder's real path decides, and a name that is already a symlink is followed too.
    real_root = os.path.realpath(outpath)
    folder_inside = _inside(real_root, os.path.dirname(paths.heatmap))
    for p in (paths.heatmap, paths.topten, paths.rawhm, paths.as_inputted, paths.npy, paths.overlay):
        if not (folder_inside and (not os.path.islink(p) or _inside(real_root, p))):
            raise OutputError(
                f"{display_path(fullpath)}: output {display_path(p)} would lie outside the output folder "
                f"{display_path(outpath)}"
            )
    return paths


def output_files(paths: OutputPaths, *, minimal: bool = False, npy: bool = False, image: bool = True,
                 overlay: bool = False) -> list[str]:
    """Every file an entry writes, in writing order: heatmap, top-10, rawhm and (for an image, not a ``.npy``
    blob) the as-inputted crop and, with ``overlay`` (for the report), the heatmap over it; ``minimal`` keeps only
    top-10 and rawhm; ``npy`` adds the ``.npy`` raw heatmap."""
    if minimal:
        files = [paths.topten, paths.rawhm]
    else:
        files = [paths.heatmap, paths.topten, paths.rawhm]
        if image:
            files += [paths.as_inputted] + ([paths.overlay] if overlay else [])
    return files + ([paths.npy] if npy else [])


# -- atomic writing ---------------------------------------------------------------------------------------------------
# A file is written to a hidden temporary file next to it and renamed onto its final name once complete. The temporary
# name is derived from the final one, ``.<start of the name>~<12 hex digits of its SHA-256>.tmp`` (or ``-1.tmp`` …
# ``-3.tmp`` while another process writes the same output), cut so that it fits the 255-byte limit of file names. The
# writer holds an exclusive flock on it until the rename: a temporary file nobody holds a lock on belongs to a killed
# run, and :func:`remove_stale_temps` can find it from the final name alone (no folder listing) and remove it.
NAME_MAX = 255  # bytes in one file name (Linux, macOS, every common file system)
PATH_MAX = 4096  # bytes in a path passed to the kernel, including its terminating NUL
_TEMP_SLOTS = 4


def _temp_names(target: str) -> list[str]:
    """The candidate temporary paths of ``target``, in the order writers try them."""
    folder, name = os.path.split(target)
    raw = os.fsencode(name)
    digest = hashlib.sha256(raw).hexdigest()[:12]
    names = []
    for slot in range(_TEMP_SLOTS):
        tail = f"~{digest}{f'-{slot}' if slot else ''}.tmp"
        stem = os.fsdecode(raw[: NAME_MAX - 1 - len(tail)])  # a byte prefix: may end inside a UTF-8 sequence
        names.append(os.path.join(folder, f".{stem}{tail}"))
    return names


def _lock(fd: int) -> bool:
    """Try to take the exclusive flock of a temporary file; False if another process holds it."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: we cannot tell, so never treat it as stale
        return True
    return True


def _same_file(fd: int, path: str) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.lstat(path))
    except OSError:
        return False


def _create_temp(target: str) -> tuple[str, int]:
    """Create and lock a temporary file for ``target``: (its path, an open write descriptor)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        for tmp in _temp_names(target):
            try:
                fd = os.open(tmp, flags, 0o666)  # honours the umask
            except FileExistsError:
                if _remove_if_stale(tmp):
                    break  # a killed run's: start over with the freed name
                continue  # another process is writing this output right now
            if _lock(fd) and _same_file(fd, tmp):
                return tmp, fd
            os.close(fd)  # removed by a cleanup between create and lock: try again
            break
        else:
            tmp = os.path.join(os.path.dirname(target), f".{secrets.token_hex(8)}.tmp")  # all slots busy
            return tmp, os.open(tmp, flags, 0o666)


def _remove_if_stale(tmp: str) -> bool:
    """Remove the temporary file ``tmp`` if no live process holds its lock; True if it was removed."""
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False  # gone, a symlink, or not ours to open
    try:
        if fcntl is None or not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # held by a live writer (or the file system has no locks)
        if not _same_file(fd, tmp):
            return False
        os.unlink(tmp)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def remove_stale_temps(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Remove the temporary files that killed runs left for the outputs ``paths``; returns the removed paths.

    Only files of this module's naming pattern for exactly these outputs are considered, and only those whose
    writer is gone (their lock is free): a run writing the same output concurrently keeps its file.
    """
    removed = []
    for path in paths:
        for tmp in _temp_names(os.fspath(path)):
            if os.path.lexists(tmp) and _remove_if_stale(tmp):
                removed.append(tmp)
    return removed


def check_output_name(path: str | os.PathLike, label: str | None = None) -> None:
    """OutputError unless ``path`` can be created: its file name within NAME_MAX bytes, the path within PATH_MAX,
    no NUL byte. ``label`` (default: the path) names the entry in the message."""
    text = os.fspath(path)
    who = display_path(label if label is not None else text)
    if "\0" in text:
        raise OutputError(f"{who}: the output path contains a NUL byte")
    name = os.path.basename(text)
    size = len(os.fsencode(name))
    if size > NAME_MAX:
        shown = display_path(name if len(name) <= 60 else f"…{name[-50:]}")
        raise OutputError(f"{who}: output file name {shown} is {size} bytes long, above the {NAME_MAX}-byte limit")
    if len(os.fsencode(text)) >= PATH_MAX:
        raise OutputError(f"{who}: output path is {len(os.fsencode(text))} bytes long, above the {PATH_MAX}-byte limit")


def write_files(contents: Mapping[str, bytes] | Iterable[tuple[str, bytes]]) -> list[str]:
    """Write every file or none: each to a locked temporary file next to it (flushed to disk), then all renamed.

    ``contents`` maps output paths to their bytes. If any file cannot be written, every temporary file is removed
    and no output changes: an earlier run's complete outputs stay as they were. If a rename fails midway (rare:
    all temporary files already exist in the target folders), the outputs this call had newly created are removed
    again and those it had replaced keep their new, complete content. Raises OutputError naming the path.
    Returns the paths written, in order.
    """
    items = [(os.fspath(p), d) for p, d in (contents.items() if isinstance(contents, Mapping) else contents)]
    for target, _ in items:
        if os.path.isdir(target):
            raise OutputError(f"{display_path(target)}: cannot write: a directory of that name is in the way")
    staged: list[_Staged] = []
    try:
        for target, data in items:
            staged.append(_stage(target, data))
        _commit(staged)
    finally:
        for item in staged:
            item.discard()
    return [item.target for item in staged]


class _Staged:
    """A complete temporary copy of one output, locked until it is renamed or discarded."""

    def __init__(self, target: str, tmp: str, fd: int):
        self.target, self.tmp, self.fd = target, tmp, fd

    def discard(self) -> None:
        """Remove the temporary file unless it was renamed, and release the lock."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            if _same_file(self.fd, self.tmp):
                os.unlink(self.tmp)
        os.close(self.fd)
        self.fd = -1


def _stage(target: str, data: bytes) -> _Staged:
    """A complete, fsynced temporary copy of ``data`` for ``target``."""
    try:
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        item = _Staged(target, *_create_temp(target))
    except OSError as exc:
        raise OutputError(f"{display_path(target)}: cannot write: {exc.strerror or exc}") from exc
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(item.fd, view) :]
        os.fsync(item.fd)
    except BaseException as exc:
        item.discard()
        if isinstance(exc, OSError):
            raise OutputError(f"{display_path(target)}: cannot write: {exc.strerror or exc}") from exc
        raise
    return item


def _commit(staged: list[_Staged]) -> None:
    """Rename every temporary file onto its target; on a failure undo the renames that created new files."""
    created = []
    for item in staged:
        existed = os.path.lexists(item.target)
        try:
            os.replace(item.tmp, item.target)
        except OSError as exc:
            for path in created:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise OutputError(f"{display_path(item.target)}: cannot write: {exc.strerror or exc}") from exc
        os.close(item.fd)  # renamed: nothing left to remove, and the lock is released
        item.fd = -1
        if not existed:
            created.append(item.target)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """A binary file object whose content replaces ``path`` when the block ends without an exception.

    The content is buffered in memory and written with :func:`write_files`; nothing changes on failure.
    """
    buffer = io.BytesIO()
    yield buffer
    write_files({os.fspath(path): buffer.getvalue()})


def _write_bytes(path: str | os.PathLike, data: bytes) -> None:
    write_files({os.fspath(path): data})


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
    return str(rawhm_bytes(a), "ascii")


def rawhm_bytes(rawhm: np.ndarray) -> bytes:
    """:func:`format_rawhm` as ASCII bytes, without the detour through a str."""
    a = np.asarray(rawhm)
    if a.ndim != 3:
        raise ValueError(f"raw heatmap must be (C, H, W), got shape {a.shape}")
    c, h, w = a.shape
    head = f"{c}\n{h} {w}\n".encode("ascii")
    return format_g_buffer(a.reshape(c * h, w), head).tobytes()


def write_rawhm(path: str | os.PathLike, rawhm: np.ndarray) -> None:
    """Write ``_rawhm.txt`` atomically (format of spec §7.2; values are widened to double first)."""
    _write_bytes(path, rawhm_bytes(rawhm))


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


def png_bytes(rgb: np.ndarray) -> bytes:
    """A ``(3, H, W)`` float image in [0, 1] as the bytes of an 8-bit RGB PNG (clipped, rounded). Pillow's default
    zlib level 6, so that the files stay byte-identical from release to release (level 1 encodes 4 times faster,
    files about 10% larger)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(to_uint8(rgb)).save(buffer, format="PNG")
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a ``.npy`` file."""
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write a ``(3, H, W)`` float image in [0, 1] as an 8-bit RGB PNG (clipped, rounded), atomically."""
    _write_bytes(path, png_bytes(rgb))


def write_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an array as ``.npy`` atomically (for the raw heatmap on request)."""
    _write_bytes(path, npy_bytes(array))
