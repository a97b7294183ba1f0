"""Read the weights of a .caffemodel (a binary NetParameter) into numpy arrays.

Parsing the 233 MB CaffeNet with protobuf and converting its repeated float fields with
``np.array`` takes about 1.3 s, so the packed float payloads are located here by walking the
protobuf wire format and copied out one blob at a time (every array owns aligned, writable
memory). Everything else in a layer or blob (names, shapes) is still decoded by protobuf, from
the bytes that remain once the payloads are cut out; blobs with unpacked (legacy) values are left
to protobuf entirely.

A file is memory-mapped for the walk, which touches only the few pages that hold field tags, and
each payload is read straight from the file into its final array: peak memory is the weights plus
a little, not twice the file. Sizes are checked before anything is read: a file above Caffe's
2 GiB protobuf limit is refused at once (a ``truncate -s 100G`` file costs nothing), a field that
runs past the end of the file is reported before its layer is read, and a blob's declared shape is
compared with its payload before its array is allocated. NaN or infinite weights are a
ModelError naming the file and the layer.
"""

from __future__ import annotations

import mmap
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
from google.protobuf.message import DecodeError

from lrp_cli.caffe import caffe_pb2
from lrp_cli.errors import ModelError
from lrp_cli.files import count_nonfinite, display_path, open_regular

# Wire types of the protobuf encoding.
_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5

# Field numbers (caffe.proto).
_NET_LAYER_V2 = 100  # NetParameter.layer
_NET_LAYER_V1 = 2  # NetParameter.layers
_V2_BLOBS = 7  # LayerParameter.blobs
_V1_V0_LAYER, _V1_BLOBS = 1, 6  # V1LayerParameter.layer, .blobs
_V0_BLOBS = 50  # V0LayerParameter.blobs
_BLOB_DATA, _BLOB_DOUBLE_DATA = 5, 8  # BlobProto

_FLOAT32_LE = np.dtype("<f4")
_FLOAT64_LE = np.dtype("<f8")
#: Caffe reads a caffemodel with protobuf's total-bytes limit set to INT_MAX: no larger file is a caffemodel.
MAX_CAFFEMODEL_BYTES = 2**31 - 1
_COPY_CHUNK = 1 << 22  # bytes converted at a time when a payload is not float32 in the host's byte order

# (start, end, dtype) of a packed payload → its values as a new float32 array
PayloadReader = Callable[[int, int, np.dtype], np.ndarray]


