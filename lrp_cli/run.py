"""One process's work: load a config's model once, then explain batches of file-list entries and write outputs.

config + file list → model → preprocess → forward → initial relevance → relevance per layer → outputs.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .caffe import load_model, read_mean
from .config import Config
from .errors import ConfigError, ImageError, LrpError, ModelError, RelevanceError
from .explain import Explainer
from .filelist import FileListEntry
from .net import Net
from .outputs import OutputError, OutputPaths, output_paths, write_npy, write_png, write_rawhm, write_topten
from .preprocess import preprocess_image
from .render import colorize, relevance_overlay
from .report import OVERLAY_SUFFIX
from .rules import formula


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each image (command-line switches on top of the config)."""

    minimal: bool = False
    original_names: bool = False
    colormap: str | None = None  # None: the config's heatmap_colormap
    overlay: bool = False
    npy: bool = False
    clip_percentile: float | None = None  # None: the config's heatmap_clip_percentile
    report: bool = False  # also write <name>_overlay.png for report.html


@dataclass
class Result:
    """The outcome for one entry: error is None on success."""

    entry: FileListEntry
    error: str | None = None
    files: list[str] = field(default_factory=list)
    top: list[tuple[int, str, float]] = field(default_factory=list)  # (class, name, probability), best first
    classes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False


@dataclass(frozen=True)
class Prepared:
    entry: FileListEntry
    paths: OutputPaths
    blob: np.ndarray  # 3×H×W float32, BGR, mean subtracted
    as_inputted: np.ndarray | None  # 3×H×W RGB in [0, 1], None for .npy inputs
    mean_bgr: np.ndarray | None  # the mean subtracted at each position, for the z^B bounds


def build_net(config: Config) -> Net:
    """The config's net; a layer problem found while building it is a ModelError naming the prototxt."""
    netdef = load_model(config.param_file, config.model_file)
    try:
        return Net(netdef)
    except ModelError as exc:
        text = str(exc)
        raise ModelError(text if netdef.source in text else f"{netdef.source}: {text}") from None


# Config keys a relevance-settings message can be about (checked in this order); the formula otherwise.
_RELEVANCE_KEYS = ("auxiliaryvariable_maxlayerindexforflatdistinconv", "alphabeta_beta", "epsstab")


def build_explainer(net: Net, config: Config) -> Explainer:
    """The config's Explainer; a setting the net cannot honour is a ConfigError naming the config line."""

    def check(key: str, step):
        try:
            return step()
        except RelevanceError as exc:
            raise ConfigError(f"{config.where(key)}: {exc}") from None

    check("relpropformulatype", lambda: formula(config.relpropformulatype))
    start = check("lastlayerindex", lambda: net.resolve_start(config.lastlayerindex))
    check("firstlayerindex", lambda: net.check_range(start, config.firstlayerindex))
    try:
        return Explainer(
            net,
            config.relpropformulatype,
            config.epsstab,
            config.alphabeta_beta,
            config.auxiliaryvariable_maxlayerindexforflatdistinconv,
            config.lastlayerindex,
            config.firstlayerindex,
            config.numclasses,
            config.lrn_relevance,
        )
    except RelevanceError as exc:
        text = str(exc)
        key = next((k for k in _RELEVANCE_KEYS if k in text), "relpropformulatype")
        raise ConfigError(f"{config.where(key)}: {text}") from None


def read_synsets(path: Path, count: int) -> list[str]:
    """The first ``count`` lines of the synset file (missing lines give empty names, as the original)."""
    try:
        lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the synset file ({exc.strerror})") from None
    return (lines + [""] * count)[:count]


