"""Batch, parallel and cluster runs (lrp_cli.batch through the CLI): every way of splitting a run gives the same
outputs, results stream in list order, failures are reported per entry, --json and the progress bar."""

from __future__ import annotations

import dataclasses
import fcntl
import itertools
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import REFERENCE
from test_cli_reference import read_rawhm, stage

from lrp_cli import batch
from lrp_cli.batch import Plan, Shard, run_entries
from lrp_cli.cli import lrp_demo, lrp_parallel_demo
from lrp_cli.config import load_config
from lrp_cli.filelist import FileListEntry, FileListLineError, iter_filelist
from lrp_cli.run import Demo, OutputOptions, Result, Staged

PATH_KEYS = ("param_file", "model_file", "mean_file", "synsetfile", "standalone_outpath")
SUFFIXES = ("_heatmap.png", "_toptenscores.txt", "_rawhm.txt", "_as_inputted_into_the_dnn.png", "_rawhm.npy")
PHOTOS = sorted(p.name for p in (REFERENCE / "someimages").iterdir())[:10]
PYTHON_CLI = [sys.executable, "-c", "from lrp_cli.cli import lrp_demo; lrp_demo()"]


def configure(src: Path, dest: Path, root: Path, **values) -> Path:
    """Copy config ``src`` to ``dest``: values of ``values`` replaced, relative paths made absolute from ``root``."""
    lines = src.read_text().splitlines()
    out, i = [], 0
    while i < len(lines):
        key = lines[i].strip()
        out.append(lines[i])
        if (key in values or key in PATH_KEYS) and i + 1 < len(lines):
            value = str(values.get(key, lines[i + 1].strip()))
            if key in PATH_KEYS and not os.path.isabs(value):
                value = str(root / value)
            out.append(value)
            i += 2
        else:
            i += 1
    dest.write_text("\n".join(out) + "\n")
    return dest


def invoke(command, *args):
    result = CliRunner().invoke(command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "someimages").iterdir())}


# -- CaffeNet: every way of running the same list ------------------------------------------------------------------
@pytest.fixture(scope="module")
def caffenet(tmp_path_factory):
    root = tmp_path_factory.mktemp("caffenet")
    stage("caffenet_f100", root)
    (root / "list10.txt").write_text("".join(f"someimages/{name} -1\n" for name in PHOTOS))

    def config(name: str, prototxt: str = "deploy_sequential.prototxt") -> tuple[Path, Path]:
        out = root / f"out_{name}"
        path = configure(root / "config.txt", root / f"config_{name}.txt", root,
                         param_file=f"models/caffenet/{prototxt}", standalone_outpath=out)
        return path, out

    def run(name: str, *args, command=lrp_demo, prototxt="deploy_sequential.prototxt") -> Path:
        path, out = config(name, prototxt)
        invoke(command, path, root / "list10.txt", root, "--npy", "--quiet", *args)
        return out

    runs = {"sequential": run("sequential")}
    return root, run, runs


# Every way of splitting the run is byte-identical: an image's arithmetic never depends on its batch (the fully
# connected layers use BLAS's matrix product even for one image, lrp_cli/layers/inner_product.py).
def assert_same_files(expected: dict[str, bytes], got: dict[str, bytes], label: str):
    assert sorted(got) == sorted(expected), label
    different = [name for name in expected if got[name] != expected[name]]
    assert not different, (label, different)


