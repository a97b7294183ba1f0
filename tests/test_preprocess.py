"""Preprocessing (spec §4) against the original's dumped intermediates and on synthetic images."""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import REFERENCE
from PIL import Image

from lrp_cli import preprocess as pp
from lrp_cli.errors import ConfigError, ImageError, ModelError

CASES = {
    # case: (baseimgsize, net input (H, W), mean file; None = the generated constant mean)
    "inputs_caffenet_f100": (256, (227, 227), None),
    "inputs_caffenet_realmean_f100": (256, (227, 227), REFERENCE / "models" / "imagenet_mean_bgr.binaryproto"),
    "inputs_tiny_f100": (36, (32, 32), None),
}
# Every reference resize and input blob is reproduced bit for bit (this needs ImageMagick's
# MagickRealType = double and MagickEpsilon = 1e-12, see lrp_cli/preprocess.py).


@dataclass(frozen=True)
class Mean:
    """Stand-in for lrp_cli.caffe.mean.MeanImage: flat (3, Hm·Wm) BGR planes, row-major (mode 1)."""

    flat: np.ndarray
    height: int
    width: int


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _fields(data: bytes) -> dict[int, list]:
    """Protobuf wire format → {field: [values]} (varints as int, length-delimited and fixed32 as bytes)."""
    out: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        wire = key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            n, pos = _varint(data, pos)
            value, pos = data[pos : pos + n], pos + n
        elif wire == 5:
            value, pos = data[pos : pos + 4], pos + 4
        elif wire == 1:
            value, pos = data[pos : pos + 8], pos + 8
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(key >> 3, []).append(value)
    return out


def read_mean(path: Path) -> Mean:
    """BlobProto → Mean: data (field 5, packed floats), shape (field 7: dims in its field 1) or height/width (3, 4)."""
    blob = _fields(path.read_bytes())
    data = np.frombuffer(b"".join(blob[5]), dtype="<f4").astype(np.float64)
    if 7 in blob:
        shape = _fields(blob[7][0])[1]
        if len(shape) == 1 and isinstance(shape[0], bytes):  # packed
            dims, pos, packed = [], 0, shape[0]
            while pos < len(packed):
                d, pos = _varint(packed, pos)
                dims.append(d)
        else:
            dims = list(shape)
        hm, wm = dims[-2], dims[-1]
    else:
        hm, wm = blob[3][0], blob[4][0]
    return Mean(data.reshape(3, hm * wm), hm, wm)


@pytest.fixture(scope="module")
def const_mean(tiny_model_dir: Path) -> Mean:
    return read_mean(tiny_model_dir / "imagenet_mean_const.binaryproto")


@pytest.fixture(scope="module")
def real_mean() -> Mean:
    return read_mean(REFERENCE / "models" / "imagenet_mean_bgr.binaryproto")


def _case_images(case: str) -> list[str]:
    lines = (REFERENCE / "cases" / case / "filelist.txt").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip()]


REFERENCE_RUNS = [(case, image) for case in CASES for image in _case_images(case)]


def _read_png16(path: Path) -> np.ndarray:
    """16-bit-scaled samples (3, H, W) RGB of a PNG (8-bit samples are scaled by 257)."""
    cv2 = pytest.importorskip("cv2")
    a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert a is not None, path
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    else:
        a = a[:, :, 2::-1]  # BGR(A) → RGB
    a = a.astype(np.float64)
    if a.max() <= 255 and cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint8:
        a *= 257
    return np.moveaxis(a, -1, 0)


# ---------------------------------------------------------------------------------------------
# Reference intermediates of the original program
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case,image", REFERENCE_RUNS, ids=[f"{c}:{Path(i).name}" for c, i in REFERENCE_RUNS])
def test_matches_original_intermediates(case: str, image: str, const_mean: Mean) -> None:
    base, input_hw, mean_file = CASES[case]
    mean = const_mean if mean_file is None else read_mean(mean_file)
    name = Path(image).name
    expected = REFERENCE / "cases" / case / "expected"
    resized = np.load(expected / f"{name}_resized_rgb.npz")
    blob = np.load(expected / f"{name}_input_blob.npz")["input_blob"]

    got = pp.preprocess_image(REFERENCE / image, base, input_hw, mean)

    want_q = resized["resized_quanta"]
    assert got.resized_hw == want_q.shape[1:]
    assert got.resized_quanta.shape == want_q.shape
    np.testing.assert_array_equal(got.resized_quanta, want_q)
    np.testing.assert_array_equal(pp.quanta_to_rgb255(want_q), resized["resized_rgb"])
    assert got.blob.dtype == np.float32 and got.blob.shape == (3,) + input_hw
    np.testing.assert_array_equal(got.blob, blob)


