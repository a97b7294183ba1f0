"""The Python API: load a model once, explain images — the engine and the numbers of ``lrp-demo``.

    import lrp_cli
    model = lrp_cli.load("configs/config_sequential.txt")
    result = model.explain("someimages/cat1.jpg")
    result.top5, result.rawhm, result.to_pil(overlay=True)

``lrp-demo`` is a client of this module: it loads a :class:`Model` and explains the entries of its file list with
:meth:`Model.explain_inputs`, the same step :meth:`Model.explain` takes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .blobs import load_blob
from .caffe import MeanImage, load_model, read_mean
from .composite import LRN_RELEVANCE, RelevanceSettings
from .config import Config, load_config
from .errors import ConfigError, ImageError, LrpError, ModelError, RelevanceError
from .explain import Explainer, limit_blas
from .files import display_path, open_regular
from .net import Net
from .outputs import (
    OutputPaths,
    format_topten,
    npy_bytes,
    output_files,
    output_paths,
    png_bytes,
    rawhm_bytes,
    write_files,
)
from .preprocess import (
    DEFAULT_MAX_PIXELS,
    MEAN_ALIGNMENTS,
    check_baseimgsize,
    decode_image,
    preprocess_decoded,
    preprocess_image,
)
from .render import COLORMAPS, DEFAULT_CLIP_PERCENTILE, colorize, heatmap_values, relevance_overlay, to_uint8

#: What :meth:`Model.explain` accepts as one image: a file path (an image, or a ``.npy`` input blob), a PIL image,
#: an H×W×3 (RGB), H×W×4 (RGBA) or H×W (grey) uint8 array, or a C×H×W float32 array (a preprocessed input blob:
#: BGR, mean subtracted).
ImageInput = str | os.PathLike | Image.Image | np.ndarray

#: keyword → config key, for every setting that a keyword of :func:`load`, :func:`load_caffe` or
#: :meth:`Model.explain` can change.
CONFIG_KEYS = {
    "formula": "relpropformulatype",
    "epsilon": "epsstab",
    "beta": "alphabeta_beta",
    "aux": "auxiliaryvariable_maxlayerindexforflatdistinconv",
    "last_layer": "lastlayerindex",
    "first_layer": "firstlayerindex",
    "numclasses": "numclasses",
    "baseimgsize": "baseimgsize",
    "lrn_relevance": "lrn_relevance",
    "mean_alignment": "mean_alignment",
    "colormap": "heatmap_colormap",
    "clip_percentile": "heatmap_clip_percentile",
    "max_pixels": "--max-pixels",
}


@dataclass(frozen=True)
class Settings:
    """Every setting of a model besides its files (the config key of each in brackets).

    The defaults are those of the shipped configs, for :func:`load_caffe`; :func:`load` takes the config's values.
    """

    formula: int = 100  # relpropformulatype
    epsilon: float = 1.0  # epsstab
    beta: float = 0.25  # alphabeta_beta (α = 1 + β)
    aux: int = 0  # auxiliaryvariable_maxlayerindexforflatdistinconv
    last_layer: int = -1  # lastlayerindex
    first_layer: int = 0  # firstlayerindex
    numclasses: int | None = None  # numclasses (None: every value of the net's first output)
    baseimgsize: int = 256  # baseimgsize
    lrn_relevance: str = "original"  # lrn_relevance
    mean_alignment: str = "original"  # mean_alignment
    colormap: str = "cold-hot"  # heatmap_colormap
    clip_percentile: float = 99.0  # heatmap_clip_percentile (100: the largest |value|, as the original)
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest image decoded (width × height; None: Pillow's own limit)

    @staticmethod
    def from_config(config: Config) -> Settings:
        return Settings(
            formula=config.relpropformulatype,
            epsilon=config.epsstab,
            beta=config.alphabeta_beta,
            aux=config.auxiliaryvariable_maxlayerindexforflatdistinconv,
            last_layer=config.lastlayerindex,
            first_layer=config.firstlayerindex,
            numclasses=config.numclasses,
            baseimgsize=config.baseimgsize,
            lrn_relevance=config.lrn_relevance,
            mean_alignment=config.mean_alignment,
            colormap=config.heatmap_colormap,
            clip_percentile=config.heatmap_clip_percentile,
        )

    def replace(self, **overrides: Any) -> Settings:
        """These settings with some changed; ConfigError for an unknown keyword or a value of the wrong kind."""
        changes = {}
        for keyword, value in overrides.items():
            if value is None and keyword not in ("numclasses", "max_pixels"):
                continue
            if keyword not in CONFIG_KEYS:
                raise ConfigError(f"unknown setting {keyword!r} (known: {', '.join(CONFIG_KEYS)})")
            changes[keyword] = _checked(keyword, value)
        return dataclasses.replace(self, **changes) if changes else self

    def relevance(self) -> RelevanceSettings:
        return RelevanceSettings(self.formula, self.epsilon, self.beta, self.aux, self.last_layer, self.first_layer,
                                 self.lrn_relevance)


_CHOICES = {"lrn_relevance": LRN_RELEVANCE, "mean_alignment": MEAN_ALIGNMENTS, "colormap": COLORMAPS}


def _checked(keyword: str, value: Any) -> Any:
    """A keyword's value, checked for its kind (the ranges are checked where they are used)."""
    where = f"{keyword} ({CONFIG_KEYS[keyword]})"
    if keyword in _CHOICES:
        if value not in _CHOICES[keyword]:
            raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(_CHOICES[keyword])}")
        return value
    if keyword == "clip_percentile":
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
                or not 0 < value <= 100:
            raise ConfigError(f"{where}: expected a percentile in (0, 100], got {value!r}")
        return float(value)
    if keyword in ("epsilon", "beta"):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        value = float(np.float32(value))  # the original's float member
        if not np.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a finite float32 number")
        return value
    if value is None and keyword in ("numclasses", "max_pixels"):
        return None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class Prepared:
    """One input as it enters the net: ``blob`` 3×H×W float32 (BGR, mean subtracted); for images also ``crop``,
    the 3×H×W RGB crop in [0, 1], and ``mean_bgr``, the mean subtracted at each position (the z^B bounds)."""

    source: str
    blob: np.ndarray
    crop: np.ndarray | None = None
    mean_bgr: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Explanation:
    """The explanation of one image.

    ``scores``: the numclasses values of the net's first output (probabilities for a Softmax net); ``ranking``:
    the class indices, best first; ``classes``: the explained classes; ``rawhm``: C×H×W relevance at the input
    with the channels reversed (R, G, B for a BGR net), float64 holding exactly the values ``_rawhm.txt`` prints
    (for formula 99 every channel holds the per-pixel L2 norm); ``input``: what entered the net; ``problem``: None,
    or why these results cannot be used (NaN or ±Inf arose in the net for this image; :meth:`check` raises it).
    """

    source: str
    target: int
    formula: int
    scores: np.ndarray
    ranking: np.ndarray
    classes: list[int]
    rawhm: np.ndarray
    input: Prepared
    class_names: Sequence[str] = dataclasses.field(repr=False, default=())
    colormap: str = "original"
    clip_percentile: float = DEFAULT_CLIP_PERCENTILE
    problem: str | None = None

    def check(self) -> Explanation:
        """This explanation, or a RelevanceError naming the input when its scores or relevance are not finite."""
        if self.problem:
            raise RelevanceError(f"{display_path(self.source)}: {self.problem}")
        return self

    def _name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else ""

    @property
    def top5(self) -> list[tuple[int, str, float]]:
        """(class index, class name, score) for the five best classes."""
        return [(int(c), self._name(int(c)), float(self.scores[c])) for c in self.ranking[:5]]

    @property
    def top10(self) -> list[tuple[int, float]]:
        """(class index, score as the net gave it) for the ten best classes: what ``_toptenscores.txt`` holds."""
        return [(int(c), self.scores[c]) for c in self.ranking[:10]]

    def heatmap(self) -> np.ndarray:
        """H×W relevance per pixel: the mean of the channels of ``rawhm`` (float64)."""
        return heatmap_values(self.rawhm)

    def image(self) -> np.ndarray | None:
        """The crop that entered the net as an H×W×3 RGB uint8 array (None for a preprocessed blob input)."""
        return None if self.input.crop is None else to_uint8(self.input.crop)

    def colored(self, colormap: str | None = None, overlay_image: bool = False,
                clip_percentile: float | None = None) -> np.ndarray:
        """The heatmap in colour, 3×H×W in [0, 1], scaled by the ``clip_percentile``-th percentile of |relevance|
        (default: the model's); over the crop, opaque where relevance is strong, when ``overlay_image``."""
        colormap, percentile = colormap or self.colormap, clip_percentile or self.clip_percentile
        if overlay_image and self.input.crop is not None:
            return relevance_overlay(self.rawhm, self.input.crop, colormap, percentile)
        return colorize(self.rawhm, colormap, percentile)

    def to_pil(self, colormap: str | None = None, overlay: bool = False,
               clip_percentile: float | None = None) -> Image.Image:
        """The heatmap as an RGB PIL image (the ``_heatmap.png`` of ``lrp-demo`` with the same options)."""
        return Image.fromarray(to_uint8(self.colored(colormap, overlay, clip_percentile)))

    def save(self, folder: str | os.PathLike, name: str | None = None, *, minimal: bool = False, npy: bool = False,
             overlay: bool = False, colormap: str | None = None, clip_percentile: float | None = None) -> list[str]:
        """Write the files ``lrp-demo`` writes for this image into ``folder``, named ``name`` (default: the
        input's file name) plus the usual suffixes; returns their paths."""
        self.check()
        name = name or os.path.basename(self.source) or "image"
        folder = os.fspath(folder)
        paths = output_paths(f"{folder}/{name}", folder, name)
        files = output_files(paths, minimal=minimal, npy=npy, image=self.input.crop is not None)
        return write_files(encode_explanation(self, paths, files, colormap=colormap, overlay_image=overlay,
                                              clip_percentile=clip_percentile))


