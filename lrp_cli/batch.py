"""Batching, sharding and parallel execution of a file list: in-process, local worker processes, or a Dask cluster.

The list is read lazily and results come back in list order as soon as they are ready, so memory stays flat
however long the list is: at most a few batches are held at any time. Every worker process loads the model once
(:func:`_demo`) and keeps it for the chunks it is given.

Inside a process, ``Plan.threads`` threads explain chunks of each batch (default: the cores divided among the
workers), and BLAS runs on ``Plan.blas_threads`` threads (1 by default: OpenBLAS sums in another order on 2 threads
than on 1). An image's arithmetic then does not depend on its batch, so outputs do not depend on how a run is split
(byte for byte on nets of CaffeNet's size; very small layers can switch OpenBLAS to its small-matrix kernel, which
moves the last bits).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
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
    threads: int = 1  # threads per process that explain a batch (in chunks, see _sequential) and write its outputs
    join_runt: bool = False  # join a last batch under half the size to the one before (the list is read ahead)
    overlap: bool = True  # one process: prepare, explain and write different batches at once (off: one by one)


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


class _Leftovers:
    """Whether a folder holds any temporary file (a hidden ``*.tmp``), listed once per folder (the last 64 seen):
    the stale temporaries of a skipped entry are looked for (24 name lookups, ~150 µs) only where there are some."""

    KEEP = 64

    def __init__(self) -> None:
        self.folders: collections.OrderedDict[str, bool] = collections.OrderedDict()

    def any_in(self, folder: str) -> bool:
        if folder in self.folders:
            self.folders.move_to_end(folder)
            return self.folders[folder]
        try:
            with os.scandir(folder or os.curdir) as found:
                self.folders[folder] = any(e.name.startswith(".") and e.name.endswith(".tmp") for e in found)
        except OSError:
            self.folders[folder] = False
        if len(self.folders) > self.KEEP:
            self.folders.popitem(last=False)
        return self.folders[folder]


def _pending(demo: Demo, item, plan: Plan, leftovers: _Leftovers | None = None):
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
            if leftovers is None or leftovers.any_in(os.path.dirname(files[0])):
                demo.remove_stale_temps(item)
            return None, Result(item, files=files, skipped=True)
    return item, None


def _chunks(demo: Demo, items: Iterable, plan: Plan, size: int) -> Iterator[tuple[list, list[FileListEntry]]]:
    """(waiting, todo) pairs: ``waiting`` is a stretch of the list in order (entries to explain, and results to
    report as they are), ``todo`` its entries to explain: ``size`` of them, or none when only ready results are
    waiting, so those are reported at once; fewer at the end or after a long stretch of ready results."""
    waiting: list = []
    todo: list[FileListEntry] = []
    leftovers = _Leftovers()
    for item in items:
        entry, ready = _pending(demo, item, plan, leftovers)
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


def _join_runt(chunks: Iterator[tuple[list, list]], size: int) -> Iterator[tuple[list, list]]:
    """The chunks, with a batch of fewer than ``size``/2 entries (the end of the list) joined to the one before it:
    a runt batch costs several times a full one per image (one slice for the threads, single-row products). Reads
    the list one batch ahead."""
    held = None  # the latest chunk with entries, not given out yet; ready-only chunks after it are folded in
    for waiting, todo in chunks:
        if held is None:
            if todo:
                held = (waiting, todo)
            else:
                yield waiting, todo
        elif not todo:
            held = (held[0] + waiting, held[1])
        elif len(todo) * 2 < size:
            yield held[0] + waiting, held[1] + todo
            held = None
        else:
            yield held
            held = (waiting, todo)
    if held is not None:
        yield held


_END = object()


class _Stages:
    """The prepare and write threads of :func:`_sequential`, talking to its thread through ``events``:
    ("prepared" | "explained" | "written" | "error", payload)."""

    def __init__(self, demo: Demo, chunks: Iterator[tuple[list, list]], threads: int = 1):
        self.demo, self.chunks, self.write_threads = demo, chunks, threads
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.to_write: queue.SimpleQueue = queue.SimpleQueue()
        self.in_flight = threading.Semaphore(3 * threads)  # chunks prepared but not yet written
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._prepare, name="lrp-prepare", daemon=True),
                        threading.Thread(target=self._write, name="lrp-write", daemon=True)]
        for thread in self.threads:
            thread.start()

    def _prepare(self) -> None:
        try:
            for waiting, todo in self.chunks:
                while not self.in_flight.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
                if self.stop.is_set():
                    return
                self.events.put(("prepared", (waiting, self.demo.stage(todo) if todo else None)))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self.events.put(("error", exc))
            return
        self.events.put(("prepared", _END))

    def _write(self) -> None:
        while (job := self.to_write.get()) is not _END:
            if self.stop.is_set():  # stopped early (a signal, --fail-fast): write nothing more
                continue
            waiting, staged = job
            try:
                results = self.demo.write(staged, self.write_threads) if staged is not None else []
            except Exception as exc:  # noqa: BLE001 - reported per entry, the run goes on
                results = _failed(staged.entries, f"unexpected {type(exc).__name__}: {exc}")
            self.in_flight.release()
            self.events.put(("written", (waiting, results)))
        self.events.put(("written", _END))

    def close(self) -> None:
        """Stop both threads and wait for the writer, so that an entry being written is finished (or its temporary
        files removed) before the process goes on: a stop never leaves a temporary file behind. (The prepare thread
        writes nothing and may be blocked reading a list on stdin: it is left to end with the process.)"""
        self.stop.set()
        self.to_write.put(_END)
        self.threads[1].join()


def _sequential(demo: Demo, items: Iterable, plan: Plan) -> Iterator:
    """One process, three stages overlapping: a thread prepares chunks of the list (decoding, resizing),
    ``plan.threads`` threads explain them (BLAS on one thread each), and a thread writes their outputs
    (``plan.threads`` entries at a time: PNG encoding and most of the text formatting run without the GIL).

    A batch of ``plan.batch_size`` is explained as ``plan.threads`` chunks of batch_size/threads entries, each by
    its own thread, and no thread waits for another at the end of a batch: the first chunk is explained while the
    next ones are still decoding, and the last ones are written while the others are still explained. Results are
    reordered before the writer, so they come in list order; at most a few batches are in flight, so memory stays
    flat. The arithmetic of every image is the same as in :meth:`Demo.run` (an image's result does not depend on
    its batch)."""
    size = -(-plan.batch_size // plan.threads) if plan.overlap else plan.batch_size
    chunks = _chunks(demo, items, plan, size)
    if plan.join_runt and size > 1:
        chunks = _join_runt(chunks, size)
    if not plan.overlap:  # e.g. --fail-fast: nothing after a failed entry may have been started
        for waiting, todo in chunks:
            yield from _flush(waiting, _run_batch(demo, todo, plan.blas_threads, plan.threads) if todo else [])
        return
    stages = _Stages(demo, chunks, plan.threads)
    engine = ThreadPoolExecutor(plan.threads, thread_name_prefix="lrp-explain")

    def explain(number: int, waiting: list, staged) -> None:
        try:
            demo.explain(staged)
        except Exception as exc:  # noqa: BLE001 - reported per entry, the run goes on
            staged.fail(f"unexpected {type(exc).__name__}: {exc}")
        stages.events.put(("explained", (number, waiting, staged)))

    explained: dict[int, tuple] = {}  # chunks explained out of turn, by their number in the list
    given = written = 0  # chunks handed to the engine, chunks handed to the writer
    listed = None  # the number of chunks, once the list has ended
    try:
        with limit_blas(plan.blas_threads):
            while True:
                kind, payload = stages.events.get()
                if kind == "error":
                    raise payload
                if kind == "written":
                    if payload is _END:
                        return
                    yield from _flush(*payload)
                    continue
                if kind == "prepared" and payload is _END:
                    listed = given
                elif kind == "prepared":
                    waiting, staged = payload
                    if staged is None:  # only results that are ready: nothing to explain
                        explained[given] = (waiting, None)
                    else:
                        engine.submit(explain, given, waiting, staged)
                    given += 1
                else:
                    number, waiting, staged = payload
                    explained[number] = (waiting, staged)
                while written in explained:
                    stages.to_write.put(explained.pop(written))
                    written += 1
                if written == listed:  # every chunk handed to the writer: tell it the list has ended (once)
                    stages.to_write.put(_END)
                    listed = None
    finally:
        try:
            stages.close()  # first: the writer finishes the entry it is writing and starts no other
        finally:
            engine.shutdown(wait=True, cancel_futures=True)  # explaining writes nothing: the chunks begun may end


# -- worker pools ---------------------------------------------------------------------------------------------------
# A pool runs chunks: ``submit`` → a future, ``cancel(futures)`` and ``close(abort)`` at the end of a run. ``abort``
# (a signal, --fail-fast, a fatal error) stops its workers now; afterwards ``workers_gone`` says whether no worker
# of this run can still be writing, so that the temporary files of the chunks in flight can be removed.
class _LokyPool:
    """``jobs`` local worker processes (joblib's loky executor, reused across runs of one process)."""

    def __init__(self, jobs: int):
        self.jobs = jobs
        self.width = jobs
        self.executor = None
        self.workers_gone = False
        _start_resource_trackers()

    def submit(self, *args):
        from joblib.externals.loky import get_reusable_executor

        with _signals_held():  # (re)starting workers
            # a new executor replaces one whose worker died
            self.executor = get_reusable_executor(max_workers=self.jobs, initializer=_leave_signals_to_the_parent)
            return self.executor.submit(_run_chunk, *args)

    @staticmethod
    def broken(exc: BaseException) -> bool:
        from concurrent.futures import BrokenExecutor

        return isinstance(exc, BrokenExecutor)

    @staticmethod
    def cancel(futures: list) -> None:
        pass  # close(abort=True) fails the queued ones; cancelled first, loky's manager thread raised InvalidStateError

    def close(self, abort: bool = False) -> None:
        """After a complete run idle workers stay for the next one (they exit on loky's idle timeout or with this
        process); a stopped run kills them (SIGKILL, then joined), so none goes on computing or writing, and shuts
        the executor down (its manager thread sees the dead workers and fails what was queued). Not
        ``shutdown(kill_workers=True)``: it races with that thread over the queued chunks (KeyError tracebacks)."""
        if abort and self.executor is not None:
            workers = list(getattr(self.executor, "_processes", {}).values())
            for worker in workers:
                with contextlib.suppress(OSError, TypeError):  # gone already, or never started (pid None)
                    os.kill(worker.pid, signal.SIGKILL)
            for worker in workers:
                with contextlib.suppress(OSError, ValueError, AssertionError):
                    worker.join()
            self.executor.shutdown(wait=True)
            self.workers_gone = True


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM held back while worker processes start, then handled as usual (a Dask cluster's start, a
    few seconds, finishes first; a half-started cluster cannot be closed cleanly).

    They are blocked in this thread, so the processes (and threads) started meanwhile inherit the block and a signal
    to the whole process group cannot kill a worker halfway through its start-up; in the main thread the handlers
    only record a signal that another thread received, and it is raised again once the block is lifted."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    received: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                    for signum in _STOP_SIGNALS}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    try:
        yield
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a signal blocked meanwhile reaches the handler here
        if received:
            signal.raise_signal(received[0])


def _leave_signals_to_the_parent() -> None:
    """Worker initializer (loky, and Dask's local cluster): SIGINT and SIGTERM sent to the whole process group
    (Ctrl-C, ``kill -- -PGID``, a batch system) are for the parent, which stops the workers itself (``close`` of
    the pools). A loky worker that died of them amid its queue traffic left the semaphore bookkeeping inconsistent
    (warnings and tracebacks of the resource tracker on stderr); a Dask worker printed tracebacks."""
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def _start_resource_trackers(loky: bool = True) -> None:
    """Start the semaphore trackers (loky's and multiprocessing's helper processes) before a pool's workers, with
    their stderr on /dev/null.

    Started later, while workers start, a tracker unblocks SIGINT and SIGTERM in that thread (Python 3.11's
    multiprocessing does so unconditionally), so the workers would not inherit the block of
    :func:`_signals_held`. And a tracker reports on its stderr the semaphores of workers that were killed (warnings,
    even tracebacks), which a stopped run does on purpose: those lines are not for lrp-demo's users. Their stderr is
    ours for the few milliseconds this takes, once per pool, before any of its threads runs."""
    from multiprocessing import resource_tracker

    trackers = [resource_tracker]
    if loky:
        from joblib.externals.loky.backend import resource_tracker as loky_tracker

        trackers.append(loky_tracker)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        for tracker in trackers:
            tracker.ensure_running()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


#: Dask: the default scheduler port, the protocols lrp-demo accepts, and seconds to reach a scheduler (or to close a
#: client or a local cluster) before giving up with one line.
DASK_PORT = 8786
DASK_SCHEMES = ("tcp", "tls", "ws", "wss")
DASK_TIMEOUT = 10.0
_ADDRESS = re.compile(r"(?:(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>[0-9]+))?")


def scheduler_address(text: str) -> str:
    """A Dask scheduler address ``[protocol://]host[:port]`` in full (tcp and port 8786 by default); LrpError for
    anything else, before any connection is tried (Dask would try to resolve a bad name for 40 s)."""
    match = _ADDRESS.fullmatch(text)
    if match is None:
        raise LrpError(f"--scheduler {text!r}: not a Dask scheduler address (expected protocol://host:port, e.g. "
                       f"tcp://10.0.0.5:{DASK_PORT})")
    scheme = (match["scheme"] or "tcp").lower()
    if scheme not in DASK_SCHEMES:
        raise LrpError(f"--scheduler {text!r}: unsupported protocol {scheme!r} (use {', '.join(DASK_SCHEMES)})")
    port = int(match["port"] or DASK_PORT)
    if not 0 < port < 65536:
        raise LrpError(f"--scheduler {text!r}: port {port} is not between 1 and 65535")
    return f"{scheme}://{match['host']}:{port}"


def _unreachable(address: str, timeout: float) -> str | None:
    """None when a TCP connection to the scheduler's host and port opens within ``timeout`` seconds (and, for tcp://,
    the other side speaks: a Dask scheduler sends its handshake at once, and Dask's client would wait for it without
    end), else why not. The attempt runs in a daemon thread: name resolution (getaddrinfo) has no timeout of its own.
    """
    scheme, location = address.split("://", 1)
    host, port = location.rsplit(":", 1)
    deadline = time.monotonic() + timeout
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as connection:
                if scheme == "tcp":
                    connection.settimeout(max(0.1, deadline - time.monotonic()))
                    if not connection.recv(1):
                        outcome.append("the connection was closed at once")
                        return
            outcome.append(None)
        except TimeoutError:
            outcome.append(f"connected, but nothing answered within {timeout:g} s")
        except OSError as exc:
            outcome.append(exc.strerror or str(exc) or type(exc).__name__)

    attempt = threading.Thread(target=connect, name="lrp-scheduler-probe", daemon=True)
    attempt.start()
    attempt.join(timeout + 1)  # the connection's own timeouts end it first, with their reason
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


def _dask_client(client_class, address: str):
    """A Dask client connected to ``address`` within DASK_TIMEOUT seconds. When the handshake fails (e.g. something
    else listens on that port) the half-made client is marked closed: otherwise its ``__del__`` would wait
    2 × DASK_TIMEOUT to close a connection that never was, then print a traceback at exit."""
    client = client_class.__new__(client_class)
    try:
        client.__init__(address, set_as_default=False, timeout=f"{DASK_TIMEOUT:g}s")
    except BaseException:
        client.status = "closed"
        with contextlib.suppress(Exception):
            client._loop_runner.stop()
        raise
    return client


class _DaskPool:
    """Workers of a Dask cluster: the scheduler at ``scheduler``, or a new local cluster of ``jobs`` processes."""

    def __init__(self, scheduler: str | None, jobs: int):
        self.cluster = self.client = None
        self.local = not scheduler
        self.workers_gone = False
        try:
            if scheduler:
                self.client = self._connect(scheduler)
            else:
                _start_resource_trackers(loky=False)
                with _signals_held():  # the import starts Dask's event-loop thread, which starts the workers
                    self.client = self._start_local(jobs)
            self.width = max(1, sum(self.client.nthreads().values()))
        except LrpError:
            self.close(abort=True)
            raise
        except Exception as exc:  # noqa: BLE001 - Dask raises OSError, TimeoutError, ValueError…: one line each
            self.close(abort=True)
            if not scheduler:
                detail = " ".join(f"{type(exc).__name__}: {exc}".split())
                raise LrpError(f"--backend dask: cannot start a local Dask cluster ({detail[:200]})") from None
            # the port is open (checked first): a timeout, a closed connection, or an answer in another protocol,
            # which Dask reads as a frame header (e.g. a MemoryError for a 3 EiB frame)
            detail = " ".join(str(exc).split()) if isinstance(exc, OSError) else \
                f"the answer is not Dask's protocol: {type(exc).__name__}"
            raise LrpError(f"--scheduler {scheduler}: no Dask scheduler answered there ({detail[:200]})") from None
        except BaseException:
            self.close(abort=True)  # interrupted while starting: no process of the local cluster stays behind
            raise

    @staticmethod
    def _connect(scheduler: str):
        address = scheduler_address(scheduler)
        problem = _unreachable(address, DASK_TIMEOUT)
        if problem:
            raise LrpError(f"--scheduler {scheduler}: cannot connect to the Dask scheduler ({problem})")
        return _dask_client(_dask().Client, address)

    def _start_local(self, jobs: int):
        distributed = _dask()
        # its worker processes are this run's: quiet (their log lines are not ours to show), and stopped by this
        # process, not by a SIGINT or SIGTERM to the process group (dask_setup below); the scheduler's HTTP server on
        # a free port (its default 8787 may be taken by another cluster)
        self.cluster = distributed.LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                                host="127.0.0.1", dashboard_address=None,
                                                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                                silence_logs=logging.CRITICAL, preload=[__name__])
        return distributed.Client(self.cluster, set_as_default=False)

    def submit(self, *args):
        return self.client.submit(_run_chunk, *args, pure=False)

    @staticmethod
    def broken(exc: BaseException) -> bool:
        return False  # the scheduler already reruns a task whose worker died

    @staticmethod
    def cancel(futures: list) -> None:
        for future in futures:
            future.cancel()

    def close(self, abort: bool = False) -> None:
        """Close the client (the scheduler then drops this run's tasks; one already running on a remote worker ends
        on its own, its outputs written whole) and a local cluster with its worker processes."""
        for closable in (self.client, self.cluster):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close(timeout=DASK_TIMEOUT)
        if self.local:
            self.workers_gone = True


