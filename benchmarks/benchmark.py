#!/usr/bin/env python3
"""Speed and memory of lrp_cli's relevance engine (and, when installed, of zennit on the same net and rules).

Run from the repository root, with OpenBLAS left free to pick its own kernel:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/benchmark.py

Some machines set OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE in the environment; they force a slower OpenBLAS kernel
on numpy (and torch). The command above unsets them for the benchmark only; the script prints the kernel that
actually runs (threadpoolctl) and warns when either variable is still set. Never change them in tests or CI.

What is measured, per model × formula × batch size, each configuration in a fresh subprocess:

* ``ms/img``: median over ``--runs`` timed runs (after ``--warmup`` untimed ones) of one
  ``Explainer.explain`` call on a batch (forward pass, ranking, relevance down to the input), divided by the
  batch size. Model loading is excluded.
* ``load s``: reading prototxt + caffemodel and building the net (``load_model`` + ``Net``).
* ``peak RSS``: the child's ``ru_maxrss`` at the end, so it covers loading, the forward pass and relevance.

Defaults: CaffeNet (random-weight reference model) formulas 0, 100, 2 and SqueezeNet v1.1 formula 100, each
at batch 1 and 10. The CaffeNet caffemodel is generated with ``shared/tools/make_reference_models.py`` into
``--cache-dir`` when missing, or taken from ``--caffenet-dir``.

When ``torch`` and ``zennit`` are importable (optional, measuring only; never a dependency of lrp_cli), the
same configurations are also run in zennit on a torch copy of the net built from the same caffemodel weights
(grouped convolutions, ``torch.nn.LocalResponseNorm``, ceil-mode max pooling), with per-layer rules mirroring
the formula: 0 → Epsilon(ε) everywhere; 2 → AlphaBeta(α = 1 + β, β) everywhere; 100 → AlphaBeta on
convolutions, Epsilon on fully connected layers. zennit has no LRN rule (the gradient passes through there)
and stabilises z = 0 as +ε, so its heatmaps are not the original's; the cost per layer is comparable.
To use the CPU torch wheel: ``pip install torch==2.13.0`` then ``pip install zennit --no-deps``; when
torchvision is missing or broken (zennit imports it only for its ResNet canonizer), a stub is installed in
the benchmark process.

Other options: ``--config MODEL:FORMULA[:BATCH]`` (repeatable) replaces the default list, ``--runs``,
``--warmup``, ``--no-zennit``, ``--json FILE`` for machine-readable results. Exit status 0 even when a target
is missed: this is a report, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = Path(os.environ.get("LRP_CLI_SHARED", ROOT.parent / "shared"))
DEFAULT_CACHE = Path(os.environ.get("LRP_CLI_TEST_CACHE", ROOT / ".cache")) / "reference-models"
CAFFENET_FILE = "caffenet_seed1.caffemodel"
OPENBLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")

#: (model, formula) → ms per image at batch 10 that the project aims for
TARGETS_MS = {("caffenet", 0): 30.0, ("caffenet", 100): 60.0, ("caffenet", 2): 70.0, ("squeezenet", 100): 25.0}
TARGET_BATCH = 10
TARGET_LOAD_S = {"caffenet": 1.0}
TARGET_RSS_MB = 1024.0

DEFAULT_CONFIGS = [
    ("caffenet", 0),
    ("caffenet", 100),
    ("caffenet", 2),
    ("squeezenet", 100),
]
DEFAULT_BATCHES = (1, 10)


# ---------------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class ModelFiles:
    name: str
    prototxt: str
    caffemodel: str


@dataclass(frozen=True)
class Job:
    """One measurement, run in its own subprocess."""

    engine: str  # "lrp_cli" or "zennit"
    model: ModelFiles
    formula: int
    batch: int
    runs: int
    warmup: int
    epsilon: float
    beta: float


def caffenet_files(args) -> ModelFiles:
    """The CaffeNet reference model; generated into the cache when neither it nor --caffenet-dir has it."""
    prototxt = args.shared / "reference" / "models" / "caffenet" / "deploy.prototxt"
    if args.caffenet_dir is not None:
        folder = Path(args.caffenet_dir)
        for candidate in (folder / CAFFENET_FILE, folder / "caffenet" / CAFFENET_FILE):
            if candidate.exists():
                return ModelFiles("caffenet", str(prototxt), str(candidate))
        sys.exit(f"benchmark: no {CAFFENET_FILE} in {folder} (nor in {folder / 'caffenet'})")
    path = args.cache_dir / "caffenet" / CAFFENET_FILE
    if not path.exists():
        print(f"generating {path} (233 MB, once) ...", file=sys.stderr, flush=True)
        args.cache_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, str(args.shared / "tools" / "make_reference_models.py"), str(args.cache_dir), "caffenet"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return ModelFiles("caffenet", str(prototxt), str(path))


def squeezenet_files(args) -> ModelFiles:
    folder = args.shared / "models" / "squeezenet_v1.1"
    return ModelFiles("squeezenet", str(folder / "deploy.prototxt"), str(folder / "squeezenet_v1.1.caffemodel"))


MODEL_FINDERS = {"caffenet": caffenet_files, "squeezenet": squeezenet_files}


def parse_config(text: str) -> list[tuple[str, int, int | None]]:
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in MODEL_FINDERS:
        raise argparse.ArgumentTypeError(f"expected MODEL:FORMULA[:BATCH] with MODEL in {sorted(MODEL_FINDERS)}")
    try:
        return [(parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad formula or batch in {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=DEFAULT_SHARED, help="the shared/ folder (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE,
                        help="where the CaffeNet reference model is generated when missing (default: %(default)s)")
    parser.add_argument("--caffenet-dir", type=Path, help=f"a folder holding {CAFFENET_FILE} (skips generation)")
    parser.add_argument("--config", type=parse_config, action="extend", metavar="MODEL:FORMULA[:BATCH]",
                        help="measure only these (repeatable; without BATCH: --batch-sizes)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(DEFAULT_BATCHES))
    parser.add_argument("--runs", type=int, default=5, help="timed runs per configuration (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before timing")
    parser.add_argument("--epsilon", type=float, default=1.0, help="ε of the ε-rule (default: %(default)s)")
    parser.add_argument("--beta", type=float, default=1.0, help="β of the α-β rule (default: %(default)s)")
    parser.add_argument("--no-zennit", action="store_true", help="skip the zennit comparison")
    parser.add_argument("--json", type=Path, help="also write all results as JSON to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one Job (JSON) and print its result
    parser.add_argument("--probe", choices=("blas", "zennit"), help=argparse.SUPPRESS)  # internal
    return parser


def latency_jobs(args, engines: list[str]) -> list[Job]:
    configs = args.config or [(m, f, None) for m, f in DEFAULT_CONFIGS]
    files = {}
    jobs = []
    for model, formula, batch in configs:
        if model not in files:
            files[model] = MODEL_FINDERS[model](args)
        for b in [batch] if batch is not None else args.batch_sizes:
            for engine in engines:
                jobs.append(Job(engine, files[model], formula, b, args.runs, args.warmup, args.epsilon, args.beta))
    return jobs


# ---------------------------------------------------------------------------------------------------------------
# the child side: one measurement


def blas_description() -> str:
    """The BLAS numpy uses and the kernel that runs (threadpoolctl), e.g. 'openblas 0.3.31 SkylakeX, 2 threads'."""
    import numpy as np

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"numpy {np.__version__} (threadpoolctl not installed: kernel unknown)"
    for pool in threadpool_info():
        if pool.get("user_api") == "blas":
            return (f"numpy {np.__version__}, {pool.get('internal_api')} {pool.get('version')} "
                    f"{pool.get('architecture', '?')} kernel, {pool.get('num_threads')} threads")
    return f"numpy {np.__version__} (no BLAS found by threadpoolctl)"


def synthetic_images(batch: int, shape: tuple[int, ...]):
    """A fixed pseudo-random batch that looks like a mean-subtracted 8-bit image blob."""
    import numpy as np

    rng = np.random.default_rng(12345)
    return (rng.integers(0, 256, size=(batch, *shape)) - 117.0).astype(np.float32)


def peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def timed_runs(step, runs: int, warmup: int, cpu: list[float] | None = None) -> list[float]:
    """Wall times of ``runs`` calls after ``warmup``; the process CPU times (all threads) go to ``cpu``."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        times.append(time.perf_counter() - start)
        if cpu is not None:
            cpu.append(time.process_time() - start_cpu)
    return times


