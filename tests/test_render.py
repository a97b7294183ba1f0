"""Heatmap colouring: the original's map (clipped), the other colour maps, overlay, 8-bit rounding."""

import numpy as np
import pytest
from conftest import REFERENCE

from lrp_cli.render import (
    COLORMAPS,
    OVERLAY_GAMMA,
    colorize,
    heatmap_values,
    lab_to_srgb,
    normalized,
    overlay,
    relevance_overlay,
    to_uint8,
)

HEATMAPS = sorted(REFERENCE.glob("cases/*/expected/*_heatmap.png"))


def _read_png16(path):
    cv2 = pytest.importorskip("cv2")
    bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert bgr is not None and bgr.dtype == np.uint16, path
    return bgr[:, :, ::-1].transpose(2, 0, 1).astype(np.float64)


def test_reference_heatmaps_are_present():
    assert len(HEATMAPS) >= 50


@pytest.mark.parametrize("png", HEATMAPS, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_original_colouring_matches_reference_pngs(png):
    raw = np.load(png.with_name(png.name.replace("_heatmap.png", "_rawhm.npz")))["rawhm"]
    theirs = _read_png16(png)  # 16-bit, truncated: q = trunc(x * 65535), wrapped mod 65536
    ours = colorize(raw, "original")
    assert ours.shape == theirs.shape and ours.min() >= 0 and ours.max() <= 1

    v = heatmap_values(raw)
    m = max(0.0, v.max())
    neg = np.where(v < 0, -v / m, 0.0)
    wrap = neg > 1  # where the original overflowed; we clip these to full blue
    diff = np.abs(to_uint8(ours).transpose(2, 0, 1) - theirs / 65535 * 255)
    bad = (diff > 0.5 + 0.005).any(axis=0)
    assert not (bad & ~wrap).any(), f"{int((bad & ~wrap).sum())} pixels differ outside the wrap zone"
    # the wrapped pixels are what x86 truncation to unsigned short gives; ours are clipped to blue = 1
    predicted = np.trunc(neg[wrap] * 65535).astype(np.int64) & 0xFFFF
    assert np.array_equal(predicted, theirs[2][wrap])
    assert np.all(ours[2][wrap] == 1.0) and np.all(ours[:2][:, wrap] == 0.0)


def test_some_reference_pixels_actually_wrapped():
    counts = {}
    for png in HEATMAPS:
        raw = np.load(png.with_name(png.name.replace("_heatmap.png", "_rawhm.npz")))["rawhm"]
        v = heatmap_values(raw)
        counts[png] = int((-v / v.max() > 1).sum())
    assert sum(counts.values()) == 8  # frog5 1, sheep11 1 (caffenet f0), cat12 2 (tiny f0), bw1 4 (tiny f11)


def test_original_map_values():
    raw = np.broadcast_to(np.array([[2.0, 1.0, 0.0, -1.0, -4.0]]), (3, 1, 5))
    rgb = colorize(raw)
    np.testing.assert_allclose(rgb[:, 0, :], [[1, 0.5, 0, 0, 0], [1, 0.5, 0, 0, 0], [0, 0, 0, 0.5, 1]])


def test_original_mean_of_channels_and_formula99():
    raw = np.zeros((3, 1, 2))
    raw[0, 0, 0], raw[1, 0, 1] = 3.0, -3.0  # v = +1 and -1
    np.testing.assert_allclose(colorize(raw)[:, 0, :], [[1, 0], [1, 0], [0, 1]])
    same = np.stack([np.array([[0.0, 0.5, 1.0]])] * 3)  # formula 99: three equal channels
    np.testing.assert_allclose(colorize(same)[:, 0, :], [[0, 0.5, 1], [0, 0.5, 1], [0, 0, 0]])


@pytest.mark.parametrize("values", [[0.0, 0.0], [-1.0, -2.0], [np.nan, -1.0]])
def test_original_black_without_positive_values(values):
    raw = np.broadcast_to(np.array([values]), (3, 1, 2))
    assert not colorize(raw).any()


def test_nan_and_inf_draw_as_zero():
    raw = np.broadcast_to(np.array([[1.0, np.nan, np.inf]]), (3, 1, 3))
    np.testing.assert_allclose(colorize(raw)[:, 0, :], [[1, 0, 0], [1, 0, 0], [0, 0, 0]])


def test_bwr():
    raw = np.broadcast_to(np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]]), (3, 1, 5))
    np.testing.assert_allclose(
        colorize(raw, "bwr")[:, 0, :], [[0, 0.5, 1, 1, 1], [0, 0.5, 1, 0.5, 0], [1, 1, 1, 0.5, 0]]
    )


