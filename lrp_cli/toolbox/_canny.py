"""The Canny edge detector exactly as scikit-image (0.19) computes it for float images with default arguments,
in numpy: the outline the toolbox draws over heatmaps.

1. Smoothing: separable Gaussian (radius int(4σ + 0.5), weights exp(−x²/2σ²) normalised), zero outside the image,
   divided by the equally smoothed all-ones image (+ machine epsilon).
2. Sobel gradients (mirror-symmetric border): i along rows, j along columns; magnitude hypot(i, j).
3. Non-maximum suppression with linear interpolation between the two neighbours along the gradient, in four
   sectors applied in a fixed order (a later sector overwrites an earlier one); the one-pixel border and zero
   magnitudes are never edges.
4. Hysteresis: maxima ≥ 0.1 that are 8-connected through maxima ≥ 0.1 to one ≥ 0.2.

Every 1-D filter sums its terms in scipy.ndimage's order (centre first, then the symmetric pairs from the
outermost in), so the result is bit-identical and ties in step 3 fall the same way.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import RenderError


def gaussian_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """The 1-D Gaussian kernel of radius int(truncate·σ + 0.5), normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return phi / phi.sum()


def correlate_symmetric(image: np.ndarray, weights: np.ndarray, axis: int, mode: str, antisymmetric=False):
    """1-D correlation along ``axis`` with a symmetric (or antisymmetric) odd kernel, in scipy.ndimage's order:
    out = x₀·w₀ + Σ_{k=r..1} (x₋ₖ ± xₖ)·w₋ₖ. mode 'constant' (zeros) or 'reflect' (d c b a | a b c d)."""
    r = len(weights) // 2
    moved = np.moveaxis(image, axis, -1)
    pad_mode = "constant" if mode == "constant" else "symmetric"
    padded = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(r, r)], mode=pad_mode)
    windows = sliding_window_view(padded, 2 * r + 1, axis=-1)  # [..., position, tap]
    left = windows[..., :r]  # taps −r … −1
    right = windows[..., r + 1 :][..., ::-1]  # taps +r … +1
    pairs = (left - right) if antisymmetric else (left + right)
    terms = np.concatenate([(windows[..., r] * weights[r])[None], np.moveaxis(pairs * weights[:r], -1, 0)])
    return np.moveaxis(np.add.reduce(terms, axis=0), -1, axis)  # axis-0 reduction: sequential, in term order


def gaussian_smooth(image: np.ndarray, sigma: float) -> np.ndarray:
    """scipy.ndimage.gaussian_filter(image, sigma, mode='constant', cval=0) for a 2-D float64 image."""
    weights = gaussian_weights(sigma)
    return correlate_symmetric(correlate_symmetric(image, weights, 0, "constant"), weights, 1, "constant")


def sobel(image: np.ndarray, axis: int) -> np.ndarray:
    """scipy.ndimage.sobel: derivative [−1, 0, 1] along ``axis``, smoothing [1, 2, 1] along the other (reflect)."""
    derivative = correlate_symmetric(image, np.array([-1.0, 0.0, 1.0]), axis, "reflect", antisymmetric=True)
    return correlate_symmetric(derivative, np.array([1.0, 2.0, 1.0]), 1 - axis, "reflect")


def _neighbour(padded: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """magnitude[y + dy, x + dx] for every pixel (from the magnitude padded by one zero pixel)."""
    h, w = padded.shape[0] - 2, padded.shape[1] - 2
    return padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]


def local_maxima(isobel, jsobel, magnitude) -> np.ndarray:
    """Non-maximum suppression (step 3): True where the magnitude is ≥ both interpolated neighbours."""
    abs_i, abs_j = np.abs(isobel), np.abs(jsobel)
    inner = np.zeros(magnitude.shape, bool)
    inner[1:-1, 1:-1] = True
    candidate = inner & (magnitude > 0)
    horizontal, vertical = candidate & (abs_i >= abs_j), candidate & (abs_i <= abs_j)
    up, down, right, left = isobel >= 0, isobel <= 0, jsobel >= 0, jsobel <= 0
    padded = np.pad(magnitude, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        w_j_over_i, w_i_over_j = abs_j / abs_i, abs_i / abs_j
    # (sector pixels, weight, (near, far) neighbour offsets on the plus side, the same on the minus side)
    sectors = [
        (((up & right) | (down & left)) & horizontal, w_j_over_i, ((1, 0), (1, 1)), ((-1, 0), (-1, -1))),
        (((up & right) | (down & left)) & vertical, w_i_over_j, ((0, 1), (1, 1)), ((0, -1), (-1, -1))),
        (((down & right) | (up & left)) & vertical, w_i_over_j, ((0, 1), (-1, 1)), ((0, -1), (1, -1))),
        (((down & right) | (up & left)) & horizontal, w_j_over_i, ((-1, 0), (-1, 1)), ((1, 0), (1, -1))),
    ]
    maxima = np.zeros(magnitude.shape, bool)
    for pixels, w, plus, minus in sectors:  # four sectors in the original's order (later ones overwrite)
        with np.errstate(invalid="ignore"):
            c_plus = _neighbour(padded, *plus[1]) * w + _neighbour(padded, *plus[0]) * (1 - w) <= magnitude
            c_minus = _neighbour(padded, *minus[1]) * w + _neighbour(padded, *minus[0]) * (1 - w) <= magnitude
        maxima = np.where(pixels, c_plus & c_minus, maxima)
    return maxima


def connected_to(seeds: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of ``allowed`` 8-connected within ``allowed`` to a seed: grown one ring per step until stable
    (a loop over growth steps, at most the length of the longest edge)."""
    reached = seeds & allowed
    while True:
        padded = np.pad(reached, 1)
        rows = padded[:-2] | padded[1:-1] | padded[2:]  # 3×3 dilation, separably: along rows, then columns
        grown = (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]) & allowed
        if np.array_equal(grown, reached):
            return reached
        reached = grown


def canny(image, sigma=1.0, low_threshold=0.1, high_threshold=0.2) -> np.ndarray:
    """Boolean edge map of a 2-D image (scikit-image's canny with its defaults for float images)."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise RenderError(f"canny: needs a 2-D image, got shape {image.shape}")
    bleed_over = gaussian_smooth(np.ones(image.shape), sigma) + np.finfo(float).eps
    smoothed = gaussian_smooth(image, sigma) / bleed_over
    jsobel, isobel = sobel(smoothed, 1), sobel(smoothed, 0)
    magnitude = np.hypot(isobel, jsobel)
    maxima = local_maxima(isobel, jsobel, magnitude)
    return connected_to(maxima & (magnitude >= high_threshold), maxima & (magnitude >= low_threshold))
