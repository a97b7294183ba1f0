"""Batching, sharding and parallel execution of a file list: in-process, local worker processes, or a Dask cluster.

The list is read lazily and results come back in list order as soon as they are ready, so memory stays flat
however long the list is: at most a few batches are held at any time. Every worker process loads the model once
(:func:`_demo`) and keeps it for the chunks it is given.

Inside a process, ``Plan.threads`` threads explain slices of each batch (default: the cores divided among the
workers), and BLAS runs on ``Plan.blas_threads`` threads (1 by default: OpenBLAS sums in another order on 2 threads
than on 1). An image's arithmetic then does not depend on its batch, so outputs do not depend on how a run is split
(byte for byte on nets of CaffeNet's size; very small layers can switch OpenBLAS to its small-matrix kernel, which
moves the last bits).
"""

from __future__ import annotations

import collections
import itertools
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .config import Config
from .errors import LrpError
from .explain import limit_blas
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


@dataclass(frozen=True)
class Plan:
    """How to run: entries per forward pass, worker processes, backend, shard, restart behaviour."""

    batch_size: int = 1
    jobs: int = 1
    backend: str = "loky"  # or "dask"
    scheduler: str | None = None
    shard: Shard = Shard()
    skip_existing: bool = False
    blas_threads: int | None = 1  # BLAS threads in every process that explains images; None: leave BLAS alone
    threads: int = 1  # threads per process that explain slices of a batch (see Explainer.explain)


# -- one process's work --------------------------------------------------------------------------------------------
_DEMOS: dict[tuple, Demo] = {}
_DEMO_LOCK = threading.Lock()


def _demo(config: Config, options: OutputOptions) -> Demo:
    """The process-wide Demo for a config (loaded on first use in each worker process)."""
    key = (config.source, repr(config), options)
    with _DEMO_LOCK:
        if key not in _DEMOS:
            _DEMOS.clear()
            _DEMOS[key] = Demo(config, options)
        return _DEMOS[key]


def _failed(entries: list[FileListEntry], message: str) -> list[Result]:
    return [Result(entry, error=message) for entry in entries]


def _run_batch(demo: Demo, batch: list[FileListEntry], blas_threads: int | None, threads: int = 1) -> list[Result]:
    """``demo.run(batch)``; an unexpected exception fails the batch's entries instead of the whole run."""
    try:
        with limit_blas(blas_threads):
            return demo.run(batch, threads)
    except Exception as exc:  # noqa: BLE001 - reported per entry, the run goes on
        return _failed(batch, f"unexpected {type(exc).__name__}: {exc}")


def _run_chunk(config: Config, options: OutputOptions, chunk: list[FileListEntry], batch_size: int,
               blas_threads: int | None, threads: int = 1) -> list[Result]:
    """Worker entry point: explain a chunk of entries in batches of ``batch_size``, one Result per entry."""
    try:
        demo = _demo(config, options)
    except Exception as exc:  # noqa: BLE001 - e.g. a model file the worker cannot read
        return _failed(chunk, f"worker cannot load the model: {exc}")
    results: list[Result] = []
    for batch in batches(chunk, batch_size):
        results += _run_batch(demo, batch, blas_threads, threads)
    return results


# -- the list, in order ---------------------------------------------------------------------------------------------
#: Results ready to report (skipped entries, list errors) held back behind unfinished entries at most.
_MAX_WAITING = 1024


def run_entries(
    config: Config,
    options: OutputOptions,
    entries: Iterable[FileListEntry | FileListLineError],
    plan: Plan,
    demo: Demo | None = None,
) -> Iterator[Result | FileListLineError]:
    """Explain every entry; yields one Result (or the list's own line error) per entry, in list order.

    ``entries`` is consumed lazily: a few batches ahead of the results at most. Closing the iterator stops the run
    (work in flight is cancelled where possible, a Dask client is closed).
    """
    selected = plan.shard.select(entries)
    if plan.jobs <= 1 and plan.backend != "dask":
        demo = demo or _demo(config, options)
        yield from _sequential(demo, selected, plan)
        return
    yield from _parallel(config, options, selected, plan, demo)


def _pending(demo: Demo, item, plan: Plan):
    """(entry to process or None, result to report now or None) for one list item."""
    if isinstance(item, LrpError):
        return None, item
    if plan.skip_existing:
        try:
            files = demo.output_files(item)
        except LrpError as exc:
            return None, Result(item, error=str(exc))
        if all(os.path.exists(f) for f in files):
            # a run killed while rewriting these outputs left its temporary files next to the complete ones
            demo.remove_stale_temps(item)
            return None, Result(item, files=files, skipped=True)
    return item, None


