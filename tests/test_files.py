"""The shared input-file helpers: regular files only, size caps before reading, readable names, text encodings."""

from __future__ import annotations

import os

import numpy as np
import pytest

from lrp_cli.errors import ModelError
from lrp_cli.files import count_nonfinite, describe_size, display_path, open_regular, text_encoding_problem


@pytest.mark.parametrize(
    "name, shown",
    [
        ("plain/name.jpg", "plain/name.jpg"),
        ("two\nlines.jpg", "two\\nlines.jpg"),
        ("tab\there", "tab\\there"),
        ("nul\0byte", "nul\\x00byte"),
        (os.fsdecode(b"latin\xe9.jpg"), "latin\\xe9.jpg"),
        ("ünïcödé.jpg", "ünïcödé.jpg"),
        (b"bytes\xff", "bytes\\xff"),
    ],
)
def test_display_path_keeps_a_name_on_one_readable_line(name, shown):
    assert display_path(name) == shown
    assert display_path(display_path(name)) == shown  # escaping twice changes nothing


def test_display_path_shows_an_absurdly_long_name_by_its_ends():
    text = display_path("a" * 10**7 + "\n" + "b" * 10**7)
    assert len(text) == 2048 + 1 + 1024 and text.startswith("a" * 2048) and text.endswith("b" * 1024)


def test_open_regular_checks_the_size_before_reading(tmp_path):
    path = tmp_path / "m.bin"
    with open(path, "wb") as f:
        f.truncate(5 * 2**30)
    with pytest.raises(ModelError) as info:
        open_regular(path, "model", ModelError, 2**30, "the model limit")
    assert str(info.value) == f"{path}: model is 5.0 GiB, larger than the model limit (1.0 GiB)"
    with open_regular(path, "model", ModelError, 6 * 2**30) as f:
        assert f.read(4) == b"\0\0\0\0"
    path.write_bytes(b"")
    with open_regular(path, "model", ModelError, empty_ok=True) as f:
        assert f.read() == b""


def test_open_regular_names_the_file_by_its_label(tmp_path):
    os.mkfifo(tmp_path / "p")
    with pytest.raises(ModelError) as info:
        open_regular(tmp_path / "p", "config", ModelError, label="conf.txt")
    assert str(info.value) == "conf.txt: cannot read config: not a regular file (a named pipe (FIFO))"


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"plain ascii\n", None),
        ("utf-8 ünïcödé\n".encode(), None),
        (b"latin-1 \xe9\n", None),
        ("key\nvalue\n".encode("utf-16"), "UTF-16 text (little-endian byte-order mark)"),
        ("key\nvalue\n".encode("utf-16-be"), "UTF-16 text (no byte-order mark)"),
        ("key\nvalue\n".encode("utf-16-le"), "UTF-16 text (no byte-order mark)"),
        (b"\xfe\xff\x00k", "UTF-16 text (big-endian byte-order mark)"),
        ("k".encode("utf-32"), "UTF-32 text (little-endian byte-order mark)"),
        (b"\x00\x00\xfe\xff", "UTF-32 text (big-endian byte-order mark)"),
        (bytes(range(256)), "binary data (it holds NUL bytes)"),
        (b"text with one\0 NUL byte in the middle of a long line", "binary data (it holds NUL bytes)"),
    ],
)
def test_text_encoding_problem(data, problem):
    assert text_encoding_problem(data) == problem


def test_count_nonfinite_in_chunks():
    a = np.zeros(3_000_001, np.float32)
    a[[0, 1_048_576, 3_000_000]] = [np.nan, np.inf, -np.inf]
    assert count_nonfinite(a, chunk=1 << 20) == 3 and count_nonfinite(a[1:2]) == 0
    assert count_nonfinite(np.arange(5)) == 0  # integers are always finite


def test_describe_size():
    assert [describe_size(n) for n in (0, 1023, 1024, 3 * 2**20, 100 * 2**30, 24 * 10**12)] == [
        "0 bytes", "1023 bytes", "1.0 KiB", "3.0 MiB", "100.0 GiB", "21.8 TiB"]
