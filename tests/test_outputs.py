"""Output names (§7.1) with the escape guard, and the atomic, byte-exact writers (§7.2, §7.3)."""

import os

import numpy as np
import pytest
from conftest import REFERENCE
from PIL import Image

from lrp_cli import outputs
from lrp_cli.errors import LrpError
from lrp_cli.filelist import parse_line
from lrp_cli.outputs import (
    OutputError,
    format_g,
    format_rawhm,
    format_topten,
    output_files,
    output_paths,
    write_npy,
    write_png,
    write_rawhm,
    write_topten,
)

RAWHM_TXT = sorted(REFERENCE.glob("cases/*/expected/*_rawhm.txt"))
RAWHM_NPZ = sorted(REFERENCE.glob("cases/*/expected/*_rawhm.npz"))
TOPTEN = sorted(REFERENCE.glob("cases/*/expected/*_top10scores.txt"))


# ---- names -------------------------------------------------------------------------------------


def test_spec_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = output_paths(".//./someimages/cat1.jpg", "./lrp_output", "someimages")
    assert p.base == "./lrp_output/someimages/cat1.jpg"
    assert p.heatmap == "./lrp_output/someimages/cat1.jpg_heatmap.png"
    assert p.rawhm == "./lrp_output/someimages/cat1.jpg_rawhm.txt"
    assert p.topten == "./lrp_output/someimages/cat1.jpg_toptenscores.txt"
    assert p.as_inputted == "./lrp_output/someimages/cat1.jpg_as_inputted_into_the_dnn.png"
    assert p.npy == "./lrp_output/someimages/cat1.jpg_rawhm.npy"
    orig = output_paths(".//./someimages/cat1.jpg", "./lrp_output", "someimages", original_names=True)
    assert orig.topten == "./lrp_output/someimages/cat1.jpg_top10scores.txt"


def test_first_substring_occurrence_not_path_component(tmp_path):
    out = str(tmp_path / "out")
    p = output_paths("/data/imgs/img/x.png", out, "img")
    assert p.base == out + "/imgs/img/x.png"  # "img" matches inside "imgs" first


def test_rootpath_absent_or_empty(tmp_path):
    with pytest.raises(OutputError, match="does not occur"):
        output_paths("./a/b.jpg", str(tmp_path), "someimages")
    with pytest.raises(OutputError, match="rootpath is empty"):
        output_paths("./a/b.jpg", str(tmp_path), "")
    assert issubclass(OutputError, LrpError)


def test_absolute_list_paths_stay_inside(tmp_path):
    out = str(tmp_path / "out")
    # rootpath "/" anchors at the start of an absolute path: "out//etc/passwd" is still below out
    p = output_paths("//etc/passwd", out, "/")
    assert p.base == out + "///etc/passwd"
    assert os.path.realpath(p.heatmap).startswith(os.path.realpath(out) + os.sep)


@pytest.mark.parametrize(
    "fullpath, rootpath",
    [
        (".//../../x.jpg", ".."),  # the preserved part starts with ..
        ("./someimages/../../../etc/x.jpg", "someimages"),  # climbs out after the anchor
        ("./someimages/../../", "someimages"),  # the preserved part ends in a directory above
        ("./x/../../evil.jpg", "../"),
    ],
)
def test_escape_attempts_rejected(tmp_path, fullpath, rootpath):
    with pytest.raises(OutputError, match="outside the output folder"):
        output_paths(fullpath, str(tmp_path / "out"), rootpath)


def test_inner_dotdot_that_stays_inside_is_fine(tmp_path):
    out = str(tmp_path / "out")
    p = output_paths("./someimages/sub/../x.jpg", out, "someimages")
    assert p.base == out + "/someimages/sub/../x.jpg"


def test_symlink_under_outpath_pointing_outside(tmp_path):
    out = tmp_path / "out"
    outside = tmp_path / "elsewhere"
    out.mkdir()
    outside.mkdir()
    (out / "someimages").symlink_to(outside, target_is_directory=True)
    with pytest.raises(OutputError, match="outside the output folder"):
        output_paths("./someimages/cat.jpg", str(out), "someimages")
    # a symlinked file name pointing outside is refused as well
    (out / "ok").mkdir()
    (out / "ok" / "cat.jpg_heatmap.png").symlink_to(outside / "victim.png")
    with pytest.raises(OutputError):
        output_paths("./ok/cat.jpg", str(out), "ok")


def test_symlinked_outpath_itself_is_allowed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    p = output_paths("./someimages/a.jpg", str(tmp_path / "link"), "someimages")
    assert p.base == str(tmp_path / "link") + "/someimages/a.jpg"


