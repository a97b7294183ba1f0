"""Pixel-flipping: the vectorised perturbation equals a slow literal loop, random-baseline properties, the CSV and
PNG outputs, and lrp-eval on the shipped model."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from lrp_cli.evaluate import (
    Curves,
    aopc,
    evaluate_methods,
    perturbation_curves,
    plot_curves,
    random_relevance,
    region_order,
    region_ranks,
    region_sums,
    uniform_fill,
    write_csv,
)


def _tanh_model(weights):
    """A small non-linear classifier: N×C×H×W → N×K scores tanh(W·x)·3."""

    def scores(images):
        flat = images.reshape(len(images), -1).astype(np.float64)
        return 3 * np.tanh(flat @ weights.T)

    return scores


def _literal_curve(scores, image, relevance, chosen, fill, steps, region):
    """The paper's procedure for one image, written out with loops: rank the tiles by their summed relevance, then
    replace them one after another, pixel by pixel, scoring each image alone."""
    _, h, w = image.shape
    tiles = []
    for top in range(0, h, region):
        for left in range(0, w, region):
            total = 0.0
            pixels = []
            for y in range(top, min(top + region, h)):
                for x in range(left, min(left + region, w)):
                    total += relevance[y, x]
                    pixels.append((y, x))
            tiles.append((total, pixels))
    ranked = sorted(range(len(tiles)), key=lambda t: -tiles[t][0])  # sorted() is stable: ties stay in grid order
    current = image.copy()
    curve = []
    for k in range(steps + 1):
        if 1 <= k <= len(ranked):
            for y, x in tiles[ranked[k - 1]][1]:
                current[:, y, x] = fill[:, y, x]
        values = scores(current[None])[0]
        curve.append(sum(values[c] for c in chosen))
    return np.array(curve)


def test_vectorised_curves_equal_the_literal_loop():
    rng = np.random.default_rng(0)
    n, c, h, w, region, steps = 3, 2, 7, 5, 3, 8  # 3×2 tiles, the last row and column narrower; steps > tiles
    images = rng.normal(size=(n, c, h, w)).astype(np.float32)
    fill = rng.normal(size=(n, c, h, w)).astype(np.float32)
    relevance = rng.normal(size=(n, h, w))
    relevance[1] = np.round(relevance[1])  # ties between tiles
    scores = _tanh_model(rng.normal(size=(4, c * h * w)) * 0.3)
    classes = [[0], [2], [1, 3]]
    fast = perturbation_curves(scores, images, relevance, classes, fill, steps, region, batch_size=5)
    slow = np.stack([_literal_curve(scores, images[i], relevance[i], classes[i], fill[i], steps, region)
                     for i in range(n)])
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    literal_aopc = [sum(curve[0] - curve[k] for k in range(steps + 1)) / (steps + 1) for curve in slow]
    np.testing.assert_allclose(aopc(fast), literal_aopc, rtol=1e-12)
    assert np.all(fast[:, 6:] == fast[:, 6:7])  # all 6 tiles gone from step 6 on


def test_region_sums_and_ranks_by_hand():
    relevance = np.zeros((1, 4, 5))
    relevance[0, 3, 4] = 5.0  # the bottom-right tile (row 1, column 2) of the 2×3 grid of 2×2 tiles
    relevance[0, 0, 0] = -1.0
    relevance[0, 1, 3] = 2.0
    assert region_sums(relevance, 2).tolist() == [[-1.0, 2.0, 0.0, 0.0, 0.0, 5.0]]
    order = region_order(relevance, 2)
    assert order.tolist() == [[5, 1, 2, 3, 4, 0]]
    ranks = region_ranks(order, (4, 5), 2)
    expected = np.array([[5, 5, 1, 1, 2], [5, 5, 1, 1, 2], [3, 3, 4, 4, 0], [3, 3, 4, 4, 0]])
    assert ranks[0].tolist() == expected.tolist()


def test_random_rankings_are_seeded_permutations():
    rngs = [np.random.default_rng((7, p)) for p in range(4)]
    maps = random_relevance((20, 20), rngs)
    again = random_relevance((20, 20), [np.random.default_rng((7, p)) for p in range(4)])
    np.testing.assert_array_equal(maps, again)
    order = region_order(maps, 9)
    assert all(sorted(row) == list(range(9)) for row in order.tolist())
    assert len({tuple(row) for row in order.tolist()}) > 1  # images get different orders
    low, high = np.full((2, 3, 4, 4), -1.0), np.full((2, 3, 4, 4), 2.0)
    fill = uniform_fill(low, high, [np.random.default_rng(p) for p in range(2)])
    assert fill.dtype == np.float32 and fill.min() >= -1 and fill.max() < 2 and fill.std() > 0.5


def test_random_baseline_is_linear_on_average_and_below_the_exact_ranking():
    """For a linear score f(x) = Σ w·x with regions set to 0, a tile's effect is its contribution Σ w·x, so:
    ranking by the exact contributions drops f fastest (the top-k tiles), a random ranking drops it linearly on
    average (each tile is among the first k with probability k / T), and every ranking ends at the same value."""
    rng = np.random.default_rng(1)
    c, h, w, region = 2, 12, 12, 3  # 16 tiles
    image = rng.uniform(0, 1, size=(1, c, h, w)).astype(np.float32)
    weights = rng.normal(size=(1, c * h * w))

    def scores(images):
        return images.reshape(len(images), -1).astype(np.float64) @ weights.T

    fill = np.zeros_like(image)
    exact = (weights.reshape(c, h, w) * image[0]).sum(axis=0)[None]
    repeats = 400
    images = np.repeat(image, repeats, axis=0)
    rngs = [np.random.default_rng((3, r)) for r in range(repeats)]
    results = evaluate_methods(scores, images, {"exact": np.repeat(exact, repeats, axis=0)}, [[0]] * repeats,
                               np.repeat(fill, repeats, axis=0), rngs, steps=16, region=region, batch_size=64)
    best, random = results
    assert random.label == "random"
    f0, f_end = best.scores[0, 0], best.scores[0, -1]
    assert np.allclose(random.scores[:, -1], f_end) and np.allclose(random.scores[:, 0], f0)
    assert np.all(best.scores[0] <= random.scores.min(axis=0) + 1e-9)  # no random order drops f faster
    linear = f0 + (f_end - f0) * np.arange(17) / 16
    spread = random.scores.std(axis=0).max()
    np.testing.assert_allclose(random.mean_scores, linear, atol=4 * spread / np.sqrt(repeats))
    assert best.mean_aopc > random.mean_aopc


def _results():
    scores = np.array([[3.0, 2.0, 1.5], [1.0, 0.5, 0.25]])
    return [Curves("100 beta=0", scores, aopc(scores)), Curves("random", scores[::-1] * 2, aopc(scores[::-1] * 2))]


def test_csv_format(tmp_path):
    path = tmp_path / "out" / "pixel_flipping.csv"
    names = ['some,images/a "b".jpg', "c.jpg"]
    write_csv(str(path), _results(), names, [[1], [2, 5]])
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "method,image,classes,aopc,f0,f1,f2"
    rows = list(csv.reader(text.splitlines()))[1:]
    assert len(rows) == 2 * (len(names) + 1)
    assert rows[0] == ["100 beta=0", names[0], "1", "0.83333333", "3", "2", "1.5"]
    assert rows[1][:4] == ["100 beta=0", "c.jpg", "2 5", "0.41666667"]
    assert rows[2] == ["100 beta=0", "", "", "0.625", "2", "1.25", "0.875"]  # the mean over the images
    assert rows[5][:4] == ["random", "", "", f"{np.mean(aopc(_results()[1].scores)):.8g}"]


def test_plot_is_drawn(tmp_path):
    path = tmp_path / "plot.png"
    plot_curves(str(path), _results(), "title")
    with Image.open(path) as image:
        assert image.size == (960, 540)
        colours = {c for _, c in image.convert("RGB").getcolors(1 << 20)}
    assert (0xD6, 0x27, 0x28) in colours and (0x7F, 0x7F, 0x7F) in colours  # the method's line and the random one


def _lrp_eval(tmp_path, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", "from lrp_cli.eval_cli import lrp_eval; lrp_eval()",
         str(ROOT / "configs/config_sequential.txt"), str(ROOT / "testfilelist.txt"), str(ROOT), *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def test_lrp_eval_on_the_shipped_model(tmp_path):
    out = _lrp_eval(tmp_path, "--steps", "4", "--formula", "100:beta=0", "--formula", "0:eps=1", "--quiet",
                    "--out", "eval")
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "eval" / "pixel_flipping.csv").open()))
    assert [r["method"] for r in rows] == ["100 beta=0"] * 8 + ["0 eps=1"] * 8 + ["random"] * 8
    assert [r["classes"] for r in rows[:3]] == ["1", "967", "980"]  # goldfish, espresso, volcano
    assert len(rows[0]) == 4 + 5
    mean = {r["method"]: float(r["aopc"]) for r in rows if r["image"] == ""}
    assert mean["100 beta=0"] > mean["random"]
    assert out.stdout.splitlines()[0] == "method\tAOPC" and len(out.stdout.splitlines()) == 4
    assert (tmp_path / "eval" / "pixel_flipping.png").stat().st_size > 0


@pytest.mark.parametrize("spec", ["x", "100:gamma=1", "100:beta=", "999"])
def test_lrp_eval_bad_formula_is_one_line(tmp_path, spec):
    out = _lrp_eval(tmp_path, "--formula", spec, "--steps", "1")
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "lrp-eval: error:" in out.stderr
