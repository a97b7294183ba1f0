"""Turning a raw heatmap into colours (spec §7.4, decisions.md: clipped to [0, 1]).

Every function works on channel-first float arrays: a raw heatmap is ``(C, H, W)`` (R, G, B for
the demonstrator), a colour image is ``(3, H, W)`` with values in [0, 1].  Quantisation to 8 bits
(:func:`to_uint8`) rounds; it is what :func:`lrp_cli.outputs.write_png` uses.
"""

from __future__ import annotations

import numpy as np

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "colorize", "heatmap_values", "overlay", "to_uint8"]

DEFAULT_COLORMAP = "original"


def heatmap_values(rawhm: np.ndarray) -> np.ndarray:
    """Per-pixel relevance ``v``: the mean over the channels, in float64 (summed in channel order)."""
    a = np.asarray(rawhm, dtype=np.float64)
    if a.ndim == 2:
        return a.copy()
    if a.ndim != 3 or a.shape[0] < 1:
        raise ValueError(f"raw heatmap must be (C, H, W) or (H, W), got shape {a.shape}")
    total = a[0].copy()
    for ch in a[1:]:
        total += ch
    return total / a.shape[0]


def _finite(v: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(v), v, 0.0)


def _max_abs(v: np.ndarray) -> float:
    m = float(np.max(np.abs(v))) if v.size else 0.0
    return m


def _original(v: np.ndarray) -> np.ndarray:
    """Black→yellow for v ≥ 0, black→blue for v < 0, both divided by the largest *positive* v."""
    v = _finite(v)
    out = np.zeros((3,) + v.shape)
    m = max(0.0, float(v.max())) if v.size else 0.0
    if m <= 0.0:
        return out
    pos = np.where(v >= 0, v / m, 0.0)
    out[0] = pos
    out[1] = pos
    out[2] = np.where(v < 0, -v / m, 0.0)
    return np.clip(out, 0.0, 1.0)


def _signed_unit(v: np.ndarray) -> np.ndarray:
    """v / max|v| in [-1, 1]; all zeros when the heatmap is zero."""
    v = _finite(v)
    m = _max_abs(v)
    return v / m if m > 0 else np.zeros_like(v)


def _bwr(v: np.ndarray) -> np.ndarray:
    """Diverging blue (−max|v|) – white (0) – red (+max|v|), linear like matplotlib's ``bwr``."""
    x = _signed_unit(v)
    neg = np.minimum(x, 0.0)
    pos = np.maximum(x, 0.0)
    return np.clip(np.stack([1.0 + neg, 1.0 - np.abs(x), 1.0 - pos]), 0.0, 1.0)


def _black_firered(v: np.ndarray) -> np.ndarray:
    """The toolbox's apply_heatmap ``black-firered`` map (spec §11.4): fire for +, ice for −."""
    x = _signed_unit(v)
    r = np.clip(x, 0, 0.25) / 0.25 + np.clip(-x - 0.5, 0, 0.5) / 0.5
    g = np.clip(x - 0.25, 0, 0.25) / 0.25 + np.clip(-x - 0.25, 0, 0.25) / 0.25
    b = np.clip(x - 0.5, 0, 0.5) / 0.5 + np.clip(-x, 0, 0.25) / 0.25
    return np.clip(np.stack([r, g, b]), 0.0, 1.0)


def _gray(v: np.ndarray) -> np.ndarray:
    """Signed grey scale: (v / max|v| + 1) / 2, so zero is mid-grey, + is lighter, − darker."""
    x = (_signed_unit(v) + 1.0) / 2.0
    return np.clip(np.stack([x, x, x]), 0.0, 1.0)


_MAPS = {
    "original": _original,
    "bwr": _bwr,
    "black-firered": _black_firered,
    "gray": _gray,
}
COLORMAPS: tuple[str, ...] = tuple(_MAPS)


def colorize(rawhm: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Colour a raw heatmap ``(C, H, W)`` (or a ready ``(H, W)`` value map) into ``(3, H, W)`` in [0, 1].

    ``original`` is the demonstrator's map (§7.4) with the negative side clipped at 1 instead of
    wrapping; the others normalise by max|v|.  Non-finite values are drawn as zero relevance.
    """
    try:
        fn = _MAPS[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r} (choose from {', '.join(COLORMAPS)})") from None
    return fn(heatmap_values(rawhm))


def overlay(heatmap_rgb: np.ndarray, image_rgb: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a coloured heatmap over the input crop: ``alpha·heatmap + (1−alpha)·image``, clipped to [0, 1]."""
    h = np.asarray(heatmap_rgb, dtype=np.float64)
    img = np.asarray(image_rgb, dtype=np.float64)
    if h.shape != img.shape:
        raise ValueError(f"overlay needs equal shapes, got heatmap {h.shape} and image {img.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    return np.clip(alpha * h + (1.0 - alpha) * img, 0.0, 1.0)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` floats in [0, 1] → ``(H, W, 3)`` uint8, clipped and rounded half up; NaN → 0."""
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {a.shape}")
    a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.floor(a * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0).copy()
