"""Read an already preprocessed input blob (``.npy``: C×H×W, BGR, mean subtracted) for one list entry.

The ``.npy`` header is read and checked before any data: a file that is not a ``.npy`` array is named for
what it is (pickled data, an ``.npz`` archive, text, an image), a declared shape other than the net input's or
a dtype that is not a real number is refused, and so is a header announcing more data than the file holds —
so a header declaring 10^15 elements never allocates anything. Only then are exactly the declared bytes read,
converted to float32 and checked to be finite. Every problem is an :class:`~lrp_cli.errors.ImageError` (the
entry fails, the run goes on) whose one line names the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np

from .errors import ImageError, LrpError
from .files import MAX_ARRAY_BYTES, count_nonfinite, describe_size, display_path, open_regular

__all__ = ["load_blob", "read_npy"]

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER_BYTES = 1 << 16  # numpy writes headers of a few hundred bytes
# Leading bytes of files that are sometimes named .npy by mistake, and what they are.
_FOREIGN_MAGIC = (
    (b"PK\x03\x04", "a zip archive (an .npz file?)"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x89HDF", "an HDF5 file"),
)
# dtype kinds numpy can hold, described for messages; real numbers ('i', 'u', 'f') are accepted.
_KIND_NAMES = {
    "b": "booleans",
    "c": "complex numbers",
    "O": "pickled Python objects",
    "U": "text strings",
    "S": "byte strings",
    "V": "raw or structured records",
    "M": "dates",
    "m": "time spans",
}


def load_blob(path: str | os.PathLike, shape: tuple[int, ...]) -> np.ndarray:
    """The float32 array of shape ``shape`` stored in the ``.npy`` file ``path`` (C or Fortran order, any byte
    order, any integer or float dtype); raises ImageError naming the file."""
    name = display_path(path)
    expected = tuple(int(d) for d in shape)

    def check(dtype: np.dtype, declared: tuple[int, ...]) -> None:
        if declared != expected:
            raise ImageError(f"{name}: expected a numeric array of shape {expected}, got {dtype} {declared}")

    values = read_npy(path, "input blob", ImageError, check)
    with np.errstate(over="ignore", invalid="ignore"):
        blob = np.ascontiguousarray(values, dtype=np.float32)
    bad = count_nonfinite(blob)
    if bad:
        cause = "NaN or ±Inf" if count_nonfinite(values) else "beyond the float32 range"
        raise ImageError(f"{name}: holds {bad} non-finite value(s) ({cause}); an input blob must be finite")
    return blob


def read_npy(
    path: str | os.PathLike,
    what: str,
    error: type[LrpError],
    check: Callable[[np.dtype, tuple[int, ...]], None],
    max_bytes: int = MAX_ARRAY_BYTES,
) -> np.ndarray:
    """The real-valued array of a ``.npy`` file, in its stored dtype (C order).

    ``check(dtype, shape)`` raises for a shape the caller cannot use; it runs on the header, before any data is
    read or allocated, and so do the checks that the data fits in the file and in ``max_bytes``. ``what`` names
    the kind of file ("input blob", "mean file"); problems are ``error`` with one line naming the file.
    """
    name = display_path(path)
    with open_regular(path, what, error) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(len(_NPY_MAGIC))
        if head != _NPY_MAGIC:
            raise error(f"{name}: not a .npy array: {_what_is(head + f.read(506))}")
        dtype, declared, fortran = _read_header(f, name, size, error)
        if dtype.kind not in "iuf":
            kind = _KIND_NAMES.get(dtype.kind, "non-numeric data")
            raise error(f"{name}: holds {kind} (dtype {dtype}), not real numbers")
        check(dtype, declared)
        count = math.prod(declared)
        data_bytes = count * dtype.itemsize
        if data_bytes > max_bytes:
            raise error(
                f"{name}: the {what}'s {describe_size(data_bytes)} of data exceed the "
                f"{describe_size(max_bytes)} memory budget for one array"
            )
        available = size - f.tell()
        if available < data_bytes:
            raise error(
                f"{name}: truncated .npy array: the header declares {data_bytes} bytes of data, the file holds "
                f"{available}"
            )
        flat = np.empty(count, dtype)
        if f.readinto(memoryview(flat).cast("B")) != data_bytes:
            raise error(f"{name}: the file changed while it was read")
    return np.ascontiguousarray(flat.reshape(declared, order="F" if fortran else "C"))


def _read_header(f, name: str, size: int, error: type[LrpError]) -> tuple[np.dtype, tuple[int, ...], bool]:
    """dtype, shape and Fortran-order flag of a .npy header (the file is positioned after its magic string)."""
    version = f.read(2)
    readers = {b"\x01\x00": (np.lib.format.read_array_header_1_0, "<u2"),
               b"\x02\x00": (np.lib.format.read_array_header_2_0, "<u4")}
    if version not in readers:
        shown = ".".join(str(b) for b in version)
        raise error(f"{name}: unsupported .npy format version {shown or 'missing'} (1.0 and 2.0 are read)")
    reader, length_type = readers[version]
    start = f.tell()
    width = np.dtype(length_type).itemsize
    length_bytes = f.read(width)
    length = int(np.frombuffer(length_bytes, length_type)[0]) if len(length_bytes) == width else -1
    if not 0 < length <= min(size - f.tell(), _MAX_HEADER_BYTES):  # numpy would read it all before checking
        raise error(f"{name}: damaged .npy header (declared length {length}, file size {size})")
    f.seek(start)
    try:
        shape, fortran, dtype = reader(f, max_header_size=_MAX_HEADER_BYTES)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises assorted errors on damaged headers
        detail = " ".join(str(exc).split())[:200] if isinstance(exc, ValueError) else "cannot parse it"
        raise error(f"{name}: damaged .npy header ({detail})") from None
    return np.dtype(dtype), tuple(int(d) for d in shape), bool(fortran)


def _what_is(head: bytes) -> str:
    """A guess at what a file that is not .npy holds, from its first bytes."""
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return f"it is {what}"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # PROTO opcode, protocol 2 to 5
        return "it holds pickled Python data, which is never loaded"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\t\r\n" for c in text):
        return "it is a text file"
    return "unrecognised binary data (no .npy header)"