def test_every_way_of_splitting_a_run_gives_the_same_outputs(caffenet):
    root, run, runs = caffenet
    singles = outputs(runs["sequential"])
    assert sorted(singles) == sorted(f"{p}{s}" for p in PHOTOS for s in SUFFIXES)
    # batches of one image: --jobs, --shard (all shards into one folder)
    assert_same_files(singles, outputs(run("jobs2", "--jobs", "2")), "--jobs 2")
    run("shards", "--shard", "0/3")
    run("shards", "--shard", "1/3")
    run("shards", "--shard", "2/3", "--jobs", "2")
    assert_same_files(singles, outputs(root / "out_shards"), "--shard 0/3 1/3 2/3")
    # batches of two or more: --batch-size 4 (4, 4, 2), --jobs 2 --batch-size 2, lrp-parallel-demo (batch 10)
    batched = outputs(run("batch4", "--batch-size", "4"))
    assert_same_files(singles, batched, "--batch-size 4")
    assert_same_files(singles, outputs(run("threads1", "--batch-size", "4", "--threads", "1")), "--threads 1")
    assert_same_files(batched, outputs(run("jobs2_batch2", "--jobs", "2", "--batch-size", "2")), "--jobs 2 -b 2")
    assert_same_files(batched, outputs(run("parallel", command=lrp_parallel_demo, prototxt="deploy.prototxt")),
                      "lrp-parallel-demo")
    for name in PHOTOS:
        one = np.load(runs["sequential"] / "someimages" / f"{name}_rawhm.npy")
        assert one.shape == (3, 227, 227) and np.abs(one).max() > 0
        # the text file holds the same numbers to its 6 significant digits
        text = read_rawhm(runs["sequential"] / "someimages" / f"{name}_rawhm.txt")
        assert np.abs(text - one).max() <= 5e-6 * np.abs(one).max()


def test_dask_cluster_gives_the_same_outputs_and_closes_its_client(caffenet):
    from dask.distributed import Client, LocalCluster

    root, run, runs = caffenet
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        def clients():
            return client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.clients))

        before = clients()
        out = run("dask", "--backend", "dask", "--scheduler", cluster.scheduler_address)
        deadline = time.monotonic() + 10
        while clients() != before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert clients() == before
        # both workers took part
        loaded = client.run(lambda: len(__import__("lrp_cli.batch").batch._DEMOS))
        assert sorted(loaded.values()) == [1, 1]
    assert_same_files(outputs(runs["sequential"]), outputs(out), "--backend dask")