class _CorruptError(Exception):
    """Malformed protobuf wire data (converted to ModelError with the file name)."""


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Map each layer name of a caffemodel (V2 ``layer`` or V1 ``layers``) to its float32 blobs."""
    with open_regular(path, "caffemodel", ModelError, MAX_CAFFEMODEL_BYTES,
                      "Caffe's protobuf limit for a caffemodel") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise ModelError(f"{display_path(path)}: cannot read caffemodel: {e}") from None
        view = memoryview(mapped)
        try:
            return parse_caffemodel(view, os.fspath(path), _file_payloads(f.fileno()))
        except ModelError as e:
            message = str(e)  # raised below without this traceback, whose frames hold slices of the mapping
        finally:
            for close in (view.release, mapped.close):
                try:
                    close()
                except BufferError:  # a slice is still referenced: the mapping goes when it does
                    pass
    raise ModelError(message)


def _file_payloads(fd: int) -> PayloadReader:
    """Read payloads from the file straight into their arrays (the mapped pages are never touched for them)."""

    def read(start: int, end: int, dtype: np.dtype) -> np.ndarray:
        out = np.empty((end - start) // dtype.itemsize, np.float32)
        if dtype == _FLOAT32_LE and sys.byteorder == "little":
            _pread_into(fd, memoryview(out).cast("B"), start)
            return out
        step = _COPY_CHUNK // dtype.itemsize
        scratch = np.empty(min(step, out.size), dtype)
        for first in range(0, out.size, step):
            part = scratch[: min(step, out.size - first)]
            _pread_into(fd, memoryview(part).cast("B"), start + first * dtype.itemsize)
            with np.errstate(over="ignore"):
                out[first : first + part.size] = part
        return out

    return read


def _pread_into(fd: int, buffer: memoryview, offset: int) -> None:
    while buffer:
        count = os.preadv(fd, [buffer], offset)
        if count <= 0:
            raise _CorruptError("the file changed while it was read")
        buffer, offset = buffer[count:], offset + count


def _buffer_payloads(view: memoryview) -> PayloadReader:
    def read(start: int, end: int, dtype: np.dtype) -> np.ndarray:
        with np.errstate(over="ignore"):
            return np.frombuffer(view, dtype, (end - start) // dtype.itemsize, start).astype(np.float32)

    return read


def parse_caffemodel(
    data: bytes | bytearray | memoryview, path: str = "<caffemodel>", payloads: PayloadReader | None = None
) -> dict[str, list[np.ndarray]]:
    """Like read_caffemodel, on the bytes of a caffemodel; ``path`` only names it in errors. ``payloads`` copies
    packed values out (default: from ``data`` itself)."""
    view = memoryview(data)
    payloads = payloads or _buffer_payloads(view)
    blobs_by_layer: dict[str, list[np.ndarray]] = {}
    current = None  # (field number, start, end) of the layer being read
    try:
        for number, wire_type, _tag_start, start, end in _fields(view, 0, len(view), may_overrun=True):
            is_layer = wire_type == _LENGTH_DELIMITED and number in (_NET_LAYER_V2, _NET_LAYER_V1)
            current = (number, start, end) if is_layer else None
            if end > len(view):
                raise _CorruptError(f"the file ends {end - len(view)} bytes early")
            if not is_layer:
                continue
            if number == _NET_LAYER_V2:
                name, blobs, _ = _read_layer(view, start, end, caffe_pb2.LayerParameter, _V2_BLOBS, payloads)
            else:
                name, blobs = _read_v1_layer(view, start, end, payloads)
            if not name:
                raise _CorruptError("a layer has no name")
            blobs_by_layer[name] = blobs
            current = None
    except (_CorruptError, DecodeError) as e:
        name = _layer_name(view, *current) if current else None
        where = f"in layer '{name}'" if name else f"after {len(blobs_by_layer)} layer(s)"
        raise ModelError(f"{display_path(path)}: truncated or corrupt caffemodel, {where}: {e}") from None
    if not blobs_by_layer:
        raise ModelError(f"{display_path(path)}: not a caffemodel (no layers found)")
    _check_finite(blobs_by_layer, path)
    return blobs_by_layer


def _check_finite(blobs_by_layer: dict[str, list[np.ndarray]], path: str) -> None:
    for name, blobs in blobs_by_layer.items():
        for index, blob in enumerate(blobs):
            bad = count_nonfinite(blob)
            if bad:
                raise ModelError(
                    f"{display_path(path)}: layer '{name}' blob {index} holds {bad} non-finite weight(s) "
                    f"(NaN, ±Inf or beyond the float32 range)"
                )


def _layer_name(view: memoryview, number: int, start: int, end: int) -> str | None:
    """Best-effort name of a possibly damaged layer, for error messages."""
    message_type, name_field = (
        (caffe_pb2.LayerParameter, 1) if number == _NET_LAYER_V2 else (caffe_pb2.V1LayerParameter, 4)
    )
    try:
        for field_number, wire_type, tag_start, _value_start, value_end in _fields(view, start, min(end, len(view))):
            if field_number == name_field and wire_type == _LENGTH_DELIMITED:
                return message_type.FromString(bytes(view[tag_start:value_end])).name or None
    except (_CorruptError, DecodeError):
        pass
    return None


def _read_v1_layer(view: memoryview, start: int, end: int, payloads: PayloadReader) -> tuple[str, list[np.ndarray]]:
    """A V1 layer, or the V0 layer nested in it (the oldest format keeps name and blobs there)."""
    name, blobs, nested = _read_layer(
        view, start, end, caffe_pb2.V1LayerParameter, _V1_BLOBS, payloads, _V1_V0_LAYER
    )
    if nested is not None:
        v0_name, v0_blobs, _ = _read_layer(view, *nested, caffe_pb2.V0LayerParameter, _V0_BLOBS, payloads)
        name, blobs = name or v0_name, blobs or v0_blobs
    return name, blobs


def _read_layer(
    view: memoryview, start: int, end: int, message_type, blobs_field: int, payloads: PayloadReader,
    nested_field: int = 0,
):
    """Name, blob arrays and the (start, end) of the nested V0 layer (if nested_field) of one layer.

    The name is decoded by protobuf from the layer's bytes without its blobs.
    """
    header = bytearray()
    blobs = []
    nested = None
    for number, wire_type, tag_start, value_start, value_end in _fields(view, start, end):
        if number == blobs_field and wire_type == _LENGTH_DELIMITED:
            blobs.append(_read_blob(view, value_start, value_end, len(blobs), payloads))
        elif number == nested_field and wire_type == _LENGTH_DELIMITED:
            nested = (value_start, value_end)
        else:
            header += view[tag_start:value_end]
    layer = message_type.FromString(bytes(header))
    return layer.name, blobs, nested


def _read_blob(view: memoryview, start: int, end: int, index: int, payloads: PayloadReader) -> np.ndarray:
    """One BlobProto as a float32 array of its declared shape (checked before the values are copied)."""
    header = bytearray()
    floats, doubles = [], []  # (start, end) of packed data / double_data payloads
    for number, wire_type, tag_start, value_start, value_end in _fields(view, start, end):
        if number in (_BLOB_DATA, _BLOB_DOUBLE_DATA):
            if wire_type != _LENGTH_DELIMITED:
                return _read_blob_slowly(view, start, end, index)  # legacy unpacked values
            (floats if number == _BLOB_DATA else doubles).append((value_start, value_end))
        else:
            header += view[tag_start:value_end]
    blob = caffe_pb2.BlobProto.FromString(bytes(header))
    # Caffe takes double_data when it is present, data otherwise.
    dtype, chunks = (_FLOAT64_LE, doubles) if doubles else (_FLOAT32_LE, floats)
    for chunk_start, chunk_end in chunks:
        if (chunk_end - chunk_start) % dtype.itemsize:
            raise _CorruptError(f"blob {index}: packed data length is not a multiple of {dtype.itemsize}")
    count = sum(chunk_end - chunk_start for chunk_start, chunk_end in chunks) // dtype.itemsize
    shape = _checked_shape(blob, index, count)
    arrays = [payloads(chunk_start, chunk_end, dtype) for chunk_start, chunk_end in chunks]
    values = arrays[0] if len(arrays) == 1 else np.concatenate(arrays or [np.empty(0, np.float32)])
    return values.reshape(shape)


def _read_blob_slowly(view: memoryview, start: int, end: int, index: int) -> np.ndarray:
    """A blob whose values are not packed: let protobuf decode all of it."""
    blob = caffe_pb2.BlobProto.FromString(bytes(view[start:end]))
    source = blob.double_data if len(blob.double_data) else blob.data
    with np.errstate(over="ignore"):
        return _shaped(np.array(source, dtype=np.float32), blob, index)


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """Shape of a BlobProto as Caffe reads it: the legacy num/channels/height/width if any is set."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def _checked_shape(blob: caffe_pb2.BlobProto, index: int, count: int) -> tuple[int, ...]:
    shape = blob_shape(blob)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=object)) != count:
        raise _CorruptError(f"blob {index} declares shape {shape} but holds {count} values")
    return shape


