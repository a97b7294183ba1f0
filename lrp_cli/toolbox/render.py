"""Draw digits and heatmaps as RGB images (toolbox python/render.py), pixel for pixel as the original.

The original coloured with matplotlib's colour maps and drew the outline with scikit-image's canny; both are
reproduced here in numpy (:mod:`._colormaps`, :mod:`._canny`), so neither is needed. Colour maps other than the
built-in ones (binary, gray, jet, bwr, seismic, hot and the toolbox's own) are taken from matplotlib when it is
installed (``pip install 'lrp_cli[colormaps]'``).
"""

from __future__ import annotations

import os

import numpy as np

from ._canny import canny
from ._colormaps import colormap
from .errors import RenderError


def vec2im(V, shape=()) -> np.ndarray:
    """V reshaped (C order) to ``shape``, or to a square when shape has fewer than 2 entries."""
    V = np.asarray(V)
    if len(shape) < 2:
        side = int(np.sqrt(V.size))
        if side * side != V.size:
            raise RenderError(f"vec2im: {V.size} values are not a square image; give shape=(H, W)")
        shape = (side, side)
    try:
        return np.reshape(V, shape)
    except ValueError:
        raise RenderError(f"vec2im: {V.size} values do not fit the shape {tuple(shape)}") from None


def enlarge_image(img, scaling=3) -> np.ndarray:
    """Each pixel of an H×W or H×W×D image replicated into a scaling×scaling block (float64)."""
    img = np.asarray(img, dtype=np.float64)
    if not isinstance(scaling, (int, np.integer)) or scaling < 1:
        raise RenderError(f"enlarge_image: scaling must be an integer >= 1, got {scaling!r}")
    if img.ndim not in (2, 3):
        raise RenderError(f"enlarge_image: needs an H x W or H x W x D image, got shape {img.shape}")
    return np.repeat(np.repeat(img, scaling, axis=0), scaling, axis=1)


def repaint_corner_pixels(rgbimg, scaling=3) -> np.ndarray:
    """(Obsolete in the original too.) Paints the top-left and bottom-right scaling² blocks, in place, with the mean
    of three neighbouring pixels."""
    s = scaling
    rgbimg[0:s, 0:s, :] = (rgbimg[0, s, :] + rgbimg[s, 0, :] + rgbimg[s, s, :]) / 3.0
    rgbimg[-s:, -s:, :] = (rgbimg[-1, -1 - s, :] + rgbimg[-1 - s, -1, :] + rgbimg[-1 - s, -1 - s, :]) / 3.0
    return rgbimg


def digit_to_rgb(X, scaling=3, shape=(), cmap="binary") -> np.ndarray:
    """X → vec2im → enlarge_image → the colour map on the raw values (no normalisation): H·s × W·s × 3.

    Values should lie in [0, 1]; below 0 get the map's first colour, above 1 its last."""
    image = enlarge_image(vec2im(X, shape), scaling)
    return colormap(cmap)(image)


def hm_to_rgb(R, X=None, scaling=3, shape=(), sigma=2, cmap="jet", normalize=True) -> np.ndarray:
    """The heatmap R as an RGB image (H·s × W·s × 3), with the canny outline of X drawn in black.

    With a matplotlib-style map and ``normalize``: R / max|R| mapped from [−1, 1] to [0, 1], so 0 is the map's
    middle (an all-zero R gives NaN → black, as the original). A toolbox map (``custom_maps``) colours R itself
    and ignores ``normalize``. The outline: canny(sigma) on X after the same vec2im/enlarge_image, so sigma is in
    enlarged pixels; X of another shape than R raises (the original printed a message and drew no outline).
    """
    R = enlarge_image(vec2im(R, shape), scaling)
    if cmap in custom_maps:
        rgb = custom_maps[cmap](R)
    else:
        lookup = colormap(cmap)
        if normalize:
            with np.errstate(divide="ignore", invalid="ignore"):
                R = R / np.max(np.abs(R))
            R = (R + 1.0) / 2.0
        rgb = lookup(R)
    if X is not None:
        X = enlarge_image(vec2im(X, shape), scaling)
        if X.shape != R.shape:
            raise RenderError(f"hm_to_rgb: the outline image X is {X.shape} after scaling, the heatmap {R.shape}")
        rgb = rgb * (~canny(X, sigma=sigma))[:, :, None]
    return rgb