def test_output_files(tmp_path):
    out = str(tmp_path)
    entry = parse_line("someimages/cat 1.jpg -1", ".", source="list", line=1)
    base = out + "/someimages/cat 1.jpg"
    paths = output_paths(entry.fullpath, out, "someimages")
    assert output_files(paths) == [
        base + "_heatmap.png",
        base + "_toptenscores.txt",
        base + "_rawhm.txt",
        base + "_as_inputted_into_the_dnn.png",
    ]
    named = output_paths(entry.fullpath, out, "someimages", original_names=True)
    assert output_files(named, minimal=True) == [base + "_top10scores.txt", base + "_rawhm.txt"]
    blob = output_paths("./someimages/a.npy", out, "someimages")
    assert output_files(blob, image=False, npy=True) == [
        out + "/someimages/a.npy_heatmap.png",
        out + "/someimages/a.npy_toptenscores.txt",
        out + "/someimages/a.npy_rawhm.txt",
        out + "/someimages/a.npy_rawhm.npy",
    ]


# ---- text formats --------------------------------------------------------------------------------


def test_format_g_like_libstdcxx():
    values = [0.0, -0.0, 1e-7, 1e6, 123456789.0, -1.234567e-5, 3 / 7, 0.0001, 100000.0, 1.5]
    assert [format_g(x) for x in values] == [
        "0", "-0", "1e-07", "1e+06", "1.23457e+08", "-1.23457e-05", "0.428571", "0.0001", "100000", "1.5",
    ]  # fmt: skip
    assert format_g(float("inf")) == "inf" and format_g(float("-inf")) == "-inf"
    assert format_g(float("nan")) == "nan" and format_g(-float("nan")) == "-nan"
    assert format_g(np.float32(0.1)) == "0.1"


def test_rawhm_text_layout():
    a = np.array([[[1.0, -0.0]], [[np.nan, -np.inf]], [[-np.float32("nan"), 2.5e-10]]], dtype=np.float32)
    assert format_rawhm(a) == "3\n1 2\n1 -0 \nnan -inf \n-nan 2.5e-10 \n"