def encode_explanation(explanation: Explanation, paths: OutputPaths, files: list[str], *,
                       colormap: str | None = None, overlay_image: bool = False,
                       clip_percentile: float | None = None) -> list[tuple[str, bytes]]:
    """The contents of ``files`` (a subset of ``paths``, in this order) for one explanation."""
    encoders = {
        paths.heatmap: lambda: png_bytes(explanation.colored(colormap, overlay_image, clip_percentile)),
        paths.overlay: lambda: png_bytes(explanation.colored(colormap, True, clip_percentile)),
        paths.topten: lambda: format_topten(explanation.top10).encode("ascii"),
        paths.rawhm: lambda: rawhm_bytes(explanation.rawhm),
        paths.as_inputted: lambda: png_bytes(explanation.input.crop),
        paths.npy: lambda: npy_bytes(explanation.rawhm.astype(np.float32)),
    }
    return [(path, encoders[path]()) for path in files]


#: Largest synset file read (ImageNet's 1000 class names take 31 KB).
MAX_SYNSET_BYTES = 64 * 2**20


def read_synsets(path: str | os.PathLike, count: int | None = None) -> list[str]:
    """The first ``count`` lines of the synset file (missing lines give empty names, as the original); every line
    when ``count`` is None."""
    with open_regular(path, "synset file", ModelError, MAX_SYNSET_BYTES) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise ModelError(f"{display_path(path)}: cannot read the synset file ({exc.strerror})") from None
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines if count is None else (lines + [""] * count)[:count]


