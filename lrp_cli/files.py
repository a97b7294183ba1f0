"""Opening input files safely: regular files only, size caps checked before reading, readable names.

Every reader of a user-supplied file (config, prototxt, caffemodel, mean, synsets, images, ``.npy`` blobs) opens
it through :func:`open_regular`, so that a named pipe never blocks the run, a symlink to ``/dev/zero`` or
``/dev/urandom`` is refused instead of read forever, and a file larger than its kind can be is refused before a
byte of it is read. Problems are the caller's :class:`~lrp_cli.errors.LrpError` subclass, one line naming the file.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

import numpy as np

from .errors import LrpError

__all__ = [
    "MAX_ARRAY_BYTES",
    "count_nonfinite",
    "describe_size",
    "display_path",
    "file_kind",
    "open_regular",
    "text_encoding_problem",
]

_MAX_SHOWN = 4096  # characters of a name shown in a message

#: Largest array an input file (a mean image, an input blob) may make us allocate: 256 MiB.
MAX_ARRAY_BYTES = 256 * 2**20

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def display_path(path: str | os.PathLike) -> str:
    """``path`` for a one-line message: control characters (newline, NUL, …) and undecodable bytes escaped."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if len(text) > _MAX_SHOWN:  # a path is at most 4096 bytes; anything longer is shown by its ends
        text = f"{text[: _MAX_SHOWN // 2]}…{text[-_MAX_SHOWN // 4 :]}"
    if text.isprintable():
        return text
    out = []
    for char in text:
        if char.isprintable():
            out.append(char)
        elif 0xDC80 <= ord(char) <= 0xDCFF:  # an undecodable byte kept by surrogateescape
            out.append(f"\\x{ord(char) - 0xDC00:02x}")
        else:
            out.append(repr(char)[1:-1])
    return "".join(out)


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages ("a named pipe (FIFO)", "a character device", …)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def describe_size(size: int) -> str:
    """A byte count for messages: ``123 bytes``, ``4.0 MiB``, ``100.0 GiB``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def open_regular(
    path: str | os.PathLike,
    what: str,
    error: type[LrpError],
    max_bytes: int | None = None,
    limit: str | None = None,
    *,
    empty_ok: bool = False,
    label: str | None = None,
) -> BinaryIO:
    """Open ``path`` for binary reading if it is a non-empty regular file of at most ``max_bytes`` bytes.

    ``what`` names the kind of file in messages ("image", "caffemodel", …), ``limit`` what ``max_bytes`` is
    (default: "the most a <what> can be"), ``label`` how the file is named (default: ``path``). The file is opened
    without blocking (a FIFO with no writer would otherwise hang here) and checked with ``fstat`` on the open
    descriptor, so a symlink is judged by what it points to. Raises ``error("<path>: cannot read <what>: <problem>")``.
    """
    name = display_path(label if label is not None else path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ValueError:  # an embedded NUL byte
        raise error(f"{name}: cannot read {what}: the file name contains a NUL byte") from None
    except OSError as exc:
        raise error(f"{name}: cannot read {what}: {_reason(exc)}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{name}: cannot read {what}: not a regular file ({file_kind(info.st_mode)})")
        if info.st_size == 0 and not empty_ok:
            raise error(f"{name}: cannot read {what}: empty file")
        if max_bytes is not None and info.st_size > max_bytes:
            raise error(
                f"{name}: {what} is {describe_size(info.st_size)}, larger than {limit or f'the most a {what} can be'} "
                f"({describe_size(max_bytes)})"
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32 text (little-endian byte-order mark)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (big-endian byte-order mark)"),
    (b"\xff\xfe", "UTF-16 text (little-endian byte-order mark)"),
    (b"\xfe\xff", "UTF-16 text (big-endian byte-order mark)"),
)


def text_encoding_problem(data: bytes) -> str | None:
    """Why ``data`` is not ASCII-compatible text (UTF-16/32 with or without a byte-order mark, or binary data with
    NUL bytes), or None. Other bytes (UTF-8, Latin-1) are not judged here."""
    for bom, what in _BOMS:
        if data.startswith(bom):
            return what
    if b"\0" not in data:
        return None
    head = data[:4096]
    half = len(head) // 2
    if half >= 2 and max(head[1::2].count(0), head[0::2].count(0)) >= 0.9 * half:  # ASCII in UTF-16: every 2nd byte
        return "UTF-16 text (no byte-order mark)"
    return "binary data (it holds NUL bytes)"


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOENT:
        return "No such file or directory"
    return exc.strerror or str(exc)


def count_nonfinite(array: np.ndarray, chunk: int = 1 << 20) -> int:
    """Number of NaN and ±Inf values of a float array, checked in chunks (no array-sized temporary)."""
    flat = np.asarray(array).reshape(-1)
    if not np.issubdtype(flat.dtype, np.floating):
        return 0
    return sum(int(flat[i : i + chunk].size - np.count_nonzero(np.isfinite(flat[i : i + chunk])))
               for i in range(0, flat.size, chunk))