@pytest.mark.parametrize("txt", RAWHM_TXT, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_rawhm_byte_exact(tmp_path, txt):
    rawhm = np.load(txt.with_suffix(".npz"))["rawhm"]
    target = tmp_path / "o" / txt.name
    write_rawhm(target, rawhm)
    assert target.read_bytes() == txt.read_bytes()


def literal_rawhm(rawhm: np.ndarray) -> str:
    """The rawhm text value by value with Python's own %g (format_g only for rows with a NaN, for speed)."""
    c, h, w = rawhm.shape
    rows = rawhm.astype(np.float64).reshape(c * h, w)
    lines = [
        "".join(format_g(x) + " " for x in row.tolist()) if np.isnan(row).any() else ("%g " * w) % tuple(row.tolist())
        for row in rows
    ]
    return f"{c}\n{h} {w}\n" + "".join(line + "\n" for line in lines)


@pytest.mark.parametrize("npz", RAWHM_NPZ, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_rawhm_of_every_reference_heatmap(npz):
    """Every reference heatmap (also those without a _rawhm.txt) → text: byte-identical to Python's %g,
    and it reads back as the header and the values to 6 significant digits."""
    rawhm = np.load(npz)["rawhm"]
    text = format_rawhm(rawhm)
    assert text == literal_rawhm(rawhm)
    lines = text.split("\n")
    c, (h, w) = int(lines[0]), map(int, lines[1].split())
    assert (c, h, w) == rawhm.shape and len(lines) == 2 + c * h + 1 and lines[-1] == ""
    assert all(line.endswith(" ") and line.count(" ") == w for line in lines[2:-1])
    back = np.array(" ".join(lines[2:-1]).split(), dtype=np.float64).reshape(rawhm.shape)
    np.testing.assert_allclose(back, rawhm, rtol=5e-6, atol=0)


def test_rawhm_reference_count():
    assert len(RAWHM_TXT) >= 19 and any(p.parent.parent.name == "caffenet_f100" for p in RAWHM_TXT)
    assert len(RAWHM_NPZ) >= 70


@pytest.mark.parametrize("txt", TOPTEN, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_topten_byte_exact(tmp_path, txt):
    text = txt.read_text()
    ranked = [(int(c), np.float32(v)) for c, v in (line.split() for line in text.splitlines())]
    target = tmp_path / txt.name
    write_topten(target, ranked)
    assert target.read_bytes() == txt.read_bytes()


def test_topten_count():
    ranked = [(i, np.float32(1 / (i + 2))) for i in range(1000)]
    assert len(format_topten(ranked).splitlines()) == 10
    assert format_topten(ranked[:3]) == "0 0.5\n1 0.333333\n2 0.25\n"
    assert format_topten(iter(ranked), count=2) == "0 0.5\n1 0.333333\n"


# ---- binary writers and atomicity --------------------------------------------------------------------


def test_png_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.random((3, 5, 7))
    rgb[0, 0, 0], rgb[1, 0, 0] = 1.3, -0.1
    path = tmp_path / "deep" / "dir" / "x_heatmap.png"
    write_png(path, rgb)
    img = Image.open(path)
    assert img.mode == "RGB" and img.size == (7, 5)
    back = np.asarray(img).transpose(2, 0, 1)
    expected = np.floor(np.clip(rgb, 0, 1) * 255 + 0.5)
    assert np.array_equal(back, expected)


def test_npy_round_trip(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    write_npy(tmp_path / "a_rawhm.npy", a)
    b = np.load(tmp_path / "a_rawhm.npy")
    assert b.dtype == np.float32 and np.array_equal(a, b)


def test_overwrite_keeps_umask_permissions(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("old")
    write_topten(path, [(1, 0.5)])
    assert path.read_text() == "1 0.5\n"
    umask = os.umask(0)
    os.umask(umask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~umask)
    assert os.listdir(tmp_path) == ["t.txt"]


def test_failed_write_leaves_no_temp_file_and_keeps_old_content(tmp_path, monkeypatch):
    path = tmp_path / "x_rawhm.txt"
    path.write_text("old")

    def boom(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(outputs.os, "fsync", boom)
    with pytest.raises(RuntimeError, match="injected"):
        write_rawhm(path, np.zeros((3, 2, 2)))
    assert os.listdir(tmp_path) == ["x_rawhm.txt"]
    assert path.read_text() == "old"


def test_failed_png_encoding_leaves_no_temp_file(tmp_path):
    with pytest.raises(ValueError):
        write_png(tmp_path / "bad.png", np.zeros((2, 3, 3)))
    assert os.listdir(tmp_path) == []


def test_failed_replace_is_an_output_error(tmp_path, monkeypatch):
    def deny(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.os, "replace", deny)
    with pytest.raises(OutputError, match=r"x\.png: cannot write: Permission denied"):
        write_png(tmp_path / "x.png", np.zeros((3, 1, 1)))
    assert os.listdir(tmp_path) == []


def test_parent_that_is_a_file_is_an_output_error(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(OutputError, match="blocker/sub/t.txt: cannot write"):
        write_topten(tmp_path / "blocker" / "sub" / "t.txt", [(0, 1.0)])
    assert os.listdir(tmp_path) == ["blocker"]


# ---- all-or-nothing sets, temporary names, stale temporary files ------------------------------------------------


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("name", ["a" * 255, "é" * 127, "x.jpg_rawhm.txt", "\udcff" * 200 + "_rawhm.txt"])
def test_temporary_names_fit_the_name_limit_and_are_derived_from_the_final_name(tmp_path, name):
    target = os.path.join(tmp_path, name)
    names = outputs._temp_names(target)
    assert names == outputs._temp_names(target) and len(set(names)) == len(names)
    for tmp in names:
        raw = os.fsencode(os.path.basename(tmp))
        assert len(raw) <= 255 and raw.startswith(b".") and raw.endswith(b".tmp")
        assert os.path.dirname(tmp) == str(tmp_path)
    other = outputs._temp_names(target[:-1] + ("b" if target[-1] != "b" else "c"))
    assert not set(names) & set(other)
    write_topten(target, [(3, 0.25)])  # a 255-byte final name is written (its temporary name fits too)
    assert os.listdir(tmp_path) == [name] and open(target).read() == "3 0.25\n"


@pytest.mark.parametrize(
    "name, problem",
    [("a" * 256, r"output file name …a{50} is 256 bytes long, above the 255-byte limit"),
     ("é" * 128, r"output file name …é{50} is 256 bytes long, above the 255-byte limit"),
     ("a\0b", r"the output path contains a NUL byte")],
)
def test_names_that_cannot_be_created_are_refused(tmp_path, name, problem):
    with pytest.raises(OutputError, match=f"^entry: {problem}$"):
        outputs.check_output_name(os.path.join(tmp_path, name), "entry")
    fitting = name.replace("\0", "")[: 255 // len(name[0].encode())]
    outputs.check_output_name(os.path.join(tmp_path, fitting), "entry")  # one byte less is fine


def test_path_longer_than_path_max_is_refused(tmp_path):
    deep = os.path.join(*(["d" * 200] * 21), "x.txt")
    with pytest.raises(OutputError, match=r"^e: output path is \d+ bytes long, above the 4096-byte limit$"):
        outputs.check_output_name(deep, "e")


def test_output_paths_refuse_a_nul_byte_with_the_name_escaped(tmp_path):
    with pytest.raises(OutputError, match=r"^\./some\\x00images/a\.jpg: the path contains a NUL byte$"):
        output_paths("./some\0images/a.jpg", str(tmp_path), "images")


def test_a_failing_file_leaves_every_earlier_output_as_it_was(tmp_path, monkeypatch):
    """The disk fills on the third file of a set: nothing changes, old complete outputs stay, no temporary file."""
    files = {str(tmp_path / f"x_{n}.txt"): f"new {n}\n".encode() for n in range(4)}
    for n, path in enumerate(files):
        if n != 1:
            open(path, "w").write(f"old {n}\n")
    real_fsync, calls = os.fsync, []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(outputs.os, "fsync", failing_fsync)
    with pytest.raises(OutputError, match=r"x_2\.txt: cannot write: No space left on device$"):
        outputs.write_files(files)
    assert sorted(os.listdir(tmp_path)) == ["x_0.txt", "x_2.txt", "x_3.txt"]
    assert [open(p).read() for p in files if os.path.exists(p)] == ["old 0\n", "old 2\n", "old 3\n"]


def test_a_failing_rename_removes_only_the_outputs_it_created(tmp_path, monkeypatch):
    """x_0 replaced an earlier output (it keeps its new, complete content), x_1 was new (removed again), x_2 failed."""
    files = {str(tmp_path / f"x_{n}.txt"): f"new {n}\n".encode() for n in range(3)}
    (tmp_path / "x_0.txt").write_text("old 0\n")
    (tmp_path / "x_2.txt").write_text("old 2\n")
    real_replace = os.replace

    def failing_replace(src, dst):
        if dst.endswith("x_2.txt"):
            raise OSError(5, "Input/output error")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OutputError, match=r"x_2\.txt: cannot write: Input/output error$"):
        outputs.write_files(files)
    assert sorted(os.listdir(tmp_path)) == ["x_0.txt", "x_2.txt"]
    assert (tmp_path / "x_0.txt").read_text() == "new 0\n" and (tmp_path / "x_2.txt").read_text() == "old 2\n"


def test_a_directory_in_the_way_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "b.txt").mkdir()
    with pytest.raises(OutputError, match=r"b\.txt: cannot write: a directory of that name is in the way$"):
        outputs.write_files({str(tmp_path / "a.txt"): b"a", str(tmp_path / "b.txt"): b"b"})
    assert os.listdir(tmp_path) == ["b.txt"]


def test_stale_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    import fcntl

    done, live, other = (str(tmp_path / f"{n}.jpg_rawhm.txt") for n in ("done", "live", "other"))
    stale = outputs._temp_names(done)
    for tmp in stale[:2]:  # left by killed writers: nobody holds their lock
        open(tmp, "wb").write(b"half")
    held = outputs._temp_names(live)[0]
    fd = os.open(held, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a writer in another process, still running
    not_ours = tmp_path / ".other.jpg_rawhm.txt.1a2b3c4d.tmp"
    not_ours.write_bytes(b"")
    try:
        removed = outputs.remove_stale_temps([done, live, other])
        assert removed == stale[:2]
        assert _hidden(tmp_path) == sorted([os.path.basename(held), not_ours.name])
    finally:
        os.close(fd)
    assert outputs.remove_stale_temps([live]) == [held]


def test_a_second_writer_of_the_same_output_uses_another_temporary_name(tmp_path):
    import fcntl

    target = str(tmp_path / "x_rawhm.txt")
    first = outputs._temp_names(target)[0]
    fd = os.open(first, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        write_topten(target, [(1, 0.5)])  # must neither wait for nor remove the live writer's file
        assert _hidden(tmp_path) == [os.path.basename(first)]
        assert open(target).read() == "1 0.5\n"
    finally:
        os.close(fd)


def test_a_killed_writers_temporary_file_is_reused(tmp_path):
    target = str(tmp_path / "x_rawhm.txt")
    first = outputs._temp_names(target)[0]
    open(first, "wb").write(b"half of a killed run's file")
    write_topten(target, [(2, 0.5)])
    assert os.listdir(tmp_path) == ["x_rawhm.txt"]


def test_a_symlink_or_fifo_with_a_temporary_name_is_left_alone(tmp_path):
    target = str(tmp_path / "x_rawhm.txt")
    first, second = outputs._temp_names(target)[:2]
    os.symlink("/etc/passwd", first)
    os.mkfifo(second)
    assert outputs.remove_stale_temps([target]) == []
    write_topten(target, [(2, 0.5)])
    assert open(target).read() == "2 0.5\n" and os.path.islink(first) and os.path.exists("/etc/passwd")
    assert _hidden(tmp_path) == sorted([os.path.basename(first), os.path.basename(second)])
