"""Image preprocessing of the demonstrator (spec §4): decode, ImageMagick-exact resize, crop/pad, mean.

Pipeline for one image (every array is channel-first):

1. :func:`load_image` decodes the first frame with Pillow into 16-bit quanta (8-bit ``v`` → ``v·257``),
   ``(C, h0, w0)`` uint16 with C = 3 (RGB) or 4 (CMYK), plus an optional alpha plane and the
   ImageMagick storage class the original would have seen (§4.1).
2. :func:`resize_geometry` applies ImageMagick's aspect-keeping size rule (§4.2 points 1–3).
3. :func:`resize_quanta` ports ImageMagick 6.8.9-9 Q16's ``ResizeImage`` (§4.2 point 4): separable
   Lanczos (SincFast windowed by SincFast, support 3) or Mitchell (B = C = 1/3, support 2), double
   accumulation in tap order, ClampToQuantum after each pass, alpha weighting when alpha is active.
   Each pass is a banded matrix product through BLAS; the few samples whose rounding could depend
   on the order of the sum are summed again in tap order, so the result is the tap-order one.
4. :func:`quanta_to_rgb255` gives ``img = (Q / 65535) · 255`` in float64, RGB (§4.3–4.4).
5. :func:`crop_pad` crops or edge-replicates to the net input ``(inhei, inwid)`` (§4.5).
6. :func:`mean_for_input` builds the mean as it is subtracted (§4.6, or properly ``"centered"``) and
   :func:`preprocess_image` returns the float32 BGR blob ``img3 − mean`` and ``img3 / 255`` (§4.7–4.8).

The mean is any object with ``flat`` (float64 ``(3, Hm·Wm)``, planes B, G, R), ``height`` (Hm) and
``width`` (Wm), e.g. ``lrp_cli.caffe.mean.MeanImage``.  The original reads the value for BGR plane
``b`` at mean position (row r, col c) as ``flat[b, r + c·Hm]``.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ConfigError, ImageError, ModelError
from .files import display_path, open_regular

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "LANCZOS",
    "MEAN_ALIGNMENTS",
    "MITCHELL",
    "CropPlan",
    "DecodedImage",
    "Preprocessed",
    "check_baseimgsize",
    "choose_filter",
    "crop_pad",
    "crop_pad_plan",
    "decode_image",
    "filter_taps",
    "load_image",
    "max_baseimgsize",
    "mean_for_input",
    "preprocess_decoded",
    "preprocess_image",
    "quanta_to_rgb255",
    "resize_geometry",
    "resize_quanta",
]

LANCZOS = "lanczos"
MITCHELL = "mitchell"
MEAN_ALIGNMENTS = ("original", "centered")
QUANTUM_RANGE = 65535
# Pillow format names of files whose ≤8-bit grey images ImageMagick reads as DirectClass, not PseudoClass
_DIRECT_GREY_FORMATS = frozenset({"TIFF", "PPM"})
#: Largest decoded image accepted by default, width·height (``--max-pixels``): 4096×3072, enough for 12-megapixel
#: photos (4032×3024, 4000×3000). Decoding and resizing take about 35 bytes per decoded pixel at peak today, so one
#: image stays below ~450 MB. Pillow itself refuses more than 2·Image.MAX_IMAGE_PIXELS (~179 MP) whatever the limit.
DEFAULT_MAX_PIXELS = 4096 * 3072
#: Resized images (at most baseimgsize² pixels) are limited to max_pixels / RESIZED_FRACTION, i.e. baseimgsize ≤ 512
#: by default: enlarging costs about three times as much per output pixel as decoding per input pixel, and a large
#: photo resized to a large size pays both.
RESIZED_FRACTION = 48

# MagickEpsilon.  The 6.8.9-9 header says 1e-15, but only 1e-12 (the value of other ImageMagick 6
# releases, e.g. 6.9.11) reproduces every reference resize: with 1e-15, five exact .5 ties of cat1.jpg
# round the other way.
_EPSILON = 1.0e-12
_QUANTUM_SCALE = 1.0 / 65535.0  # QuantumScale, a double
# Output samples per band of a pass's weight matrix (see _Pass), and the most input values a piece
# of a band converts to float64 at once (16 MB; see _pieces)
_BAND_ROWS = 16
_PIECE_VALUES = 1 << 21

# SincFast for a Q16 build: sinc(x) ≈ (x²−1)(x²−4)(x²−9)(x²−16)·P(x²) with this degree-9 polynomial P
# (Robidoux & Racette's minimax fit, max. relative error 2.2e-8 on [-4, 4]).
_SINCFAST_Q16 = (
    0.173611107357320220183368594093166520811e-2,
    -0.384240921114946632192116762889211361285e-3,
    0.394201182359318128221229891724947048771e-4,
    -0.250963301609117217660068889165550534856e-5,
    0.111902032818095784414237782071368805120e-6,
    -0.372895101408779549368465614321137048875e-8,
    0.957694196677572570319816780188718518330e-10,
    -0.187208577776590710853865174371617338991e-11,
    0.253524321426864752676094495396308636823e-13,
    -0.177084805010701112639035485248501049364e-15,
)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodedImage:
    """A decoded first frame as ImageMagick would hold it.

    ``quanta``: uint16 ``(C, h, w)``, RGB (C = 3) or CMYK (C = 4), 16-bit quanta.
    ``alpha``: uint16 ``(h, w)`` alpha quanta (65535 = opaque) when alpha is active, else None.
    ``pseudo_class``: palette / 8-bit grey source (ImageMagick PseudoClass, resized with Mitchell).
    """

    quanta: np.ndarray
    alpha: np.ndarray | None
    pseudo_class: bool
    cmyk: bool
    mode: str
    format: str | None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return int(self.quanta.shape[1]), int(self.quanta.shape[2])


def _to8(a: np.ndarray) -> np.ndarray:
    """8-bit samples (any strides) → 16-bit quanta (v·257, ImageMagick's ScaleCharToQuantum), C-contiguous, in
    one pass."""
    out = np.empty(a.shape, np.uint16)
    np.multiply(a, np.uint16(257), out=out)
    return out


def _planes(im: Image.Image) -> np.ndarray:
    """Pillow image → (C, h, w) array."""
    a = np.asarray(im)
    return a[None] if a.ndim == 2 else np.moveaxis(a, -1, 0)


class _UnsupportedPixels(ValueError):
    """A decodable image whose samples have no ImageMagick Q16 equivalent here (the message says what they are)."""


# Pillow modes without a 16-bit-quanta mapping here, described for users.
_PIXEL_MODES = {
    "F": "32-bit floating-point samples (e.g. a float TIFF); convert it to 8 or 16 bits per sample",
}


def _decode_frame(im: Image.Image, fmt: str | None) -> DecodedImage:
    """Map a loaded Pillow frame onto ImageMagick 6.8.9-9's view of it (spec §4.1, §4.3).

    Grey TIFF and PBM/PGM files are read DirectClass by ImageMagick (Lanczos when shrinking); grey
    JPEG, PNG, BMP, PCX, GIF are PseudoClass (Mitchell).
    Alpha is active whenever the file has an alpha channel or a transparent colour (PNG tRNS, GIF):
    ImageMagick's PNG reader sets ``matte`` for every RGBA / grey+alpha PNG even if all pixels are
    opaque (the reference bw1.png, fully opaque RGBA, is resized with Mitchell).  Palette and ≤8-bit
    grey images are PseudoClass, except PNGs with tRNS, which ImageMagick turns DirectClass.
    """
    mode = im.mode
    is_png = fmt == "PNG"
    trns = "transparency" in im.info
    alpha = None
    pseudo = False
    cmyk = False
    if mode in ("P", "PA", "1", "L", "LA", "La", "RGBA", "RGBa") or (mode == "RGB" and trns):
        grey = mode in ("1", "L", "LA", "La")
        has_alpha = mode in ("PA", "LA", "La", "RGBA", "RGBa") or trns
        target = ("LA" if has_alpha else "L") if grey else ("RGBA" if has_alpha else "RGB")
        a = _planes(im if im.mode == target else im.convert(target))
        quanta = np.repeat(_to8(a[:1]), 3, axis=0) if grey else _to8(a[:3])
        if has_alpha:
            alpha = _to8(a[-1])
        pseudo = (mode in ("P", "PA") or (mode in ("1", "L") and fmt not in _DIRECT_GREY_FORMATS)) and not (
            is_png and trns
        )
    elif mode.startswith("I;16") or mode == "I":
        v = np.asarray(im).astype(np.int64)
        if trns and isinstance(im.info["transparency"], int):
            alpha = np.where(v == im.info["transparency"], 0, QUANTUM_RANGE).astype(np.uint16)
        quanta = np.repeat(np.clip(v, 0, QUANTUM_RANGE).astype(np.uint16)[None], 3, axis=0)
    elif mode == "CMYK":
        quanta = _to8(_planes(im))
        cmyk = True
    elif mode in ("RGB", "RGBX", "YCbCr", "LAB", "HSV"):
        quanta = _to8(_planes(im if mode == "RGB" else im.convert("RGB")))
    else:
        raise _UnsupportedPixels(_PIXEL_MODES.get(mode, f"{fmt or 'unknown'} image with pixel mode {mode!r}"))
    if quanta.shape[1] < 1 or quanta.shape[2] < 1:
        raise ValueError("image has no pixels")
    return DecodedImage(
        quanta=np.ascontiguousarray(quanta),
        alpha=None if alpha is None else np.ascontiguousarray(alpha),
        pseudo_class=pseudo,
        cmyk=cmyk,
        mode=mode,
        format=fmt,
    )


#: held while the process-wide warning filter is changed for a decode (see :func:`load_image`)
_WARNINGS_LOCK = threading.Lock()


def load_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode the first frame of ``path`` with Pillow (EXIF orientation not applied).

    Any problem — missing, empty or not a regular file (a FIFO, a symlink to /dev/zero), not an image, truncated
    or corrupt data, an unsupported pixel format (e.g. a float TIFF), more than ``max_pixels`` pixels by the
    file's header (checked before decoding; None: only Pillow's own ``Image.MAX_IMAGE_PIXELS`` applies), or any
    other warning Pillow emits while decoding (turned into an error, as Magick++ throws on ImageMagick's
    corrupt-image warnings) — raises :class:`ImageError` with one line naming the file. The warning filter is
    process-wide while it runs (``warnings.catch_warnings``), so decoding holds a lock: threads may call this
    function, but they decode one at a time.
    """
    name = display_path(path)
    try:
        with open_regular(path, "image", ImageError) as f, _WARNINGS_LOCK, warnings.catch_warnings():
            warnings.simplefilter("error")
            if max_pixels is not None:  # our own limit is checked below; Pillow's lower warning level is moot
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                w, h = im.size
                if max_pixels is not None and w * h > max_pixels:
                    raise ImageError(
                        f"{name}: image too large: {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} "
                        f"(--max-pixels)"
                    )
                fmt = im.format
                im.seek(0)
                im.load()
                return _decode_frame(im, fmt)
    except ImageError:
        raise
    except _UnsupportedPixels as exc:
        raise ImageError(f"{name}: unsupported image: {exc}") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: image too large: {_one_line(exc)}") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: cannot read image: not a recognised image file") from None
    except Exception as exc:  # noqa: BLE001 - Pillow and its plugins raise assorted exceptions on malformed data
        text = _one_line(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise ImageError(f"{name}: truncated image data ({text})") from None
        raise ImageError(f"{name}: corrupt or unreadable image ({type(exc).__name__}: {text})") from None


def decode_image(image: Image.Image) -> DecodedImage:
    """A PIL image (already opened, e.g. in a notebook) as :func:`load_image` would decode it from a file."""
    try:
        image.load()
        return _decode_frame(image, image.format)
    except (ValueError, OSError) as exc:
        raise ImageError(f"{getattr(image, 'filename', '') or '<image>'}: cannot use the image ({exc})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Geometry (spec §4.2 points 1–3)
# --------------------------------------------------------------------------------------------


def _c_round(x: float) -> int:
    """C ``round``: half away from zero (x ≥ 0 here)."""
    f = math.floor(x)
    return int(f + 1 if x - f >= 0.5 else f)


def resize_geometry(columns: int, rows: int, baseimgsize: int) -> tuple[int, int]:
    """Size (columns, rows) after ``Magick::Image::resize(Geometry(W, H))`` without the ``!`` flag.

    r = base/columns if columns > rows else base/rows; W, H = round(columns·r), round(rows·r);
    unless (W, H) = (columns, rows), s = min(W/columns, H/rows) and the result is
    max(1, floor(s·columns + 0.5)) × max(1, floor(s·rows + 0.5)): the long side can be 1 px short.
    """
    if columns < 1 or rows < 1:
        raise ValueError(f"image size must be positive, got {columns}x{rows}")
    r = baseimgsize / columns if columns > rows else baseimgsize / rows
    w, h = _c_round(columns * r), _c_round(rows * r)
    if w == columns and h == rows:
        return columns, rows
    if w and h:
        s = w / columns
        if s > h / rows:
            s = h / rows
    elif w:  # "Wx0" is written as "W": width only
        s = w / columns
    else:
        s = h / rows
    return max(int(math.floor(s * columns + 0.5)), 1), max(int(math.floor(s * rows + 0.5)), 1)


# --------------------------------------------------------------------------------------------
# Resize (spec §4.2 point 4): a port of ImageMagick 6.8.9-9 Q16 non-HDRI ResizeImage
#
# MagickRealType is double here: the spec expects float (float_t on x86-64), but the reference
# intermediates (inputs_* cases) are reproduced bit for bit only with double weights, double
# accumulation and double rounding; float32 arithmetic leaves ±1–2 quanta on 0.5–3 % of samples.
# --------------------------------------------------------------------------------------------


def choose_filter(in_hw: tuple[int, int], out_hw: tuple[int, int], pseudo_class: bool, has_alpha: bool) -> str | None:
    """ResizeImage's choice: None (plain copy) if the size is unchanged; Mitchell for PseudoClass,
    alpha or enlarging (x_factor·y_factor > 1); otherwise Lanczos."""
    if tuple(in_hw) == tuple(out_hw):
        return None
    xf = out_hw[1] / in_hw[1]
    yf = out_hw[0] / in_hw[0]
    if pseudo_class or has_alpha or xf * yf > 1.0:
        return MITCHELL
    return LANCZOS


def _sincfast(x: np.ndarray) -> np.ndarray:
    """SincFast (x ≥ 0): (x²−1)(x²−4)(x²−9)(x²−16)·P(x²) on [0, 4], sin(πx)/(πx) beyond."""
    xx = x * x
    p = np.full_like(xx, _SINCFAST_Q16[-1])
    for c in _SINCFAST_Q16[-2::-1]:
        p = c + xx * p
    v = (xx - 1.0) * (xx - 4.0) * (xx - 9.0) * (xx - 16.0) * p
    if np.any(x > 4.0):  # never reached by resize (|x| < support = 3)
        with np.errstate(invalid="ignore", divide="ignore"):
            v = np.where(x > 4.0, np.sin(math.pi * x) / (math.pi * x), v)
    return v


def _mitchell_coefficients(b: float = 1.0 / 3.0, c: float = 1.0 / 3.0) -> tuple[float, ...]:
    """Cubic BC piece coefficients (P0, P2, P3, Q0, Q1, Q2, Q3); the filter is P0 + x²(P2 + x·P3) on
    [0, 1) and Q0 + x(Q1 + x(Q2 + x·Q3)) on [1, 2)."""
    return (
        1.0 - (1.0 / 3.0) * b,
        -3.0 + 2.0 * b + c,
        2.0 - 1.5 * b - c,
        (4.0 / 3.0) * b + 4.0 * c,
        -8.0 * c - 2.0 * b,
        b + 5.0 * c,
        (-1.0 / 6.0) * b - c,
    )


_MITCHELL = _mitchell_coefficients()


def _filter_weight(kind: str, x: np.ndarray) -> np.ndarray:
    """Filter value at distance x (blur 1).  Lanczos: SincFast(|x|/3)·SincFast(|x|) (the window is
    SincFast scaled to the support 3); Mitchell: the cubic above, 0 from |x| = 2 on."""
    ax = np.abs(x)
    if kind == LANCZOS:
        return _sincfast(ax * (1.0 / 3.0)) * _sincfast(ax)
    c = _MITCHELL
    near = c[0] + ax * (ax * (c[1] + ax * c[2]))
    far = c[3] + ax * (c[4] + ax * (c[5] + ax * c[6]))
    return np.where(ax < 1.0, near, np.where(ax < 2.0, far, 0.0))


def _taps(kind: str, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First tap (int64, ``(out_size,)``), tap count (int64, ``(out_size,)``) and normalised float64
    weights ``(out_size, T)`` (0 in slots past the count) of one axis; see :func:`filter_taps`."""
    filter_support = {LANCZOS: 3.0, MITCHELL: 2.0}[kind]
    factor = out_size / in_size
    scale = max(1.0 / factor + _EPSILON, 1.0)
    support = scale * filter_support
    inv_scale = 1.0 / scale
    bisect = (np.arange(out_size) + 0.5) / factor + _EPSILON
    start = np.trunc(np.maximum(bisect - support + 0.5, 0.0)).astype(np.int64)
    stop = np.trunc(np.minimum(bisect + support + 0.5, float(in_size))).astype(np.int64)
    count = stop - start
    if count.min() < 1:
        raise ValueError(f"resize {in_size} -> {out_size}: an output sample has no input taps")
    n = np.arange(int(count.max()))
    idx = start[:, None] + n[None, :]
    valid = n[None, :] < count[:, None]
    w = np.where(valid, _filter_weight(kind, inv_scale * (idx - bisect[:, None] + 0.5)), 0.0)
    density = np.cumsum(w, axis=1)[:, -1]  # running sum in tap order, as ImageMagick adds them
    norm = (density != 0.0) & (density != 1.0)
    recip = _perceptible_reciprocal(np.where(norm, density, 1.0))
    return start, count, np.where(norm[:, None], w * recip[:, None], w)


def filter_taps(kind: str, in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices (int64) and normalised float64 weights, both ``(out_size, T)``, for one axis.

    factor = out/in; scale = max(1/factor + ε, 1) (ε = MagickEpsilon = 1e-12);
    support = scale·filter_support (3 or 2); for output x: bisect = (x + 0.5)/factor + ε, taps
    i = trunc(max(bisect − support + 0.5, 0)) .. trunc(min(bisect + support + 0.5, in)) − 1,
    weight = filter((i − bisect + 0.5)/scale), divided by their running sum (unless it is 0 or 1).
    Unused tap slots have weight 0 (adding them is exact).
    """
    start, _, w = _taps(kind, in_size, out_size)
    return np.minimum(start[:, None] + np.arange(w.shape[1])[None, :], in_size - 1), w


def _clamp_to_quantum(v: np.ndarray) -> np.ndarray:
    """ClampToQuantum: 0 if v ≤ 0, 65535 if v ≥ 65535, else trunc(v + 0.5) (round half up).

    Computed as clip(floor(v + 0.5), 0, 65535): the same numbers (floor = trunc for v > 0, and both
    clip to the ends elsewhere) in fewer passes.
    """
    r = np.floor(v + 0.5)
    return np.clip(r, 0.0, 65535.0, out=r).astype(np.uint16)


def _perceptible_reciprocal(x: np.ndarray) -> np.ndarray:
    """PerceptibleReciprocal: 1/x, or sign(x)/ε where |x| < ε (sign(0) = +1)."""
    sign = np.where(x < 0.0, -1.0, 1.0)
    tiny = sign * x < _EPSILON
    return np.where(tiny, sign / _EPSILON, 1.0 / np.where(tiny, 1.0, x))


# --------------------------------------------------------------------------------------------
# The filter passes through BLAS
#
# A pass is a product with a banded weight matrix, W[o, start[o] + t] = w[o, t], done band by band:
# a dense block of W (≈ _BAND_ROWS output samples × the input rows they reach) times those rows.
# BLAS adds the products w·v in another order than ImageMagick's running sum (and may fuse
# multiply and add), so a sum may differ from the tap-order one in its last bits; both lie within
# γ_n·Σ|w·v| ≤ γ_n·65535·Σ|w| of the exact sum (n terms, γ_n = n·u/(1 − n·u), u = 2⁻⁵³).
# ClampToQuantum only steps where v + 0.5 reaches an integer, so the two round alike unless the
# BLAS sum lies within twice that bound of some k + ½.  Those few samples (exact ties among them,
# see _EPSILON) are summed again in tap order, so every pass equals the tap-order port bit for bit.
# --------------------------------------------------------------------------------------------

_U = 2.0**-53
# How far below k + ½ ClampToQuantum's step can lie: v + 0.5 is rounded to double first, which
# moves it by at most half an ulp of 65536 (2⁻³⁷).
_STEP_SLACK = 2.0**-36


@dataclass(frozen=True)
class _Band:
    """Output samples ``lo:hi`` of a pass, whose taps all lie in input rows ``first:last``.

    ``matrix`` (hi − lo, last − first): their weights; ``gamma`` (hi − lo, 1): γ_n for n = the
    band's columns + 2 (the alpha pass rounds twice per term); ``bound`` (hi − lo, 1): 2·γ_n·65535·Σ|w|,
    how far a BLAS sum may lie from the tap-order one.
    """

    lo: int
    hi: int
    first: int
    last: int
    matrix: np.ndarray
    gamma: np.ndarray
    bound: np.ndarray


@dataclass(frozen=True)
class _Pass:
    """The taps of one pass (see :func:`_taps`) and their bands (read-only arrays; cached)."""

    start: np.ndarray
    weights: np.ndarray
    bands: tuple[_Band, ...]

    def tap_order(self, x: np.ndarray, p: np.ndarray, o: np.ndarray, j: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The running sums Σ_t weights[o,t]·x[p, start[o] + t, j] (float64), added in tap order as the
        original's loop does, for the samples (p, o, j) of ``x`` (P, n, m)."""
        rows = np.minimum(self.start[o, None] + np.arange(self.weights.shape[1]), x.shape[-2] - 1)
        terms = x[p[:, None], rows, j[:, None]].astype(np.float64)
        terms *= weights[o]
        return np.cumsum(terms, axis=1)[:, -1]


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=64)
def _pass_plan(kind: str, in_size: int, out_size: int) -> _Pass:
    """The taps of a pass cut into bands of ``_BAND_ROWS`` output samples (cached: a list of photos
    mostly repeats a few sizes)."""
    start, count, w = _taps(kind, in_size, out_size)
    l1 = np.abs(w).sum(axis=1)
    t = np.arange(w.shape[1])
    bands = []
    for lo in range(0, out_size, _BAND_ROWS):
        hi = min(lo + _BAND_ROWS, out_size)
        first, last = int(start[lo]), int((start[lo:hi] + count[lo:hi]).max())
        r, c = np.nonzero(t[None, :] < count[lo:hi, None])
        matrix = np.zeros((hi - lo, last - first))
        matrix[r, start[lo + r] - first + c] = w[lo + r, c]
        n = last - first + 2
        gamma = np.full((hi - lo, 1), n * _U / (1.0 - n * _U))
        bound = 2.0 * gamma * QUANTUM_RANGE * l1[lo:hi, None]
        bands.append(_Band(lo, hi, first, last, _read_only(matrix), _read_only(gamma), _read_only(bound)))
    return _Pass(_read_only(start), _read_only(w), tuple(bands))


def _quantize(acc: np.ndarray, bound: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """floor(acc + 0.5) (ClampToQuantum before the clip; ``acc`` is used up) and where that could
    differ for a value within ``bound`` of ``acc``: where acc + 0.5 lies within bound (+ the step's
    slack) of an integer."""
    acc += 0.5
    rounded = np.floor(acc)
    fraction = np.subtract(acc, rounded, out=acc)
    fraction -= 0.5
    return rounded, np.abs(fraction, out=fraction) >= 0.5 - (bound + _STEP_SLACK)


def _pieces(plan: _Pass, planes: int, columns: int):
    """The (band, column slice) pieces of a pass over ``columns`` columns of ``planes`` planes, each
    converting at most ``_PIECE_VALUES`` input values to float64 (one piece per band for photos;
    giant images are done in column strips instead of whole float64 copies)."""
    for band in plan.bands:
        step = max(1, _PIECE_VALUES // (planes * (band.last - band.first)))
        for c0 in range(0, columns, step):
            yield band, slice(c0, min(c0 + step, columns))


def _filter_rows(src: np.ndarray, kind: str, out_size: int) -> np.ndarray:
    """One pass along axis −2: quanta ``src`` (P, n, m), any strides → ClampToQuantum'd uint16
    (P, out_size, m), equal to ImageMagick's running sums over the taps in tap order."""
    plan = _pass_plan(kind, src.shape[-2], out_size)
    out = np.empty(src.shape[:-2] + (out_size, src.shape[-1]), dtype=np.uint16)
    for band, cols in _pieces(plan, src.shape[0], src.shape[-1]):
        acc = np.matmul(band.matrix, src[..., band.first : band.last, cols].astype(np.float64))
        rounded, doubt = _quantize(acc, band.bound)
        if doubt.any():
            p, o, j = np.nonzero(doubt)
            sums = plan.tap_order(src, p, o + band.lo, j + cols.start, plan.weights)
            rounded[p, o, j] = np.floor(sums + 0.5)
        out[..., band.lo : band.hi, cols] = np.clip(rounded, 0.0, 65535.0, out=rounded)
    return out


def _filter_rows_alpha(src: np.ndarray, alpha: np.ndarray, kind: str, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """One alpha-weighted pass along axis −2: quanta ``src`` (C, n, m) and ``alpha`` (n, m) → uint16
    colours (C, out_size, m) and alpha (out_size, m), equal to ImageMagick's tap-order sums:
    with w' = w·QuantumScale (rounded), γ = Σ w'·α, colour = PerceptibleReciprocal(γ)·Σ (w'·α)·v,
    opacity = Σ w·(65535 − α)."""
    plan = _pass_plan(kind, src.shape[-2], out_size)
    colours = np.empty(src.shape[:-2] + (out_size, src.shape[-1]), dtype=np.uint16)
    new_alpha = np.empty((out_size, src.shape[-1]), dtype=np.uint16)
    for band, cols in _pieces(plan, src.shape[0] + 1, src.shape[-1]):
        a = alpha[band.first : band.last, cols].astype(np.float64)
        rounded, doubt = _quantize(band.matrix @ (QUANTUM_RANGE - a), band.bound)
        if doubt.any():
            o, j = np.nonzero(doubt)
            opacity = QUANTUM_RANGE - alpha[None].astype(np.float64)
            sums = plan.tap_order(opacity, np.zeros_like(o), o + band.lo, j + cols.start, plan.weights)
            rounded[o, j] = np.floor(sums + 0.5)
        new_alpha[band.lo : band.hi, cols] = QUANTUM_RANGE - np.clip(rounded, 0.0, 65535.0, out=rounded)
        rounded, doubt = _alpha_colours(band, src[:, band.first : band.last, cols], a)
        if doubt.any():
            o, j = np.nonzero(doubt)
            rounded[:, o, j] = np.floor(_alpha_tap_order(plan, src, alpha, o + band.lo, j + cols.start) + 0.5)
        colours[:, band.lo : band.hi, cols] = np.clip(rounded, 0.0, 65535.0, out=rounded)
    return colours, new_alpha


def _alpha_colours(band: _Band, src: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A band's alpha-weighted colours through BLAS for the input rows ``src`` (C, rows, k) and their
    alpha ``a`` (rows, k) float64: (floor(colour + 0.5) (C, B, k), doubtful samples (B, k)).

    BLAS forms Σ w'·(α·v) (α·v < 2³² is exact).  With G = Σ|w'|·α, γ lies within Δ = 2γ_n·G of its
    tap-order value and each colour sum (|sum| ≤ 65535·G) within 65535·Δ, so where |γ| − Δ ≥ ε the
    quotients differ by at most 65535·Δ·(1 + G/|γ|)/(|γ| − Δ) (plus the roundings of the reciprocal
    and the product).  A sample is doubtful where that reaches some k + ½ in any channel, or where γ
    might lie on the other side of ±ε (G = 0 is exact: γ = 0 and colour 0 both ways).
    """
    scaled = band.matrix * _QUANTUM_SCALE
    gamma = scaled @ a
    total = np.abs(scaled) @ a  # G
    total *= 1.01  # room for that sum's own rounding
    colour = np.matmul(scaled, src.astype(np.float64) * a)
    colour *= _perceptible_reciprocal(gamma)
    delta = 2.0 * band.gamma * total
    g = np.abs(gamma)
    zero = total == 0.0
    unsafe = ~(g - delta >= _EPSILON * (1.0 + 8.0 * _U)) & ~zero
    with np.errstate(divide="ignore", invalid="ignore"):
        quotient = QUANTUM_RANGE * total / (g - delta)  # ≥ |colour|
        bound = delta * (QUANTUM_RANGE / (g - delta) + quotient / g) + 8.0 * _U * (quotient + 1.0)
    bound[zero] = 0.0
    bound[unsafe] = np.inf
    rounded, doubt = _quantize(colour, bound)
    return rounded, doubt.any(axis=0) | unsafe


def _alpha_tap_order(plan: _Pass, src: np.ndarray, alpha: np.ndarray, o: np.ndarray, j: np.ndarray) -> np.ndarray:
    """PerceptibleReciprocal(γ)·Σ a·v with a = (w·QuantumScale)·α, γ = Σ a, both running sums in tap
    order, for output samples (o, j) of every channel → float64 (C, len(o))."""
    scaled = plan.weights * _QUANTUM_SCALE
    a = plan.tap_order(alpha[None], np.zeros_like(o), o, j, scaled)  # γ
    rows = np.minimum(plan.start[o, None] + np.arange(plan.weights.shape[1]), src.shape[-2] - 1)
    terms_a = scaled[o] * alpha[rows, j[:, None]].astype(np.float64)  # a per tap, as ImageMagick forms it
    acc = np.cumsum(terms_a[None] * src[:, rows, j[:, None]].astype(np.float64), axis=2)[:, :, -1]
    return _perceptible_reciprocal(a) * acc


def resize_quanta(
    quanta: np.ndarray,
    out_hw: tuple[int, int],
    *,
    pseudo_class: bool = False,
    alpha: np.ndarray | None = None,
    kind: str | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """ImageMagick 6.8.9-9 Q16 ``ResizeImage(img, W, H, UndefinedFilter, 1.0)`` on 16-bit quanta.

    ``quanta`` uint16 (C, h, w), ``alpha`` uint16 (h, w) or None → (uint16 (C, H, W), alpha or None).
    The filter is :func:`choose_filter`'s unless ``kind`` is given.  The horizontal pass goes first iff
    x_factor = W/w > y_factor = H/h; each pass rounds to 16 bits (ClampToQuantum).
    """
    q = np.asarray(quanta)
    if q.ndim != 3:
        raise ValueError(f"quanta must be (C, h, w), got {q.shape}")
    in_hw = (q.shape[1], q.shape[2])
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if out_hw[0] < 1 or out_hw[1] < 1:
        raise ValueError(f"output size must be positive, got {out_hw}")
    a0 = None if alpha is None else np.asarray(alpha, dtype=np.uint16)
    if kind is None:
        kind = choose_filter(in_hw, out_hw, pseudo_class, alpha is not None)
        if kind is None:
            return q.astype(np.uint16, copy=True), None if a0 is None else a0.copy()

    def one_pass(p: np.ndarray, a: np.ndarray | None, size: int) -> tuple[np.ndarray, np.ndarray | None]:
        if a is None:
            return _filter_rows(p, kind, size), None
        return _filter_rows_alpha(p, a, kind, size)

    def vertical(p: np.ndarray, a: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        return one_pass(p, a, out_hw[0])

    def horizontal(p: np.ndarray, a: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        out, na = one_pass(p.transpose(0, 2, 1), None if a is None else a.T, out_hw[1])  # (C, w, h)
        return out.transpose(0, 2, 1), None if na is None else na.T

    if out_hw[1] / in_hw[1] > out_hw[0] / in_hw[0]:
        p, a = vertical(*horizontal(q, a0))
    else:
        p, a = horizontal(*vertical(q, a0))
    return np.ascontiguousarray(p), None if a is None else np.ascontiguousarray(a)


def _cmyk_to_rgb_quanta(cmyk: np.ndarray) -> np.ndarray:
    """ImageMagick's CMYK → sRGB of quanta: R = 65535 − (C·(65535 − K)/65535 + K), ClampToQuantum."""
    c = cmyk.astype(np.float64)
    k = c[3]
    return _clamp_to_quantum(QUANTUM_RANGE - (_QUANTUM_SCALE * c[:3] * (QUANTUM_RANGE - k) + k))


# --------------------------------------------------------------------------------------------
# Scaling, crop / pad (spec §4.3–4.5)
# --------------------------------------------------------------------------------------------


def quanta_to_rgb255(quanta: np.ndarray) -> np.ndarray:
    """(Q / 65535.0) · 255.0 in float64, same shape (the original's channel values × 255)."""
    return (np.asarray(quanta, dtype=np.float64) / 65535.0) * 255.0


@dataclass(frozen=True)
class CropPlan:
    """Index plan of §4.5 for a resized image of ``hei``×``wid`` and a net input ``inhei``×``inwid``.

    ``origin`` (y0, x0): the image position of net position (0, 0) — negative by o on a padded side;
    ``rows`` (inhei,) / ``cols`` (inwid,): the image row / column each net row / column takes, y0 + h and x0 + w
    clipped to the image (edge replication). ``portrait``: hei > wid. ``pad``: o = (input − image)//2 on the short
    side when it is padded, else None. ``border``: B = (baseimgsize − max(inhei, inwid))//2.
    """

    origin: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    portrait: bool
    pad: int | None
    border: int


def crop_pad_plan(hei: int, wid: int, baseimgsize: int, inhei: int, inwid: int) -> CropPlan:
    """Image rows/cols per net row/col (§4.5), B = (baseimgsize − max(inhei, inwid)) // 2.

    The long side starts at B; the short side is centred, (size − input)//2, or, when the image is narrower than
    the input, starts at −o with o = (input − size)//2 and replicates the edge. Portrait (hei > wid): rows long;
    otherwise columns long. Indices past the image (only when the long side came out short and baseimgsize equals
    the net size) are clamped to the last row/column instead of reading out of bounds.
    """
    b = (baseimgsize - max(inhei, inwid)) // 2
    portrait = hei > wid
    short, in_short = (wid, inwid) if portrait else (hei, inhei)
    pad = None if short >= in_short else (in_short - short) // 2
    centred = (short - in_short) // 2 if pad is None else -pad
    y0, x0 = (b, centred) if portrait else (centred, b)
    return CropPlan(
        origin=(y0, x0),
        rows=np.clip(y0 + np.arange(inhei), 0, hei - 1),
        cols=np.clip(x0 + np.arange(inwid), 0, wid - 1),
        portrait=portrait,
        pad=pad,
        border=b,
    )


def crop_pad(img: np.ndarray, baseimgsize: int, inhei: int, inwid: int) -> np.ndarray:
    """Crop / edge-replicate-pad (C, hei, wid) to (C, inhei, inwid) by :func:`crop_pad_plan`."""
    plan = crop_pad_plan(img.shape[1], img.shape[2], baseimgsize, inhei, inwid)
    (r0, c0), (r1, c1) = (int(plan.rows[0]), int(plan.cols[0])), (int(plan.rows[-1]), int(plan.cols[-1]))
    if r1 - r0 == inhei - 1 and c1 - c0 == inwid - 1:  # nothing padded or clamped: a plain slice
        return img[:, r0 : r1 + 1, c0 : c1 + 1]
    return img[:, plan.rows[:, None], plan.cols[None, :]]


# --------------------------------------------------------------------------------------------
# Mean (spec §4.6)
# --------------------------------------------------------------------------------------------


def _mean_parts(mean: Any) -> tuple[np.ndarray, int, int]:
    try:
        flat = np.asarray(mean.flat, dtype=np.float64)
        hm, wm = int(mean.height), int(mean.width)
    except AttributeError as exc:
        raise TypeError("mean must have flat, height and width attributes") from exc
    if flat.ndim != 2 or flat.shape[0] != 3 or hm < 1 or wm < 1 or flat.shape[1] != hm * wm:
        raise ModelError(f"mean image must be 3 x {hm} x {wm} (flat {flat.shape}), not usable")
    return flat, hm, wm


def mean_for_input(
    mean: Any,
    resized_hw: tuple[int, int],
    baseimgsize: int,
    input_hw: tuple[int, int],
    mean_alignment: str = "original",
) -> np.ndarray:
    """The mean subtracted at each net input position, float64 (3, inhei, inwid) in **BGR** order.

    ``"original"`` (§4.6): Bm = min((Hm − inhei)//2, (Wm − inwid)//2); the mean is read at
    ``flat[b, r + c·Hm]`` with, for portrait images, r = Bm + h and c = (Wm − inwid)//2 + w (crop) or
    c = clip(w − o, 0, wid − 1) (pad); landscape/square symmetrically: c = Bm + w and
    r = (Hm − inhei)//2 + h or clip(h − o, 0, hei − 1).  For a row-major binaryproto this is the
    transposed, misaligned mean the original subtracted.

    ``"centered"``: the mean canvas, read as the image it really is (``flat[b]`` row-major, Hm × Wm;
    column-major if the mean object has ``row_major = False``, as a text mean has), is centred on the
    resized image: image pixel (y, x) lies over mean pixel (y + dy, x + dx) with
    dy = (Hm − hei)//2 if Hm ≥ hei else −((hei − Hm)//2), dx likewise.  Each net position (h, w)
    covers image position (y0 + h, x0 + w), where (y0, x0) is the crop origin of §4.5 (negative by o
    on a padded side), so padded borders take the mean that lies under them; positions off the mean
    canvas use its nearest edge pixel.
    """
    if mean_alignment not in MEAN_ALIGNMENTS:
        raise ConfigError(f"mean_alignment must be one of {', '.join(MEAN_ALIGNMENTS)}, got {mean_alignment!r}")
    flat, hm, wm = _mean_parts(mean)
    inhei, inwid = input_hw
    if hm < inhei or wm < inwid:
        raise ModelError(f"mean image {hm}x{wm} is smaller than the net input {inhei}x{inwid}")
    plan = crop_pad_plan(resized_hw[0], resized_hw[1], baseimgsize, inhei, inwid)
    h, w = np.arange(inhei), np.arange(inwid)
    if mean_alignment == "original":
        # the crop's index plan with the mean's offsets: the long side from Bm, the short side centred in the
        # mean, or the image's own (clipped) indices where the image was padded
        bm = min((hm - inhei) // 2, (wm - inwid) // 2)
        if plan.portrait:
            r = bm + h
            c = plan.cols if plan.pad is not None else (wm - inwid) // 2 + w
        else:
            c = bm + w
            r = plan.rows if plan.pad is not None else (hm - inhei) // 2 + h
        return flat[:, r[:, None] + c[None, :] * hm]

    def offset(m: int, s: int) -> int:
        return (m - s) // 2 if m >= s else -((s - m) // 2)

    y0, x0 = plan.origin
    r = np.clip(y0 + h + offset(hm, resized_hw[0]), 0, hm - 1)
    c = np.clip(x0 + w + offset(wm, resized_hw[1]), 0, wm - 1)
    if getattr(mean, "row_major", True):
        planes = flat.reshape(3, hm, wm)
    else:
        planes = flat.reshape(3, wm, hm).transpose(0, 2, 1)
    return planes[:, r[:, None], c[None, :]]


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocessed:
    """What enters the net for one image.

    ``blob``: float32 (3, H, W), BGR, mean subtracted (float64 result cast to float32, §4.7).
    ``as_inputted``: float64 (3, H, W), RGB in [0, 1] = img3 / 255 (§4.8).
    ``mean_bgr``: float64 (3, H, W), the mean subtracted at each position (BGR; for z^B bounds).
    ``resized_quanta``: uint16 (3, h, w) RGB quanta after the resize; ``original_hw``, ``resized_hw``.
    ``filter``: "lanczos", "mitchell" or None (no resize).
    """

    blob: np.ndarray
    as_inputted: np.ndarray
    mean_bgr: np.ndarray
    resized_quanta: np.ndarray
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    filter: str | None


def max_baseimgsize(max_pixels: int | None) -> int | None:
    """The largest baseimgsize whose resized images (≤ baseimgsize² pixels) stay within max_pixels /
    RESIZED_FRACTION; None without a limit."""
    return None if max_pixels is None else math.isqrt(max_pixels // RESIZED_FRACTION)


def check_baseimgsize(baseimgsize: int, max_pixels: int | None, where: str = "baseimgsize") -> None:
    """ConfigError (naming ``where``) when images resized to ``baseimgsize`` could exceed the resized-pixel limit."""
    largest = max_baseimgsize(max_pixels)
    if largest is not None and baseimgsize > largest:
        raise ConfigError(
            f"{where}: baseimgsize {baseimgsize} is above the largest allowed, {largest}: resized images are limited "
            f"to --max-pixels / {RESIZED_FRACTION} = {max_pixels // RESIZED_FRACTION} pixels (--max-pixels "
            f"{max_pixels})"
        )


def _check_sizes(baseimgsize: int, input_hw: tuple[int, int]) -> tuple[int, int]:
    inhei, inwid = int(input_hw[0]), int(input_hw[1])
    if int(baseimgsize) != baseimgsize or baseimgsize < 1:
        raise ConfigError(f"baseimgsize must be a positive integer, got {baseimgsize!r}")
    if inhei < 1 or inwid < 1:
        raise ModelError(f"net input size must be positive, got {inhei}x{inwid}")
    if baseimgsize < max(inhei, inwid):
        raise ConfigError(f"baseimgsize {baseimgsize} is smaller than the net input {inhei}x{inwid}")
    return inhei, inwid


def preprocess_decoded(
    image: DecodedImage,
    baseimgsize: int,
    input_hw: tuple[int, int],
    mean: Any,
    mean_alignment: str = "original",
    mean_cache: dict | None = None,
) -> Preprocessed:
    """Resize, scale, crop/pad and subtract the mean for an already decoded image (spec §4.2–4.8).

    ``mean_cache``: a dict that keeps the mean as subtracted for each resized size (it depends on nothing else for
    one mean, baseimgsize, input size and alignment), for callers that preprocess many images with the same
    settings."""
    inhei, inwid = _check_sizes(baseimgsize, input_hw)
    h0, w0 = image.size
    cols, rows = resize_geometry(w0, h0, baseimgsize)
    kind = choose_filter((h0, w0), (rows, cols), image.pseudo_class, image.alpha is not None)
    quanta = image.quanta
    if kind is not None:
        quanta, _ = resize_quanta(quanta, (rows, cols), alpha=image.alpha, kind=kind)
    if image.cmyk:
        quanta = _cmyk_to_rgb_quanta(quanta)
    img3 = quanta_to_rgb255(crop_pad(quanta, baseimgsize, inhei, inwid))  # crop first: float64 of the crop only
    mean_bgr = None if mean_cache is None else mean_cache.get((rows, cols))
    if mean_bgr is None:
        mean_bgr = mean_for_input(mean, (rows, cols), baseimgsize, (inhei, inwid), mean_alignment)
        if mean_cache is not None:
            mean_bgr.flags.writeable = False
            mean_cache[(rows, cols)] = mean_bgr
    blob = (img3[::-1] - mean_bgr).astype(np.float32)
    return Preprocessed(
        blob=np.ascontiguousarray(blob),
        as_inputted=img3 / 255.0,
        mean_bgr=mean_bgr,
        resized_quanta=quanta,
        original_hw=(h0, w0),
        resized_hw=(rows, cols),
        filter=kind,
    )


def preprocess_image(
    path: str | os.PathLike[str],
    baseimgsize: int,
    input_hw: tuple[int, int],
    mean: Any,
    mean_alignment: str = "original",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    mean_cache: dict | None = None,
) -> Preprocessed:
    """Decode ``path`` and preprocess it like the demonstrator (spec §4).  ``input_hw`` = (H, W) of the
    net input; ``mean`` has ``flat``/``height``/``width`` (see module doc).  Image problems raise
    :class:`ImageError`; a bad baseimgsize :class:`ConfigError`; a too-small mean :class:`ModelError`.
    ``max_pixels`` limits the decoded image and, through :func:`check_baseimgsize`, the resized one."""
    _check_sizes(baseimgsize, input_hw)
    check_baseimgsize(baseimgsize, max_pixels)
    _mean_parts(mean)
    return preprocess_decoded(load_image(path, max_pixels), baseimgsize, input_hw, mean, mean_alignment, mean_cache)
