"""lrp-demo's work in one process: a config's model loaded once (:mod:`lrp_cli.api`), then batches of file-list
entries explained and their outputs written.

config + file list → model → preprocess → forward → rules → relevance per layer → outputs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .api import Model, Prepared, encode_explanation
from .config import Config
from .errors import LrpError
from .filelist import FileListEntry
from .outputs import OutputPaths, check_output_name, output_files, output_paths, remove_stale_temps, write_files
from .preprocess import DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class OutputOptions:
    """What to write for each image (command-line switches on top of the config)."""

    minimal: bool = False
    original_names: bool = False
    colormap: str | None = None  # None: the config's heatmap_colormap
    overlay: bool = False
    npy: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS  # largest decoded image (travels to every worker with the rest)
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
class Item:
    """An entry ready to explain: where its outputs go and its preprocessed input."""

    entry: FileListEntry
    paths: OutputPaths
    input: Prepared


@dataclass
class Staged:
    """A batch on its way: its entries, their results so far, the items that prepared, then their explanations."""

    entries: list[FileListEntry]
    results: list[Result]
    items: list[Item]
    seconds: float = 0.0
    explanations: list = field(default_factory=list)

    def result(self, entry: FileListEntry) -> Result:
        return self.results[next(i for i, e in enumerate(self.entries) if e is entry)]

    def fail(self, message: str) -> None:
        for item in self.items:
            self.result(item.entry).error = message
        self.items, self.explanations = [], []


class Demo:
    """Everything one process needs, loaded once: the model of a config and what to write for each entry."""

    def __init__(self, config: Config, options: OutputOptions = OutputOptions()):
        self.config = config
        self.options = options
        self.model = Model.from_config(config, max_pixels=options.max_pixels)
        self.colormap = options.colormap or config.heatmap_colormap
        self.clip_percentile = options.clip_percentile or config.heatmap_clip_percentile
        self._recent_paths: dict[str, OutputPaths] = {}

    # -- per entry -------------------------------------------------------------------------------------------------
    def _paths(self, entry: FileListEntry) -> OutputPaths:
        """The entry's output names, remembered for the last few entries (each is asked for several times)."""
        paths = self._recent_paths.get(entry.fullpath)
        if paths is None:
            paths = output_paths(entry.fullpath, self.config.standalone_outpath, self.config.standalone_rootpath,
                                 original_names=self.options.original_names)
            if len(self._recent_paths) >= 1024:
                self._recent_paths.clear()
            self._recent_paths[entry.fullpath] = paths
        return paths

    def output_files(self, entry: FileListEntry) -> list[str]:
        """Every file this entry produces, in writing order (what --skip-existing checks and _write writes); an
        OutputError for a name that cannot be created."""
        files = output_files(self._paths(entry), minimal=self.options.minimal, npy=self.options.npy,
                             image=not entry.is_blob, overlay=self.options.report)
        for path in files:
            check_output_name(path, entry.path)
        return files

    def remove_stale_temps(self, entry: FileListEntry) -> list[str]:
        """Remove the temporary files a killed run left for any output of this entry; returns their paths."""
        return remove_stale_temps(self._paths(entry).every_kind())

    def prepare(self, entry: FileListEntry) -> Item:
        """Check the entry and preprocess its image (or load its .npy blob); raises LrpError."""
        paths = self._paths(entry)
        self.output_files(entry)  # names that cannot be created fail the entry before its image is read
        count = self.model.class_count()
        if entry.target >= count:
            raise LrpError(
                f"{entry.source} line {entry.line}: class {entry.target} for {entry.path} is out of range "
                f"(the start layer has {count} outputs)"
            )
        return Item(entry, paths, self.model.prepare(entry.path))

    def stage(self, entries: list[FileListEntry]) -> Staged:
        """Prepare a batch: each entry's stale temporaries removed and its input preprocessed, or its error. (One
        entry after the other: preprocessing is many small numpy steps, which threads would only take turns at.)"""
        started = time.perf_counter()
        results = [Result(e) for e in entries]
        items: list[Item] = []
        for entry, result in zip(entries, results, strict=True):
            try:
                self.remove_stale_temps(entry)
                items.append(self.prepare(entry))
            except LrpError as exc:
                result.error = str(exc)
            except Exception as exc:  # noqa: BLE001 - one entry's failure stays that entry's
                result.error = f"unexpected {type(exc).__name__}: {exc}"
        return Staged(entries, results, items, time.perf_counter() - started)

    def explain(self, staged: Staged, threads: int = 1) -> None:
        """Explain the prepared items of a batch as one batch in ``threads`` threads (``staged.explanations``); an
        error of the batch becomes the error of each of its items."""
        started = time.perf_counter()
        if staged.items:
            try:
                staged.explanations = self.model.explain_inputs(
                    [i.input for i in staged.items], [i.entry.target for i in staged.items], threads=threads)
            except LrpError as exc:
                staged.fail(str(exc))
        staged.seconds += time.perf_counter() - started

    def write(self, staged: Staged, threads: int = 1) -> list[Result]:
        """Write the outputs of an explained batch; one Result per entry, in order. ``threads`` > 1 writes several
        entries at once; entries with the same output files are written one after the other, in list order, so
        that the later one's files are the ones that stay."""
        started = time.perf_counter()
        lanes: dict[str, list] = {}  # the entries of each set of output files, in list order
        for item, explanation in zip(staged.items, staged.explanations, strict=False):
            lanes.setdefault(item.paths.rawhm, []).append((item, explanation, staged.result(item.entry)))
        _in_lanes(list(lanes.values()), threads, lambda job: self._write_entry(*job))
        seconds = (staged.seconds + time.perf_counter() - started) / max(len(staged.entries), 1)
        for result in staged.results:
            result.seconds = seconds
        return staged.results

    def run(self, entries: list[FileListEntry], threads: int = 1) -> list[Result]:
        """Explain entries as one batch (those that preprocess) in ``threads`` threads, write their outputs; one
        Result per entry. (lrp-demo in one process overlaps these three steps across batches: lrp_cli.batch.)"""
        staged = self.stage(entries)
        self.explain(staged, threads)
        return self.write(staged, threads)

    def _write_entry(self, item: Item, explanation, result: Result) -> None:
        try:
            self._write(item, explanation, result)
        except LrpError as exc:
            result.error = str(exc)

    def _write(self, item: Item, explanation, result: Result) -> None:
        explanation.check()  # NaN or ±Inf arose in the net for this image: its entry fails, never NaN files
        result.top = explanation.top5
        result.classes = explanation.classes
        files = self.output_files(item.entry)
        contents = encode_explanation(explanation, item.paths, files, colormap=self.colormap,
                                      overlay_image=self.options.overlay, clip_percentile=self.clip_percentile)
        # every file or none; an earlier run's complete outputs are only ever replaced by complete new ones
        result.files = write_files(contents)


