"""Turning a raw heatmap into colours (spec §7.4, decisions.md: clipped to [0, 1]).

Every function works on channel-first float arrays: a raw heatmap is ``(C, H, W)`` (R, G, B for
the demonstrator), a colour image is ``(3, H, W)`` with values in [0, 1].  Quantisation to 8 bits
(:func:`to_uint8`) rounds; it is what :func:`lrp_cli.outputs.write_png` uses.

Normalisation.  A map sees ``x = v / m`` clipped to [−1, 1], where ``v`` is the per-pixel relevance
(:func:`heatmap_values`) and ``m`` the scale: the P-th percentile of |v| (``clip_percentile``), so the
few pixels above it saturate instead of crushing everything else to black.  P = 100 is the largest
value, i.e. the original behaviour.  The ``original`` map keeps the demonstrator's asymmetric scale:
the P-th percentile of max(v, 0) (at 100 the largest positive value, as the C++ code); the other maps
are symmetric around zero.  LRP heatmaps are heavy-tailed, so P = 99.5 reads far better (README).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "COLORMAPS",
    "DEFAULT_CLIP_PERCENTILE",
    "DEFAULT_COLORMAP",
    "colorize",
    "heatmap_values",
    "normalized",
    "overlay",
    "relevance_overlay",
    "to_uint8",
]

DEFAULT_COLORMAP = "original"
DEFAULT_CLIP_PERCENTILE = 100.0


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


def _check_percentile(percentile: float) -> float:
    p = float(percentile)
    if not 0.0 < p <= 100.0:
        raise ValueError(f"clip percentile must be in (0, 100], got {percentile}")
    return p


def _scale(magnitude: np.ndarray, percentile: float) -> float:
    """The P-th percentile of ``magnitude`` (≥ 0); its maximum when P = 100 or when the percentile is 0
    (a map with fewer non-zero pixels than 100 − P percent must not divide by zero)."""
    if magnitude.size == 0:
        return 0.0
    top = float(magnitude.max())
    if percentile >= 100.0:
        return top
    m = float(np.percentile(magnitude, percentile))
    return m if m > 0.0 else top


def normalized(rawhm: np.ndarray, colormap: str = DEFAULT_COLORMAP,
               clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """``x = v / m`` clipped to [−1, 1], ``(H, W)``: what ``colormap`` colours (see the module docstring
    for ``m``); all zeros when there is nothing to scale by.  Non-finite values count as zero."""
    _lookup(colormap)
    v = _finite(heatmap_values(rawhm))
    p = _check_percentile(clip_percentile)
    m = _scale(np.maximum(v, 0.0) if colormap == "original" else np.abs(v), p)
    if m <= 0.0:
        return np.zeros_like(v)
    return np.clip(v / m, -1.0, 1.0)


def _original(x: np.ndarray) -> np.ndarray:
    """Black→yellow for x ≥ 0, black→blue for x < 0 (the demonstrator's map)."""
    pos = np.maximum(x, 0.0)
    return np.stack([pos, pos, np.maximum(-x, 0.0)])


def _bwr(x: np.ndarray) -> np.ndarray:
    """Diverging blue (−1) – white (0) – red (+1), linear like matplotlib's ``bwr``."""
    neg = np.minimum(x, 0.0)
    pos = np.maximum(x, 0.0)
    return np.stack([1.0 + neg, 1.0 - np.abs(x), 1.0 - pos])


def _black_firered(x: np.ndarray) -> np.ndarray:
    """The toolbox's apply_heatmap ``black-firered`` map (spec §11.4): fire for +, ice for −."""
    r = np.clip(x, 0, 0.25) / 0.25 + np.clip(-x - 0.5, 0, 0.5) / 0.5
    g = np.clip(x - 0.25, 0, 0.25) / 0.25 + np.clip(-x - 0.25, 0, 0.25) / 0.25
    b = np.clip(x - 0.5, 0, 0.5) / 0.5 + np.clip(-x, 0, 0.25) / 0.25
    return np.stack([r, g, b])


def _gray(x: np.ndarray) -> np.ndarray:
    """Signed grey scale: (x + 1) / 2, so zero is mid-grey, + is lighter, − darker."""
    g = (x + 1.0) / 2.0
    return np.stack([g, g, g])


# -- cold-hot: a diverging map with a black centre whose CIELAB lightness grows linearly with |x| -------------------
_D65_WHITE = np.array([0.95047, 1.0, 1.08883])
_XYZ_TO_LINEAR_SRGB = np.array(
    [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
)


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """CIELAB (D65) ``(..., 3)`` → gamma-encoded sRGB ``(..., 3)``, unclipped (outside [0, 1] = out of gamut).

    L → f_y = (L + 16)/116, f_x = f_y + a/500, f_z = f_y − b/200; f⁻¹(t) = t³ above 6/29, else 3(6/29)²(t − 4/29);
    XYZ = white · f⁻¹(f); linear RGB = M · XYZ; sRGB = 12.92 c below 0.0031308, else 1.055 c^(1/2.4) − 0.055.
    """
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16.0) / 116.0
    f = np.stack([fy + lab[..., 1] / 500.0, fy, fy - lab[..., 2] / 200.0], axis=-1)
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f**3, 3 * delta**2 * (f - 4.0 / 29.0)) * _D65_WHITE
    linear = xyz @ _XYZ_TO_LINEAR_SRGB.T
    magnitude = np.abs(linear)
    encoded = np.where(magnitude <= 0.0031308, 12.92 * magnitude, 1.055 * magnitude ** (1 / 2.4) - 0.055)
    return np.sign(linear) * encoded