def test_black_firered_follows_apply_heatmap():
    x = np.array([[-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]])
    rgb = colorize(np.broadcast_to(x, (3, 1, 7)), "black-firered")[:, 0, :]
    expected = np.array(
        [  # r, g, b at x = -1 ... 1 (white-blue ice for -, black-red-yellow-white fire for +)
            [1, 0, 0, 0, 1, 1, 1],
            [1, 1, 0, 0, 0, 1, 1],
            [1, 1, 1, 0, 0, 0, 1],
        ],
        dtype=float,
    )
    np.testing.assert_allclose(rgb, expected)


def test_gray_and_unknown_map():
    raw = np.broadcast_to(np.array([[-1.0, 0.0, 1.0]]), (3, 1, 3))
    np.testing.assert_allclose(colorize(raw, "gray")[:, 0, :], [[0, 0.5, 1]] * 3)
    assert set(COLORMAPS) >= {"original", "bwr", "black-firered", "gray"}
    with pytest.raises(ValueError, match="unknown colormap"):
        colorize(raw, "viridis")


@pytest.mark.parametrize("name", COLORMAPS)
def test_every_map_stays_in_unit_range(name):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(3, 8, 9)) * 100
    rgb = colorize(raw, name)
    assert rgb.shape == (3, 8, 9) and rgb.min() >= 0 and rgb.max() <= 1


def test_overlay():
    h = np.ones((3, 2, 2))
    img = np.zeros((3, 2, 2))
    np.testing.assert_allclose(overlay(h, img), 0.5)
    np.testing.assert_allclose(overlay(h, img, alpha=0.25), 0.25)
    with pytest.raises(ValueError):
        overlay(h, np.zeros((3, 2, 3)))
    with pytest.raises(ValueError):
        overlay(h, img, alpha=1.5)


def test_to_uint8_rounds_and_clips():
    rgb = np.array([0.0, 0.5 / 255, 0.49 / 255, 1.0, 1.7, -0.2, np.nan, 128.6 / 255]).reshape(1, 1, 8)
    out = to_uint8(np.concatenate([rgb] * 3))
    assert out.shape == (1, 8, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 1, 0, 255, 255, 0, 0, 129]


# ---- robust normalisation (clip percentile) -------------------------------------------------------------------------


def _line(values):
    return np.broadcast_to(np.asarray([values], dtype=float), (3, 1, len(values)))


def test_percentile_100_is_the_largest_value():
    rng = np.random.default_rng(1)
    raw = rng.standard_cauchy(size=(3, 20, 20))
    v = heatmap_values(raw)
    np.testing.assert_allclose(normalized(raw, "bwr", 100), v / np.abs(v).max())
    np.testing.assert_allclose(normalized(raw, "original", 100), np.clip(v / v.max(), -1, 1))


