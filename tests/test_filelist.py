"""The image list (§3 plus the decisions.md fixes): targets, spaces, CRLF, short lines, stdin, laziness."""

import io
import itertools

import pytest
from conftest import REFERENCE

from lrp_cli.errors import FileListError
from lrp_cli.filelist import FileListEntry, FileListLineError, iter_filelist, parse_line


def _items(text, prepend=".", **kw):
    return list(iter_filelist(io.StringIO(text), prepend, **kw))


def test_reference_lists_parse():
    for case in sorted(REFERENCE.glob("cases/*/filelist.txt")):
        entries = list(iter_filelist(case, "."))
        assert entries and all(isinstance(e, FileListEntry) for e in entries), case
        assert all(e.token.startswith("someimages/") for e in entries)
        top5 = case.parent.name == "caffenet_f100_top5"
        assert all(e.target == (-2 if top5 else -1) for e in entries)


def test_fields_and_fullpath_string():
    (e,) = _items("./someimages/a.jpg 3\n", "./", name="list.txt")
    assert e == FileListEntry(
        source="list.txt", line=1, token="./someimages/a.jpg", fullpath=".//./someimages/a.jpg",
        path="someimages/a.jpg", target=3,
    )  # fmt: skip
    assert e.class_index == 3 and not e.is_top1 and not e.is_top5 and not e.is_blob


def test_prepend_variants():
    (e,) = _items("/abs/x.jpg -1\n", "/")
    assert e.fullpath == "///abs/x.jpg" and e.path == "/abs/x.jpg"
    (e,) = _items("abs/x.jpg -1\n", "")
    assert e.fullpath == "/abs/x.jpg"


@pytest.mark.parametrize(
    "target, top1, top5, cls",
    [(-1, True, False, None), (-2, False, True, None), (-3, True, False, None), (-1000, True, False, None),
     (0, False, False, 0), (999, False, False, 999), (+5, False, False, 5)],
)  # fmt: skip
def test_target_meaning(target, top1, top5, cls):
    (e,) = _items(f"x.jpg {target:+d}\n")
    assert (e.target, e.is_top1, e.is_top5, e.class_index) == (target, top1, top5, cls)


def test_paths_with_spaces_target_is_last_token():
    (e,) = _items("my photos/cat  1.jpg\t7\n")
    assert e.token == "my photos/cat  1.jpg" and e.target == 7


def test_crlf_and_short_lines_skipped():
    items = _items("a.jpg 1\r\n\r\n\n12\na\r\n \t \n   \nb.jpg -2\r\nc.jpg 4")
    assert [(e.line, e.token, e.target) for e in items] == [(1, "a.jpg", 1), (8, "b.jpg", -2), (9, "c.jpg", 4)]
    (err,) = _items("ab\r\n")  # the CR counts toward the length: 3 characters are a real (bad) line
    assert isinstance(err, FileListLineError)


def test_three_character_line_is_not_skipped():
    (err,) = _items("abc\n")
    assert isinstance(err, FileListLineError) and err.line == 1


def test_lone_cr_does_not_split_lines(tmp_path):
    path = tmp_path / "list.txt"
    path.write_bytes(b"a.jpg 1\rb.jpg 2\n")
    (e,) = list(iter_filelist(path, "."))  # one line, as std::getline sees it
    assert (e.token, e.target) == ("a.jpg 1\rb.jpg", 2)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("x.jpg", "no target"),
        ("x.jpg abc", "'abc' is not an integer"),
        ("x.jpg 3.7", "'3.7' is not an integer"),
        ("x.jpg -2junk", "'-2junk' is not an integer"),
        ("x.jpg 3 extra", "'extra' is not an integer"),
    ],
)
def test_bad_targets_are_per_line_errors(line, problem):
    items = _items(f"ok.jpg 1\n{line}\nok2.jpg 2\n", name="images.txt")
    assert [type(i) for i in items] == [FileListEntry, FileListLineError, FileListEntry]
    err = items[1]
    assert isinstance(err, FileListError)
    assert str(err).startswith("images.txt line 2: ") and problem in str(err) and "\n" not in str(err)
    assert (err.source, err.line, err.text) == ("images.txt", 2, line)


