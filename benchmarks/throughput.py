#!/usr/bin/env python3
"""Whole ``lrp-demo`` runs over photos: their cost per image next to the engine alone, throughput of the shipped
SqueezeNet with one or two processes, and peak RSS over long lists.

Run from the repository root, with OpenBLAS left free to pick its own kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/throughput.py

Each measurement is one real ``lrp-demo`` process (outputs into a temporary folder).

* marginal ms/img (first table): per net and formula, ``lrp-demo --batch-size 10`` over a list of 21 distinct
  photos (the reference and data photos of ``../shared``) minus the same over a list of 1, divided by 20: start-up
  and model loading cancel, decoding, resizing and writing the outputs do not. Best of ``--repeats`` runs each, with
  ``--minimal-output`` and with the full outputs (heatmap and as-inputted PNGs too). ``engine`` is
  ``benchmark.py``'s ms/img for the same net, formula and batch (forward + relevance of a synthetic batch, in
  process); ``ratio`` = whole run (minimal) / engine. Targets: CaffeNet formula 0 ≤ 40, formula 100 ≤ 70 ms/img,
  full outputs at most 10 ms/img more, ratio ≤ 1.15.
* ``img/s``: list length / wall time of the whole command (start-up, model loading and worker start included) for
  ``--jobs 1`` and ``--jobs 2``; the ratio is the speed-up (target ≥ 1.7 on 2 cores).
* control: the same ratio for a plain single-threaded sgemm loop, to tell a busy machine from a slow lrp_cli.
* ``peak RSS``: ``ru_maxrss`` of the ``lrp-demo`` process (``os.wait4``) after ``--rss`` lists of 200 and 2 000 images
  (``--jobs 1``); target: the second ≤ 1.1 × the first.

Options: ``--images N`` (throughput list length, default 200), ``--rss A,B``, ``--no-rss``,
``--no-marginal``, ``--no-scaling``, ``--repeats``. Exit status 0 even when a target is missed: this is a report,
not a test.
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
SHARED = Path(os.environ.get("LRP_CLI_SHARED", ROOT.parent / "shared"))
CLI = [sys.executable, "-c", "from lrp_cli.cli import lrp_demo; lrp_demo()"]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchmark  # noqa: E402 - the engine-only measurement, from the same folder

#: (net, formula) → (marginal ms/img target with --minimal-output, at batch 10)
MARGINAL_TARGETS = {("caffenet", 0): 40.0, ("caffenet", 100): 70.0}


def photo_folder(folder: Path) -> Path:
    """21 distinct photos of ../shared (reference and data photos), linked into ``folder/photos``."""
    photos = folder / "photos"
    photos.mkdir()
    seen = set()
    sources = sorted((SHARED / "reference" / "someimages").iterdir()) + sorted((SHARED / "data" / "images").iterdir())
    for source in sources:
        if source.name not in seen and len(seen) < 21:
            seen.add(source.name)
            (photos / source.name).symlink_to(source)
    return photos


def net_config(folder: Path, net: str, formula: int) -> Path:
    """A config for ``net`` (caffenet: the random-weight reference model; squeezenet: the shipped one) with this
    formula, absolute model paths and its outputs in ``folder``."""
    if net == "squeezenet":
        text = (ROOT / "configs" / "config_sequential.txt").read_text().replace("../models", str(ROOT / "models"))
    else:
        models = benchmark.DEFAULT_CACHE
        reference = SHARED / "reference" / "models"
        text = (SHARED / "reference" / "cases" / "caffenet_f100" / "config.txt").read_text()
        text = text.replace("models/caffenet/deploy_sequential.prototxt", str(reference / "caffenet/deploy.prototxt"))
        for name in ("caffenet/caffenet_seed1.caffemodel", "imagenet_mean_const.binaryproto"):
            text = text.replace(f"models/{name}", str(models / name))
        text = text.replace("models/synsets_1000.txt", str(reference / "synsets_1000.txt"))
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        key = line.strip()
        if key == "relpropformulatype":
            lines[i + 1] = str(formula)
        elif key == "standalone_outpath":
            lines[i + 1] = str(folder / f"out_{net}_{formula}")
        elif key == "standalone_rootpath":
            lines[i + 1] = "photos"
    path = folder / f"config_{net}_{formula}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def marginal_section(folder: Path, repeats: int) -> None:
    photos = sorted(p.name for p in photo_folder(folder).iterdir())
    lists = {}
    for count in (1, len(photos)):
        lists[count] = folder / f"photos{count}.txt"
        lists[count].write_text("".join(f"photos/{name} -1\n" for name in photos[:count]))
    shipped = int((ROOT / "configs" / "config_sequential.txt").read_text().split("relpropformulatype")[1].split()[0])
    class Args:  # what benchmark.py's model finders read
        shared, cache_dir, caffenet_dir = SHARED, benchmark.DEFAULT_CACHE, None

    print(f"\nwhole runs over {len(photos)} photos, batch 10, marginal ms/img (best of {repeats}); engine: "
          "benchmark.py, same net/formula/batch")
    print(f"{'net':<11}{'formula':>8}{'minimal':>9}{'full':>8}{'engine':>8}{'ratio':>7}  target")
    for net, formula in (("caffenet", 0), ("caffenet", 100), ("squeezenet", shipped)):
        config = net_config(folder, net, formula)
        costs = []
        for extra in (["--minimal-output"], []):
            best = {}
            for count, filelist in lists.items():
                best[count] = min(run(config, filelist, "--batch-size", "10", *extra, prepend=folder)[0]
                                  for _ in range(repeats))
            costs.append(1000 * (best[len(photos)] - best[1]) / (len(photos) - 1))
        job = benchmark.Job("lrp_cli", benchmark.MODEL_FINDERS[net](Args), formula, 10, 5, 1, 1.0, 1.0)
        engine = benchmark.run_job(job).get("ms_per_image", float("nan"))
        aim = MARGINAL_TARGETS.get((net, formula))
        note = "" if aim is None else f"≤{aim:g} {'met' if costs[0] <= aim else 'NOT met'}"
        print(f"{net:<11}{formula:>8}{costs[0]:9.1f}{costs[1]:8.1f}{engine:8.1f}{costs[0] / engine:7.2f}  {note}",
              flush=True)


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


def run(config: Path, filelist: Path, *args: str, prepend: Path = ROOT) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB of the lrp-demo process)."""
    # stderr into a file, not a pipe: the repeated photos of the long lists warn once per entry, far more than a
    # pipe holds while nobody reads it
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen([*CLI, str(config), str(filelist), str(prepend), "--quiet", *args],
                                   stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        log.seek(0)
        stderr = log.read().decode(errors="replace")[-4000:]
    process.returncode = os.waitstatus_to_exitcode(status)
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
    parser.add_argument("--no-rss", action="store_true")
    parser.add_argument("--no-marginal", action="store_true")
    parser.add_argument("--no-scaling", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import numpy  # noqa: F401 - loads BLAS for blas_kernel()

    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            print(f"warning: {name}={os.environ[name]} is set (forces a slower OpenBLAS kernel)")
    print(f"cores: {os.cpu_count()}, BLAS: {blas_kernel()}, load average: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="lrp-throughput-") as tmp:
        folder = Path(tmp)
        if not args.no_marginal:
            marginal_section(folder, args.repeats)
        if not args.no_scaling:
            scaling_section(folder, args)
        if not args.no_rss:
            rss_section(folder, args)


def scaling_section(folder: Path, args) -> None:
    """The shipped demo with its default options (target ≥ 15 img/s on 2 cores), one core, two worker processes;
    then peak RSS over two list lengths."""
    print(f"\nthe shipped SqueezeNet demo, {args.images} photos of someimages/ (repeated), all outputs")
    config = write_config(folder)
    filelist = write_list(folder, args.images)
    rates = {}
    for label, extra in (("default options", []),
                         ("--jobs 1 --threads 1", ["--jobs", "1", "--threads", "1", "--batch-size", "4"]),
                         ("--jobs 2 --threads 1", ["--jobs", "2", "--threads", "1", "--batch-size", "4"])):
        seconds, _ = run(config, filelist, *extra)
        rates[label] = args.images / seconds
        print(f"{label:27s}: {args.images} images in {seconds:6.1f} s = {rates[label]:5.2f} img/s")
    one, default = rates["--jobs 1 --threads 1"], rates["default options"]
    print(f"over one core: --jobs 2 {rates['--jobs 2 --threads 1'] / one:.2f}x, default {default / one:.2f}x; "
          f"the default options {'meet' if default >= 15 else 'miss'} the 15 img/s target")
    print(f"control, plain sgemm in 2 processes / 1 process: {machine_scaling():.2f}x "
          "(below 2 when other processes hold the cores)")


def rss_section(folder: Path, args) -> None:
    """Peak RSS of the shipped demo (default options) over two list lengths: flat memory means a ratio near 1."""
    print(f"\nthe shipped SqueezeNet demo, default options, lists of {args.rss} photos (repeated)")
    config = write_config(folder)
    peaks = []
    for count in (int(v) for v in args.rss.split(",")):
        seconds, rss = run(config, write_list(folder, count))
        peaks.append(rss)
        print(f"{count:5d} images: peak RSS {rss:6.1f} MiB ({count / seconds:.2f} img/s)")
    if len(peaks) == 2:
        print(f"peak RSS ratio: {peaks[1] / peaks[0]:.3f} (target <= 1.1)")


if __name__ == "__main__":
    main()