def test_dask_workers_in_another_working_directory_write_into_the_client_s_folder(tmp_path, monkeypatch):
    """Issue 10: the config, its relative files, the list, PREPENDPATH and standalone_outpath are all relative to the
    client's working directory, and the cluster's workers run in another one. The client resolves every path before
    submitting, so the outputs land in its own output folder, byte-identical to a sequential run's, and nothing lands
    where the workers run."""
    from dask.distributed import Client, LocalCluster

    here, elsewhere = tmp_path / "client", tmp_path / "workers"
    here.mkdir()
    elsewhere.mkdir()
    stage("tiny_f100", here)
    args = ["config.txt", "filelist.txt", ".", "--batch-size", "1", "--threads", "1", "--quiet"]
    subprocess.run([*PYTHON_CLI, *args], cwd=here, check=True, timeout=120)
    expected = outputs(here / "output")
    assert len(expected) == 3 * 4
    shutil.rmtree(here / "output")

    monkeypatch.chdir(elsewhere)  # the worker processes start here
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        monkeypatch.chdir(tmp_path)
        assert set(client.run(os.getcwd).values()) == {str(elsewhere)}
        run = subprocess.run([*PYTHON_CLI, *args, "--backend", "dask", "--scheduler", cluster.scheduler_address],
                             cwd=here, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout == "", run.stderr
    assert_same_files(expected, outputs(here / "output"), "--backend dask, workers elsewhere")
    assert sorted(p.name for p in elsewhere.iterdir()) == []


# -- the tiny net: order, failures, skips, JSON ----------------------------------------------------------------------
@pytest.fixture
def tiny(tmp_path):
    stage("tiny_f100", tmp_path)
    config = configure(tmp_path / "config.txt", tmp_path / "tiny.txt", tmp_path,
                       standalone_outpath=tmp_path / "output")
    return tmp_path, config


def mixed_list(root: Path) -> Path:
    path = root / "mixed.txt"
    path.write_text(
        "someimages/cat12.jpg -1\n"
        "someimages/hare3.jpg 3\n"
        "someimages/missing.jpg -1\n"
        "someimages/bw1.png abc\n"
        "someimages/frog5.jpg -2\n"
        "someimages/sheep11.jpg 42\n"
        "someimages/bw1.png -1\n"
    )
    return path


def describe(item) -> tuple:
    if isinstance(item, FileListLineError):
        return ("line error", item.line)
    return (item.entry.line, item.skipped, item.error is None, item.classes)


@pytest.mark.parametrize("plan", [Plan(), Plan(batch_size=3), Plan(batch_size=4, threads=2), Plan(jobs=2),
                                  Plan(jobs=2, batch_size=2)],
                         ids=["sequential", "batch3", "batch4-threads2", "jobs2", "jobs2-batch2"])
def test_results_come_back_in_list_order_with_skips_and_failures_in_place(tiny, plan):
    root, config_path = tiny
    config = load_config(config_path)
    options = OutputOptions()

    def run(plan):
        return [describe(r) for r in run_entries(config, options, iter_filelist(mixed_list(root), str(root)), plan)]

    first = run(plan)
    assert [d[0] for d in first] == [1, 2, 3, "line error", 5, 6, 7]
    assert [d[2] for d in first if d[0] != "line error"] == [True, True, False, True, False, True]
    assert first[1][3] == [3] and len(first[4][3]) == 5  # class 3; the top-5 composite
    # resumed: done entries are skipped, failed ones tried again, each still in its place
    again = run(dataclasses.replace(plan, skip_existing=True))
    assert [d[:3] for d in again] == [(1, True, True), (2, True, True), (3, False, False), ("line error", 4),
                                      (5, True, True), (6, False, False), (7, True, True)]


def test_entries_with_the_same_outputs_are_written_in_list_order(tiny, monkeypatch):
    """The entries of a chunk are written two at a time (--threads 2), but the later of two entries with the same
    output files is always written last, even when the earlier one is slow to write: its files are the ones that
    stay."""
    root, config_path = tiny
    config = load_config(config_path)
    out = root / "output" / "someimages"
    real = Demo._write

    def slow_first(self, item, explanation, result):
        if item.entry.line == 1:
            time.sleep(0.3)  # written one at a time, the list's fourth entry would be done long before
        return real(self, item, explanation, result)

    def run(lines: list[str]) -> dict[str, bytes]:
        path = root / "dup.txt"
        path.write_text("".join(f"{line}\n" for line in lines))
        # batch 8 on 2 threads: chunks of 4, so all four entries are written by the same call
        results = list(run_entries(config, OutputOptions(), iter_filelist(path, str(root)), Plan(8, threads=2)))
        assert all(r.error is None for r in results)
        return {p.name: p.read_bytes() for p in out.glob("cat12.jpg_*")}

    alone = run(["someimages/cat12.jpg 3"])
    monkeypatch.setattr(Demo, "_write", slow_first)
    both = run(["someimages/cat12.jpg 1", "someimages/hare3.jpg -1", "someimages/sheep11.jpg -1",
                "someimages/cat12.jpg 3"])
    assert both == alone and len(alone) == 4


def test_chunks_explained_out_of_turn_come_back_in_list_order(tiny, monkeypatch):
    """Each thread explains its own chunk; when the first chunk takes longest, the later ones finish first, and the
    results (and skipped lines and errors between them) still come back in list order."""
    root, config_path = tiny
    real = Demo.explain
    finished = []

    def slow_first(self, staged, threads=1):
        if staged.entries[0].line == 1:
            time.sleep(0.5)
        real(self, staged, threads)
        finished.append(staged.entries[0].line)

    monkeypatch.setattr(Demo, "explain", slow_first)
    results = list(run_entries(load_config(config_path), OutputOptions(),
                               iter_filelist(mixed_list(root), str(root)), Plan(batch_size=2, threads=2)))
    assert finished[0] != 1  # the chunk of line 1 was overtaken
    assert [describe(r)[0] for r in results] == [1, 2, 3, "line error", 5, 6, 7]
    assert [describe(r)[2] for r in results if not isinstance(r, FileListLineError)] == [True, True, False, True,
                                                                                        False, True]


def test_shards_partition_the_list():
    items = list(range(11))
    parts = [list(Shard(i, 3).select(items)) for i in range(3)]
    assert parts == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8]]
    assert Shard.parse("2/3") == Shard(2, 3)
    for bad in ("3/3", "1", "a/b", "0/0", "-1/2"):
        with pytest.raises(Exception, match="--shard"):
            Shard.parse(bad)