def _dask():
    """The ``dask.distributed`` module; LrpError naming the extra when Dask is not installed."""
    try:
        import dask.distributed
    except ImportError:
        raise LrpError("--backend dask needs the 'dask' extra: pip install 'lrp_cli[dask]'") from None
    return dask.distributed


def dask_setup(worker) -> None:
    """Dask preload hook, run in each worker process of the local cluster :class:`_DaskPool` starts."""
    _leave_signals_to_the_parent()


@dataclass
class _Slot:
    waiting: list
    todo: list[FileListEntry]
    future: object = None
    tries: int = 0


def _absolute_config(config: Config) -> Config:
    """The config with its output folder made absolute against this process's working directory (its four input
    files already are)."""
    return dataclasses.replace(config, standalone_outpath=os.path.abspath(config.standalone_outpath))


def _absolute_entry(entry: FileListEntry) -> FileListEntry:
    """The entry with the path its input is read from made absolute (``fullpath``, which names the outputs below
    the output folder, is kept as written)."""
    return dataclasses.replace(entry, path=os.path.abspath(entry.path))


def _results(slot: _Slot, pool) -> list[Result] | None:
    """The results of a finished chunk, each with the list's entry as given (a Dask worker's has absolute paths);
    None when its workers broke and it is to be submitted once more, on fresh workers (it may have died with
    another chunk); any other failure fails its entries."""
    try:
        results = slot.future.result()
        for result, entry in zip(results, slot.todo, strict=True):
            result.entry = entry
        return results
    except Exception as exc:  # noqa: BLE001 - a worker died or the task could not run
        if pool.broken(exc) and slot.tries == 0:
            slot.tries += 1
            return None
        return _failed(slot.todo, f"worker failed: {type(exc).__name__}: {exc}")