def _lightness_ramp(lightness_end: float, hues: list[tuple[float, float]], chroma: list[tuple[float, float]],
                    size: int = 256) -> np.ndarray:
    """``(size, 3)`` sRGB table: L* = lightness_end · t for t = 0…1, hue (degrees) and chroma piecewise linear in t
    through the (t, value) knots; where a colour is outside sRGB its chroma shrinks until it fits (L* kept)."""
    t = np.linspace(0.0, 1.0, size)
    lightness = lightness_end * t
    hue = np.deg2rad(np.interp(t, *zip(*hues, strict=True)))
    wanted = np.interp(t, *zip(*chroma, strict=True))
    shrink = np.linspace(1.0, 0.0, 101)[:, None]  # try 100 %, 99 %, ... of the chroma; 0 % is grey, always inside
    c = wanted[None, :] * shrink
    lab = np.stack([np.broadcast_to(lightness, c.shape), c * np.cos(hue), c * np.sin(hue)], axis=-1)
    rgb = lab_to_srgb(lab)
    inside = np.all((rgb >= -1e-9) & (rgb <= 1 + 1e-9), axis=-1)
    first = np.argmax(inside, axis=0)  # the largest chroma that fits
    return np.clip(rgb[first, np.arange(size)], 0.0, 1.0)


# + : black → dark red → orange → yellow; − : black → blue → sky blue → cyan.  Both end at L* = 90.
_HOT = _lightness_ramp(90.0, [(0.0, 30.0), (0.55, 40.0), (1.0, 95.0)], [(0.0, 0.0), (0.35, 75.0), (1.0, 90.0)])
_COLD = _lightness_ramp(90.0, [(0.0, 290.0), (0.4, 285.0), (1.0, 205.0)], [(0.0, 0.0), (0.35, 75.0), (1.0, 45.0)])


def _cold_hot(x: np.ndarray) -> np.ndarray:
    """Black at 0; + through red to yellow, − through blue to cyan; lightness L* = 90·|x| on both sides."""
    index = np.rint(np.abs(x) * (len(_HOT) - 1)).astype(np.intp)
    rgb = np.where((x >= 0)[..., None], _HOT[index], _COLD[index])
    return np.moveaxis(rgb, -1, 0)


_MAPS = {
    "original": _original,
    "bwr": _bwr,
    "black-firered": _black_firered,
    "gray": _gray,
    "cold-hot": _cold_hot,
}
COLORMAPS: tuple[str, ...] = tuple(_MAPS)


def _lookup(colormap: str):
    try:
        return _MAPS[colormap]
    except KeyError:
        raise ValueError(f"unknown colormap {colormap!r} (choose from {', '.join(COLORMAPS)})") from None


def colorize(rawhm: np.ndarray, colormap: str = DEFAULT_COLORMAP,
             clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """Colour a raw heatmap ``(C, H, W)`` (or a ready ``(H, W)`` value map) into ``(3, H, W)`` in [0, 1].

    ``original`` is the demonstrator's map (§7.4) with the negative side clipped at 1 instead of
    wrapping.  Non-finite values are drawn as zero relevance.  See :func:`normalized` for the scale.
    """
    fn = _lookup(colormap)
    return np.clip(fn(normalized(rawhm, colormap, clip_percentile)), 0.0, 1.0)


def overlay(heatmap_rgb: np.ndarray, image_rgb: np.ndarray, alpha: float = 0.5,
            weight: np.ndarray | None = None) -> np.ndarray:
    """Blend a coloured heatmap over the input crop: ``a·heatmap + (1−a)·image``, clipped to [0, 1], with
    ``a = alpha`` or, given an ``(H, W)`` ``weight`` in [0, 1], ``a = alpha·weight`` per pixel."""
    h = np.asarray(heatmap_rgb, dtype=np.float64)
    img = np.asarray(image_rgb, dtype=np.float64)
    if h.shape != img.shape:
        raise ValueError(f"overlay needs equal shapes, got heatmap {h.shape} and image {img.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
    a = np.float64(alpha)
    if weight is not None:
        w = np.asarray(weight, dtype=np.float64)
        if w.shape != h.shape[1:]:
            raise ValueError(f"overlay weight must be {h.shape[1:]}, got {w.shape}")
        a = alpha * np.clip(w, 0.0, 1.0)
    return np.clip(a * h + (1.0 - a) * img, 0.0, 1.0)


#: The heat's opacity in :func:`relevance_overlay` is |x|^γ.  γ = 1: at γ = 0.5 the weak, dark end of the
#: black-centred maps already dims the photo (SqueezeNet's stride-2 first layer leaves a faint grid everywhere).
OVERLAY_GAMMA = 1.0


def relevance_overlay(rawhm: np.ndarray, image_rgb: np.ndarray, colormap: str = DEFAULT_COLORMAP,
                      clip_percentile: float = DEFAULT_CLIP_PERCENTILE) -> np.ndarray:
    """The heatmap over the photo, opaque where |x| = 1 and transparent where x = 0: ``a = |x|^γ``
    (γ = :data:`OVERLAY_GAMMA`), ``a·colour + (1−a)·photo``; ``(3, H, W)`` in [0, 1]."""
    x = normalized(rawhm, colormap, clip_percentile)
    colours = np.clip(_lookup(colormap)(x), 0.0, 1.0)
    return overlay(colours, image_rgb, alpha=1.0, weight=np.abs(x) ** OVERLAY_GAMMA)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """``(3, H, W)`` floats in [0, 1] → ``(H, W, 3)`` uint8, clipped and rounded half up; NaN → 0."""
    a = np.asarray(rgb, dtype=np.float64)
    if a.ndim != 3 or a.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {a.shape}")
    a = np.clip(np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    return np.floor(a * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0).copy()
