"""Read the demonstrator's mean image (text, binaryproto or .npy) in the layout it indexes.

The demonstrator keeps one flat array per B, G, R channel and subtracts ``flat[b, r + c * height]``
at mean row r, column c: column-major indexing (spec/demonstrator.md §4.6). ``MeanImage.flat``
holds exactly those arrays, so for binaryproto means (stored row-major) the image comes out
transposed, as in the original.

Sizes are checked before anything is allocated: a mean file larger than :data:`MAX_MEAN_FILE_BYTES`
is refused unread, and a declared shape whose values would not fit in the file or in
:data:`~lrp_cli.files.MAX_ARRAY_BYTES` (as float64) is refused from its header. A mean holding NaN,
±Inf or values beyond the float32 range (which would make every input blob non-finite) is a
ModelError naming the file.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from lrp_cli.blobs import read_npy
from lrp_cli.caffe import caffe_pb2
from lrp_cli.caffe.caffemodel import blob_shape
from lrp_cli.errors import ModelError
from lrp_cli.files import MAX_ARRAY_BYTES, describe_size, display_path, open_regular

TEXT_MEAN, BINARYPROTO_BGR, BINARYPROTO_RGB = 0, 1, 2
_NPY_MAGIC = b"\x93NUMPY"
#: Largest mean file read: 64 MiB (ImageNet's 3×256×256 binaryproto is 0.8 MB, its text form about 2 MB).
MAX_MEAN_FILE_BYTES = 64 * 2**20
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True, eq=False)
class MeanImage:
    """Mean values, ``flat[b, r + c * height]`` for BGR channel b at row r, column c.

    ``row_major``: how the mean image itself is stored in ``flat`` (binaryproto: row by row, which the
    original's column-major indexing reads transposed; text and .npy means: column by column).
    A 1×1 mean is a per-channel constant: :meth:`canvas` spreads it over any size.
    """

    flat: np.ndarray  # float64, shape (3, height * width), channels B, G, R
    height: int
    width: int
    row_major: bool = True

    def canvas(self, height: int, width: int) -> MeanImage:
        """This mean, or for a 1×1 (per-channel constant) mean the same constant on a height×width canvas.

        The canvas is a read-only broadcast view (no memory per pixel), so a large baseimgsize costs nothing here.
        """
        if self.height == self.width == 1 and (height, width) != (1, 1):
            return MeanImage(np.broadcast_to(self.flat, (3, height * width)), height, width, self.row_major)
        return self


def read_mean(path: str | os.PathLike, mode: int) -> MeanImage:
    """Read a mean file: mode 0 text, 1 binaryproto with B,G,R planes, 2 binaryproto with R,G,B planes.

    A NumPy ``.npy`` file (C x H x W, B,G,R, like Caffe's ilsvrc_2012_mean.npy) is recognised by its
    header in any mode and indexed the right way round (not transposed).
    """
    name = display_path(path)
    if mode not in (TEXT_MEAN, BINARYPROTO_BGR, BINARYPROTO_RGB):
        raise ModelError(f"{name}: unknown mean file mode {mode} (0 = text, 1 = binaryproto BGR, 2 = binaryproto RGB)")
    with open_regular(path, "mean file", ModelError, MAX_MEAN_FILE_BYTES) as f:
        try:
            data = f.read()
        except OSError as e:
            raise ModelError(f"{name}: cannot read mean file: {e.strerror or e}") from None
    if data.startswith(_NPY_MAGIC):
        mean = _npy_mean(path, name)
    elif mode == TEXT_MEAN:
        mean = _text_mean(data, name)
    else:
        mean = _binaryproto_mean(data, name, rgb_planes=mode == BINARYPROTO_RGB)
    bad = mean.flat.size - int(np.count_nonzero(np.abs(mean.flat) <= _FLOAT32_MAX))  # NaN compares False
    if bad:
        raise ModelError(f"{name}: the mean holds {bad} non-finite value(s) (NaN, ±Inf or beyond the float32 range)")
    return mean


def _text_mean(data: bytes, path: str) -> MeanImage:
    """C, H, W, then per channel (B, G, R) the values column by column: already the flat layout."""
    head = data.split(None, 3)
    try:
        dims = [float(t) for t in head[:3]]
    except ValueError as e:
        raise ModelError(f"{path}: text mean file holds a non-number: {e}") from None
    if len(dims) < 3:
        raise ModelError(f"{path}: text mean file needs C, H and W first, found {len(dims)} number(s)")
    if not all(d.is_integer() for d in dims):
        shown = " ".join(f"{d:g}" for d in dims)
        raise ModelError(f"{path}: text mean file's C, H, W must be integers, found {shown}")
    channels, height, width = (int(d) for d in dims)
    _check_size(path, channels, height, width)
    rest = head[3] if len(head) > 3 else b""
    count = 3 * height * width
    if len(rest) > 64 * count + 4096:  # far more text than the values need: refused before parsing it
        raise ModelError(f"{path}: text mean file declares 3x{height}x{width} = {count} values but holds far more text")
    values = _parse_numbers(rest, path)
    if len(values) != count:
        raise ModelError(f"{path}: text mean file declares 3x{height}x{width} = {count} values but holds {len(values)}")
    return MeanImage(values.reshape(3, height * width), height, width, row_major=False)


def _parse_numbers(text: bytes, path: str) -> np.ndarray:
    """Whitespace-separated decimal numbers as float64, parsed in C (no Python object per number)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # numpy warns (or raises) on text it cannot read to its end
            return np.fromstring(text, dtype=np.float64, sep=" ")
    except (ValueError, DeprecationWarning):
        for token in text.split():  # the error path only: name the first token that is not a number
            try:
                float(token)
            except ValueError:
                shown = token[:40].decode("utf-8", "backslashreplace")
                raise ModelError(f"{path}: text mean file holds a non-number: {shown!r}") from None
        raise ModelError(f"{path}: text mean file holds a non-number") from None


def _binaryproto_mean(data: bytes, path: str, rgb_planes: bool) -> MeanImage:
    """Planes copied in the proto's row-major order (what makes the original's mean transposed)."""
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
    except DecodeError as e:
        raise ModelError(f"{path}: not a binaryproto mean file: {e}") from None
    shape = blob_shape(blob)
    source = blob.double_data if len(blob.double_data) else blob.data
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ModelError(f"{path}: binaryproto mean has shape {shape}; expected 1 x 3 x H x W or 3 x H x W")
    channels, height, width = shape
    _check_size(path, channels, height, width)
    if len(source) != 3 * height * width:
        raise ModelError(f"{path}: binaryproto mean declares shape {shape} but holds {len(source)} values")
    planes = np.array(source, dtype=np.float64).reshape(3, height * width)
    return MeanImage(planes[::-1].copy() if rgb_planes else planes, height, width)


def _npy_mean(path: str | os.PathLike, name: str) -> MeanImage:
    """A C x H x W BGR array, laid out column-major per channel so that it is indexed as stored."""

    def check(dtype: np.dtype, shape: tuple[int, ...]) -> None:
        dims = shape[1:] if len(shape) == 4 and shape[0] == 1 else shape
        if len(dims) != 3:
            raise ModelError(f"{name}: .npy mean has shape {shape}; expected 3 x H x W")
        _check_size(name, *dims)

    array = read_npy(path, "mean file", ModelError, check)
    if array.ndim == 4:
        array = array[0]
    _, height, width = array.shape
    flat = np.asarray(array, dtype=np.float64).transpose(0, 2, 1).reshape(3, height * width)
    return MeanImage(flat, height, width, row_major=False)


def _check_size(path: str, channels: int, height: int, width: int) -> None:
    """3 channels, a positive size, and float64 values within the memory budget (checked before allocating)."""
    if channels != 3:
        raise ModelError(f"{path}: mean image has {channels} channel(s); need 3 (B, G, R)")
    if height <= 0 or width <= 0:
        raise ModelError(f"{path}: mean image size {height} x {width} is empty")
    needed = 8 * math.prod((channels, height, width))
    if needed > MAX_ARRAY_BYTES:
        raise ModelError(
            f"{path}: mean image 3 x {height} x {width} would take {describe_size(needed)}, above the "
            f"{describe_size(MAX_ARRAY_BYTES)} memory budget for one array"
        )