def _stop(pool, window: Iterable[_Slot], demo: Demo, finished: bool) -> None:
    """End a run's use of its pool. Stopped early (a signal, --fail-fast, an error), the chunks in flight are
    cancelled, the workers stopped, and the temporary files they left for those entries removed (only files nobody
    holds a lock on: a writer that is still alive, e.g. on a remote Dask worker, keeps its file)."""
    pool.cancel([slot.future for slot in window if slot.future is not None])
    pool.close(abort=not finished)
    if not finished and pool.workers_gone:
        for slot in window:
            for entry in slot.todo:
                with contextlib.suppress(LrpError):
                    demo.remove_stale_temps(entry)


def _parallel(config: Config, options: OutputOptions, items: Iterable, plan: Plan, demo: Demo | None) -> Iterator:
    """Chunks of one batch each go to the workers; a reader thread follows the list (which may be a slow stdin), and
    results are reported in list order as soon as every earlier entry is done.

    Dask workers may run in another working directory (or on another machine with the same file system): they get
    the output folder and every input path made absolute here. Stopped early, the run stops its workers and removes
    their temporary files (:func:`_stop`). One function of 66 lines: the reader thread, the submissions and the
    window of chunks in flight share its state.
    """
    demo = demo or _demo(config, options)  # validates the config once here, and serves --skip-existing
    remote = plan.backend == "dask"
    pool = _DaskPool(plan.scheduler, plan.jobs) if remote else _LokyPool(plan.jobs)
    sent_config = _absolute_config(config) if remote else config
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
        todo = [_absolute_entry(entry) for entry in slot.todo] if remote else slot.todo
        slot.future = pool.submit(sent_config, options, todo, plan.batch_size, plan.blas_threads, plan.threads)
        slot.future.add_done_callback(lambda _: events.put(("done", None)))

    reader = threading.Thread(target=read, name="lrp-list-reader", daemon=True)
    window: collections.deque[_Slot] = collections.deque()
    ended = finished = False
    try:
        reader.start()
        while True:
            while window and (window[0].future is None or window[0].future.done()):
                slot = window[0]
                results = [] if slot.future is None else _results(slot, pool)
                if results is None:
                    submit(slot)
                    break
                window.popleft()
                slots.release()
                yield from _flush(slot.waiting, results)
            if ended and not window:
                finished = True
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
        _stop(pool, window, demo, finished)
