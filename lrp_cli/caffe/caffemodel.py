"""Read the weights of a .caffemodel (a binary NetParameter) into numpy arrays.

Parsing the 233 MB CaffeNet with protobuf and converting its repeated float fields with
``np.array`` takes about 1.3 s, so the packed float payloads are located here by walking the
protobuf wire format and copied out with ``np.frombuffer`` (one copy: every array owns aligned,
writable memory). Everything else in a layer or blob (names, shapes) is still decoded by
protobuf, from the bytes that remain once the payloads are cut out; blobs with unpacked
(legacy) values are left to protobuf entirely.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
from google.protobuf.message import DecodeError

from lrp_cli.caffe import caffe_pb2
from lrp_cli.errors import ModelError

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


class _CorruptError(Exception):
    """Malformed protobuf wire data (converted to ModelError with the file name)."""


def read_caffemodel(path: str | os.PathLike) -> dict[str, list[np.ndarray]]:
    """Map each layer name of a caffemodel (V2 ``layer`` or V1 ``layers``) to its float32 blobs."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            buffer = bytearray(os.fstat(f.fileno()).st_size)
            if f.readinto(buffer) != len(buffer):
                raise OSError("file changed while reading")
    except OSError as e:
        raise ModelError(f"{path}: cannot read caffemodel: {e.strerror or e}") from None
    return parse_caffemodel(buffer, path)


def parse_caffemodel(data: bytes | bytearray, path: str = "<caffemodel>") -> dict[str, list[np.ndarray]]:
    """Like read_caffemodel, on the bytes of a caffemodel; ``path`` only names it in errors."""
    view = memoryview(data)
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
                name, blobs, _ = _read_layer(view, start, end, caffe_pb2.LayerParameter, _V2_BLOBS)
            else:
                name, blobs = _read_v1_layer(view, start, end)
            if not name:
                raise _CorruptError("a layer has no name")
            blobs_by_layer[name] = blobs
        current = None
    except (_CorruptError, DecodeError) as e:
        name = _layer_name(view, *current) if current else None
        where = f"in layer '{name}'" if name else f"after {len(blobs_by_layer)} layer(s)"
        raise ModelError(f"{path}: truncated or corrupt caffemodel, {where}: {e}") from None
    if not blobs_by_layer:
        raise ModelError(f"{path}: not a caffemodel (no layers found)")
    return blobs_by_layer


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


def _read_v1_layer(view: memoryview, start: int, end: int) -> tuple[str, list[np.ndarray]]:
    """A V1 layer, or the V0 layer nested in it (the oldest format keeps name and blobs there)."""
    name, blobs, nested = _read_layer(view, start, end, caffe_pb2.V1LayerParameter, _V1_BLOBS, _V1_V0_LAYER)
    if nested is not None:
        v0_name, v0_blobs, _ = _read_layer(view, *nested, caffe_pb2.V0LayerParameter, _V0_BLOBS)
        name, blobs = name or v0_name, blobs or v0_blobs
    return name, blobs


def _read_layer(view: memoryview, start: int, end: int, message_type, blobs_field: int, nested_field: int = 0):
    """Name, blob arrays and the (start, end) of the nested V0 layer (if nested_field) of one layer.

    The name is decoded by protobuf from the layer's bytes without its blobs.
    """
    header = bytearray()
    blobs = []
    nested = None
    for number, wire_type, tag_start, value_start, value_end in _fields(view, start, end):
        if number == blobs_field and wire_type == _LENGTH_DELIMITED:
            blobs.append(_read_blob(view, value_start, value_end, len(blobs)))
        elif number == nested_field and wire_type == _LENGTH_DELIMITED:
            nested = (value_start, value_end)
        else:
            header += view[tag_start:value_end]
    layer = message_type.FromString(bytes(header))
    return layer.name, blobs, nested


def _read_blob(view: memoryview, start: int, end: int, index: int) -> np.ndarray:
    """One BlobProto as a float32 array of its declared shape."""
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
    arrays = []
    for chunk_start, chunk_end in chunks:
        if (chunk_end - chunk_start) % dtype.itemsize:
            raise _CorruptError(f"blob {index}: packed data length is not a multiple of {dtype.itemsize}")
        count = (chunk_end - chunk_start) // dtype.itemsize
        arrays.append(np.frombuffer(view, dtype, count, chunk_start).astype(np.float32))
    values = arrays[0] if len(arrays) == 1 else np.concatenate(arrays or [np.empty(0, np.float32)])
    return _shaped(values, blob, index)


def _read_blob_slowly(view: memoryview, start: int, end: int, index: int) -> np.ndarray:
    """A blob whose values are not packed: let protobuf decode all of it."""
    blob = caffe_pb2.BlobProto.FromString(bytes(view[start:end]))
    source = blob.double_data if len(blob.double_data) else blob.data
    return _shaped(np.array(source, dtype=np.float32), blob, index)


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """Shape of a BlobProto as Caffe reads it: the legacy num/channels/height/width if any is set."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return (blob.num, blob.channels, blob.height, blob.width)
    return tuple(blob.shape.dim)


def _shaped(values: np.ndarray, blob: caffe_pb2.BlobProto, index: int) -> np.ndarray:
    shape = blob_shape(blob)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != values.size:
        raise _CorruptError(f"blob {index} declares shape {shape} but holds {values.size} values")
    return values.reshape(shape)


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
            raise _CorruptError("field number 0")
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