def test_reference_bw1_is_resized_with_mitchell(const_mean: Mean) -> None:
    # bw1.png is an RGBA PNG whose pixels are all opaque; ImageMagick still marks it matte.
    got = pp.preprocess_image(REFERENCE / "someimages" / "bw1.png", 256, (227, 227), const_mean)
    assert got.filter == pp.MITCHELL and got.resized_hw == (233, 256)
    jpg = pp.preprocess_image(REFERENCE / "someimages" / "hare3.jpg", 256, (227, 227), const_mean)
    assert jpg.filter == pp.LANCZOS


@pytest.mark.parametrize("case", ["inputs_caffenet_f100", "inputs_tiny_f100"])
def test_as_inputted_matches_png(case: str, const_mean: Mean) -> None:
    base, input_hw, _ = CASES[case]
    for image in _case_images(case)[:4]:
        name = Path(image).name
        got = pp.preprocess_image(REFERENCE / image, base, input_hw, const_mean)
        png = _read_png16(REFERENCE / "cases" / case / "expected" / f"{name}_as_inputted_into_the_dnn.png")
        assert got.as_inputted.shape == png.shape == (3,) + input_hw
        assert np.abs(got.as_inputted - png / 65535).max() <= 1.0 / 65535 + 1e-12
        # the original truncated Q·(255/65535)/255·65535 into the PNG: never above our value
        assert (png <= np.floor(got.as_inputted * 65535 + 1e-6)).mean() > 0.999


def test_realmean_is_subtracted_transposed(real_mean: Mean) -> None:
    """§4.6: with a row-major 256×256 binaryproto the original subtracts M[b][row=Bm+w...][col=...h]."""
    m = real_mean.flat.reshape(3, 256, 256)
    # landscape, padded rows (hare3: 144×256, o = (227 − 144)//2 = 41): net (h, w) with h ≥ o takes
    # image row h − o and subtracts flat[b, (h − o) + (14 + w)·256] = M[b][14 + w][h − o].
    got = pp.preprocess_image(REFERENCE / "someimages" / "hare3.jpg", 256, (227, 227), real_mean)
    img3 = got.as_inputted * 255.0
    for h, w in [(41, 0), (100, 50), (184, 226), (0, 7), (226, 100)]:
        r = min(max(h - 41, 0), 143)
        for b in range(3):
            assert got.mean_bgr[b, h, w] == m[b, 14 + w, r]
            assert got.blob[b, h, w] == np.float32(img3[2 - b, h, w] - m[b, 14 + w, r])
    # portrait centre crop (spider: 256×254): r = Bm + h = 14 + h, c = (256 − 227)//2 + w = 14 + w
    sp = pp.preprocess_image(REFERENCE / "someimages" / "spider-175582_640.jpg", 256, (227, 227), real_mean)
    assert np.array_equal(sp.mean_bgr, m[:, 14:241, 14:241].transpose(0, 2, 1))
    # the real mean is not symmetric, so the transposition is visible in the blob
    centered = pp.preprocess_image(
        REFERENCE / "someimages" / "spider-175582_640.jpg", 256, (227, 227), real_mean, mean_alignment="centered"
    )
    # centred: image column 13 + w lies over mean column 13 + w + (256 − 254)//2, image row 14 + h over row 14 + h
    assert np.array_equal(centered.mean_bgr, m[:, 14:241, 14:241])
    assert np.abs(centered.blob - sp.blob).max() > 1.0


# ---------------------------------------------------------------------------------------------
# Geometry, crop / pad, mean indexing
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size,expected",
    [
        ((640, 480), (256, 192)),
        ((640, 426), (255, 170)),
        ((500, 333), (255, 170)),
        ((634, 640), (254, 256)),
        ((429, 391), (256, 233)),
        ((1000, 102), (255, 26)),
        ((427, 640), (171, 256)),
        ((256, 200), (256, 200)),  # unchanged: no resize
        ((200, 200), (256, 256)),
        ((1000, 1), (256, 1)),  # height rounds to 0: "256" (width only) is parsed
        ((20, 30), (24, 36)),
    ],
)
def test_resize_geometry(size: tuple[int, int], expected: tuple[int, int]) -> None:
    assert pp.resize_geometry(*size, 256 if size != (20, 30) else 36) == expected


