"""Heatmap colouring: the original's map (clipped), the other colour maps, overlay, 8-bit rounding."""

import numpy as np
import pytest
from conftest import REFERENCE

from lrp_cli.render import COLORMAPS, colorize, heatmap_values, overlay, to_uint8

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
