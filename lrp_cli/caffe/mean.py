"""Read the demonstrator's mean image (text, binaryproto or .npy) in the layout it indexes.

The demonstrator keeps one flat array per B, G, R channel and subtracts ``flat[b, r + c * height]``
at mean row r, column c: column-major indexing (spec/demonstrator.md §4.6). ``MeanImage.flat``
holds exactly those arrays, so for binaryproto means (stored row-major) the image comes out
transposed, as in the original.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from google.protobuf.message import DecodeError

from lrp_cli.caffe import caffe_pb2
from lrp_cli.caffe.caffemodel import blob_shape
from lrp_cli.errors import ModelError

TEXT_MEAN, BINARYPROTO_BGR, BINARYPROTO_RGB = 0, 1, 2
_NPY_MAGIC = b"\x93NUMPY"


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
        """This mean, or for a 1×1 (per-channel constant) mean the same constant on a height×width canvas."""
        if self.height == self.width == 1 and (height, width) != (1, 1):
            return MeanImage(np.repeat(self.flat, height * width, axis=1), height, width, self.row_major)
        return self


def read_mean(path: str | os.PathLike, mode: int) -> MeanImage:
    """Read a mean file: mode 0 text, 1 binaryproto with B,G,R planes, 2 binaryproto with R,G,B planes.

    A NumPy ``.npy`` file (C x H x W, B,G,R, like Caffe's ilsvrc_2012_mean.npy) is recognised by its
    header in any mode and indexed the right way round (not transposed).
    """
    path = os.fspath(path)
    if mode not in (TEXT_MEAN, BINARYPROTO_BGR, BINARYPROTO_RGB):
        raise ModelError(f"{path}: unknown mean file mode {mode} (0 = text, 1 = binaryproto BGR, 2 = binaryproto RGB)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: cannot read mean file: {e.strerror or e}") from None
    if data.startswith(_NPY_MAGIC):
        return _npy_mean(path)
    if mode == TEXT_MEAN:
        return _text_mean(data, path)
    return _binaryproto_mean(data, path, rgb_planes=mode == BINARYPROTO_RGB)


def _text_mean(data: bytes, path: str) -> MeanImage:
    """C, H, W, then per channel (B, G, R) the values column by column: already the flat layout."""
    tokens = data.split()
    try:
        numbers = np.array([float(t) for t in tokens], dtype=np.float64)
    except ValueError as e:
        raise ModelError(f"{path}: text mean file holds a non-number: {e}") from None
    if len(numbers) < 3:
        raise ModelError(f"{path}: text mean file needs C, H and W first, found {len(numbers)} number(s)")
    channels, height, width = numbers[:3]
    if not all(float(d).is_integer() for d in (channels, height, width)):
        raise ModelError(f"{path}: text mean file's C, H, W must be integers, found {channels:g} {height:g} {width:g}")
    channels, height, width = int(channels), int(height), int(width)
    _check_size(path, channels, height, width)
    values = numbers[3:]
    if len(values) != 3 * height * width:
        raise ModelError(
            f"{path}: text mean file declares 3x{height}x{width} = {3 * height * width} values but holds {len(values)}"
        )
    return MeanImage(values.reshape(3, height * width), height, width, row_major=False)


def _binaryproto_mean(data: bytes, path: str, rgb_planes: bool) -> MeanImage:
    """Planes copied in the proto's row-major order (what makes the original's mean transposed)."""
    blob = caffe_pb2.BlobProto()
    try:
        blob.ParseFromString(data)
    except DecodeError as e:
        raise ModelError(f"{path}: not a binaryproto mean file: {e}") from None
    shape = blob_shape(blob)
    values = np.array(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float64)
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 3:
        raise ModelError(f"{path}: binaryproto mean has shape {shape}; expected 1 x 3 x H x W or 3 x H x W")
    channels, height, width = shape
    _check_size(path, channels, height, width)
    if values.size != 3 * height * width:
        raise ModelError(f"{path}: binaryproto mean declares shape {shape} but holds {values.size} values")
    planes = values.reshape(3, height * width)
    return MeanImage(planes[::-1].copy() if rgb_planes else planes, height, width)


def _npy_mean(path: str) -> MeanImage:
    """A C x H x W BGR array, laid out column-major per channel so that it is indexed as stored."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read .npy mean file: {e}") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ModelError(f"{path}: .npy mean has shape {array.shape}; expected 3 x H x W")
    channels, height, width = array.shape
    _check_size(path, channels, height, width)
    flat = np.asarray(array, dtype=np.float64).transpose(0, 2, 1).reshape(3, height * width)
    return MeanImage(flat, height, width, row_major=False)


def _check_size(path: str, channels: int, height: int, width: int) -> None:
    if channels != 3:
        raise ModelError(f"{path}: mean image has {channels} channel(s); need 3 (B, G, R)")
    if height <= 0 or width <= 0:
        raise ModelError(f"{path}: mean image size {height} x {width} is empty")