class _Helpers:
    """Daemon threads of this process that run lanes for :func:`_in_lanes` (kept, not made per batch: their
    thread-local scratch, e.g. :mod:`lrp_cli.gformat`'s, is made once; daemon: they never delay the end of the
    process)."""

    def __init__(self) -> None:
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()

    def submit(self, task: Callable[[], None], count: int) -> None:
        """Run ``task`` in ``count`` helpers (threads are started as needed)."""
        with self.lock:
            while len(self.threads) < count:
                thread = threading.Thread(target=self._serve, name="lrp-entries", daemon=True)
                thread.start()
                self.threads.append(thread)
        for _ in range(count):
            self.tasks.put(task)

    def _serve(self) -> None:
        while True:
            self.tasks.get()()


_HELPERS = _Helpers()


def _in_lanes(lanes: list[list], threads: int, work: Callable[[Any], None]) -> None:
    """``work(job)`` for every job of every lane, each lane's jobs one after the other, up to ``threads`` lanes at a
    time (this thread and helpers). The first exception of any lane is raised at the end. The calling thread takes
    lanes too, so it never waits for a helper that is busy elsewhere, only for the lanes a helper has begun."""
    waiting = iter(lanes)
    errors: list[BaseException] = []
    state = threading.Condition()
    running = [0]  # lanes begun and not yet finished

    def run() -> None:
        while True:
            with state:
                lane = next(waiting, None)
                if lane is None:
                    return
                running[0] += 1
            try:
                for job in lane:
                    work(job)
            except BaseException as exc:  # noqa: BLE001 - raised by the calling thread
                errors.append(exc)
            finally:
                with state:
                    running[0] -= 1
                    state.notify_all()

    if threads > 1 and len(lanes) > 1:
        _HELPERS.submit(run, min(threads, len(lanes)) - 1)
    run()
    with state:
        state.wait_for(lambda: running[0] == 0)
    if errors:
        raise errors[0]