def build_net(config: Config) -> Net:
    """The config's net; a layer problem found while building it is a ModelError naming the prototxt."""
    return load_net(config.param_file, config.model_file)


def load_net(prototxt: str | os.PathLike, caffemodel: str | os.PathLike) -> Net:
    """A net from its files; a layer problem found while building it is a ModelError naming the prototxt."""
    netdef = load_model(prototxt, caffemodel)
    try:
        return Net(netdef)
    except ModelError as exc:
        text = str(exc)
        raise ModelError(text if netdef.source in text else f"{netdef.source}: {text}") from None


@dataclass(frozen=True, eq=False)
class _Variant:
    """What one set of settings needs, checked against the net: the explainer, the mean on the resize canvas,
    the number of class scores and the outputs of the start layer (the valid targets)."""

    settings: Settings
    explainer: Explainer
    mean: MeanImage
    numclasses: int
    class_count: int
    mean_cache: dict = dataclasses.field(default_factory=dict)  # the mean as subtracted, per resized size


class Model:
    """A Caffe net with its mean image, class names and settings, loaded once (:func:`load`, :func:`load_caffe`).

    ``explain`` takes any setting of :class:`Settings` as a keyword for one call; each set of settings is checked
    against the net once (before any image) and kept.
    """

    def __init__(self, net: Net, mean: MeanImage, synsets: Sequence[str], settings: Settings,
                 config: Config | None = None, mean_name: str = "mean"):
        self.net, self.config, self.mean_name = net, config, mean_name
        shape = net.input_shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelError(f"{self._net_source()}: the net input must be N×3×H×W for images, got {shape}")
        self.input_hw = (int(shape[2]), int(shape[3]))
        self._mean = mean
        self._class_names = list(synsets)
        self._sizes = {name: int(np.prod(shape)) for name, shape in net.shapes.items()}  # values per image
        self._variants: dict[Settings, _Variant] = {}
        self._base = settings
        self.settings = settings
        self._variant(settings)

    def _net_source(self) -> str:
        return str(self.config.param_file) if self.config else self.net.name

    def _where(self, keyword: str, settings: Settings) -> str:
        """Where a setting came from, for messages: the config line, or the keyword that overrode it."""
        value = getattr(settings, keyword)
        if self.config is not None and value == getattr(self._base, keyword):
            return self.config.where(CONFIG_KEYS[keyword])
        return f"{keyword}={value!r}"

    def _variant(self, settings: Settings) -> _Variant:
        """Check ``settings`` against the net (once per set of settings) and keep what they need."""
        known = self._variants.get(settings)
        if known is not None:
            return known
        if settings.baseimgsize < max(self.input_hw):
            raise ConfigError(f"{self._where('baseimgsize', settings)}: baseimgsize {settings.baseimgsize} is "
                              f"smaller than the net input {self.input_hw[0]}×{self.input_hw[1]}")
        check_baseimgsize(settings.baseimgsize, settings.max_pixels, self._where("baseimgsize", settings))
        mean = self._mean.canvas(settings.baseimgsize, settings.baseimgsize)
        if mean.height < self.input_hw[0] or mean.width < self.input_hw[1]:
            raise ModelError(f"{self.mean_name}: the mean ({mean.height}×{mean.width}) is smaller than the net "
                             f"input ({self.input_hw[0]}×{self.input_hw[1]})")
        outputs = self._sizes[self.net.output_names[0]]
        numclasses = outputs if settings.numclasses is None else settings.numclasses
        if numclasses > outputs:
            raise ModelError(f"{self._where('numclasses', settings)}: numclasses {numclasses} exceeds the {outputs} "
                             f"outputs of blob '{self.net.output_names[0]}'")
        if numclasses < 1:
            raise ConfigError(f"{self._where('numclasses', settings)}: numclasses must be positive (got {numclasses})")
        try:
            explainer = Explainer(self.net, settings.relevance(), numclasses)
        except RelevanceError as exc:
            keyword = next((k for k, key in CONFIG_KEYS.items() if key == exc.key), "formula")
            raise ConfigError(f"{self._where(keyword, settings)}: {exc}") from None
        class_count = self._sizes[self.net.nodes[explainer.start].tops[0]]
        variant = _Variant(settings, explainer, mean, numclasses, class_count)
        self._variants[settings] = variant
        return variant

    @staticmethod
    def from_config(config: Config, **settings: Any) -> Model:
        """The model of a parsed config (see :func:`load`)."""
        base = Settings.from_config(config).replace(**settings)
        net = build_net(config)
        mean = read_mean(config.mean_file, config.use_mean_file_asbinaryprotoblob)
        model = Model(net, mean, [], base, config, mean_name=str(config.mean_file))
        # read after the settings are checked: numclasses may not be read into a list of that length before
        model._class_names = read_synsets(config.synsetfile, config.numclasses)
        return model

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def rules(self, **settings: Any) -> str:
        """The rule of every layer from the start layer down (``lrp-demo --show-rules``) under these settings."""
        return self._variant(self.settings.replace(**settings)).explainer.describe_rules()

    def class_count(self, **settings: Any) -> int:
        """How many classes a target can name: the outputs of the start layer."""
        return self._variant(self.settings.replace(**settings)).class_count

    # -- inputs ---------------------------------------------------------------------------------------------------
    def prepare(self, image: ImageInput, **settings: Any) -> Prepared:
        """Preprocess one input as ``lrp-demo`` does (ImageError for an input that cannot be used)."""
        return self.prepare_with(image, self.settings.replace(**settings))

    def prepare_with(self, image: ImageInput, settings: Settings) -> Prepared:
        """:meth:`prepare` with these settings (baseimgsize and mean_alignment are the ones it reads)."""
        variant = self._variant(settings)
        if isinstance(image, (str, os.PathLike)):
            path = os.fspath(image)
            if path.lower().endswith(".npy"):
                return Prepared(path, load_blob(path, self.net.input_shape[1:]))
            pre = preprocess_image(path, variant.settings.baseimgsize, self.input_hw, variant.mean,
                                   variant.settings.mean_alignment, variant.settings.max_pixels, variant.mean_cache)
            return Prepared(path, pre.blob, pre.as_inputted, pre.mean_bgr)
        if isinstance(image, np.ndarray) and image.dtype != np.uint8:
            if image.shape != self.net.input_shape[1:]:
                raise ImageError(f"<array>: a float array is a preprocessed input blob of shape "
                                 f"{self.net.input_shape[1:]}, got {image.shape} (images are uint8 H×W×3)")
            return Prepared("<array>", _finite_blob("<array>", image))
        if isinstance(image, np.ndarray):
            if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
                raise ImageError(f"<array>: expected an H×W×3, H×W×4 or H×W uint8 image, got shape {image.shape}")
            image = Image.fromarray(image)
        if not isinstance(image, Image.Image):
            raise ImageError(f"cannot explain a {type(image).__name__}: give a path, a PIL image or a numpy array")
        source = getattr(image, "filename", "") or "<image>"
        pre = preprocess_decoded(decode_image(image), variant.settings.baseimgsize, self.input_hw, variant.mean,
                                 variant.settings.mean_alignment, variant.mean_cache)
        return Prepared(source, pre.blob, pre.as_inputted, pre.mean_bgr)

    # -- explaining -----------------------------------------------------------------------------------------------
    def explain(self, images: ImageInput | Sequence[ImageInput], target: int | Sequence[int] = -1, *,
                batch_size: int | None = None, threads: int | None = None,
                **settings: Any) -> Explanation | list[Explanation]:
        """Explain one image (→ an :class:`Explanation`) or a list of them (→ a list, in order).

        ``target``: −1 (any negative) the top-1 class, −2 the top-5 together, N ≥ 0 class N; one for all images
        or one per image. ``settings``: any field of :class:`Settings` for this call (e.g. ``formula=100,
        beta=0``). Images go through the net ``batch_size`` at a time (default: 2 per thread), each batch in
        ``threads`` threads (default: one per core); results do not depend on either. A RelevanceError names an
        image whose values overflowed to NaN or ±Inf inside the net (:meth:`explain_inputs` returns it instead).
        """
        single = isinstance(images, (str, os.PathLike, Image.Image, np.ndarray))
        items = [images] if single else list(images)
        targets = [target] * len(items) if isinstance(target, (int, np.integer)) else [int(t) for t in target]
        if len(targets) != len(items):
            raise ConfigError(f"target: {len(targets)} targets for {len(items)} images")
        variant = self._variant(self.settings.replace(**settings))
        threads = max(1, threads or os.cpu_count() or 1)
        batch_size = max(1, batch_size or 2 * threads)
        results: list[Explanation] = []
        for lo in range(0, len(items), batch_size):
            chunk = items[lo : lo + batch_size]
            with limit_blas(1):  # the resize's small products gain nothing from BLAS threads
                prepared = [self.prepare_with(item, variant.settings) for item in chunk]
            results += self.explain_inputs(prepared, targets[lo : lo + batch_size], variant.settings, threads)
        for result in results:
            result.check()  # NaN or ±Inf arose in the net for this image
        return results[0] if single else results

    def start_values(self, blobs: np.ndarray, settings: Settings | None = None) -> np.ndarray:
        """The start layer's values (the scores relevance is seeded from, N×K) for input blobs N×C×H×W."""
        variant = self._variant(settings or self.settings)
        with limit_blas(1):
            return self.net.start_values(self.net.forward(blobs), variant.explainer.start)

    def check_target(self, target: int, settings: Settings | None = None) -> None:
        variant = self._variant(settings or self.settings)
        if target >= variant.class_count:
            raise RelevanceError(f"class {target} is out of range (the start layer has {variant.class_count} "
                                 "outputs)")

    def explain_inputs(self, prepared: list[Prepared], targets: list[int], settings: Settings | None = None,
                       threads: int = 1) -> list[Explanation]:
        """Explain prepared inputs as one batch in ``threads`` threads (BLAS on one thread each). An image whose
        scores or relevance came out NaN or ±Inf gets an Explanation with ``problem`` set (the others are unaffected);
        its :meth:`Explanation.check` raises."""
        variant = self._variant(settings or self.settings)
        for p, t in zip(prepared, targets, strict=True):
            try:
                self.check_target(t, variant.settings)
            except RelevanceError as exc:
                raise RelevanceError(f"{p.source}: {exc}") from None
        bounds = None
        if variant.explainer.needs_input_bounds:
            if any(p.mean_bgr is None for p in prepared):
                raise RelevanceError("formulas with the z^B rule need images, not preprocessed .npy blobs")
            mean = np.stack([p.mean_bgr for p in prepared]).astype(np.float32)
            bounds = (-mean, np.float32(255) - mean)
        with limit_blas(1):
            batch = variant.explainer.explain(np.stack([p.blob for p in prepared]), targets, bounds, threads=threads)
        return [
            Explanation(p.source, t, variant.settings.formula, batch.scores[n], batch.ranking[n], batch.classes[n],
                        batch.rawhm[n], p, self._class_names, variant.settings.colormap,
                        variant.settings.clip_percentile, batch.problems[n])
            for n, (p, t) in enumerate(zip(prepared, targets, strict=True))
        ]