def save_image(rgb_images, path, gap=2) -> np.ndarray:
    """The images side by side with black bands ``gap`` pixels wide, as uint8 (×255, truncated), written to
    ``path`` (format from the extension) and returned. The caller's arrays are not modified."""
    from PIL import Image

    images = [np.asarray(img, dtype=np.float64) for img in rgb_images]
    if not images:
        raise RenderError(f"{path}: no images to save")
    height, depth = images[0].shape[0], images[0].shape[2]
    parts = [images[0]]
    for i, img in enumerate(images[1:], start=1):
        if img.ndim != 3 or img.shape[0] != height or img.shape[2] != depth:
            raise RenderError(f"{path}: image {i} is {img.shape}, the first {images[0].shape}: heights must agree")
        parts += [np.zeros((height, gap, depth)), img]
    image = (np.hstack(parts) * 255).astype(np.uint8)
    try:
        Image.fromarray(image.squeeze(axis=2) if depth == 1 else image).save(os.fspath(path))
    except (OSError, ValueError, KeyError) as err:
        raise RenderError(f"{path}: cannot write the image ({err})") from None
    return image


# ---------------------------------------------------------------- the toolbox's own colour maps
def gregoire_gray_red(R):
    """Grey 0.8 plus t = clip(R / max(R), −1, 1): negatives add (0.8t, 0.8t, −0.2t), the rest (0.2t, −0.8t, −0.8t).
    (max(R), not max|R|, as the original.)"""
    base = 0.8
    t = np.clip(R / np.max(R), -1.0, 1.0)
    negative = (R < 0)[..., None]
    toward = np.where(negative, np.array([base, base, -(1 - base)]), np.array([1 - base, -base, -base]))
    return base + t[..., None] * toward


def gregoire_black_green(R):
    """Negatives blue −R/max(R), the rest green R/max(R)."""
    top = np.max(R)
    rgb = np.zeros(R.shape + (3,))
    rgb[..., 2] = np.where(R < 0, -R / top, 0.0)
    rgb[..., 1] = np.where(R >= 0, R / top, 0.0)
    return rgb


def gregoire_black_firered(R):
    """x = R / max|R|: black → red → yellow → white for x > 0, black → blue → cyan → white for x < 0."""
    x = R / np.max(np.abs(R))
    red = np.clip(x, 0, 0.25) / 0.25 + np.clip(-x - 0.5, 0, 0.5) / 0.5
    green = np.clip(x - 0.25, 0, 0.25) / 0.25 + np.clip(-x - 0.25, 0, 0.25) / 0.25
    blue = np.clip(x - 0.5, 0, 0.5) / 0.5 + np.clip(-x, 0, 0.25) / 0.25
    return np.stack([red, green, blue], axis=2)


def gregoire_gray_red2(R):
    """Values above 10·var(R) and all negatives set to 0, divided by the max, then a grey → red ramp.
    (Modifies R in place, as the original.)"""
    v = np.var(R)
    R[R > 10 * v] = 0
    R[R < 0] = 0
    x = R / np.max(R)
    green_blue_pos = 0.9 - np.clip(x, 0, 0.3) / 0.3 * 0.5 - np.clip(x - 0.3, 0, 0.7) / 0.7 * 0.4
    red_green_neg = 0.9 - np.clip(-x, 0, 0.3) / 0.3 * 0.5 - np.clip(-x - 0.3, 0, 0.7) / 0.7 * 0.4
    red = np.where(x >= 0, 0.9 - np.clip(x - 0.3, 0, 0.7) / 0.7 * 0.5, red_green_neg)
    green = np.where(x >= 0, green_blue_pos, red_green_neg)
    blue = np.where(x >= 0, green_blue_pos, 0.9 - np.clip(-x - 0.3, 0, 0.7) / 0.7 * 0.5)
    return np.stack([red, green, blue], axis=2)


def alex_black_yellow(R):
    """Negatives blue −R/max(R), the rest yellow (red = green = R/max(R))."""
    top = np.max(R)
    rgb = np.zeros(R.shape + (3,))
    rgb[..., 2] = np.where(R < 0, -R / top, 0.0)
    rgb[..., 0] = rgb[..., 1] = np.where(R >= 0, R / top, 0.0)
    return rgb


custom_maps = {
    "gray-red": gregoire_gray_red,
    "gray-red2": gregoire_gray_red2,
    "black-green": gregoire_black_green,
    "black-firered": gregoire_black_firered,
    "blue-black-yellow": alex_black_yellow,
}
