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
    expected_outputs,
    format_g,
    format_rawhm,
    format_topten,
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


def test_expected_outputs(tmp_path):
    out = str(tmp_path)
    entry = parse_line("someimages/cat 1.jpg -1", ".", source="list", line=1)
    base = out + "/someimages/cat 1.jpg"
    assert expected_outputs(entry, out, "someimages") == [
        base + "_heatmap.png",
        base + "_toptenscores.txt",
        base + "_rawhm.txt",
        base + "_as_inputted_into_the_dnn.png",
    ]
    assert expected_outputs(entry, out, "someimages", minimal=True, original_names=True) == [
        base + "_top10scores.txt",
        base + "_rawhm.txt",
    ]
    assert expected_outputs("./someimages/a.jpg", out, "someimages", minimal=True, npy=True)[-1].endswith(
        "a.jpg_rawhm.npy"
    )


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