def _chunks(demo: Demo, items: Iterable, plan: Plan, size: int) -> Iterator[tuple[list, list[FileListEntry]]]:
    """(waiting, todo) pairs: ``waiting`` is a stretch of the list in order (entries to explain, and results to
    report as they are), ``todo`` its entries to explain: ``size`` of them, or none when only ready results are
    waiting, so those are reported at once; fewer at the end or after a long stretch of ready results."""
    waiting: list = []
    todo: list[FileListEntry] = []
    for item in items:
        entry, ready = _pending(demo, item, plan)
        if entry is None:
            if not todo:
                yield [ready], []
                continue
            waiting.append(ready)
        else:
            waiting.append(entry)
            todo.append(entry)
        if len(todo) == size or len(waiting) >= _MAX_WAITING:
            yield waiting, todo
            waiting, todo = [], []
    if waiting:
        yield waiting, todo


def _flush(waiting: list, results: list[Result]) -> Iterator:
    done = iter(results)
    for item in waiting:
        yield next(done) if isinstance(item, FileListEntry) else item


def _sequential(demo: Demo, items: Iterable, plan: Plan) -> Iterator:
    for waiting, todo in _chunks(demo, items, plan, plan.batch_size):
        yield from _flush(waiting, _run_batch(demo, todo, plan.blas_threads, plan.threads) if todo else [])


# -- worker pools ---------------------------------------------------------------------------------------------------
class _LokyPool:
    """``jobs`` local worker processes (joblib's loky executor, reused across runs of one process)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.width = jobs

    def submit(self, *args):
        from joblib.externals.loky import get_reusable_executor

        # a new executor replaces one whose worker died
        return get_reusable_executor(max_workers=self.jobs).submit(_run_chunk, *args)

    @staticmethod
    def broken(exc: BaseException) -> bool:
        from concurrent.futures import BrokenExecutor

        return isinstance(exc, BrokenExecutor)

    def close(self) -> None:
        pass  # idle workers exit on their own (loky's timeout) or with this process


class _DaskPool:
    """Workers of a Dask cluster: the scheduler at ``scheduler``, or a new local cluster of ``jobs`` processes."""

    def __init__(self, scheduler: str | None, jobs: int):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise LrpError("--backend dask needs the 'dask' extra: pip install 'lrp_cli[dask]'") from None
        self.cluster = None
        try:
            if scheduler:
                self.client = Client(scheduler, set_as_default=False, timeout="20s")
            else:
                self.cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                            dashboard_address=None)
                self.client = Client(self.cluster, set_as_default=False)
        except OSError as exc:
            if self.cluster is not None:
                self.cluster.close()
            raise LrpError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({exc})") from None
        self.width = max(1, sum(self.client.nthreads().values()))

    def submit(self, *args):
        return self.client.submit(_run_chunk, *args, pure=False)

    @staticmethod
    def broken(exc: BaseException) -> bool:
        return False  # the scheduler already reruns a task whose worker died

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@dataclass
class _Slot:
    waiting: list
    todo: list[FileListEntry]
    future: object = None
    tries: int = 0


def _parallel(config: Config, options: OutputOptions, items: Iterable, plan: Plan, demo: Demo | None) -> Iterator:
    """Chunks of one batch each go to the workers; a reader thread follows the list (which may be a slow stdin), and
    results are reported in list order as soon as every earlier entry is done."""
    demo = demo or _demo(config, options)  # validates the config once here, and serves --skip-existing
    pool = _DaskPool(plan.scheduler, plan.jobs) if plan.backend == "dask" else _LokyPool(plan.jobs)
    events: queue.SimpleQueue = queue.SimpleQueue()
    slots = threading.Semaphore(2 * pool.width)  # chunks read but not yet reported
    stop = threading.Event()

    def read() -> None:
        try:
            for waiting, todo in _chunks(demo, items, plan, plan.batch_size):
                while not slots.acquire(timeout=0.1):
                    if stop.is_set():
                        return
                if stop.is_set():
                    return
                events.put(("chunk", _Slot(waiting, todo)))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            events.put(("error", exc))
            return
        events.put(("end", None))

    def submit(slot: _Slot) -> None:
        slot.future = pool.submit(config, options, slot.todo, plan.batch_size, plan.blas_threads, plan.threads)
        slot.future.add_done_callback(lambda _: events.put(("done", None)))

    reader = threading.Thread(target=read, name="lrp-list-reader", daemon=True)
    window: collections.deque[_Slot] = collections.deque()
    ended = False
    try:
        reader.start()
        while True:
            while window and (window[0].future is None or window[0].future.done()):
                slot = window[0]
                results = []
                if slot.future is not None:
                    try:
                        results = slot.future.result()
                    except Exception as exc:  # noqa: BLE001 - a worker died or the task could not run
                        if pool.broken(exc) and slot.tries == 0:
                            slot.tries += 1
                            submit(slot)  # once more, on fresh workers: the chunk may have died with another
                            break
                        results = _failed(slot.todo, f"worker failed: {type(exc).__name__}: {exc}")
                window.popleft()
                slots.release()
                yield from _flush(slot.waiting, results)
            if ended and not window:
                return
            kind, payload = events.get()
            if kind == "chunk":
                if payload.todo:
                    submit(payload)
                window.append(payload)
            elif kind == "end":
                ended = True
            elif kind == "error":
                raise payload
    finally:
        stop.set()
        for slot in window:
            if slot.future is not None:
                slot.future.cancel()
        pool.close()
