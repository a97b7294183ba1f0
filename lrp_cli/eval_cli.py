"""``lrp-eval CONFIG FILELIST PREPENDPATH``: pixel-flipping (region perturbation) of the config's formula and, on
request, of other formulas side by side, against random relevance; writes ``pixel_flipping.csv`` and
``pixel_flipping.png``.  Thin glue between the model (:class:`lrp_cli.api.Model`) and :mod:`lrp_cli.evaluate`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import sys

import click
import numpy as np

from . import __version__
from .api import Model, Prepared, Settings
from .config import load_config
from .errors import LrpError
from .evaluate import REGION, STEPS, Curves, evaluate_methods, mean_fill, plot_curves, uniform_fill, write_csv
from .filelist import iter_filelist

#: ``--formula`` keys → the setting (:class:`lrp_cli.api.Settings`) each one sets.
SPEC_KEYS = {"beta": "beta", "eps": "epsilon", "aux": "aux", "first": "first_layer"}


def parse_spec(spec: str, settings: Settings) -> tuple[str, Settings]:
    """``FORMULA[:key=value,...]`` (keys: beta, eps, aux, first) → (label, the settings with those values)."""
    head, _, tail = spec.partition(":")
    changes: dict[str, object] = {}
    try:
        changes["formula"] = int(head)
        for item in filter(None, tail.split(",")):
            key, _, value = item.partition("=")
            field = SPEC_KEYS[key.strip()]
            changes[field] = float(value) if field in ("beta", "epsilon") else int(value)
    except (KeyError, ValueError):
        raise LrpError(
            f"--formula {spec!r}: expected FORMULA[:key=value,...] with keys {', '.join(SPEC_KEYS)}, "
            "e.g. 100:beta=0 or 102:aux=1"
        ) from None
    label = head + "".join(f" {item.strip()}" for item in filter(None, tail.split(",")))
    return label, settings.replace(**changes)


def _label(settings: Settings) -> str:
    return f"{settings.formula} beta={settings.beta:g}"


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
    parsed = load_config(config)
    model = Model.from_config(parsed)
    specs = [parse_spec(s, model.settings) for s in formulas] or [(_label(model.settings), model.settings)]
    for _, settings in specs:
        model.rules(**dataclasses.asdict(settings))  # every formula checked against the net before any image
    target = default_target if default_target is not None else parsed.default_target
    entries = iter_filelist(filelist, prependpath, target, stdin=sys.stdin.buffer if filelist == "-" else None)
    names, classes, parts, failed = [], [], [], 0
    position = itertools.count()
    chunk: list[tuple[int, Prepared, int]] = []

    def flush() -> None:
        curves, chosen = _evaluate_chunk(model, specs, chunk, perturbation, seed, steps, region, batch_size,
                                         random_repeats)
        parts.append(curves)
        classes.extend(chosen)
        names.extend(item.source for _, item, _ in chunk)
        if not quiet:
            click.echo(f"lrp-eval: {len(names)} images evaluated", err=True)
        chunk.clear()

    for entry in entries:
        try:
            if isinstance(entry, LrpError):
                raise entry
            model.check_target(entry.target)
            chunk.append((next(position), model.prepare(entry.path), entry.target))
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
    out = out_dir or parsed.standalone_outpath
    write_csv(os.path.join(out, "pixel_flipping.csv"), results, names, classes)
    plot_curves(os.path.join(out, "pixel_flipping.png"), results,
                f"Pixel-flipping: regions replaced by {'uniform noise' if perturbation == 'uniform' else 'the mean'}, "
                f"mean of {len(names)} images")
    click.echo("method\tAOPC")
    for result in results:
        click.echo(f"{result.label}\t{result.mean_aopc:.4f}")
    return 1 if failed else 0


def _evaluate_chunk(model: Model, specs: list[tuple[str, Settings]], chunk: list[tuple[int, Prepared, int]],
                    perturbation: str, seed: int, steps: int, region: int, batch_size: int, random_repeats: int):
    """Every method's curves on one chunk of prepared images; (list of Curves, explained classes per image).
    Image p of the list draws its noise and random ranking from seed (seed, p), whatever the chunking."""
    items = [item for _, item, _ in chunk]
    images = np.stack([item.blob for item in items])
    targets = [target for _, _, target in chunk]
    bounds = _bounds(items)
    relevances, classes = {}, None
    for label, settings in specs:
        explanations = model.explain_inputs(items, targets, settings, threads=os.cpu_count() or 1)
        relevances[label] = np.stack([e.rawhm.sum(axis=0) for e in explanations])
        classes = classes or [e.classes for e in explanations]
    if perturbation == "uniform":
        fill = uniform_fill(*bounds, [np.random.default_rng((seed, p, 0)) for p, _, _ in chunk])
    else:
        fill = mean_fill(images.shape)
    rngs = [np.random.default_rng((seed, p, 1)) for p, _, _ in chunk]

    def scores(batch: np.ndarray) -> np.ndarray:
        return model.start_values(batch, specs[0][1])

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
