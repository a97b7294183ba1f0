"""``lrp-eval CONFIG FILELIST PREPENDPATH``: pixel-flipping (region perturbation) of the config's formula and, on
request, of other formulas side by side, against random relevance; writes ``pixel_flipping.csv`` and
``pixel_flipping.png``.  Thin glue between the model (:class:`lrp_cli.run.Demo`) and :mod:`lrp_cli.evaluate`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys

import click
import numpy as np

from . import __version__
from .config import Config, load_config
from .errors import LrpError
from .evaluate import REGION, STEPS, Curves, evaluate_methods, mean_fill, plot_curves, uniform_fill, write_csv
from .filelist import iter_filelist
from .run import Demo, Prepared, build_explainer

#: ``--formula`` keys → the config field each one sets.
SPEC_KEYS = {
    "beta": "alphabeta_beta",
    "eps": "epsstab",
    "aux": "auxiliaryvariable_maxlayerindexforflatdistinconv",
    "first": "firstlayerindex",
}


def parse_spec(spec: str, config: Config) -> tuple[str, Config]:
    """``FORMULA[:key=value,...]`` (keys: beta, eps, aux, first) → (label, the config with those settings)."""
    head, _, tail = spec.partition(":")
    changes: dict[str, object] = {}
    try:
        changes["relpropformulatype"] = int(head)
        for item in filter(None, tail.split(",")):
            key, _, value = item.partition("=")
            field = SPEC_KEYS[key.strip()]
            changes[field] = float(value) if field in ("alphabeta_beta", "epsstab") else int(value)
    except (KeyError, ValueError):
        raise LrpError(
            f"--formula {spec!r}: expected FORMULA[:key=value,...] with keys {', '.join(SPEC_KEYS)}, "
            "e.g. 100:beta=0 or 102:aux=1"
        ) from None
    label = head + "".join(f" {item.strip()}" for item in filter(None, tail.split(",")))
    return label, dataclasses.replace(config, **changes)


def _config_label(config: Config) -> str:
    return f"{config.relpropformulatype} beta={config.alphabeta_beta:g}"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("config", type=click.Path())
@click.argument("filelist")
@click.argument("prependpath")
@click.option("--formula", "formulas", multiple=True, metavar="SPEC",
              help="A formula to compare, FORMULA[:beta=B,eps=E,aux=A,first=F] (repeatable) [default: the config's].")
@click.option("--steps", type=click.IntRange(min=1), default=STEPS, show_default=True,
              help="Perturbation steps L (regions removed).")
@click.option("--region", type=click.IntRange(min=1), default=REGION, show_default=True, help="Region side in pixels.")
@click.option("--perturbation", type=click.Choice(["uniform", "mean"]), default="uniform", show_default=True,
              help="Replace a region by uniform noise over the pixel range (the paper) or by the training mean.")
@click.option("--random-repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="Random rankings averaged into the random baseline.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise and the random rankings.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images per forward pass.")
@click.option("--out", "out_dir", default=None,
              help="Folder for pixel_flipping.csv and .png [default: the config's standalone_outpath].")
@click.option("--default-target", type=int, default=None, help="Target for list lines without one.")
@click.option("--quiet", is_flag=True, help="No progress messages.")
@click.version_option(__version__)
def lrp_eval(config, filelist, prependpath, formulas, steps, region, perturbation, random_repeats, seed, batch_size,
             out_dir, default_target, quiet):
    """Pixel-flipping: remove the most relevant regions first and report the score curves and AOPC."""
    try:
        sys.exit(_main(config, filelist, prependpath, formulas, steps, region, perturbation, random_repeats, seed,
                       batch_size, out_dir, default_target, quiet))
    except LrpError as exc:
        click.echo(f"lrp-eval: error: {exc}", err=True)
        sys.exit(1)


def _main(config, filelist, prependpath, formulas, steps, region, perturbation, random_repeats, seed, batch_size,
          out_dir, default_target, quiet) -> int:
    settings = load_config(config)
    demo = Demo(settings)
    specs = [parse_spec(s, settings) for s in formulas] or [(_config_label(settings), settings)]
    explainers = {label: build_explainer(demo.net, cfg) for label, cfg in specs}
    target = default_target if default_target is not None else settings.default_target
    entries = iter_filelist(filelist, prependpath, target, stdin=sys.stdin.buffer if filelist == "-" else None)
    names, classes, parts, failed = [], [], [], 0
    position = itertools.count()
    chunk: list[tuple[int, Prepared]] = []

    def flush() -> None:
        curves, chosen = _evaluate_chunk(demo, explainers, chunk, perturbation, seed, steps, region, batch_size,
                                         random_repeats)
        parts.append(curves)
        classes.extend(chosen)
        names.extend(item.entry.path for _, item in chunk)
        if not quiet:
            click.echo(f"lrp-eval: {len(names)} images evaluated", err=True)
        chunk.clear()

    for entry in entries:
        try:
            if isinstance(entry, LrpError):
                raise entry
            chunk.append((next(position), demo.prepare(entry)))
        except LrpError as exc:
            failed += 1
            click.echo(f"lrp-eval: failed: {exc}", err=True)
            continue
        if len(chunk) == batch_size:
            flush()
    if chunk:
        flush()
    if not names:
        raise LrpError(f"{filelist}: no image could be evaluated")
    results = [Curves.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
    out = out_dir or settings.standalone_outpath
    write_csv(os.path.join(out, "pixel_flipping.csv"), results, names, classes)
    plot_curves(os.path.join(out, "pixel_flipping.png"), results,
                f"Pixel-flipping: regions replaced by {'uniform noise' if perturbation == 'uniform' else 'the mean'}, "
                f"mean of {len(names)} images")
    click.echo("method\tAOPC")
    for result in results:
        click.echo(f"{result.label}\t{result.mean_aopc:.4f}")
    return 1 if failed else 0


def _evaluate_chunk(demo: Demo, explainers: dict, chunk: list[tuple[int, Prepared]], perturbation: str, seed: int,
                    steps: int, region: int, batch_size: int, random_repeats: int):
    """Every method's curves on one chunk of prepared images; (list of Curves, explained classes per image).
    Image p of the list draws its noise and random ranking from seed (seed, p), whatever the chunking."""
    items = [item for _, item in chunk]
    images = np.stack([item.blob for item in items])
    targets = [item.entry.target for item in items]
    bounds = _bounds(items)
    relevances, classes = {}, None
    for label, explainer in explainers.items():
        explanation = explainer.explain(images, targets, bounds if explainer.needs_input_bounds else None)
        relevances[label] = explanation.rawhm.sum(axis=1)
        classes = classes or explanation.classes
    if perturbation == "uniform":
        fill = uniform_fill(*bounds, [np.random.default_rng((seed, p, 0)) for p, _ in chunk])
    else:
        fill = mean_fill(images.shape)
    rngs = [np.random.default_rng((seed, p, 1)) for p, _ in chunk]
    start = next(iter(explainers.values())).start

    def scores(batch: np.ndarray) -> np.ndarray:
        return demo.net.start_values(demo.net.forward(batch), start)

    return evaluate_methods(scores, images, relevances, classes, fill, rngs, steps, region, batch_size,
                            random_repeats), classes


def _bounds(items: list[Prepared]) -> tuple[np.ndarray, np.ndarray]:
    """The valid blob range per value: (−mean, 255 − mean) for images; a .npy blob's own per-channel min and max."""
    low, high = [], []
    for item in items:
        if item.mean_bgr is not None:
            mean = item.mean_bgr.astype(np.float32)
            low.append(-mean)
            high.append(np.float32(255) - mean)
        else:
            axes = (1, 2)
            low.append(np.broadcast_to(item.blob.min(axis=axes, keepdims=True), item.blob.shape))
            high.append(np.broadcast_to(item.blob.max(axis=axes, keepdims=True), item.blob.shape))
    return np.stack(low), np.stack(high)