def test_percentile_scales_and_clips_symmetrically():
    values = np.arange(-100.0, 101.0)  # |v| = 0..100, each non-zero magnitude twice
    x = normalized(_line(values), "bwr", 90)[0]
    m = np.percentile(np.abs(values), 90)
    assert 80 < m < 100
    np.testing.assert_allclose(x, np.clip(values / m, -1, 1))
    np.testing.assert_allclose(x, -x[::-1])  # symmetric around zero
    assert (np.abs(x) == 1).sum() == 2 * int((np.abs(values) >= m).sum() // 2)


def test_original_percentile_uses_the_positive_side():
    values = np.concatenate([np.linspace(0, 10, 11), -np.full(10, 1000.0)])
    x = normalized(_line(values), "original", 95)[0]
    m = np.percentile(np.maximum(values, 0), 95)
    np.testing.assert_allclose(x, np.clip(values / m, -1, 1))
    rgb = colorize(_line(values), "original", 95)[:, 0]
    assert np.all(rgb[2, 11:] == 1.0) and np.all(rgb[:2, 10] == 1.0)


def test_sparse_map_falls_back_to_the_maximum():
    values = np.zeros(1000)
    values[3] = 5.0  # 99th percentile of |v| is 0: scaling by it would divide by zero
    x = normalized(_line(values), "cold-hot", 99)[0]
    assert x[3] == 1.0 and np.count_nonzero(x) == 1


@pytest.mark.parametrize("bad", [0, -5, 100.5, np.nan])
def test_bad_percentile(bad):
    with pytest.raises(ValueError, match="clip percentile"):
        colorize(_line([1.0, 2.0]), "bwr", bad)


def test_lower_percentile_brightens_a_heavy_tailed_map():
    rng = np.random.default_rng(2)
    raw = rng.standard_cauchy(size=(3, 50, 50)) ** 3
    strong = [float((np.abs(normalized(raw, "cold-hot", p)) >= 0.25).mean()) for p in (100, 99.5, 95)]
    assert strong[0] < 0.005 <= strong[1] < strong[2]  # at P = 99.5, at least 0.5 % of the pixels are ≥ m


# ---- cold-hot: black centre, CIELAB lightness linear in |x| ---------------------------------------------------------


def _srgb_to_lightness(rgb):
    """L* of sRGB colours, written out literally: linearise, Y = the sRGB luminance row, L* = 116 f(Y) − 16."""
    out = []
    for r, g, b in rgb:
        lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
        f = y ** (1 / 3) if y > (6 / 29) ** 3 else y / (3 * (6 / 29) ** 2) + 4 / 29
        out.append(116 * f - 16)
    return np.array(out)


def test_lab_to_srgb_known_colours():
    lab = np.array([[100.0, 0, 0], [0.0, 0, 0], [53.2408, 80.0925, 67.2032], [32.2970, 79.1875, -107.8602]])
    np.testing.assert_allclose(lab_to_srgb(lab), [[1, 1, 1], [0, 0, 0], [1, 0, 0], [0, 0, 1]], atol=2e-3)


def test_cold_hot_lightness_is_linear_in_magnitude():
    x = np.linspace(-1, 1, 201)
    rgb = colorize(x[None, :], "cold-hot")[:, 0].T
    lightness = _srgb_to_lightness(rgb)
    np.testing.assert_allclose(lightness, 90 * np.abs(x), atol=1.0)
    assert np.all(rgb[100] == 0)  # black centre
    hot, cold = rgb[-1], rgb[0]
    assert hot[0] > hot[1] > hot[2] and cold[2] > cold[0] and cold[1] > cold[0]  # yellow-orange / cyan ends
    mid_hot = rgb[150]
    assert mid_hot[0] > 2 * mid_hot[1] and mid_hot[0] > 2 * mid_hot[2]  # red in between


# ---- overlay weighted by |x| -------------------------------------------------------------------------------------


def test_overlay_weight():
    h = np.ones((3, 1, 3))
    img = np.zeros((3, 1, 3))
    np.testing.assert_allclose(overlay(h, img, alpha=1.0, weight=np.array([[0.0, 0.5, 1.0]]))[0, 0], [0, 0.5, 1])
    with pytest.raises(ValueError, match="weight"):
        overlay(h, img, weight=np.ones((2, 2)))


@pytest.mark.parametrize("name", COLORMAPS)
def test_relevance_overlay_shows_the_photo_where_relevance_is_zero(name):
    rng = np.random.default_rng(3)
    photo = rng.uniform(size=(3, 4, 5))
    raw = np.zeros((3, 4, 5))
    raw[:, 0, 0], raw[:, 1, 1], raw[:, 2, 2] = 8.0, 2.0, -8.0
    out = relevance_overlay(raw, photo, name)
    untouched = np.ones((4, 5), bool)
    untouched[[0, 1, 2], [0, 1, 2]] = False
    if name == "original":
        untouched[2, 2] = True  # the original scales by the positive maximum only: x = −1 here, drawn blue
        np.testing.assert_allclose(out[:, 2, 2], [0, 0, 1])
    else:
        np.testing.assert_allclose(out[:, 2, 2], colorize(raw, name)[:, 2, 2])
    np.testing.assert_array_equal(out[:, untouched & (raw[0] == 0)], photo[:, untouched & (raw[0] == 0)])
    np.testing.assert_allclose(out[:, 0, 0], colorize(raw, name)[:, 0, 0])  # |x| = 1: opaque heat
    a = 0.25**OVERLAY_GAMMA  # x = 2/8
    np.testing.assert_allclose(out[:, 1, 1], a * colorize(raw, name)[:, 1, 1] + (1 - a) * photo[:, 1, 1])


# ---- the shipped demo reads well ----------------------------------------------------------------------------------


def test_shipped_demo_heatmaps_are_readable(tmp_path):
    """The README's first command: ≥ 3 % of every heatmap's pixels at ≥ 25 % of the colour scale, seen both in the
    values the map colours and in the PNG (black-centred map: a channel at ≥ 25 % of full brightness)."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from PIL import Image

    from lrp_cli.config import load_config

    config = load_config(ROOT / "configs/config_sequential.txt")
    assert config.heatmap_colormap == "cold-hot" and config.heatmap_clip_percentile < 100
    out = subprocess.run(
        [sys.executable, "-m", "lrp_cli", str(ROOT / "configs/config_sequential.txt"), str(ROOT / "testfilelist.txt"),
         str(ROOT), "--npy", "--quiet"],
        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    pngs = sorted((tmp_path / "lrp_output/someimages").glob("*_heatmap.png"))
    assert len(pngs) == 7
    for png in pngs:
        raw = np.load(str(png).replace("_heatmap.png", "_rawhm.npy"))
        x = normalized(raw, config.heatmap_colormap, config.heatmap_clip_percentile)
        assert (np.abs(x) >= 0.25).mean() >= 0.03, png.name
        pixels = np.asarray(Image.open(png).convert("RGB"))
        assert (pixels.max(axis=2) >= 0.25 * 255).mean() >= 0.03, png.name
        with_original = colorize(raw, "original", 100)  # what the same relevance looked like before
        assert (with_original.max(axis=0) >= 0.25).mean() < 0.01, png.name
