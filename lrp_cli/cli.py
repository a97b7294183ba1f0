"""Command line: ``lrp-demo CONFIG FILELIST PREPENDPATH`` and ``lrp-parallel-demo CONFIG FILELIST PREFIX``.

Thin: parse options, hand the work to :mod:`lrp_cli.batch`, report. Exit status 0 when every entry succeeded,
1 when any failed (or a fatal error stopped the run), 2 for bad usage.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from . import __version__
from .batch import Plan, Shard, run_entries
from .config import load_config
from .errors import LrpError
from .filelist import FileListLineError, iter_filelist
from .render import COLORMAPS
from .report import Report, formula_text, row_for_result
from .run import Demo, OutputOptions, Result


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
                     help="Threads per process that explain slices of each batch [default: cores / jobs]."),
        click.option("--backend", type=click.Choice(["loky", "dask"]), default="loky", show_default=True,
                     help="Where the workers run: local processes or a Dask cluster."),
        click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:port) for --backend dask."),
        click.option("--shard", default=None, metavar="I/N", help="Process only list positions p with p %% N == I."),
        click.option("--skip-existing", is_flag=True, help="Skip entries whose outputs all exist (resume a run)."),
        click.option("--default-target", type=int, default=None,
                     help="Target for list lines without one (otherwise such a line is an error)."),
        click.option("--json", "json_lines", is_flag=True, help="Print one JSON line per image on stdout."),
        click.option("--fail-fast", is_flag=True, help="Stop after the batch with the first failed entry."),
        click.option("--quiet", is_flag=True, help="No progress bar and no per-entry messages; errors still show."),
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


def _main(program, batch_size, config, filelist, prependpath, minimal_output, original_names, colormap,
          clip_percentile, overlay, npy, report, jobs, threads, backend, scheduler, shard, skip_existing,
          default_target, json_lines, fail_fast, quiet) -> int:
    started = time.perf_counter()

    def say(message):
        click.echo(f"{program}: {message}", err=True)

    if report and minimal_output:
        say("error: --report shows the heatmap PNGs, which --minimal-output does not write")
        return 2
    try:
        settings = load_config(config)
        options = OutputOptions(minimal_output, original_names, colormap, overlay, npy, clip_percentile, report)
        demo = Demo(settings, options)
        page = None
        if report:
            page = Report(settings.standalone_outpath, formula_text(settings),
                          formula_short=formula_text(settings, short=True))
        if threads is None:
            threads = 1 if backend == "dask" else max(1, (os.cpu_count() or 1) // jobs)
        if batch_size == "auto":  # from stdin, one at a time: a result must not wait for lines not yet written
            batch_size = 1 if filelist == "-" else 2 * threads
        plan = Plan(
            batch_size=batch_size or max(1, demo.net.input_shape[0]),
            threads=threads,
            jobs=jobs,
            backend=backend,
            scheduler=scheduler,
            shard=Shard.parse(shard) if shard else Shard(),
            skip_existing=skip_existing,
        )
        target = default_target if default_target is not None else settings.default_target
        entries = iter_filelist(filelist, prependpath, target, stdin=sys.stdin.buffer if filelist == "-" else None)
        results = run_entries(settings, options, entries, plan, demo)
        progress = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            progress = tqdm(results, unit="img", file=sys.stderr, leave=False)
            results = progress
        done = skipped = 0
        failures: list[str] = []
        for result in results:
            failure = None
            if isinstance(result, FileListLineError):
                failure = str(result)
            elif result.error:
                path = result.entry.path
                failure = result.error if path in result.error else f"{path}: {result.error}"
            else:
                skipped += result.skipped
                done += not result.skipped
            if json_lines:
                _print_json(result) if isinstance(result, Result) else _print_line_error(result)
            if page is not None and isinstance(result, Result):
                page.add(row_for_result(result, demo.synsets))
            if failure:
                failures.append(failure)
                if not quiet:
                    message = f"{program}: failed: {failure}"
                    progress.write(message, file=sys.stderr) if progress else click.echo(message, err=True)
                if fail_fast:
                    say("stopping at the first failure (--fail-fast)")
                    break
        if progress is not None:
            progress.close()
    except LrpError as exc:
        say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    seconds = time.perf_counter() - started
    summary = f"{done} done, {len(failures)} failed"
    if skipped:
        summary += f", {skipped} skipped (outputs exist)"
    say(f"{summary} in {seconds:.1f} s")
    for failure in failures:
        say(f"failed: {failure}")
    return 1 if failures else 0


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