def test_json_lines_describe_each_image(tiny):
    root, config = tiny
    result = CliRunner().invoke(lrp_demo, [str(config), str(mixed_list(root)), str(root), "--json", "--quiet"])
    assert result.exit_code == 1  # some entries failed
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 7
    names = (REFERENCE / "models" / "synsets_10.txt").read_text().splitlines()
    cat = records[0]
    assert cat["input"] == os.path.normpath(f"{root}/someimages/cat12.jpg") and cat["target"] == -1
    assert cat["error"] is None and cat["skipped"] is False and cat["seconds"] > 0
    assert [t["class"] for t in cat["top5"]] [0] == cat["classes"][0]
    assert [t["name"] for t in cat["top5"]] == [names[t["class"]] for t in cat["top5"]]
    probabilities = [t["probability"] for t in cat["top5"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6
    # the top-5 matches the top-10 file written for the image
    topten = Path(next(f for f in cat["outputs"] if f.endswith("_toptenscores.txt"))).read_text().split()
    assert [int(c) for c in topten[0:10:2]] == [t["class"] for t in cat["top5"]]
    assert [Path(f).name for f in cat["outputs"]] == [f"cat12.jpg{s}" for s in SUFFIXES[:4]]
    assert all(Path(f).stat().st_size > 0 for f in cat["outputs"])
    assert records[1]["target"] == 3 and records[1]["classes"] == [3]
    missing = records[2]
    assert missing["input"].endswith("missing.jpg") and "missing.jpg" in missing["error"]
    assert missing["outputs"] == [] and missing["top5"] == []
    assert records[3]["input"] is None and "line 4" in records[3]["error"] and records[3]["line"] == 4
    assert records[3]["list"] == str(mixed_list(root))
    assert len(records[4]["classes"]) == 5
    assert "42" in records[5]["error"] and "out of range" in records[5]["error"]
    # resumed: the outputs that exist are listed, nothing recomputed
    result = CliRunner().invoke(lrp_demo, [str(config), str(mixed_list(root)), str(root), "--json", "--quiet",
                                           "--skip-existing"])
    again = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r.get("skipped") for r in again] == [True, True, False, None, True, False, True]
    assert again[0]["outputs"] == cat["outputs"] and again[0]["error"] is None
    assert "4 skipped (outputs exist)" in result.stderr


# -- failures inside workers ----------------------------------------------------------------------------------------
def failing_chunk(config, options, chunk, batch_size, blas_threads, threads=1):
    """Stands in for batch._run_chunk in the workers: hare3 raises, cat12 kills its worker process."""
    import os

    from lrp_cli.batch import _run_chunk

    if any("hare3" in entry.path for entry in chunk):
        raise RuntimeError("boom")
    if any("cat12" in entry.path for entry in chunk):
        os._exit(3)
    return _run_chunk(config, options, chunk, batch_size, blas_threads, threads)


def test_a_failing_or_dying_worker_fails_its_entries_only(tiny, monkeypatch):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    monkeypatch.setattr(batch, "_run_chunk", failing_chunk)
    root, config_path = tiny
    names = ["bw1.png", "hare3.jpg", "frog5.jpg", "cat12.jpg", "sheep11.jpg", "spider-175582_640.jpg"]
    entries = [FileListEntry("list", n, f"someimages/{name}", f"{root}/someimages/{name}",
                             f"{root}/someimages/{name}", -1) for n, name in enumerate(names, 1)]
    try:
        results = list(run_entries(load_config(config_path), OutputOptions(), iter(entries), Plan(jobs=2)))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [r.entry.line for r in results] == [1, 2, 3, 4, 5, 6]
    errors = {r.entry.token.rsplit("/")[-1]: r.error for r in results}
    assert errors["hare3.jpg"] == "worker failed: RuntimeError: boom"
    assert errors["cat12.jpg"].startswith("worker failed: TerminatedWorkerError")
    assert [name for name, error in errors.items() if error is None] == ["bw1.png", "frog5.jpg", "sheep11.jpg",
                                                                         "spider-175582_640.jpg"]


def test_an_unexpected_error_fails_its_batch_only(tiny, monkeypatch):
    root, config_path = tiny
    real = Demo.explain

    def explain(self, staged, threads=1):
        if any("hare3" in e.path for e in staged.entries):
            raise FloatingPointError("overflow")
        return real(self, staged, threads)

    monkeypatch.setattr(Demo, "explain", explain)
    results = list(run_entries(load_config(config_path), OutputOptions(),
                               iter_filelist(mixed_list(root), str(root)), Plan()))
    assert results[1].error == "unexpected FloatingPointError: overflow"
    assert results[0].error is None and results[4].error is None and results[6].error is None


# -- streaming ------------------------------------------------------------------------------------------------------
class Counting:
    """An endless list of good entries that counts how many were taken."""

    def __init__(self, root: Path):
        self.root, self.taken = root, 0

    def __iter__(self):
        for n in itertools.count(1):
            self.taken += 1
            yield FileListEntry("endless", n, "someimages/cat12.jpg", f"{self.root}/someimages/cat12.jpg",
                                f"{self.root}/someimages/cat12.jpg", -1)


# sequential: three batches in flight between the prepare and write threads, one more read while they wait
@pytest.mark.parametrize("plan, ahead", [(Plan(batch_size=2), 4 * 2), (Plan(jobs=2, batch_size=2), 2 * 2 * 2 + 2)],
                         ids=["sequential", "jobs2"])
def test_an_endless_list_is_read_lazily(tiny, plan, ahead):
    root, config_path = tiny
    entries = Counting(root)
    results = run_entries(load_config(config_path), OutputOptions(minimal=True), iter(entries), plan)
    first = list(itertools.islice(results, 5))
    assert [r.entry.line for r in first] == [1, 2, 3, 4, 5] and all(r.error is None for r in first)
    assert entries.taken <= 5 + ahead
    results.close()


class StubDemo:
    """Demo's interface for run_entries without a net: every entry 'succeeds' (or its outputs exist)."""

    def __init__(self, existing: str | None = None):
        self.existing = existing

    def output_files(self, entry):
        return [self.existing] if self.existing else [f"/nonexistent/{entry.line}"]

    def remove_stale_temps(self, entry):
        return []

    def run(self, entries, threads=1):
        return [Result(e, files=[f"/out/{e.line}"]) for e in entries]

    def stage(self, entries):
        return Staged(entries, [Result(e, files=[f"/out/{e.line}"]) for e in entries], [])

    def explain(self, staged, threads=1):
        pass

    def write(self, staged, threads=1):
        return staged.results


def entries_of(count: int):
    return (FileListEntry("l", n, f"p{n}", f"./p{n}", f"p{n}", -1) for n in range(1, count + 1))


@pytest.mark.parametrize("skip_existing", [False, True], ids=["explained", "all-skipped"])
def test_memory_stays_flat_over_ten_thousand_entries(tmp_path, skip_existing):
    existing = tmp_path / "exists"
    existing.write_text("x")
    demo = StubDemo(str(existing) if skip_existing else None)
    plan = Plan(batch_size=10, skip_existing=skip_existing, blas_threads=None)

    def peak(count):
        tracemalloc.start()
        seen = 0
        for result in run_entries(None, None, entries_of(count), plan, demo):
            seen += 1
            assert result.skipped == skip_existing and result.error is None
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == count
        return size

    small, large = peak(1_000), peak(10_000)
    assert large <= 1.1 * small + 20_000, (small, large)


def read_line(stream, timeout: float) -> bytes:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, "no output in time"
    return stream.readline()


def test_results_from_stdin_appear_before_the_list_ends(tiny):
    root, config = tiny
    process = subprocess.Popen([*PYTHON_CLI, str(config), "-", str(root), "--json"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=root)
    try:
        process.stdin.write(b"someimages/cat12.jpg -1\n")
        process.stdin.flush()
        first = json.loads(read_line(process.stdout, 60))  # the list is still open
        assert first["input"].endswith("cat12.jpg") and first["error"] is None
        process.stdin.write(b"someimages/hare3.jpg -1\n")
        process.stdin.flush()
        assert json.loads(read_line(process.stdout, 60))["input"].endswith("hare3.jpg")
        process.stdin.write(b"someimages/bw1.png -1\n")
        process.stdin.close()
        rest = process.stdout.read().decode().splitlines()
        assert process.wait(timeout=60) == 0
    finally:
        process.kill()
    assert [json.loads(line)["input"].rsplit("/", 1)[-1] for line in rest] == ["bw1.png"]
    assert "3 done, 0 failed" in process.stderr.read().decode()


# -- progress bar and summary ---------------------------------------------------------------------------------------
def test_progress_bar_only_on_a_terminal_and_a_summary_always(tiny):
    root, config = tiny
    args = [*PYTHON_CLI, str(config), str(root / "filelist.txt"), str(root)]
    plain = subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=120)
    assert plain.returncode == 0 and plain.stdout == ""
    assert plain.stderr.splitlines() == [plain.stderr.splitlines()[-1]]
    assert plain.stderr.startswith("lrp-demo: 3 done, 0 failed in ")
    quiet = subprocess.run(args + ["--quiet"], capture_output=True, text=True, cwd=root, timeout=120)
    assert quiet.stderr.startswith("lrp-demo: 3 done, 0 failed in ")
    # stderr on a terminal: a progress bar, then the summary
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 0-column pty hides the bar
    shutil.rmtree(root / "output")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=follower, cwd=root)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert process.wait(timeout=120) == 0
    text = seen.decode(errors="replace")
    assert re.search(r"\r[0-3]img \[00:[0-9]{2}, [0-9.?]+img/s\]", text), text  # tqdm's bar, list length unknown
    assert "lrp-demo: 3 done, 0 failed in " in text



def test_skipped_entries_look_for_stale_temporaries_only_in_folders_that_hold_some(tmp_path, monkeypatch):
    """--skip-existing removes a killed run's temporaries next to complete outputs (test_resume.py), but lists each
    folder once instead of trying 24 names per skipped entry where there is nothing to find."""
    clean, dirty = tmp_path / "clean", tmp_path / "dirty"
    for folder in (clean, dirty):
        folder.mkdir()
        (folder / "a.jpg_rawhm.txt").write_text("x")
    (dirty / ".a.jpg_rawhm.txt~0123456789ab.tmp").write_text("half")
    listed = []
    real = os.scandir
    monkeypatch.setattr(batch.os, "scandir", lambda path: listed.append(path) or real(path))
    leftovers = batch._Leftovers()
    assert [leftovers.any_in(str(f)) for f in (clean, dirty, clean, dirty)] == [False, True, False, True]
    assert listed == [str(clean), str(dirty)]
    for n in range(batch._Leftovers.KEEP):
        leftovers.any_in(str(tmp_path / f"missing{n}"))
    leftovers.any_in(str(clean))
    assert listed[-1] == str(clean) and len(leftovers.folders) == batch._Leftovers.KEEP
