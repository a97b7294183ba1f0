"""One process's work: load a config's model once, then explain batches of file-list entries and write outputs.

config + file list → model → preprocess → forward → initial relevance → relevance per layer → outputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .blobs import load_blob
from .caffe import load_model, read_mean
from .config import Config
from .errors import ConfigError, LrpError, ModelError, RelevanceError
from .explain import Explainer
from .filelist import FileListEntry
from .files import display_path, open_regular
from .net import Net
from .outputs import (
    OutputPaths,
    check_output_name,
    format_rawhm,
    format_topten,
    npy_bytes,
    output_paths,
    png_bytes,
    remove_stale_temps,
    write_files,
)
from .preprocess import DEFAULT_MAX_PIXELS, check_baseimgsize, preprocess_image
from .render import colorize, overlay
from .rules import formula


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each image (command-line switches on top of the config)."""

    minimal: bool = False
    original_names: bool = False
    colormap: str | None = None  # None: the config's heatmap_colormap
    overlay: bool = False
    npy: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest decoded image (travels to every worker with the rest)


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


#: Largest synset file read (ImageNet's 1000 class names take 31 KB).
MAX_SYNSET_BYTES = 64 * 2**20

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
    with open_regular(path, "synset file", ModelError, MAX_SYNSET_BYTES) as f:
        try:
            data = f.read()
        except OSError as exc:
            raise ModelError(f"{display_path(path)}: cannot read the synset file ({exc.strerror})") from None
    lines = data.decode("utf-8", errors="replace").splitlines()
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
        check_baseimgsize(config.baseimgsize, options.max_pixels, config.where("baseimgsize"))
        self.mean = read_mean(config.mean_file, config.use_mean_file_asbinaryprotoblob).canvas(
            config.baseimgsize, config.baseimgsize
        )
        if self.mean.height < self.input_hw[0] or self.mean.width < self.input_hw[1]:
            raise ModelError(
                f"{config.mean_file}: the mean ({self.mean.height}×{self.mean.width}) is smaller than the net input "
                f"({shape[2]}×{shape[3]})"
            )
        self.explainer = build_explainer(self.net, config)
        self.class_count = self._probe()  # checks numclasses before read_synsets makes a list of that length
        self.synsets = read_synsets(config.synsetfile, config.numclasses)
        self.colormap = options.colormap or config.heatmap_colormap

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
        if self.options.npy:
            files.append(paths.npy)
        for path in files:  # refused before any work: a name that cannot be created
            check_output_name(path, entry.path)
        return files

    def remove_stale_temps(self, entry: FileListEntry) -> list[str]:
        """Remove the temporary files a killed run left for any output of this entry; returns their paths."""
        return remove_stale_temps(self._paths(entry).every_kind())

    def prepare(self, entry: FileListEntry) -> Prepared:
        """Check the entry and preprocess its image (or load its .npy blob); raises LrpError."""
        paths = self._paths(entry)
        self.output_files(entry)  # names that cannot be created fail the entry before its image is read
        if entry.target >= self.class_count:
            raise LrpError(
                f"{entry.source} line {entry.line}: class {entry.target} for {entry.path} is out of range "
                f"(the start layer has {self.class_count} outputs)"
            )
        if entry.is_blob:
            return Prepared(entry, paths, load_blob(entry.path, self.net.input_shape[1:]), None, None)
        pre = preprocess_image(
            entry.path, self.config.baseimgsize, self.input_hw, self.mean, self.config.mean_alignment,
            self.options.max_pixels,
        )
        return Prepared(entry, paths, pre.blob, pre.as_inputted, pre.mean_bgr)

    def run(self, entries: list[FileListEntry], threads: int = 1) -> list[Result]:
        """Explain entries as one batch (those that preprocess) in ``threads`` threads, write their outputs; one
        Result per entry."""
        started = time.perf_counter()
        results = {id(e): Result(e) for e in entries}
        prepared: list[Prepared] = []
        for entry in entries:
            try:
                self.remove_stale_temps(entry)
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

        def heatmap():
            colored = colorize(rawhm, self.colormap)
            return overlay(colored, item.as_inputted) if options.overlay and item.as_inputted is not None else colored

        encoders = {
            paths.heatmap: lambda: png_bytes(heatmap()),
            paths.topten: lambda: format_topten(ranked).encode("ascii"),
            paths.rawhm: lambda: format_rawhm(rawhm).encode("ascii"),
            paths.as_inputted: lambda: png_bytes(item.as_inputted),
            paths.npy: lambda: npy_bytes(rawhm.astype(np.float32)),
        }
        # every file or none; an earlier run's complete outputs are only ever replaced by complete new ones
        result.files = write_files((path, encoders[path]()) for path in files)
