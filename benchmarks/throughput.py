#!/usr/bin/env python3
"""Throughput of ``lrp-demo --jobs 1`` and ``--jobs 2`` on the shipped SqueezeNet, and peak RSS over long lists.

Run from the repository root, with OpenBLAS left free to pick its own kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/throughput.py

Each measurement is one real ``lrp-demo`` process (config ``configs/config_sequential.txt``, outputs into a
temporary folder) on a list cycling through the photos of ``someimages/``: the outputs of repeated photos are
overwritten, so a long list needs no disk space of its own.

* ``img/s``: list length / wall time of the whole command (start-up, model loading and worker start included) for
  ``--jobs 1`` and ``--jobs 2``; the ratio is the speed-up (target ≥ 1.7 on 2 cores).
* control: the same ratio for a plain single-threaded sgemm loop, to tell a busy machine from a slow lrp_cli.
* ``peak RSS``: ``ru_maxrss`` of the ``lrp-demo`` process (``os.wait4``) after ``--rss`` lists of 200 and 2 000 images
  (``--jobs 1``); target: the second ≤ 1.1 × the first.

Options: ``--images N`` (throughput list length, default 200), ``--rss A,B``, ``--batch-size``, ``--no-rss``. Exit
status 0 even when a target is missed: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-c", "from lrp_cli.cli import lrp_demo; lrp_demo()"]


def write_config(folder: Path) -> Path:
    """configs/config_sequential.txt with absolute model paths and the outputs in ``folder``."""
    lines = (ROOT / "configs" / "config_sequential.txt").read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        key = lines[i - 1].strip() if i else ""
        if key in ("param_file", "model_file", "mean_file", "synsetfile"):
            line = str((ROOT / "configs" / line.strip()).resolve())
        elif key == "standalone_outpath":
            line = str(folder / "out")
        out.append(line)
    path = folder / "config.txt"
    path.write_text("\n".join(out) + "\n")
    return path


def write_list(folder: Path, count: int) -> Path:
    photos = sorted(p.name for p in (ROOT / "someimages").iterdir() if p.suffix == ".jpg")
    path = folder / f"list{count}.txt"
    path.write_text("".join(f"someimages/{photos[n % len(photos)]} -1\n" for n in range(count)))
    return path


def run(config: Path, filelist: Path, *args: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the lrp-demo process)."""
    started = time.perf_counter()
    process = subprocess.Popen([*CLI, str(config), str(filelist), str(ROOT), "--quiet", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    stderr = process.stderr.read().decode()
    if process.returncode != 0:
        sys.exit(f"lrp-demo failed ({process.returncode}):\n{stderr}")
    return seconds, usage.ru_maxrss / 1024.0


_GEMM = """
import time, numpy as np
from threadpoolctl import threadpool_limits
a, b = np.ones((512, 1200), np.float32), np.ones((1200, 3000), np.float32)
with threadpool_limits(1):
    start, n = time.perf_counter(), 0
    while time.perf_counter() - start < 4:
        a @ b
        n += 1
print(n / (time.perf_counter() - start))
"""


def machine_scaling() -> float:
    """Control: single-threaded sgemm rate of 2 simultaneous processes over 1 process (2.0 on 2 free cores)."""
    def rates(count):
        processes = [subprocess.Popen([sys.executable, "-c", _GEMM], stdout=subprocess.PIPE) for _ in range(count)]
        return sum(float(p.communicate()[0]) for p in processes)

    return rates(2) / rates(1)


def blas_kernel() -> str:
    try:
        from threadpoolctl import threadpool_info

        return ", ".join(f"{i['internal_api']} {i.get('architecture', '?')}" for i in threadpool_info()) or "none"
    except ImportError:
        return "threadpoolctl missing"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--rss", default="200,2000")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-rss", action="store_true")
    args = parser.parse_args()
    import numpy  # noqa: F401 - loads BLAS for blas_kernel()

    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"warning: {name}={os.environ[name]} is set (forces a slower OpenBLAS kernel)")
    print(f"cores: {os.cpu_count()}, BLAS: {blas_kernel()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="lrp-throughput-") as tmp:
        folder = Path(tmp)
        config = write_config(folder)
        filelist = write_list(folder, args.images)
        rates = {}
        # one core (--threads 1), two worker processes, and the default (one process, a thread per core)
        for label, extra in (("--jobs 1 --threads 1", ["--jobs", "1", "--threads", "1"]),
                             ("--jobs 2 --threads 1", ["--jobs", "2", "--threads", "1"]),
                             ("--jobs 1 (default threads)", ["--jobs", "1"])):
            seconds, _ = run(config, filelist, *extra, "--batch-size", str(args.batch_size))
            rates[label] = args.images / seconds
            print(f"{label:27s}: {args.images} images in {seconds:6.1f} s = {rates[label]:5.2f} img/s")
        one = rates["--jobs 1 --threads 1"]
        print(f"speed-up --jobs 2 over one core: {rates['--jobs 2 --threads 1'] / one:.2f}x; "
              f"default threads over one core: {rates['--jobs 1 (default threads)'] / one:.2f}x (target >= 1.7x)")
        print(f"control, plain sgemm in 2 processes / 1 process: {machine_scaling():.2f}x "
              "(below 2 when other processes hold the cores)")
        if args.no_rss:
            return
        peaks = []
        for count in (int(v) for v in args.rss.split(",")):
            seconds, rss = run(config, write_list(folder, count), "--batch-size", str(args.batch_size))
            peaks.append(rss)
            print(f"{count:5d} images: peak RSS {rss:6.1f} MiB ({count / seconds:.2f} img/s)")
        if len(peaks) == 2:
            print(f"peak RSS ratio: {peaks[1] / peaks[0]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