def test_crop_pad_worked_example() -> None:
    """§4.5: 640×480 → 256×192: net columns = image columns 14..240, rows 17..208 = image rows 0..191."""
    plan = pp.crop_pad_plan(192, 256, 256, 227, 227)
    assert not plan.portrait and plan.pad == 17 and plan.border == 14
    np.testing.assert_array_equal(plan.cols, np.arange(14, 241))
    np.testing.assert_array_equal(plan.rows[17:209], np.arange(192))
    assert (plan.rows[:17] == 0).all() and (plan.rows[209:] == 191).all()


_N = np.arange(227)


@pytest.mark.parametrize(
    "hei,wid,rows,cols",
    [
        (256, 240, 14 + _N, 6 + _N),  # portrait, wide enough: centre crop of columns
        (256, 171, 14 + _N, np.clip(_N - 28, 0, 170)),  # portrait, padded columns, edges replicated
        (240, 256, 6 + _N, 14 + _N),  # landscape, tall enough
        (256, 256, 14 + _N, 14 + _N),  # square → landscape branch
        (255, 170, 14 + _N, np.clip(_N - 28, 0, 169)),  # long side one short: B from the nominal 256
        (170, 255, np.clip(_N - 28, 0, 169), 14 + _N),
    ],
)
def test_crop_pad_branches(hei: int, wid: int, rows: np.ndarray, cols: np.ndarray) -> None:
    img = np.arange(3 * hei * wid, dtype=np.float64).reshape(3, hei, wid)
    out = pp.crop_pad(img, 256, 227, 227)
    assert out.shape == (3, 227, 227)
    np.testing.assert_array_equal(out, img[:, rows[:, None], cols[None, :]])


def test_crop_pad_short_long_side_clamped() -> None:
    """baseimgsize = net size and a long side one pixel short: the original read past the image."""
    plan = pp.crop_pad_plan(226, 150, 227, 227, 227)
    assert plan.border == 0 and plan.rows[-1] == 225 and plan.rows[-2] == 225


def test_crop_pad_landscape_padded_rows_replicate() -> None:
    img = np.random.default_rng(0).random((3, 26, 255))
    out = pp.crop_pad(img, 256, 227, 227)
    o = (227 - 26) // 2
    np.testing.assert_array_equal(out[:, o : o + 26], img[:, :, 14:241])
    assert (out[:, :o] == img[:, :1, 14:241]).all() and (out[:, o + 26 :] == img[:, 25:26, 14:241]).all()


def _index_mean(hm: int, wm: int) -> Mean:
    """A mean whose flat value is its own index (+ 1e6·plane) so that every lookup is identifiable."""
    flat = np.arange(hm * wm, dtype=np.float64)[None] + 1e6 * np.arange(3)[:, None]
    return Mean(flat, hm, wm)


