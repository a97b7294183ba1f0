"""The .npy input-blob reader: exact values for every accepted layout, and one clear ImageError per kind of bad file,
decided from the header before any data is allocated."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import pytest

from lrp_cli.blobs import load_blob
from lrp_cli.errors import ImageError

SHAPE = (3, 4, 5)


def _values() -> np.ndarray:
    return np.arange(60, dtype=np.float64).reshape(SHAPE) - 30.5


@pytest.mark.parametrize(
    "stored",
    [
        _values().astype(np.float32),
        _values(),  # float64
        _values().astype(">f4"),  # big-endian
        _values().astype(np.float16),
        np.asfortranarray(_values().astype(np.float32)),
        (_values() * 2).astype(np.int16),
        np.arange(60, dtype=np.uint8).reshape(SHAPE),
    ],
    ids=["float32", "float64", "big-endian", "float16", "fortran", "int16", "uint8"],
)
def test_accepted_layouts_give_the_stored_values_as_float32(tmp_path, stored):
    path = tmp_path / "b.npy"
    np.save(path, stored)
    blob = load_blob(path, SHAPE)
    assert blob.dtype == np.float32 and blob.shape == SHAPE and blob.flags.c_contiguous
    assert np.array_equal(blob, np.asarray(stored).astype(np.float32))


def _header_with_shape(path, shape_text: bytes) -> None:
    np.save(path, np.zeros(SHAPE, np.float32))
    data = path.read_bytes()
    head_len = int.from_bytes(data[8:10], "little")
    header = data[10 : 10 + head_len].replace(b"(3, 4, 5)", shape_text)
    header = header.rstrip(b" \n").ljust(((len(header.rstrip(b" \n")) + 11) // 64 + 1) * 64 - 11) + b"\n"
    path.write_bytes(data[:8] + len(header).to_bytes(2, "little") + header + data[10 + head_len :])


def _fill(content: bytes):
    return lambda p: p.write_bytes(content)


def _saved(array, **kw):
    return lambda p: np.save(p, array, **kw)


BAD = [
    ("empty", _fill(b""), r"b\.npy: cannot read input blob: empty file"),
    ("fifo", lambda p: os.mkfifo(p), r"b\.npy: cannot read input blob: not a regular file \(a named pipe \(FIFO\)\)"),
    ("dev-zero", lambda p: p.symlink_to("/dev/zero"),
     r"b\.npy: cannot read input blob: not a regular file \(a character device\)"),
    ("dev-urandom", lambda p: p.symlink_to("/dev/urandom"),
     r"b\.npy: cannot read input blob: not a regular file \(a character device\)"),
    ("symlink-loop", lambda p: p.symlink_to(p.name),
     r"b\.npy: cannot read input blob: Too many levels of symbolic links"),
    ("directory", lambda p: p.mkdir(), r"b\.npy: cannot read input blob: not a regular file \(a directory\)"),
    ("text", _fill(b"0.5 1.5 2.5\n3.5 4.5\n"), r"b\.npy: not a \.npy array: it is a text file"),
    ("pickle", _fill(pickle.dumps([1.0, 2.0], protocol=4)),
     r"b\.npy: not a \.npy array: it holds pickled Python data, which is never loaded"),
    ("npz", lambda p: np.savez(open(p, "wb"), a=np.zeros(SHAPE)),  # noqa: SIM115 - savez closes it
     r"b\.npy: not a \.npy array: it is a zip archive \(an \.npz file\?\)"),
    ("jpeg", _fill(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(100)), r"b\.npy: not a \.npy array: it is a JPEG image"),
    ("binary", _fill(bytes(range(256))), r"b\.npy: not a \.npy array: unrecognised binary data \(no \.npy header\)"),
    ("object", _saved(np.array([None] * 60, dtype=object).reshape(SHAPE), allow_pickle=True),
     r"b\.npy: holds pickled Python objects \(dtype object\), not real numbers"),
    ("complex", _saved(np.zeros(SHAPE, np.complex64)),
     r"b\.npy: holds complex numbers \(dtype complex64\), not real numbers"),
    ("strings", _saved(np.full(SHAPE, "ab")), r"b\.npy: holds text strings \(dtype <U2\), not real numbers"),
    ("bool", _saved(np.zeros(SHAPE, bool)), r"b\.npy: holds booleans \(dtype bool\), not real numbers"),
    ("records", _saved(np.zeros(SHAPE, [("a", "f4"), ("b", "i4")])),
     r"b\.npy: holds raw or structured records \(dtype .*\), not real numbers"),
    ("datetime", _saved(np.zeros(SHAPE, "M8[s]")), r"b\.npy: holds dates \(dtype datetime64\[s\]\), not real numbers"),
    ("wrong-shape", _saved(np.zeros((3, 5, 4), np.float32)),
     r"b\.npy: expected a numeric array of shape \(3, 4, 5\), got float32 \(3, 5, 4\)"),
    ("batch-of-one", _saved(np.zeros((1,) + SHAPE, np.float32)),
     r"b\.npy: expected a numeric array of shape \(3, 4, 5\), got float32 \(1, 3, 4, 5\)"),
    ("huge-shape", lambda p: _header_with_shape(p, b"(1000000000000000,)"),
     r"b\.npy: expected a numeric array of shape \(3, 4, 5\), got float32 \(1000000000000000,\)"),
    ("huge-3d-shape", lambda p: _header_with_shape(p, b"(3, 1000000000, 1000000000)"),
     r"b\.npy: expected a numeric array of shape \(3, 4, 5\), got float32 \(3, 1000000000, 1000000000\)"),
    ("truncated", lambda p: (np.save(p, np.zeros(SHAPE, np.float32)), p.write_bytes(p.read_bytes()[:-7])),
     r"b\.npy: truncated \.npy array: the header declares 240 bytes of data, the file holds 233"),
    ("magic-only", _fill(b"\x93NUMPY"), r"b\.npy: unsupported \.npy format version missing \(1\.0 and 2\.0 are read\)"),
    ("version-9", _fill(b"\x93NUMPY\x09\x00" + bytes(60)), r"b\.npy: unsupported \.npy format version 9\.0 .*"),
    ("header-length-beyond-file", _fill(b"\x93NUMPY\x02\x00\xff\xff\xff\x7f{'descr'"),
     r"b\.npy: damaged \.npy header \(declared length 2147483647, file size 20\)"),
    ("header-not-a-dict", _fill(b"\x93NUMPY\x01\x00\x10\x00[1, 2, 3]      \n"), r"b\.npy: damaged \.npy header \(.*\)"),
    ("header-unparsable", _fill(b"\x93NUMPY\x01\x00\x10\x00{'descr': (    \n"),
     r"b\.npy: damaged \.npy header \(cannot parse it\)"),
    ("nan", _saved(np.where(np.arange(60).reshape(SHAPE) == 7, np.nan, 1.0).astype(np.float32)),
     r"b\.npy: holds 1 non-finite value\(s\) \(NaN or ±Inf\); an input blob must be finite"),
    ("inf-float16", _saved(np.full(SHAPE, np.inf, np.float16)),
     r"b\.npy: holds 60 non-finite value\(s\) \(NaN or ±Inf\); an input blob must be finite"),
    ("beyond-float32", _saved(np.full(SHAPE, -1e39)),
     r"b\.npy: holds 60 non-finite value\(s\) \(beyond the float32 range\); an input blob must be finite"),
]


@pytest.mark.parametrize("make, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_blob_is_one_line_naming_the_file(tmp_path, monkeypatch, make, message):
    path = tmp_path / "b.npy"
    make(path)
    real_empty = np.empty

    def small_empty(shape, *args, **kwargs):  # whatever the header declares, nothing larger than the blob is made
        assert np.prod(shape) <= np.prod(SHAPE), shape
        return real_empty(shape, *args, **kwargs)

    monkeypatch.setattr(np, "empty", small_empty)
    with pytest.raises(ImageError) as info:
        load_blob(path, SHAPE)
    text = str(info.value)
    assert "\n" not in text
    assert re.fullmatch(f"{re.escape(str(tmp_path))}/{message}", text), text


def test_missing_file_and_nul_byte_in_the_name(tmp_path):
    with pytest.raises(ImageError, match=r"nope\.npy: cannot read input blob: No such file or directory"):
        load_blob(tmp_path / "nope.npy", SHAPE)
    with pytest.raises(ImageError, match=r"a\\x00b\.npy: cannot read input blob: the file name contains a NUL byte"):
        load_blob(f"{tmp_path}/a\0b.npy", SHAPE)


def test_newline_in_the_name_is_escaped_in_the_message(tmp_path):
    with pytest.raises(ImageError) as info:
        load_blob(tmp_path / "two\nlines.npy", SHAPE)
    assert str(info.value).endswith("two\\nlines.npy: cannot read input blob: No such file or directory")
