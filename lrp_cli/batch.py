"""Batching, sharding and parallel execution of a file list: in-process, joblib workers, or a Dask cluster.

The list is read lazily and results come back in list order as they are produced, so memory stays flat
however long the list is. Every worker process loads the model once (:func:`_demo`).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .config import Config
from .errors import LrpError
from .filelist import FileListEntry, FileListLineError
from .run import Demo, OutputOptions, Result


@dataclass(frozen=True)
class Shard:
    """``index``/``count``: this run takes the list entries whose position p has p % count == index."""

    index: int = 0
    count: int = 1

    @staticmethod
    def parse(text: str) -> Shard:
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise LrpError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
        if count < 1 or not 0 <= index < count:
            raise LrpError(f"--shard {text!r}: need 0 ≤ I < N")
        return Shard(index, count)

    def select(self, items: Iterable) -> Iterator:
        if self.count == 1:
            return iter(items)
        return (item for position, item in enumerate(items) if position % self.count == self.index)


def batches(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of ``size`` items (the last may be shorter), consuming ``items`` lazily."""
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


_DEMOS: dict[tuple, Demo] = {}


def _demo(config: Config, options: OutputOptions) -> Demo:
    """The process-wide Demo for a config (loaded on first use in each worker process)."""
    key = (config.source, repr(config), options)
    if key not in _DEMOS:
        _DEMOS.clear()
        _DEMOS[key] = Demo(config, options)
    return _DEMOS[key]


def _run_chunk(config: Config, options: OutputOptions, chunk: list[FileListEntry], batch_size: int,
               blas_threads: int | None) -> list[Result]:
    """Worker entry point: explain a chunk of entries in batches of ``batch_size``."""
    if blas_threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=blas_threads, user_api="blas"):
            return _run_local(_demo(config, options), chunk, batch_size)
    return _run_local(_demo(config, options), chunk, batch_size)


def _run_local(demo: Demo, chunk: list[FileListEntry], batch_size: int) -> list[Result]:
    results = []
    for batch in batches(chunk, batch_size):
        results += demo.run(batch)
    return results


@dataclass(frozen=True)
class Plan:
    """How to run: entries per forward pass, worker processes, backend, shard, restart behaviour."""

    batch_size: int = 1
    jobs: int = 1
    backend: str = "loky"  # or "dask"
    scheduler: str | None = None
    shard: Shard = Shard()
    skip_existing: bool = False


def run_entries(
    config: Config,
    options: OutputOptions,
    entries: Iterable[FileListEntry | FileListLineError],
    plan: Plan,
    demo: Demo | None = None,
) -> Iterator[Result | FileListLineError]:
    """Explain every entry; yields one Result (or the list's own line error) per entry, in list order."""
    selected = plan.shard.select(entries)
    if plan.jobs <= 1 and plan.backend != "dask":
        demo = demo or _demo(config, options)
        yield from _sequential(demo, selected, plan)
        return
    yield from _parallel(config, options, selected, plan, demo)


def _pending(demo: Demo, item, plan: Plan):
    """(item to process or None, result to report now or None) for one list item."""
    if isinstance(item, LrpError):
        return None, item
    if plan.skip_existing:
        try:
            files = demo.output_files(item)
        except LrpError as exc:
            return None, Result(item, error=str(exc))
        if all(os.path.exists(f) for f in files):
            return None, Result(item, files=files, skipped=True)
    return item, None


def _sequential(demo: Demo, items: Iterable, plan: Plan) -> Iterator:
    waiting: list = []  # results and entries in list order, flushed batch by batch
    todo: list[FileListEntry] = []
    for item in items:
        entry, ready = _pending(demo, item, plan)
        waiting.append(ready if ready is not None else entry)
        if entry is not None:
            todo.append(entry)
        if len(todo) == plan.batch_size:
            yield from _flush(waiting, demo.run(todo))
            waiting, todo = [], []
    if waiting:
        yield from _flush(waiting, demo.run(todo) if todo else [])


def _flush(waiting: list, results: list[Result]) -> Iterator:
    done = iter(results)
    for item in waiting:
        yield next(done) if isinstance(item, FileListEntry) else item


def _parallel(config: Config, options: OutputOptions, items: Iterable, plan: Plan, demo: Demo | None) -> Iterator:
    import joblib

    demo = demo or _demo(config, options)  # validates the config once here, and serves --skip-existing
    cores = os.cpu_count() or 1
    blas_threads = max(1, cores // max(plan.jobs, 1))
    chunk_size = plan.batch_size * 4

    def chunks():
        waiting: list = []
        todo: list[FileListEntry] = []
        for item in items:
            entry, ready = _pending(demo, item, plan)
            if entry is None:
                waiting.append(ready)
                continue
            waiting.append(entry)
            todo.append(entry)
            if len(todo) == chunk_size:
                yield waiting, todo
                waiting, todo = [], []
        if waiting:
            yield waiting, todo

    pending = chunks()
    first = list(itertools.islice(pending, 1))
    if not first:
        return
    stream = itertools.chain(first, pending)
    stash: list = []

    def tasks():
        for waiting, todo in stream:
            stash.append(waiting)
            yield joblib.delayed(_run_chunk)(config, options, todo, plan.batch_size, blas_threads)

    if plan.backend == "dask":
        context = _dask_context(plan.scheduler)
    else:
        context = joblib.parallel_config(backend="loky", n_jobs=plan.jobs)
    with context:
        runner = joblib.Parallel(n_jobs=plan.jobs if plan.backend != "dask" else -1, return_as="generator",
                                 pre_dispatch="2*n_jobs")
        for results in runner(tasks()):
            yield from _flush(stash.pop(0), results)


def _dask_context(scheduler: str | None):
    """joblib's Dask backend on the given scheduler (``tcp://host:port``) or a new local cluster."""
    import contextlib

    try:
        from dask.distributed import Client
    except ImportError:
        raise LrpError("--backend dask needs the 'dask' extra: pip install 'lrp_cli[dask]'") from None
    import joblib

    stack = contextlib.ExitStack()
    client = Client(scheduler) if scheduler else Client(processes=True, dashboard_address=None)
    stack.enter_context(client)
    stack.enter_context(joblib.parallel_config(backend="dask"))
    return stack