def _finite_blob(source: str, blob: np.ndarray) -> np.ndarray:
    blob = np.asarray(blob, dtype=np.float32)
    if not np.isfinite(blob).all():
        raise ImageError(f"{source}: the input blob holds NaN or infinite values")
    return blob


def load(config: str | os.PathLike, **settings: Any) -> Model:
    """A model from a config file of the original's format (keywords: any field of :class:`Settings`, overriding
    the config's value)."""
    return Model.from_config(load_config(config), **settings)


def load_caffe(prototxt: str | os.PathLike, caffemodel: str | os.PathLike, *,
               mean: str | os.PathLike | Sequence[float] | np.ndarray | MeanImage | None = None, mean_mode: int = 1,
               synsets: str | os.PathLike | Sequence[str] | None = None, **settings: Any) -> Model:
    """A model from a deploy prototxt and a caffemodel.

    ``mean``: a mean file (``mean_mode`` as use_mean_file_asbinaryprotoblob: 0 text, 1 binaryproto B,G,R,
    2 binaryproto R,G,B; ``.npy`` recognised in any mode), a (B, G, R) triple of per-channel values, a 3×H×W
    BGR array, or None (no mean). ``synsets``: a file of class names, one per line, or a list of names.
    ``settings``: any field of :class:`Settings` (defaults: the shipped configs').
    """
    if isinstance(mean, MeanImage):
        mean_image, mean_name = mean, "mean"
    elif mean is None or (not isinstance(mean, (str, os.PathLike, np.ndarray)) and len(mean) == 3):
        values = np.zeros(3) if mean is None else np.asarray(mean, np.float64)
        mean_image, mean_name = MeanImage(values.reshape(3, 1), 1, 1), "mean"
    elif isinstance(mean, np.ndarray):
        if mean.ndim != 3 or mean.shape[0] != 3:
            raise ModelError(f"mean: expected a 3×H×W (B, G, R) array, got shape {mean.shape}")
        mean_image = MeanImage(mean.reshape(3, -1).astype(np.float64), mean.shape[1], mean.shape[2])
        mean_name = "mean"
    else:
        mean_image, mean_name = read_mean(mean, mean_mode), os.fspath(mean)
    if synsets is None:
        names: list[str] = []
    elif isinstance(synsets, (str, os.PathLike)):
        names = read_synsets(synsets)
    else:
        names = [str(s) for s in synsets]
    return Model(load_net(prototxt, caffemodel), mean_image, names, Settings().replace(**settings),
                 mean_name=mean_name)


__all__ = [
    "CONFIG_KEYS", "Explanation", "ImageInput", "LrpError", "Model", "Prepared", "Settings", "load", "load_caffe",
]  # fmt: skip