def test_mean_original_indexing_all_branches() -> None:
    mean = _index_mean(260, 250)  # non-square: Bm = min((260 − 227)//2, (250 − 227)//2) = 11
    hm = 260
    h = np.arange(227)[:, None]
    w = np.arange(227)[None, :]
    cases = {
        (256, 240): (11 + h, (250 - 227) // 2 + w),  # portrait crop
        (256, 171): (11 + h, np.clip(w - 28, 0, 170)),  # portrait pad: mean columns 0..wid−1
        (240, 256): ((260 - 227) // 2 + h, 11 + w),  # landscape crop
        (192, 256): (np.clip(h - 17, 0, 191), 11 + w),  # landscape pad: mean rows 0..hei−1
    }
    for (hei, wid), (r, c) in cases.items():
        got = pp.mean_for_input(mean, (hei, wid), 256, (227, 227))
        r, c = np.broadcast_arrays(r, c)
        for b in range(3):
            np.testing.assert_array_equal(got[b], r + c * hm + 1e6 * b)


def test_mean_centered_alignment() -> None:
    mean = _index_mean(256, 256)
    planes = mean.flat.reshape(3, 256, 256)
    # landscape 192×256 padded rows: net row h covers image row h − 17, mean canvas offset (256−192)//2 = 32
    got = pp.mean_for_input(mean, (192, 256), 256, (227, 227), "centered")
    rows = np.arange(227) - 17 + 32
    np.testing.assert_array_equal(got, planes[:, rows[:, None], np.arange(14, 241)[None, :]])
    # a column-major (text) mean is read as such
    flat = planes.transpose(0, 2, 1).reshape(3, -1)
    text_mean = type("TextMean", (), {"flat": flat, "height": 256, "width": 256, "row_major": False})()
    np.testing.assert_array_equal(pp.mean_for_input(text_mean, (192, 256), 256, (227, 227), "centered"), got)


def test_size_validation(const_mean: Mean) -> None:
    img = REFERENCE / "someimages" / "hare3.jpg"
    with pytest.raises(ConfigError, match="baseimgsize 200"):
        pp.preprocess_image(img, 200, (227, 227), const_mean)
    small = Mean(np.zeros((3, 200 * 200)), 200, 200)
    with pytest.raises(ModelError, match="smaller than the net input"):
        pp.preprocess_image(img, 256, (227, 227), small)
    with pytest.raises(ConfigError, match="mean_alignment"):
        pp.preprocess_image(img, 256, (227, 227), const_mean, mean_alignment="middle")


# ---------------------------------------------------------------------------------------------
# Filters and the resize port on synthetic data
# ---------------------------------------------------------------------------------------------


def test_filter_values() -> None:
    x = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    mitchell = pp._filter_weight(pp.MITCHELL, x)
    np.testing.assert_allclose(mitchell[[0, 2, 4]], [8 / 9, 1 / 18, 0.0], atol=1e-15)
    assert mitchell[5] == 0.0
    xs = np.linspace(0.0, 2.99, 300)
    sinc = np.sinc(xs) * np.sinc(xs / 3)
    np.testing.assert_allclose(pp._filter_weight(pp.LANCZOS, xs), sinc, atol=1e-7)
    assert pp._filter_weight(pp.LANCZOS, np.array([1.0, 2.0]))[0] == 0.0


@pytest.mark.parametrize("kind", [pp.LANCZOS, pp.MITCHELL])
@pytest.mark.parametrize("sizes", [(640, 256), (480, 192), (100, 256), (36, 36), (391, 33)])
def test_filter_taps_normalised(kind: str, sizes: tuple[int, int]) -> None:
    idx, w = pp.filter_taps(kind, *sizes)
    assert idx.shape == w.shape and idx.shape[0] == sizes[1]
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    assert idx.min() >= 0 and idx.max() < sizes[0]


def test_filter_choice() -> None:
    assert pp.choose_filter((480, 640), (192, 256), False, False) == pp.LANCZOS
    assert pp.choose_filter((480, 640), (192, 256), True, False) == pp.MITCHELL
    assert pp.choose_filter((480, 640), (192, 256), False, True) == pp.MITCHELL
    assert pp.choose_filter((100, 120), (213, 256), False, False) == pp.MITCHELL  # enlarging
    assert pp.choose_filter((200, 256), (200, 256), False, False) is None


def test_resize_pass_order_and_constant() -> None:
    q = np.full((3, 97, 131), 12345, dtype=np.uint16)
    for kind in (pp.LANCZOS, pp.MITCHELL):
        out, _ = pp.resize_quanta(q, (40, 256), kind=kind)
        assert out.shape == (3, 40, 256) and (out == 12345).all()
    # pass order: a vertical-then-horizontal result differs (by rounding) from the other order in general
    rng = np.random.default_rng(1)
    q = rng.integers(0, 65536, (3, 60, 80), dtype=np.uint16)
    out, _ = pp.resize_quanta(q, (25, 30))  # x_factor 0.375 < y_factor 0.4167: vertical first
    iv, wv = pp.filter_taps(pp.LANCZOS, 60, 25)
    ih, wh = pp.filter_taps(pp.LANCZOS, 80, 30)

    def rnd(v: np.ndarray) -> np.ndarray:
        return np.clip(np.trunc(v + 0.5), 0, 65535)

    mid = rnd(np.einsum("yt,cytx->cyx", wv, q.astype(np.float64)[:, iv, :]))
    ref = rnd(np.einsum("xt,cyxt->cyx", wh, mid[:, :, ih]))
    assert np.abs(out - ref).max() <= 1  # same maths, different summation order


def test_alpha_weighting_keeps_transparent_colour_out() -> None:
    rgb = np.zeros((3, 40, 40), dtype=np.uint16)
    rgb[0] = 65535  # red everywhere ...
    rgb[:, :, 20:] = 0
    rgb[2, :, 20:] = 65535  # ... and blue on the right half
    alpha = np.zeros((40, 40), dtype=np.uint16)
    alpha[:, 20:] = 65535  # only the blue half is opaque
    out, a = pp.resize_quanta(rgb, (16, 16), alpha=alpha)
    assert a is not None and a.shape == (16, 16)
    covered = a > 0
    assert (out[0][covered] == 0).all() and (out[2][covered] == 65535).all()  # no red bleeds in
    plain, _ = pp.resize_quanta(rgb, (16, 16), kind=pp.MITCHELL)
    assert plain[0][covered].max() > 0  # without alpha weighting it would


def test_alpha_weights_summing_to_about_zero_or_below() -> None:
    """ImageMagick divides by Σ w·α even when Mitchell's negative lobes make it ≤ 0 (then ±1e15)."""
    x = np.array([2.0, -4.0, 0.0, 1e-13, -1e-13])
    big = 1.0 / 1e-12
    np.testing.assert_array_equal(pp._perceptible_reciprocal(x), [0.5, -0.25, big, big, -big])
    # one opaque pixel at the edge of a transparent image: its colour survives where the cubic's
    # negative lobe leaves a negative Σ w·α, and transparent output pixels keep a colour
    rgb = np.zeros((3, 1, 12), dtype=np.uint16)
    rgb[:, 0, 0] = 40000
    alpha = np.zeros((1, 12), dtype=np.uint16)
    alpha[0, 0] = 65535
    out, a = pp.resize_quanta(rgb, (1, 5), alpha=alpha)
    assert a[0, 0] > 0 and out[0, 0, 0] == 40000
    assert a[0, 1] == 0 and out[0, 0, 1] == 40000  # transparent, yet coloured (Σ w·α < 0 there)


# ---------------------------------------------------------------------------------------------
# The BLAS passes against the literal tap-order port
# ---------------------------------------------------------------------------------------------


def _literal_pass(planes: np.ndarray, alpha: np.ndarray | None, kind: str, out_size: int):
    """ImageMagick's pass as a loop over the taps (the port before BLAS): ``planes`` (N, C, K) uint16
    filtered along axis 0, running sums in tap order, ClampToQuantum after the pass."""
    idx, w = pp.filter_taps(kind, planes.shape[0], out_size)
    src = planes.astype(np.float64)
    acc = np.zeros((out_size,) + src.shape[1:])
    if alpha is None:
        for t in range(idx.shape[1]):
            acc += src[idx[:, t]] * w[:, t, None, None]
        return np.clip(np.trunc(acc + 0.5) * (acc > 0), 0, 65535).astype(np.uint16), None
    alpha_d = alpha.astype(np.float64)
    acc_op = np.zeros((out_size,) + alpha.shape[1:])
    gamma = np.zeros((out_size,) + alpha.shape[1:])
    for t in range(idx.shape[1]):
        a = (w[:, t, None] * (1.0 / 65535.0)) * alpha_d[idx[:, t]]
        acc += a[:, None, :] * src[idx[:, t]]
        acc_op += w[:, t, None] * (65535.0 - alpha_d[idx[:, t]])
        gamma += a
    sign = np.where(gamma < 0, -1.0, 1.0)
    tiny = sign * gamma < 1e-12
    recip = np.where(tiny, sign / 1e-12, 1.0 / np.where(tiny, 1.0, gamma))

    def clamp(v):
        return np.where(v <= 0, 0, np.where(v >= 65535, 65535, np.trunc(v + 0.5))).astype(np.uint16)

    return clamp(recip[:, None, :] * acc), (65535 - clamp(acc_op).astype(np.int64)).astype(np.uint16)


def _literal_resize(q: np.ndarray, out_hw: tuple[int, int], kind: str, alpha: np.ndarray | None = None):
    def vertical(p, a):
        out, na = _literal_pass(p.transpose(1, 0, 2), a, kind, out_hw[0])
        return out.transpose(1, 0, 2), na

    def horizontal(p, a):
        out, na = _literal_pass(p.transpose(2, 0, 1), None if a is None else a.T, kind, out_hw[1])
        return out.transpose(1, 2, 0), None if na is None else na.T

    if out_hw[1] / q.shape[2] > out_hw[0] / q.shape[1]:
        return vertical(*horizontal(q, alpha))
    return horizontal(*vertical(q, alpha))


@pytest.fixture
def recomputed(monkeypatch) -> dict:
    """Counts the samples the BLAS passes hand back to the tap-order sums."""
    count = {"samples": 0}
    tap_order = pp._Pass.tap_order

    def counting(self, x, p, o, j, weights):
        count["samples"] += len(o)
        return tap_order(self, x, p, o, j, weights)

    monkeypatch.setattr(pp._Pass, "tap_order", counting)
    return count


def _tie_prone(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A level plus random 0/1: shrunk by an even factor, the taps come in (almost) equal pairs, and
    wherever the ones pick one sample of every pair the sum is level + ½ up to the ε in the taps —
    ClampToQuantum's worst case."""
    return (rng.integers(1000, 60000) + rng.integers(0, 2, shape)).astype(np.uint16)


def _resize_both(q, out_hw, kind, alpha=None):
    got = pp.resize_quanta(q, out_hw, kind=kind, alpha=alpha)
    want = _literal_resize(q, out_hw, kind, alpha)
    np.testing.assert_array_equal(got[0], want[0])
    if alpha is None:
        assert got[1] is None and want[1] is None
    else:
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", [pp.LANCZOS, pp.MITCHELL])
def test_blas_passes_equal_tap_order_on_ties(kind: str, recomputed: dict) -> None:
    """Thousands of sums within 1e-9 of k + ½, where BLAS's summation order alone rounds differently
    (18409 quanta of these images on the development machine); the passes sum those again in tap
    order and equal the literal port."""
    rng = np.random.default_rng(21)
    for _ in range(3):
        h, w = (int(v) * 12 for v in rng.integers(5, 20, 2))
        q = _tie_prone(rng, (3, h, w))
        for out_hw in [(h // 2, w // 2), (h // 4, w // 2), (h // 3, w // 6), (2 * h, 3 * w // 2)]:
            _resize_both(q, out_hw, kind)
    assert recomputed["samples"] > 1000


@pytest.mark.parametrize("kind", [pp.LANCZOS, pp.MITCHELL])
def test_blas_passes_equal_tap_order_with_alpha(kind: str, recomputed: dict) -> None:
    """Alpha weighting: opaque (ties in the colours), alpha near opaque with 0/1 noise (ties in the
    opacity), random alpha with transparent holes (Σ w·α near or at 0, negative lobes)."""
    rng = np.random.default_rng(22)
    for _ in range(2):
        h, w = (int(v) * 12 for v in rng.integers(4, 14, 2))
        q = _tie_prone(rng, (3, h, w))
        alphas = [
            np.full((h, w), 65535, dtype=np.uint16),
            (65000 + rng.integers(0, 2, (h, w))).astype(np.uint16),
            np.where(rng.random((h, w)) < 0.7, 0, rng.integers(0, 65536, (h, w))).astype(np.uint16),
        ]
        for alpha in alphas:
            for out_hw in [(h // 2, w // 2), (h // 3, w // 4), (2 * h, w + 7)]:
                _resize_both(q, out_hw, kind, alpha)
    assert recomputed["samples"] > 100


def test_blas_passes_equal_tap_order_random() -> None:
    """Random quanta, odd sizes down to 1 row, strong shrinking (long tap lists) and enlarging."""
    rng = np.random.default_rng(23)
    for shape, out_hw in [((3, 50, 70), (17, 23)), ((3, 1, 90), (1, 31)), ((3, 90, 1), (31, 1)),
                          ((4, 400, 37), (7, 5)), ((3, 13, 11), (64, 80)), ((3, 256, 200), (256, 199))]:  # fmt: skip
        q = rng.integers(0, 65536, shape, dtype=np.uint16)
        for kind in (pp.LANCZOS, pp.MITCHELL):
            _resize_both(q, out_hw, kind)
            _resize_both(q, out_hw, kind, rng.integers(0, 65536, shape[1:], dtype=np.uint16))


def test_giant_images_go_in_column_strips(monkeypatch, recomputed: dict) -> None:
    """With pieces of at most 600 input values, every band is done in strips of columns (as for a
    giant image); the result stays the tap-order one, near-ties included."""
    monkeypatch.setattr(pp, "_PIECE_VALUES", 600)
    rng = np.random.default_rng(24)
    q = _tie_prone(rng, (3, 96, 84))
    alpha = np.where(rng.random((96, 84)) < 0.3, 0, 65000 + rng.integers(0, 2, (96, 84))).astype(np.uint16)
    for kind in (pp.LANCZOS, pp.MITCHELL):
        for out_hw in [(48, 42), (24, 21), (100, 90)]:
            _resize_both(q, out_hw, kind)
            _resize_both(q, out_hw, kind, alpha)
    assert recomputed["samples"] > 100
    assert len(list(pp._pieces(pp._pass_plan(pp.LANCZOS, 96, 48), 3, 84))) > 3 * 10


def test_bands_hold_the_taps() -> None:
    """The bands of a pass, put together, are the weight matrix of filter_taps."""
    for kind, n, m in [(pp.LANCZOS, 640, 256), (pp.MITCHELL, 100, 333), (pp.LANCZOS, 5, 1)]:
        idx, w = pp.filter_taps(kind, n, m)
        dense = np.zeros((m, n))
        np.add.at(dense, (np.repeat(np.arange(m), idx.shape[1]), idx.ravel()), w.ravel())
        plan = pp._pass_plan(kind, n, m)
        from_bands = np.zeros((m, n))
        for band in plan.bands:
            from_bands[band.lo : band.hi, band.first : band.last] = band.matrix
        np.testing.assert_array_equal(from_bands, dense)
        assert plan.bands[-1].hi == m and not plan.weights.flags.writeable


def test_clamp_to_quantum() -> None:
    v = np.array([-1e9, -0.5, -0.0, 0.0, 0.25, 0.5 - 2**-54, 0.5, 1.5, 65534.5 - 2**-37, 65534.5, 65535.0, 7e4, 1e300])
    want = np.where(v <= 0, 0, np.where(v >= 65535, 65535, np.trunc(v + 0.5))).astype(np.uint16)
    np.testing.assert_array_equal(pp._clamp_to_quantum(v), want)
    assert pp._clamp_to_quantum(np.array([0.5 - 2**-54]))[0] == 1  # v + 0.5 rounds up to 1.0 first


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    path = tmp_path / name
    im.save(path, **kw)
    return path


def test_decode_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
    d = pp.load_image(_save(tmp_path, "a.png", rgb))
    assert d.quanta.shape == (3, 30, 40) and not d.pseudo_class and d.alpha is None
    np.testing.assert_array_equal(d.quanta, np.moveaxis(np.asarray(rgb), -1, 0).astype(np.uint16) * 257)

    grey = pp.load_image(_save(tmp_path, "g.jpg", rgb.convert("L")))
    assert grey.pseudo_class and (grey.quanta[0] == grey.quanta[1]).all() and (grey.quanta[1] == grey.quanta[2]).all()

    assert not pp.load_image(_save(tmp_path, "g.tif", rgb.convert("L"))).pseudo_class  # DirectClass in IM
    assert not pp.load_image(_save(tmp_path, "g.pgm", rgb.convert("L"))).pseudo_class

    pal = pp.load_image(_save(tmp_path, "p.png", rgb.convert("P")))
    assert pal.pseudo_class and pal.alpha is None

    rgba = rgb.convert("RGBA")  # fully opaque: ImageMagick still marks an RGBA PNG matte
    assert pp.load_image(_save(tmp_path, "o.png", rgba)).alpha is not None

    trns = rgb.convert("P")
    trns.info["transparency"] = 0
    d = pp.load_image(_save(tmp_path, "t.png", trns, transparency=0))
    assert d.alpha is not None and not d.pseudo_class

    cmyk = Image.new("CMYK", (8, 6), (0, 0, 0, 0))
    d = pp.load_image(_save(tmp_path, "c.jpg", cmyk, quality=100))
    assert d.cmyk
    out = pp.preprocess_decoded(d, 8, (6, 6), Mean(np.zeros((3, 64)), 8, 8))
    assert np.abs(out.as_inputted - 1.0).max() < 0.02  # no ink = white


def test_first_frame_and_no_exif_rotation(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    d = pp.load_image(path)
    assert d.pseudo_class and d.quanta[0].min() > 60000 and d.quanta[1].max() < 1000

    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° CW" — the original ignores it
    path = _save(tmp_path, "rot.jpg", Image.new("RGB", (40, 20), (10, 20, 30)), exif=exif.tobytes())
    assert pp.load_image(path).size == (20, 40)


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_images(tmp_path: Path) -> None:
    jpeg = (REFERENCE / "someimages" / "cat12.jpg").read_bytes()
    bad = {
        "empty.jpg": (b"", "empty file"),
        "truncated.jpg": (jpeg[: len(jpeg) // 3], "truncated"),
        "text.jpg": (b"this is not a picture\n" * 20, "not a recognised image"),
        "huge.png": (_png_header_only(100_000, 100_000), "too large"),
        "broken.png": (_png_header_only(20, 20)[:-20] + b"garbage!" * 3, "corrupt"),
    }
    for name, (data, message) in bad.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageError, match=message) as info:
            pp.load_image(path)
        text = str(info.value)
        assert text.startswith(str(path)) and "\n" not in text
    with pytest.raises(ImageError, match="No such file"):
        pp.load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="cannot read image"):
        pp.load_image(tmp_path)
    small = tmp_path / "small.png"
    Image.new("RGB", (50, 40)).save(small)
    with pytest.raises(ImageError, match="too large"):
        pp.load_image(small, max_pixels=1000)


def test_warning_becomes_error(tmp_path: Path) -> None:
    # a PNG whose pixel count is above Pillow's warning threshold but below our (raised) limit
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    path = tmp_path / "warn.png"
    path.write_bytes(buf.getvalue())
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 64 * 64 - 1  # Pillow warns (DecompressionBombWarning) above this
    try:
        with pytest.raises(ImageError, match="too large") as info:
            pp.load_image(path, max_pixels=None)
        assert str(info.value).startswith(str(path))
    finally:
        Image.MAX_IMAGE_PIXELS = old


def flat_png(width: int, height: int, value: int = 0) -> bytes:
    """A valid RGB PNG of one flat colour, compressed row by row (never the whole image in memory): a 9000×9000
    one is about 240 KB."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = b"\0" + bytes([value]) * (3 * width)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_small_file_of_many_pixels_is_refused_from_its_header(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "flat.png"
    path.write_bytes(flat_png(9000, 9000))
    assert path.stat().st_size < 300_000
    monkeypatch.setattr(Image.Image, "load", lambda self: 1 / 0)  # decoding would fail the test
    with pytest.raises(ImageError) as info:
        pp.load_image(path)
    assert str(info.value) == (f"{path}: image too large: 9000x9000 = 81000000 pixels exceeds the limit of 12582912 "
                               f"(--max-pixels)")


def test_the_pixel_limit_is_inclusive_and_configurable(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    path.write_bytes(flat_png(40, 25, 7))
    assert pp.load_image(path, max_pixels=1000).size == (25, 40)
    with pytest.raises(ImageError, match=r"40x25 = 1000 pixels exceeds the limit of 999 \(--max-pixels\)$"):
        pp.load_image(path, max_pixels=999)


def test_pillows_lower_warning_level_does_not_override_a_raised_limit(tmp_path: Path) -> None:
    path = tmp_path / "w.png"
    path.write_bytes(flat_png(64, 64))
    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 64 * 64 - 1  # Pillow warns above this, we were asked to allow 5000
    try:
        assert pp.load_image(path, max_pixels=5000).size == (64, 64)
    finally:
        Image.MAX_IMAGE_PIXELS = old


@pytest.mark.parametrize(
    "make, problem",
    [
        (lambda p: Image.fromarray(np.linspace(0, 1, 600, dtype=np.float32).reshape(20, 30)).save(p, format="TIFF"),
         "unsupported image: 32-bit floating-point samples (e.g. a float TIFF); convert it to 8 or 16 bits per sample"),
        (lambda p: os.mkfifo(p), "cannot read image: not a regular file (a named pipe (FIFO))"),
        (lambda p: p.symlink_to("/dev/zero"), "cannot read image: not a regular file (a character device)"),
        (lambda p: p.symlink_to("/dev/urandom"), "cannot read image: not a regular file (a character device)"),
        (lambda p: p.symlink_to(p.name), "cannot read image: Too many levels of symbolic links"),
        (lambda p: p.mkdir(), "cannot read image: not a regular file (a directory)"),
    ],
    ids=["float-tiff", "fifo", "dev-zero", "dev-urandom", "symlink-loop", "directory"],
)
def test_unusable_image_files_are_named_for_what_they_are(tmp_path: Path, make, problem) -> None:
    path = tmp_path / "x.tif"
    make(path)
    with pytest.raises(ImageError) as info:
        pp.load_image(path)
    assert str(info.value) == f"{path}: {problem}"


def test_baseimgsize_is_capped_by_the_pixel_limit() -> None:
    assert pp.max_baseimgsize(pp.DEFAULT_MAX_PIXELS) == 512 and pp.max_baseimgsize(None) is None
    assert pp.max_baseimgsize(48 * 1000**2) == 1000
    pp.check_baseimgsize(512, pp.DEFAULT_MAX_PIXELS)
    pp.check_baseimgsize(100_000, None)
    with pytest.raises(ConfigError) as info:
        pp.check_baseimgsize(8000, pp.DEFAULT_MAX_PIXELS, "c.txt line 22 (baseimgsize)")
    assert str(info.value) == (
        "c.txt line 22 (baseimgsize): baseimgsize 8000 is above the largest allowed, 512: resized images are limited "
        "to --max-pixels / 48 = 262144 pixels (--max-pixels 12582912)"
    )
    mean = Mean(np.zeros((3, 1)), 1, 1)
    with pytest.raises(ConfigError, match="baseimgsize 513 is above the largest allowed, 512"):
        pp.preprocess_image("never-read.png", 513, (227, 227), mean)