def measure_lrp_cli(job: Job) -> dict:
    from lrp_cli.caffe import load_model
    from lrp_cli.composite import RelevanceSettings
    from lrp_cli.explain import Explainer
    from lrp_cli.net import Net

    start = time.perf_counter()
    net = Net(load_model(job.model.prototxt, job.model.caffemodel))
    load_s = time.perf_counter() - start
    settings = RelevanceSettings(job.formula, job.epsilon, job.beta, aux=-1, last_layer_index=-1)
    explainer = Explainer(net, settings, 1000)
    images = synthetic_images(job.batch, net.input_shape[1:])
    targets = [-1] * job.batch
    cpu: list[float] = []
    threads = os.cpu_count() or 1  # as lrp-demo runs it: the batch in slices per core, BLAS on one thread each
    times = timed_runs(lambda: explainer.explain(images, targets, threads=threads), job.runs, job.warmup, cpu)
    return {"load_s": load_s, "times_s": times, "cpu_s": cpu}


def _import_zennit():
    """Import zennit; when torchvision is absent or broken, stand in a stub for the two classes zennit names."""
    try:
        import zennit  # noqa: F401
    except (ImportError, RuntimeError, OSError):
        import types

        import torch

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")] + ["zennit"]:
            sys.modules.pop(name, None)
        for name in [m for m in sys.modules if m.startswith("zennit.")]:
            sys.modules.pop(name, None)
        stub = types.ModuleType("torchvision")
        stub.models = types.ModuleType("torchvision.models")
        stub.models.resnet = types.ModuleType("torchvision.models.resnet")
        stub.models.resnet.Bottleneck = type("Bottleneck", (torch.nn.Module,), {})
        stub.models.resnet.BasicBlock = type("BasicBlock", (torch.nn.Module,), {})
        sys.modules.update({"torchvision": stub, "torchvision.models": stub.models,
                            "torchvision.models.resnet": stub.models.resnet})
    import zennit.composites
    import zennit.rules

    return zennit


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def torch_net(net, start: int):
    """A torch module computing the lrp_cli ``net`` from its input up to node ``start``, with the same weights."""
    import torch
    from torch import nn

    class CaffeGraph(nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []  # (node, module or callable)
            self.mods = nn.ModuleList()
            for node in net.nodes[: start + 1]:
                layer = node.layer
                module = None
                if node.type == "Convolution":
                    m, cg, kh, kw = layer.weight.shape
                    module = nn.Conv2d(cg * layer.group, m, (kh, kw), layer.stride, layer.pad, layer.dilation,
                                       layer.group, bias=layer.bias is not None)
                    module.weight.data = torch.from_numpy(layer.weight.copy())
                    if layer.bias is not None:
                        module.bias.data = torch.from_numpy(layer.bias.copy())
                elif node.type == "InnerProduct":
                    j, k = layer.weight.shape
                    linear = nn.Linear(k, j, bias=layer.bias is not None)
                    linear.weight.data = torch.from_numpy(layer.weight.copy())
                    if layer.bias is not None:
                        linear.bias.data = torch.from_numpy(layer.bias.copy())
                    module = nn.Sequential(nn.Flatten(), linear)
                elif node.type == "ReLU":
                    module = nn.ReLU()
                elif node.type == "LRN":
                    if layer.region != 0:
                        raise NotImplementedError("WITHIN_CHANNEL LRN")
                    module = nn.LocalResponseNorm(layer.size, layer.alpha, layer.beta, layer.k)
                elif node.type == "Pooling":
                    if layer.global_pooling:
                        module = nn.AdaptiveMaxPool2d(1) if layer.method == 0 else nn.AdaptiveAvgPool2d(1)
                    elif layer.method == 0:
                        module = nn.MaxPool2d(layer.kernel, layer.stride, layer.pad, ceil_mode=True)
                    else:
                        module = nn.AvgPool2d(layer.kernel, layer.stride, layer.pad, ceil_mode=True)
                elif node.type in ("Dropout", "Split", "Input"):
                    module = None
                elif node.type == "Concat":
                    axis = int(layer.param.concat_param.axis) if hasattr(layer.param, "concat_param") else 1
                    module = ("concat", axis)
                elif node.type == "Softmax":
                    module = nn.Softmax(dim=1)
                else:
                    raise NotImplementedError(f"{node.type} in the torch copy")
                if isinstance(module, nn.Module):
                    self.mods.append(module)
                self.steps.append((node, module))
            self.output = net.nodes[start].tops[0]

        def forward(self, x):
            blobs = {net.input_name: x}
            for node, module in self.steps:
                if node.type == "Input":
                    blobs[node.tops[0]] = x
                    continue
                bottoms = [blobs[b] for b in node.bottoms]
                if module is None:
                    outs = [bottoms[0]] * len(node.tops)
                elif isinstance(module, tuple):
                    outs = [torch.cat(bottoms, dim=module[1])]
                else:
                    outs = [module(bottoms[0])]
                blobs.update(zip(node.tops, outs, strict=True))
            return blobs[self.output]

    return CaffeGraph().eval()


def measure_zennit(job: Job) -> dict:
    import torch

    _import_zennit()
    from zennit.composites import LayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon

    from lrp_cli.caffe import load_model
    from lrp_cli.net import Net

    torch.set_num_threads(os.cpu_count() or 1)
    start = time.perf_counter()
    net = Net(load_model(job.model.prototxt, job.model.caffemodel))
    model = torch_net(net, net.resolve_start(-1))
    load_s = time.perf_counter() - start
    eps, beta = job.epsilon, job.beta
    conv = {0: Epsilon(eps), 2: AlphaBeta(1 + beta, beta), 100: AlphaBeta(1 + beta, beta)}
    dense = {0: Epsilon(eps), 2: AlphaBeta(1 + beta, beta), 100: Epsilon(eps)}
    if job.formula not in conv:
        raise SystemExit(f"no zennit mirror of formula {job.formula}")
    composite = LayerMapComposite([(torch.nn.Conv2d, conv[job.formula]), (torch.nn.Linear, dense[job.formula])])
    images = torch.from_numpy(synthetic_images(job.batch, net.input_shape[1:]))
    rows = torch.arange(job.batch)

    def step():
        x = images.clone().requires_grad_(True)
        out = modified(x).reshape(job.batch, -1)
        seed = torch.zeros_like(out)
        top = out.argmax(dim=1)
        seed[rows, top] = out[rows, top].detach()
        (relevance,) = torch.autograd.grad(out, x, seed)
        return relevance

    cpu: list[float] = []
    with composite.context(model) as modified:
        times = timed_runs(step, job.runs, job.warmup, cpu)
    return {"load_s": load_s, "times_s": times, "cpu_s": cpu, "zennit": _version("zennit"), "torch": torch.__version__}


def child_main(text: str) -> None:
    data = json.loads(text)
    job = Job(**{**data, "model": ModelFiles(**data["model"])})
    result = (measure_lrp_cli if job.engine == "lrp_cli" else measure_zennit)(job)
    result["peak_rss_mb"] = peak_rss_mb()
    result["blas"] = blas_description()
    print(json.dumps(result))


# ---------------------------------------------------------------------------------------------------------------
# the parent side: run jobs, report


def run_job(job: Job) -> dict:
    """Run one job in a fresh interpreter (so its peak RSS is its own); the result dict or {'error': ...}."""
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(asdict(job))],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["ms_per_image"] = 1000 * statistics.median(result["times_s"]) / job.batch
    result["best_ms_per_image"] = 1000 * min(result["times_s"]) / job.batch
    result["cpu_ms_per_image"] = 1000 * statistics.median(result["cpu_s"]) / job.batch
    return result