class Demo:
    """Everything one process needs, loaded once: net, explainer, mean, class names."""

    def __init__(self, config: Config, options: OutputOptions = OutputOptions()):
        self.config = config
        self.options = options
        self.net = build_net(config)
        shape = self.net.input_shape
        if len(shape) != 4 or shape[1] != 3:
            raise ModelError(f"{config.param_file}: the net input must be N×3×H×W for images, got {shape}")
        self.input_hw = (shape[2], shape[3])
        if config.baseimgsize < max(self.input_hw):
            raise LrpError(
                f"{config.where('baseimgsize')}: baseimgsize {config.baseimgsize} is smaller than the net input "
                f"{shape[2]}×{shape[3]}"
            )
        self.mean = read_mean(config.mean_file, config.use_mean_file_asbinaryprotoblob).canvas(
            config.baseimgsize, config.baseimgsize
        )
        if self.mean.height < self.input_hw[0] or self.mean.width < self.input_hw[1]:
            raise ModelError(
                f"{config.mean_file}: the mean ({self.mean.height}×{self.mean.width}) is smaller than the net input "
                f"({shape[2]}×{shape[3]})"
            )
        self.explainer = build_explainer(self.net, config)
        self.synsets = read_synsets(config.synsetfile, config.numclasses)
        self.colormap = options.colormap or config.heatmap_colormap
        self.clip_percentile = options.clip_percentile or config.heatmap_clip_percentile
        self.class_count = self._probe()

    def _probe(self) -> int:
        """Run one blank image so that numclasses and the start layer are checked before any real image."""
        forward = self.net.forward(np.zeros((1,) + self.net.input_shape[1:], np.float32))
        outputs = forward.outputs[self.net.output_names[0]].size
        if self.config.numclasses > outputs:
            raise ModelError(
                f"{self.config.where('numclasses')}: numclasses {self.config.numclasses} exceeds the {outputs} "
                f"outputs of blob '{self.net.output_names[0]}'"
            )
        return self.net.start_values(forward, self.explainer.start).shape[1]

    # -- per entry -------------------------------------------------------------------------------------------------
    def _paths(self, entry: FileListEntry) -> OutputPaths:
        return output_paths(
            entry.fullpath,
            self.config.standalone_outpath,
            self.config.standalone_rootpath,
            original_names=self.options.original_names,
        )

    def output_files(self, entry: FileListEntry) -> list[str]:
        """Every file this entry produces, in writing order (what --skip-existing checks and _write writes)."""
        paths = self._paths(entry)
        if self.options.minimal:
            files = [paths.topten, paths.rawhm]
        else:
            files = [paths.heatmap, paths.topten, paths.rawhm]
            if not entry.is_blob:
                files.append(paths.as_inputted)
                if self.options.report:
                    files.append(paths.base + OVERLAY_SUFFIX)
        if self.options.npy:
            files.append(paths.npy)
        return files

    def prepare(self, entry: FileListEntry) -> Prepared:
        """Check the entry and preprocess its image (or load its .npy blob); raises LrpError."""
        paths = self._paths(entry)
        if entry.target >= self.class_count:
            raise LrpError(
                f"{entry.source} line {entry.line}: class {entry.target} for {entry.path} is out of range "
                f"(the start layer has {self.class_count} outputs)"
            )
        if entry.is_blob:
            return Prepared(entry, paths, self._load_blob(entry.path), None, None)
        pre = preprocess_image(
            entry.path, self.config.baseimgsize, self.input_hw, self.mean, self.config.mean_alignment
        )
        return Prepared(entry, paths, pre.blob, pre.as_inputted, pre.mean_bgr)

    def _load_blob(self, path: str) -> np.ndarray:
        try:
            blob = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise ImageError(f"{path}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ImageError(f"{path}: not a readable .npy array ({exc})") from None
        expected = self.net.input_shape[1:]
        if blob.shape != expected or not np.issubdtype(blob.dtype, np.number):
            raise ImageError(f"{path}: expected a numeric array of shape {expected}, got {blob.dtype} {blob.shape}")
        return blob.astype(np.float32)

    def run(self, entries: list[FileListEntry], threads: int = 1) -> list[Result]:
        """Explain entries as one batch (those that preprocess) in ``threads`` threads, write their outputs; one
        Result per entry."""
        started = time.perf_counter()
        results = {id(e): Result(e) for e in entries}
        prepared: list[Prepared] = []
        for entry in entries:
            try:
                prepared.append(self.prepare(entry))
            except LrpError as exc:
                results[id(entry)].error = str(exc)
        if prepared:
            try:
                self._explain_and_write(prepared, results, threads)
            except LrpError as exc:
                for item in prepared:
                    results[id(item.entry)].error = str(exc)
        seconds = (time.perf_counter() - started) / max(len(entries), 1)
        for result in results.values():
            result.seconds = seconds
        return [results[id(e)] for e in entries]

    def _explain_and_write(self, prepared: list[Prepared], results: dict[int, Result], threads: int) -> None:
        images = np.stack([p.blob for p in prepared])
        bounds = None
        if self.explainer.needs_input_bounds:
            if any(p.mean_bgr is None for p in prepared):
                raise LrpError("formulas with the z^B rule need images, not preprocessed .npy blobs")
            mean = np.stack([p.mean_bgr for p in prepared]).astype(np.float32)
            bounds = (-mean, np.float32(255) - mean)
        explanation = self.explainer.explain(images, [p.entry.target for p in prepared], bounds, threads=threads)
        for n, item in enumerate(prepared):
            result = results[id(item.entry)]
            try:
                self._write(item, explanation, n, result)
            except LrpError as exc:
                result.error = str(exc)

    def _write(self, item: Prepared, explanation, n: int, result: Result) -> None:
        paths, options = item.paths, self.options
        rawhm = explanation.rawhm[n]
        ranking = explanation.ranking[n]
        scores = explanation.scores[n]
        ranked = [(int(c), scores[c]) for c in ranking[:10]]
        result.top = [(int(c), self.synsets[c], float(scores[c])) for c in ranking[:5]]
        result.classes = explanation.classes[n]
        files = self.output_files(item.entry)
        for path in files:  # refuse before writing anything: no half set of outputs
            if os.path.isdir(path):
                raise OutputError(f"{path}: cannot write: a directory of that name is in the way")

        def heatmap():
            if options.overlay and item.as_inputted is not None:
                return relevance_overlay(rawhm, item.as_inputted, self.colormap, self.clip_percentile)
            return colorize(rawhm, self.colormap, self.clip_percentile)

        writers = {
            paths.heatmap: lambda path: write_png(path, heatmap()),
            paths.topten: lambda path: write_topten(path, ranked),
            paths.rawhm: lambda path: write_rawhm(path, rawhm),
            paths.as_inputted: lambda path: write_png(path, item.as_inputted),
            paths.npy: lambda path: write_npy(path, rawhm.astype(np.float32)),
            paths.base + OVERLAY_SUFFIX: lambda path: write_png(
                path, relevance_overlay(rawhm, item.as_inputted, self.colormap, self.clip_percentile)
            ),
        }
        written = []
        try:
            for path in files:
                writers[path](path)
                written.append(path)
        except LrpError:
            for path in written:  # an entry that failed leaves none of its outputs behind
                with contextlib.suppress(OSError):
                    os.unlink(path)
            raise
        result.files = written