def _shaped(values: np.ndarray, blob: caffe_pb2.BlobProto, index: int) -> np.ndarray:
    return values.reshape(_checked_shape(blob, index, values.size))


def _fields(
    view: memoryview, start: int, end: int, may_overrun: bool = False
) -> Iterator[tuple[int, int, int, int, int]]:
    """Walk the fields of one message: (field number, wire type, tag start, value start, value end).

    A field running past ``end`` is an error, unless ``may_overrun`` (the caller then checks).
    """
    position = start
    while position < end:
        tag_start = position
        tag, position = _varint(view, position, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise _CorruptError("field number 0 (zero bytes where a field should begin)")
        if wire_type == _VARINT:
            value_start = position
            _, position = _varint(view, position, end)
        elif wire_type == _FIXED64:
            value_start, position = position, position + 8
        elif wire_type == _FIXED32:
            value_start, position = position, position + 4
        elif wire_type == _LENGTH_DELIMITED:
            length, value_start = _varint(view, position, end)
            position = value_start + length
        else:
            raise _CorruptError(f"unsupported wire type {wire_type} for field {number}")
        if position > end and not may_overrun:
            raise _CorruptError(f"field {number} runs past the end of its message")
        yield number, wire_type, tag_start, value_start, position


def _varint(view: memoryview, position: int, end: int) -> tuple[int, int]:
    """Decode one varint: (value, position after it)."""
    result = shift = 0
    while True:
        if position >= end:
            raise _CorruptError("data ends inside a varint")
        byte = view[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 63:
            raise _CorruptError("varint longer than 10 bytes")