def probe(what: str) -> tuple[bool, str]:
    """Run ``--probe what`` in a fresh interpreter (same environment as the jobs): (success, last output line)."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--probe", what], capture_output=True,
                          text=True)
    lines = (proc.stdout if proc.returncode == 0 else proc.stderr).strip().splitlines()
    return proc.returncode == 0, lines[-1] if lines else f"exit status {proc.returncode}"


def sgemm_gflops(size: int = 2048, runs: int = 3) -> float:
    """Best float32 GEMM rate of numpy's BLAS here (a yardstick for the ms/img figures; varies with load)."""
    import numpy as np

    a = np.ones((size, size), np.float32)
    a @ a
    best = min(timed_runs(lambda: a @ a, runs, 0))
    return 2 * size**3 / best / 1e9


def probe_main(what: str) -> None:
    if what == "blas":
        print(f"{blas_description()}; sgemm 2048³ {sgemm_gflops():.0f} GFLOP/s")
    elif what == "zennit":
        import torch

        _import_zennit()
        print(f"zennit {_version('zennit')}, torch {torch.__version__}, {torch.get_num_threads()} threads")


def machine_description() -> list[str]:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return [f"CPU: {cpu}, {os.cpu_count()} logical cores; Python {platform.python_version()}; load average {load}"]


