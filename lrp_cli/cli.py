"""Command line: ``lrp-demo CONFIG FILELIST PREPENDPATH`` and ``lrp-parallel-demo CONFIG FILELIST PREFIX``.

Thin: parse options, check the output folder, hand the work to :mod:`lrp_cli.batch`, report. Exit status 0 when
every entry succeeded, 1 when any failed (or a fatal error stopped the run), 2 for bad usage, 130 after SIGINT
(Ctrl-C) and 143 after SIGTERM (the run's workers stopped and its temporary files removed first).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import click
import numpy as np

from . import __version__
from .api import load
from .batch import Plan, Shard, run_entries, scheduler_address
from .config import Config, load_config
from .errors import LrpError
from .filelist import FileListEntry, FileListLineError, iter_filelist
from .files import display_path, file_kind
from .preprocess import DEFAULT_MAX_PIXELS, RESIZED_FRACTION
from .render import COLORMAPS
from .report import Report, formula_text, row_for_result
from .run import Demo, OutputOptions, Result


def _show_rules(ctx: click.Context, param, config: str | None) -> None:
    """``--show-rules CONFIG``: the rule assignment (layer index, name, type, rule) from the start layer down."""
    if config is None or ctx.resilient_parsing:
        return
    try:
        click.echo(load(config).rules(), nl=False)
    except LrpError as exc:
        click.echo(f"{ctx.info_name}: error: {exc}", err=True)
        ctx.exit(1)
    ctx.exit(0)


def _options(command):
    decorators = [
        click.argument("config", type=click.Path()),  # load_config reports a missing file or a folder in one line
        click.argument("filelist"),
        click.argument("prependpath"),
        click.option("--minimal-output", is_flag=True, help="Write only the top-10 scores and the raw heatmap."),
        click.option("--original-names", is_flag=True, help="Name the top-10 file _top10scores.txt (C++ binary)."),
        click.option("--colormap", type=click.Choice(COLORMAPS), default=None,
                     help="Heatmap colouring (default: the config's heatmap_colormap, else 'original')."),
        click.option("--clip-percentile", type=click.FloatRange(0, 100, min_open=True), default=None, metavar="P",
                     help="Scale colours by the P-th percentile of |relevance| and clip above it (default: the "
                          "config's heatmap_clip_percentile, else 100 = the largest value, as the original)."),
        click.option("--overlay", is_flag=True,
                     help="Draw the heatmap over the input crop, opaque where relevance is strong."),
        click.option("--npy", is_flag=True, help="Also write the raw heatmap as <name>_rawhm.npy."),
        click.option("--report", is_flag=True,
                     help="Write report.html into standalone_outpath (and <name>_overlay.png for it), row by row."),
        click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Worker processes (each loads the model once)."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="Threads per process that explain slices of each batch and write its outputs [default: "
                          "cores / jobs]."),
        click.option("--backend", type=click.Choice(["loky", "dask"]), default=None,
                     help="Where the workers run: local processes or a Dask cluster [default: loky; dask with "
                          "--scheduler]."),
        click.option("--scheduler", default=None,
                     help="Dask scheduler address (tcp://host:port); implies --backend dask."),
        click.option("--shard", default=None, metavar="I/N", help="Process only list positions p with p %% N == I."),
        click.option("--skip-existing", is_flag=True, help="Skip entries whose outputs all exist (resume a run)."),
        click.option("--max-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_PIXELS, show_default=True,
                     help="Largest image decoded, in pixels (width x height; about 35 bytes each at peak); "
                          f"baseimgsize may be at most sqrt(max-pixels / {RESIZED_FRACTION})."),
        click.option("--default-target", type=int, default=None,
                     help="Target for list lines without one (otherwise such a line is an error)."),
        click.option("--json", "json_lines", is_flag=True, help="Print one JSON line per image on stdout."),
        click.option("--fail-fast", is_flag=True, help="Stop after the batch with the first failed entry."),
        click.option("--quiet", is_flag=True, help="No progress bar and no per-entry messages; errors still show."),
        click.option("--show-rules", metavar="CONFIG", is_eager=True, expose_value=False, callback=_show_rules,
                     help="Print the relevance rule of every layer under CONFIG's settings, and exit."),
        click.version_option(__version__),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Images per forward and relevance pass [default: 2 per core of each worker; 1 for a list on "
                   "stdin]. Results do not depend on it.")
@_options
def lrp_demo(batch_size, **kwargs):
    """Explain each image of FILELIST (or '-' for stdin) with the net and relevance rule of CONFIG.

    Image paths are PREPENDPATH + '/' + the list's path; outputs go below the config's standalone_outpath.
    """
    sys.exit(_main("lrp-demo", batch_size or "auto", **kwargs))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@_options
def lrp_parallel_demo(**kwargs):
    """Like lrp-demo, in batches of the prototxt's batch dimension (the original lrp_parallel_demo)."""
    sys.exit(_main("lrp-parallel-demo", None, **kwargs))