def test_on_error_raise():
    it = iter_filelist(io.StringIO("ok.jpg 1\nbad.jpg\n"), ".", on_error="raise")
    assert next(it).token == "ok.jpg"
    with pytest.raises(FileListLineError, match="line 2"):
        next(it)
    with pytest.raises(ValueError):
        iter_filelist([], ".", on_error="ignore")


def test_default_target():
    items = _items("a b.jpg\nc.jpg 3\nd.jpg\n", default_target=-1)
    assert [(e.token, e.target, e.target_defaulted) for e in items] == [
        ("a b.jpg", -1, True), ("c.jpg", 3, False), ("d.jpg", -1, True),
    ]  # fmt: skip


def test_stdin_dash(monkeypatch):
    data = io.BytesIO(b"a.jpg 1\r\nb b.jpg -2\n")
    entries = list(iter_filelist("-", "./", stdin=data))
    assert [(e.source, e.line, e.token, e.target) for e in entries] == [
        ("<stdin>", 1, "a.jpg", 1), ("<stdin>", 2, "b b.jpg", -2),
    ]  # fmt: skip
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"c.jpg 0\nbad\n")))
    items = list(iter_filelist("-", "."))
    assert items[0].token == "c.jpg" and str(items[1]).startswith("<stdin> line 2: ")


def test_bom_tolerated(tmp_path):
    path = tmp_path / "l.txt"
    path.write_bytes(b"\xef\xbb\xbfx.jpg -1\n")
    (e,) = list(iter_filelist(path, "."))
    assert e.token == "x.jpg"


def test_npy_blob_flag():
    a, b = _items("blobs/x.NPY -1\nx.npy.jpg 0\n")
    assert a.is_blob and not b.is_blob


def test_missing_or_directory_list(tmp_path):
    with pytest.raises(FileListError, match=r"nope\.txt: file list does not exist"):
        iter_filelist(tmp_path / "nope.txt", ".")
    with pytest.raises(FileListError, match="not a regular file"):
        iter_filelist(tmp_path, ".")


def test_lazy_on_endless_input():
    consumed = []

    def endless():
        for i in itertools.count():
            consumed.append(i)
            yield f"img{i}.jpg {i % 7 - 2}\n"

    first = list(itertools.islice(iter_filelist(endless(), "."), 5))
    assert [e.token for e in first] == [f"img{i}.jpg" for i in range(5)]
    assert len(consumed) == 5


def test_large_file_streams(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("".join(f"dir/img {i}.jpg {i % 1000}\n" for i in range(20000)))
    count = 0
    for count, e in enumerate(iter_filelist(path, "."), start=1):  # noqa: B007
        assert e.target == (count - 1) % 1000
    assert count == 20000 and e.line == 20000 and e.token == "dir/img 19999.jpg"


def test_parse_line_direct():
    assert parse_line("ab", ".") is None
    assert parse_line("     ", ".") is None
    e = parse_line("  x.jpg   -1  ", "p", source="s", line=9)
    assert (e.token, e.fullpath, e.line) == ("x.jpg", "p/x.jpg", 9)


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_line_longer_than_any_list_line_stops_the_list_with_one_line(tmp_path, source):
    """A 1 GB file without a newline (a sparse file here) is refused at its first 64 KiB, not read into memory."""
    path = tmp_path / "list.txt"
    with open(path, "wb") as f:
        f.write(b"ok.jpg 1\n")
        f.truncate(2**30)
    with open(path, "rb") as stream:
        items = iter_filelist(path, ".") if source == "file" else iter_filelist("-", ".", stdin=stream)
        assert next(items).token == "ok.jpg"
        label = str(path) if source == "file" else "<stdin>"
        with pytest.raises(FileListError) as info:
            next(items)
    assert str(info.value) == f"{label} line 2: longer than 65536 bytes, not a file list line (reading stopped)"


def test_a_line_of_exactly_the_longest_length_is_read(tmp_path):
    path = tmp_path / "list.txt"
    token = "a" * (65536 - len(" 3\n"))
    path.write_text(f"{token} 3\n")
    (entry,) = iter_filelist(path, ".")
    assert entry.token == token and entry.target == 3