def target_note(job: Job, result: dict) -> str:
    notes = []
    aim = TARGETS_MS.get((job.model.name, job.formula))
    if job.engine == "lrp_cli" and aim is not None and job.batch == TARGET_BATCH:
        notes.append(f"≤{aim:g} ms {'met' if result['ms_per_image'] <= aim else 'NOT met'}")
    if job.engine == "lrp_cli" and job.model.name in TARGET_LOAD_S and result["load_s"] > TARGET_LOAD_S[job.model.name]:
        notes.append(f"load >{TARGET_LOAD_S[job.model.name]:g} s")
    if job.engine == "lrp_cli" and job.batch == TARGET_BATCH and result["peak_rss_mb"] > TARGET_RSS_MB:
        notes.append(f"RSS >{TARGET_RSS_MB:g} MB")
    return ", ".join(notes)


def latency_section(args, engines: list[str]) -> list[dict]:
    jobs = latency_jobs(args, engines)
    header = f"{'model':<11}{'formula':>8}{'batch':>6}  {'engine':<8}{'ms/img':>9}{'best':>8}{'cpu':>8}{'load s':>8}" \
             f"{'peak RSS':>10}{'zennit ×':>10}  target"
    print(header)
    print("-" * len(header) + "-" * 12)
    results = []
    lrp_ms: dict[tuple[str, int, int], float] = {}
    for job in jobs:
        result = run_job(job)
        results.append({"job": asdict(job), **result})
        lead = f"{job.model.name:<11}{job.formula:>8}{job.batch:>6}  {job.engine:<8}"
        if "error" in result:
            print(f"{lead}failed: {result['error']}", flush=True)
            continue
        key = (job.model.name, job.formula, job.batch)
        ratio = ""
        if job.engine == "lrp_cli":
            lrp_ms[key] = result["ms_per_image"]
        elif key in lrp_ms:
            ratio = f"{lrp_ms[key] / result['ms_per_image']:.2f}"  # lrp_cli time in units of zennit's
        print(f"{lead}{result['ms_per_image']:9.1f}{result['best_ms_per_image']:8.1f}"
              f"{result['cpu_ms_per_image']:8.1f}{result['load_s']:8.2f}"
              f"{result['peak_rss_mb']:8.0f}MB"
              f"{ratio:>10}  {target_note(job, result)}", flush=True)
    return results


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    if args.probe:
        probe_main(args.probe)
        return 0
    args.shared = args.shared.resolve()
    for line in machine_description():
        print(line)
    for var in OPENBLAS_VARS:
        if var in os.environ:
            print(f"WARNING: {var}={os.environ[var]} is set and may force a slow OpenBLAS kernel; run with "
                  f"`env -u {' -u '.join(OPENBLAS_VARS)} python benchmarks/benchmark.py`")
    print(f"BLAS: {probe('blas')[1]}")
    engines = ["lrp_cli"]
    if not args.no_zennit:
        ok, line = probe("zennit")
        if ok:
            engines.append("zennit")
            print(f"compared with: {line}")
        else:
            print(f"zennit comparison skipped: {line}")
    print(f"ms/img: median wall time of {args.runs} runs after {args.warmup} warm-up, forward + relevance, per image;"
          " best: the fastest run;\ncpu: median CPU time of all threads; 'zennit ×' = lrp_cli median / zennit median"
          " (below 1: lrp_cli faster)")
    print()
    results = {"latency": latency_section(args, engines)}
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
