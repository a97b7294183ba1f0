"""Pixel-flipping by region perturbation (Samek et al. 2017, "Evaluating the visualization of what a deep neural
network has learned"), independent of the engine that computes scores and relevance.

An image x (C×H×W) is cut into a grid of ``region``×``region`` tiles (the last row and column may be narrower).  A
relevance map (H×W) ranks the tiles by their summed relevance, most relevant first (MoRF).  Step k replaces the k
most relevant tiles by ``fill`` (x⁽⁰⁾ = x, x⁽ᵏ⁾ = x with tiles r₁…r_k replaced), and the class score f is recorded:
the curve f(x⁽⁰⁾), …, f(x⁽ᴸ⁾).  The area over the perturbation curve is

    AOPC = 1/(L+1) · Σ_{k=0..L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)),

per image; its mean over images compares explanation methods (higher: the ranking found what the score depends on).

Choices (the paper's): 9×9 regions, L = 100 steps, and the replacement g draws every pixel of a removed region from
a uniform distribution over the valid input range (for a mean-subtracted Caffe blob: U(−mean, 255 − mean) per
channel value).  ``mean`` replacement (the training mean, i.e. 0 in the blob) is offered as an alternative.  Tiles
form a fixed grid rather than windows around each ranked pixel, so no pixel is removed twice and every step removes
the same area.  The same fill is used for every method of an image, so the methods differ only in their ranking.

Random relevance (i.i.d. uniform per pixel, so a uniformly random order of the tiles) is the baseline every
ranking must beat.

Everything is batched: rankings are vectorised over images, perturbed images are built for many (image, step)
pairs at once, and ``scores`` is called on batches of ``batch_size`` images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "REGION",
    "STEPS",
    "Curves",
    "aopc",
    "class_mask",
    "evaluate_methods",
    "plot_curves",
    "mean_fill",
    "perturbation_curves",
    "random_relevance",
    "region_order",
    "region_ranks",
    "region_sums",
    "uniform_fill",
    "write_csv",
]

#: The paper's region size and number of perturbation steps.
REGION = 9
STEPS = 100

Scores = Callable[[np.ndarray], np.ndarray]  # N×C×H×W images → N×K class scores


def region_sums(relevance: np.ndarray, region: int = REGION) -> np.ndarray:
    """N×H×W relevance → N×(rows·cols) sums over the tiles of a ``region`` grid (row-major; edge tiles narrower)."""
    r = np.asarray(relevance, dtype=np.float64)
    n, h, w = r.shape
    rows, cols = -(-h // region), -(-w // region)
    padded = np.zeros((n, rows * region, cols * region))
    padded[:, :h, :w] = r
    return padded.reshape(n, rows, region, cols, region).sum(axis=(2, 4)).reshape(n, rows * cols)


def region_order(relevance: np.ndarray, region: int = REGION) -> np.ndarray:
    """N×H×W relevance → N×R tile indices, most relevant first (ties keep row-major order)."""
    return np.argsort(-region_sums(relevance, region), axis=1, kind="stable")


def region_ranks(order: np.ndarray, shape_hw: tuple[int, int], region: int = REGION) -> np.ndarray:
    """N×R tile order → N×H×W int32: the step at which each pixel's tile is removed (0 = first)."""
    n, count = order.shape
    h, w = shape_hw
    cols = -(-w // region)
    rank_of_tile = np.empty_like(order)
    rank_of_tile[np.arange(n)[:, None], order] = np.arange(count)[None, :]
    tile = (np.arange(h)[:, None] // region) * cols + (np.arange(w)[None, :] // region)  # H×W tile index
    return rank_of_tile[:, tile].astype(np.int32)


def uniform_fill(low: np.ndarray, high: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """N×C×H×W values drawn independently and uniformly from [low, high) (arrays of that shape), image n from
    ``rngs[n]``; float32."""
    low = np.asarray(low, dtype=np.float64)
    draws = np.stack([rng.random(low.shape[1:]) for rng in rngs])
    return (low + draws * (np.asarray(high, dtype=np.float64) - low)).astype(np.float32)


def mean_fill(shape: tuple[int, ...]) -> np.ndarray:
    """The training mean in a mean-subtracted blob: zeros of ``shape``."""
    return np.zeros(shape, dtype=np.float32)


def random_relevance(shape_hw: tuple[int, int], rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """N×H×W i.i.d. U(0, 1) relevance, image n drawn from ``rngs[n]``: a uniformly random tile order, the baseline."""
    return np.stack([rng.random(shape_hw) for rng in rngs])


def class_mask(classes: Sequence[Sequence[int]], count: int) -> np.ndarray:
    """N×K 0/1 matrix: row n selects the explained classes of image n (f = the sum of their scores)."""
    mask = np.zeros((len(classes), count))
    for n, chosen in enumerate(classes):
        mask[n, list(chosen)] = 1.0
    return mask


def perturbation_curves(
    scores: Scores,
    images: np.ndarray,
    relevance: np.ndarray,
    classes: Sequence[Sequence[int]],
    fill: np.ndarray,
    steps: int = STEPS,
    region: int = REGION,
    batch_size: int = 32,
) -> np.ndarray:
    """N×(steps+1) scores f(x⁽ᵏ⁾), k = 0…steps, of the MoRF perturbation ranked by ``relevance`` (N×H×W).

    images, fill: N×C×H×W; classes: the explained classes per image (kept fixed while perturbing).  Steps beyond
    the number of tiles repeat the fully perturbed image.  ``scores`` sees at most ``batch_size`` images at a time.
    """
    images = np.asarray(images, dtype=np.float32)
    n, _, h, w = images.shape
    ranks = region_ranks(region_order(relevance, region), (h, w), region)
    pairs_n, pairs_k = np.divmod(np.arange(n * (steps + 1)), steps + 1)  # (image, step), image-major
    out = np.empty(n * (steps + 1))
    mask = None
    for start in range(0, len(pairs_n), batch_size):
        idx_n, idx_k = pairs_n[start : start + batch_size], pairs_k[start : start + batch_size]
        removed = ranks[idx_n] < idx_k[:, None, None]  # B×H×W: tiles of rank < k are gone at step k
        batch = np.where(removed[:, None], fill[idx_n], images[idx_n])
        values = np.asarray(scores(batch), dtype=np.float64)
        if mask is None:
            mask = class_mask(classes, values.shape[1])
        out[start : start + len(idx_n)] = np.einsum("bk,bk->b", values, mask[idx_n])
    return out.reshape(n, steps + 1)


def aopc(curves: np.ndarray) -> np.ndarray:
    """N×(L+1) score curves → N AOPC values: mean over k = 0…L of f(x⁽⁰⁾) − f(x⁽ᵏ⁾)."""
    curves = np.asarray(curves, dtype=np.float64)
    return (curves[:, :1] - curves).mean(axis=1)


@dataclass(frozen=True)
class Curves:
    """One method's result on N images: ``scores`` N×(L+1), ``aopc`` N; ``label`` names the method."""

    label: str
    scores: np.ndarray
    aopc: np.ndarray

    @property
    def mean_scores(self) -> np.ndarray:
        return self.scores.mean(axis=0)

    @property
    def mean_aopc(self) -> float:
        return float(self.aopc.mean())

    @staticmethod
    def concatenate(parts: Sequence[Curves]) -> Curves:
        """The results of consecutive chunks of images of one method, as one."""
        scores = np.concatenate([p.scores for p in parts])
        return Curves(parts[0].label, scores, np.concatenate([p.aopc for p in parts]))


def evaluate_methods(
    scores: Scores,
    images: np.ndarray,
    relevances: dict[str, np.ndarray],
    classes: Sequence[Sequence[int]],
    fill: np.ndarray,
    rngs: Sequence[np.random.Generator],
    steps: int = STEPS,
    region: int = REGION,
    batch_size: int = 32,
    random_repeats: int = 1,
) -> list[Curves]:
    """Curves and AOPC of every relevance method (label → N×H×W maps), then of ``random_repeats`` random rankings
    (image n's drawn from ``rngs[n]``) averaged into one ``random`` baseline; all with the same ``fill``."""
    results = []
    for label, relevance in relevances.items():
        curves = perturbation_curves(scores, images, relevance, classes, fill, steps, region, batch_size)
        results.append(Curves(label, curves, aopc(curves)))
    runs = [
        perturbation_curves(scores, images, random_relevance(images.shape[2:], rngs), classes, fill, steps, region,
                            batch_size)
        for _ in range(random_repeats)
    ]
    curves = np.mean(runs, axis=0)
    results.append(Curves("random", curves, aopc(curves)))
    return results


# -- outputs ----------------------------------------------------------------------------------------------------------
def write_csv(path: str, results: Sequence[Curves], images: Sequence[str], classes: Sequence[Sequence[int]]) -> None:
    """``method,image,classes,aopc,f0,…,fL``: one row per (method, image), then the method's mean over the images
    in a row whose image and classes are empty; ``classes`` space-separated, numbers with 8 significant digits.
    Written atomically."""
    import csv
    import io

    from .outputs import atomic_open

    steps = results[0].scores.shape[1] - 1 if results else 0
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["method", "image", "classes", "aopc", *(f"f{k}" for k in range(steps + 1))])
    for result in results:
        for name, chosen, value, curve in zip(images, classes, result.aopc, result.scores, strict=True):
            cells = [f"{value:.8g}", *(f"{s:.8g}" for s in curve)]
            writer.writerow([result.label, name, " ".join(map(str, chosen)), *cells])
        writer.writerow([result.label, "", "", f"{result.mean_aopc:.8g}", *(f"{s:.8g}" for s in result.mean_scores)])
    with atomic_open(path) as f:
        f.write(text.getvalue().encode("utf-8"))


#: Line colours of the plot (methods in order); the random baseline is drawn in grey.
_PALETTE = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values covering [low, high]: a step of 1, 2 or 5 × 10^k giving about ``count`` ticks."""
    span = high - low if high > low else 1.0
    raw = span / count
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = np.ceil(low / step) * step
    return [float(v) for v in np.arange(first, high + step * 1e-9, step)]


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def plot_curves(path: str, results: Sequence[Curves], title: str, region: int = REGION) -> None:
    """A PNG (drawn with Pillow) of every method's mean score curve over the steps, AOPC in the legend.

    Longer than 60 lines: it is one flat sequence of drawing steps (frame, ticks, curves, legend)."""
    from PIL import Image, ImageDraw

    from .outputs import atomic_open

    width, height, left, right, top, bottom = 960, 540, 90, 700, 50, 470
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(15), _font(13)
    curves = [r.mean_scores for r in results]
    steps = len(curves[0]) - 1
    low = min(float(c.min()) for c in curves)
    high = max(float(c.max()) for c in curves)
    pad = 0.05 * (high - low if high > low else 1.0)
    low, high = low - pad, high + pad

    def px(k: float, value: float) -> tuple[float, float]:
        return (left + (right - left) * k / max(steps, 1), bottom - (bottom - top) * (value - low) / (high - low))

    draw.text((left, 15), title, fill="black", font=font)
    for value in _ticks(low, high):
        y = px(0, value)[1]
        draw.line([(left, y), (right, y)], fill="#e6e6e6")
        draw.text((left - 8, y), f"{value:g}", fill="black", font=small, anchor="rm")
    for k in _ticks(0, steps):
        x = px(k, low)[0]
        draw.line([(x, top), (x, bottom)], fill="#e6e6e6")
        draw.text((x, bottom + 8), f"{k:g}", fill="black", font=small, anchor="mt")
    draw.rectangle([left, top, right, bottom], outline="black")
    draw.text(((left + right) / 2, bottom + 32), f"{region}x{region} regions removed, most relevant first",
              fill="black", font=font, anchor="mt")
    draw.text((20, (top + bottom) / 2), "score", fill="black", font=font, anchor="lm")  # of the explained classes
    colours = []
    for i, (result, curve) in enumerate(zip(results, curves, strict=True)):
        colour = "#7f7f7f" if result.label == "random" else _PALETTE[i % len(_PALETTE)]
        colours.append(colour)
        draw.line([px(k, v) for k, v in enumerate(curve)], fill=colour, width=3 if result.label != "random" else 2)
    draw.text((right + 20, top), "method: AOPC", fill="black", font=font)
    for i, (result, colour) in enumerate(zip(results, colours, strict=True)):
        y = top + 30 + 24 * i
        draw.line([(right + 20, y + 8), (right + 50, y + 8)], fill=colour, width=3)
        draw.text((right + 58, y), f"{result.label}: {result.mean_aopc:.3f}", fill="black", font=small)
    with atomic_open(path) as f:
        image.save(f, format="PNG")