@dataclass(frozen=True)
class _Args:
    """The command line, as click parsed it."""

    config: str
    filelist: str
    prependpath: str
    minimal_output: bool
    original_names: bool
    colormap: str | None
    clip_percentile: float | None
    overlay: bool
    npy: bool
    report: bool
    jobs: int
    threads: int | None
    backend: str | None
    scheduler: str | None
    shard: str | None
    skip_existing: bool
    max_pixels: int
    default_target: int | None
    json_lines: bool
    fail_fast: bool
    quiet: bool


def _checked_backend(args: _Args) -> _Args:
    """The arguments with the backend decided (``--scheduler`` implies dask) and the scheduler address checked and
    completed, before anything is loaded; LrpError for --scheduler with --backend loky or a bad address."""
    if args.scheduler is None:
        return dataclasses.replace(args, backend=args.backend or "loky")
    if args.backend == "loky":
        raise LrpError(f"--scheduler {args.scheduler}: a Dask scheduler needs --backend dask, not --backend loky")
    return dataclasses.replace(args, backend="dask", scheduler=scheduler_address(args.scheduler))


def _plan(args: _Args, demo: Demo, batch_size: int | str | None) -> Plan:
    """How to run: the command line's choices, and the defaults that depend on the machine and the input."""
    threads = args.threads
    if threads is None:
        threads = 1 if args.backend == "dask" else max(1, (os.cpu_count() or 1) // args.jobs)
    if batch_size == "auto":  # from stdin, one at a time: a result must not wait for lines not yet written
        batch_size = 1 if args.filelist == "-" else 2 * threads
    return Plan(
        batch_size=batch_size or max(1, demo.model.net.input_shape[0]),
        threads=threads,
        jobs=args.jobs,
        backend=args.backend,
        scheduler=args.scheduler,
        shard=Shard.parse(args.shard) if args.shard else Shard(),
        skip_existing=args.skip_existing,
        join_runt=args.filelist != "-",  # a list on stdin is not read ahead
        overlap=not args.fail_fast,  # --fail-fast: no later entry may have been started when one fails
    )


class _Report:
    """Follows the results: counts them, prints failures (and JSON lines), shows progress on a terminal."""

    def __init__(self, program: str, args: _Args):
        self.program, self.args = program, args
        self.done = self.skipped = 0
        self.failures: list[str] = []
        self.page: Report | None = None  # report.html, with --report
        self.class_names: list[str] = []
        self.progress = None

    def say(self, message: str) -> None:
        click.echo(f"{self.program}: {message}", err=True)

    def warn(self, message: str) -> None:
        """One warning line (also with --quiet), above the progress bar if there is one; any thread may call it."""
        line = f"{self.program}: warning: {message}"
        if self.progress is not None:
            self.progress.write(line, file=sys.stderr)
        else:
            click.echo(line, err=True)

    def follow(self, results) -> None:
        progress = None
        if not self.args.quiet and sys.stderr.isatty():
            from tqdm import tqdm

            progress = self.progress = results = tqdm(results, unit="img", file=sys.stderr, leave=False)
        try:
            for result in results:
                if self.record(result, progress) and self.args.fail_fast:
                    self.say("stopping at the first failure (--fail-fast)")
                    break
        finally:
            self.progress = None
            if progress is not None:
                progress.close()

    def record(self, result: Result | FileListLineError, progress) -> bool:
        """Account for one result; True when it is a failure."""
        if self.args.json_lines:
            if isinstance(result, Result):
                _print_json(result)
            else:
                _print_line_error(result)
        if self.page is not None and isinstance(result, Result):
            self.page.add(row_for_result(result, self.class_names))
        if isinstance(result, FileListLineError):
            failure = str(result)
        elif result.error:
            path = display_path(result.entry.path)
            failure = result.error if path in result.error else f"{path}: {result.error}"
        else:
            self.skipped += result.skipped
            self.done += not result.skipped
            return False
        self.failures.append(failure)
        if not self.args.quiet:
            message = f"{self.program}: failed: {failure}"
            if progress is not None:
                progress.write(message, file=sys.stderr)
            else:
                click.echo(message, err=True)
        return True

    def summary(self, seconds: float) -> int:
        summary = f"{self.done} done, {len(self.failures)} failed"
        if self.skipped:
            summary += f", {self.skipped} skipped (outputs exist)"
        self.say(f"{summary} in {seconds:.1f} s")
        for failure in self.failures:
            self.say(f"failed: {failure}")
        return 1 if self.failures else 0


def _main(program: str, batch_size: int | str | None, **options) -> int:
    started = time.perf_counter()
    args = _Args(**options)
    report = _Report(program, args)
    if args.report and args.minimal_output:
        report.say("error: --report shows the heatmap PNGs, which --minimal-output does not write")
        return 2
    with _stopped_by_signals():
        try:
            args = _checked_backend(args)
            config = load_config(args.config)
            check_output_folder(config)
            outputs = OutputOptions(args.minimal_output, args.original_names, args.colormap, args.overlay, args.npy,
                                    args.max_pixels, args.clip_percentile, args.report)
            demo = Demo(config, outputs)
            if args.report:
                report.class_names = demo.model.class_names
                report.page = Report(config.standalone_outpath, formula_text(config),
                                     formula_short=formula_text(config, short=True))
            plan = _plan(args, demo, batch_size)
            target = args.default_target if args.default_target is not None else config.default_target
            stdin = sys.stdin.buffer if args.filelist == "-" else None
            entries = iter_filelist(args.filelist, args.prependpath, target, stdin=stdin)
            entries = _warn_duplicates(entries, demo, plan.shard, report.warn)
            results = run_entries(config, outputs, entries, plan, demo)
            try:
                report.follow(results)
            finally:
                results.close()  # stops workers and removes their temporary files if the run did not end
        except LrpError as exc:
            report.say(f"error: {exc}")
            return 1
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            report.say("terminated (SIGTERM)" if signum == signal.SIGTERM else "interrupted (SIGINT)")
            return SIGNAL_EXIT[signum]
    return report.summary(time.perf_counter() - started)


# -- signals ---------------------------------------------------------------------------------------------------------
#: Exit status after each signal the command handles: 128 + its number, as a shell reports a process it ended.
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived: raised once in the main thread, like Ctrl-C's KeyboardInterrupt, so that the run
    unwinds through its ``finally`` blocks (workers stopped, temporary files removed) before the exit status."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Stopped` in the main thread; later ones are ignored while the run shuts
    down (which is bounded: workers are killed, Dask closes time out), so the clean-up is never cut short."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set in the main thread (e.g. a CliRunner in a worker thread)
        return
    received: list[int] = []

    def stop(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise Stopped(signum)

    previous = {signum: signal.signal(signum, stop) for signum in SIGNAL_EXIT}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


# -- output folder ---------------------------------------------------------------------------------------------------
def check_output_folder(config: Config) -> None:
    """LrpError (one line naming the config line) unless ``standalone_outpath`` is a folder this process can create
    files in, or a folder it can create: checked before anything is computed by creating and removing a probe file
    in it, or in its nearest existing parent (also catches read-only file systems, where a permission check
    would pass for root)."""
    where = config.where("standalone_outpath")
    shown = display_path(config.standalone_outpath)
    target = os.path.normpath(config.standalone_outpath)
    folder = target
    while not os.path.exists(folder):
        if os.path.lexists(folder):
            raise LrpError(f"{where}: cannot create the output folder {shown}: {display_path(folder)} is a broken "
                           "symbolic link")
        folder = os.path.dirname(folder) or os.curdir  # up to "/" or "."
    what = f"the output folder {shown}" if folder == target else \
        f"cannot create the output folder {shown}: {display_path(folder)}"
    mode = os.stat(folder).st_mode
    if not stat.S_ISDIR(mode):
        kind = "a regular file" if stat.S_ISREG(mode) else file_kind(mode)
        raise LrpError(f"{where}: {what} is not a folder ({kind})")
    try:
        fd, probe = tempfile.mkstemp(prefix=".lrp-demo-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise LrpError(f"{where}: {what} is not writable ({exc.strerror or exc})") from None


class _SeenKeys:
    """A set of 64-bit keys at about 8 bytes each, however long the list: recent keys in a small Python set,
    merged into sorted numpy runs whose sizes at least double towards the front (so each key is copied
    O(log n) times and a lookup searches O(log n) runs)."""

    FRESH = 4096

    def __init__(self) -> None:
        self.fresh: set[int] = set()
        self.runs: list[np.ndarray] = []

    def add(self, key: int) -> bool:
        """Add ``key``; False when it was there already."""
        if key in self.fresh:
            return False
        probe = np.uint64(key)
        for run in self.runs:
            at = int(np.searchsorted(run, probe))
            if at < len(run) and run[at] == probe:
                return False
        self.fresh.add(key)
        if len(self.fresh) >= self.FRESH:
            run = np.sort(np.fromiter(self.fresh, np.uint64, len(self.fresh)))
            self.fresh.clear()
            while self.runs and len(self.runs[-1]) <= 2 * len(run):
                run = np.sort(np.concatenate((self.runs.pop(), run)))
            self.runs.append(run)
        return True


def _warn_duplicates(entries: Iterable, demo: Demo, shard: Shard, warn) -> Iterator:
    """``entries`` unchanged, warning once for each entry (of this shard) whose output files an earlier entry of
    the list also writes: the later overwrites the earlier. About 8 bytes per entry (a 64-bit hash of its
    normalised output names)."""
    seen = _SeenKeys()
    for position, entry in enumerate(entries):
        if isinstance(entry, FileListEntry):
            try:
                files = demo.output_files(entry)
            except LrpError:
                files = None  # reported when the entry runs
            if files:
                names = "\0".join(os.path.normpath(f) for f in files)
                digest = hashlib.blake2b(os.fsencode(names), digest_size=8).digest()
                if not seen.add(int.from_bytes(digest, "little")) and position % shard.count == shard.index:
                    warn(f"{entry.source} line {entry.line}: {display_path(entry.path)} has the same output files "
                         "as an earlier entry of the list: the later overwrites the earlier")
        yield entry


def _print_line_error(error: FileListLineError) -> None:
    """The JSON record of a list line that could not be parsed: no input, its list and line number."""
    _write_json({"input": None, "list": error.source, "line": error.line, "error": str(error)})


def _print_json(result: Result) -> None:
    _write_json(
        {
            "input": result.entry.path,
            "line": result.entry.line,
            "target": result.entry.target,
            "classes": result.classes,
            "top5": [{"class": c, "name": name, "probability": p} for c, name, p in result.top],
            "outputs": result.files,
            "seconds": round(result.seconds, 4),
            "skipped": result.skipped,
            "error": result.error,
        }
    )


def _write_json(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()
