"""``lrp-toolbox-demo``: the toolbox manual's lrp_demo / lrp_cnn_demo as a command.

MNIST digits (N×784, pixel values 0…255, ``.npy`` or ``.mat``) and a plain-text (or ``.npz``) model → for each of
the first COUNT digits ``heatmap_<i>.png`` (the digit and its heatmap side by side, as the demos draw them) and
``heatmap_<i>.npy`` (the raw relevance), written into ``--out`` and nowhere else.

As the demos: inputs scaled to [−1, 1] (X/127.5 − 1); a model whose first layer is a Convolution gets the digits as
N×28×28×1, padded by 2 pixels of −1 on each side (32×32, LeNet-5's input); a final SoftMax is dropped; the
initial relevance is the output masked to the target class; heatmaps at scaling 3 with the outline at σ = 2.
"""

from __future__ import annotations

import os
import sys

import click
import numpy as np

from . import data_io, model_io, render
from .errors import ShapeError, ToolboxError
from .modules import Convolution


def prepare_digits(pixels: np.ndarray, model, path) -> np.ndarray:
    """N×784 pixels (0…255) → the model's input: N×784 in [−1, 1], or N×32×32×1 padded with −1 for a CNN."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if pixels.ndim != 2:
        raise ShapeError(f"{path}: digits must be an N x D matrix, got shape {pixels.shape}")
    X = pixels / 127.5 - 1.0
    if model.modules and isinstance(model.modules[0], Convolution):
        side = int(np.sqrt(X.shape[1]))
        if side * side != X.shape[1]:
            raise ShapeError(f"{path}: {X.shape[1]} values per digit are not a square image")
        X = np.pad(X.reshape(-1, side, side, 1), ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=-1.0)
    return X


def explain_digit(model, x, target, lrp_var, param) -> tuple[np.ndarray, int]:
    """(relevance at the input, predicted class) for one digit (batch of 1)."""
    y = model.forward(x)
    if y.ndim != 2:
        raise ShapeError(f"the model's output must be N x classes, got shape {y.shape}")
    predicted = int(np.argmax(y[0]))
    cls = predicted if target is None else target
    if not 0 <= cls < y.shape[1]:
        raise ShapeError(f"target class {cls} is outside the model's {y.shape[1]} classes")
    mask = np.zeros_like(y)
    mask[:, cls] = 1
    return model.lrp(y * mask, lrp_var, param), predicted


def render_digit(x, R, scaling, sigma) -> list[np.ndarray]:
    """The digit (mapped back to [0, 1]) and its heatmap with the digit's outline, as the demos draw them."""
    if x.ndim == 4:  # CNN: sum over channels, as lrp_cnn_demo.py
        R, x = R.sum(axis=3), x.sum(axis=3)
    xs = (x + 1.0) / 2.0
    return [render.digit_to_rgb(xs, scaling=scaling), render.hm_to_rgb(R, X=xs, scaling=scaling, sigma=sigma)]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("digits", type=click.Path(dir_okay=False))
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--count", "-n", default=10, show_default=True, type=click.IntRange(min=1), help="digits to explain")
@click.option("--lrp-var", default="epsilon", show_default=True, help="simple, epsilon, alphabeta, flat, ww, …")
@click.option("--param", default=None, type=float, help="ε or α (default: 0.01 for epsilon, 2 for alphabeta)")
@click.option("--target", default=None, type=click.IntRange(min=0), help="class to explain (default: predicted)")
@click.option("--out", default="toolbox_heatmaps", show_default=True, type=click.Path(file_okay=False),
              help="output folder (created)")
@click.option("--scaling", default=3, show_default=True, type=click.IntRange(min=1))
@click.option("--sigma", default=2.0, show_default=True, type=float, help="canny σ of the outline")
def main(digits, model, count, lrp_var, param, target, out, scaling, sigma):
    """Explain the first digits of DIGITS (.npy/.mat, N x 784, 0..255) with the toolbox MODEL (.txt/.npz)."""
    if param is None and lrp_var.lower() in ("epsilon", "eps", "epsilon_slow"):
        param = 0.01
    elif param is None and lrp_var.lower().startswith("alpha"):
        param = 2.0
    try:
        nn = model_io.read(model)
        nn.drop_softmax_output_layer()
        X = prepare_digits(data_io.read(digits), nn, digits)
        os.makedirs(out, exist_ok=True)
        for i in range(min(count, X.shape[0])):
            R, predicted = explain_digit(nn, X[i : i + 1], target, lrp_var, param)
            name = os.path.join(out, f"heatmap_{i:04d}")
            render.save_image(render_digit(X[i : i + 1], R, scaling, sigma), name + ".png")
            data_io.write(R, name + ".npy")
            click.echo(f"digit {i}: predicted {predicted}, relevance sum {R.sum():.6g} -> {name}.png")
    except ToolboxError as err:
        click.echo(f"Error: {err}", err=True)
        sys.exit(1)
    except OSError as err:
        click.echo(f"Error: {err.filename or out}: {err.strerror or err}", err=True)
        sys.exit(1)
