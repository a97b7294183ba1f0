"""Regenerate tests/data/toolbox/ from the ORIGINAL LRP Toolbox python code (the oracle of lrp_cli.toolbox).

Usage (in a virtualenv with the original's dependencies on an old numpy, e.g.
``pip install 'numpy==1.23.5' 'matplotlib==3.5.3' 'scikit-image==0.19.3' 'scipy==1.9.3' 'imageio<2.28'``):

    python scripts/make_toolbox_fixtures.py /path/to/lrp_toolbox [--shared ../shared] [--out tests/data/toolbox]

It imports the original's ``python/`` modules from the given checkout (nothing of it is copied) and writes what
they compute: forward outputs and relevances for LeNet-5, the XOR net and two small synthetic nets, per-layer
mixes, backward/update/train results, model and data files written by the original's writers, colour tables,
canny edges and rendered images. Everything is deterministic (fixed seeds, numpy's legacy RandomState).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

VARIANTS = [(None, None), ("slow", None), ("epsilon", 1.0), ("epsilon", 0.01), ("epsilon_slow", 0.01),
            ("alphabeta", 2.0), ("alphabeta", 1.0), ("alphabeta", 0.0), ("alphabeta", 0.5),
            ("alphabeta_slow", 2.0), ("alphabeta_slow", 1.0), ("alphabeta_slow", 0.0), ("flat", None), ("ww", None)]


def key(kind, variant, param):
    return f"{kind}|{variant}|{param}"


def quiet(fn, *args, **kwargs):
    """Call fn with the original's progress prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def lrp_cases(nn, x, rinit_masked, out, prefix):
    """Forward x, then every variant on the masked and the full output; a missing method is recorded as absent."""
    y = nn.forward(x)
    out[f"{prefix}Y"] = y
    for variant, param in VARIANTS:
        for kind, rinit in (("masked", rinit_masked(y)), ("full", y)):
            try:
                out[prefix + key(kind, variant, param)] = nn.lrp(rinit, variant, param)
            except NotImplementedError:
                pass
    return y


def mask_top(y):
    m = np.zeros_like(y)
    m[np.arange(y.shape[0]), np.argmax(y, axis=1)] = 1
    return y * m


def lenet(orig, shared, out, files):
    model_io = orig["model_io"]
    nn = quiet(model_io.read, str(shared / "data/toolbox-models/LeNet-5.txt"))
    X = np.load(shared / "data/mnist/test_images_first1000.npy")[:4] / 127.5 - 1.0
    X = np.pad(X.reshape(-1, 28, 28, 1), ((0, 0), (2, 2), (2, 2), (0, 0)), "constant", constant_values=(-1.0,))
    out["lenet|X"] = X
    lrp_cases(nn, X, mask_top, out, "lenet|")
    rinit = mask_top(nn.forward(X))
    mixes = {
        "alpha1_ww": lambda: (nn.set_lrp_parameters("alpha", 1.0), nn.modules[0].set_lrp_parameters("ww")),
        "eps_flat_ab2": lambda: (nn.set_lrp_parameters("epsilon", 0.01), nn.modules[0].set_lrp_parameters("flat"),
                                 nn.modules[3].set_lrp_parameters("alphabeta", 2.0)),
    }
    for name, preset in mixes.items():
        preset()
        out[f"lenet|mix|{name}"] = nn.lrp(rinit)
        out[f"lenet|mix|{name}|explicit_eps1"] = nn.lrp(rinit, "epsilon", 1.0)  # explicit wins over presets
        out[f"lenet|mix|{name}|param_only"] = nn.lrp(rinit, None, 2.0)  # only param given: simple everywhere
        nn.set_lrp_parameters(None, 1.0)
    # the original's writer on the shipped model: the sha256 of its text (too big to keep)
    path = out_tmp / "lenet_rewritten.txt"
    quiet(model_io.write, nn, str(path))
    files["lenet_rewritten_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()


def xor(orig, shared, out, files):
    nn = quiet(orig["model_io"].read, str(shared / "data/toolbox-models/xor_net_small.txt"))
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    out["xor|X"] = X
    lrp_cases(nn, X, mask_top, out, "xor|")
    path = out_tmp / "xor_rewritten.txt"
    quiet(orig["model_io"].write, nn, str(path))
    files["xor_rewritten_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()


def synthetic_nets(orig, out_dir, out):
    """Two small nets with every layer type, strides, overlapping windows, uncovered borders, biases of both signs,
    negative SumPool inputs (Tanh) and MaxPool ties (Rect zeros, integer inputs)."""
    M = orig["modules"]
    np.random.seed(7)
    a = M.Sequential([M.Convolution((3, 3, 2, 4), (1, 1)), M.Tanh(), M.SumPool((3, 3), (2, 2)),
                      M.Convolution((2, 2, 4, 5), (2, 1)), M.MaxPool((2, 2), (1, 1)), M.Flatten(),
                      M.Linear(10, 6), M.Tanh(), M.Linear(6, 4), M.SoftMax()])
    b = M.Sequential([M.Convolution((2, 3, 1, 3), (2, 2)), M.Rect(), M.MaxPool((2, 2), (2, 2)),
                      M.SumPool((1, 2), (1, 1)), M.Flatten(), M.Linear(12, 5), M.Rect(), M.Linear(5, 3)])
    c = M.Sequential([M.Convolution((2, 2, 1, 3), (1, 1)), M.Rect(), M.Convolution((3, 2, 3, 2), (1, 2)),
                      M.SumPool((2, 2), (1, 1)), M.Flatten(), M.Linear(12, 3)])  # zero conv biases: dead windows
    for net in (a, b):
        for layer in net.modules:
            if hasattr(layer, "B"):
                layer.B = np.random.normal(0, 0.3, layer.B.shape)
    xa = np.random.normal(0, 1, (3, 11, 12, 2))
    xb = np.round(np.random.normal(0, 2, (3, 9, 13, 1)))  # integers: exact ties in the max pooling
    xb[0, :4] = 0.0  # all-zero windows: zero denominators for the slow α-β rules
    xc = np.random.normal(0, 1, (2, 7, 8, 1))
    xc[:, :4] = 0.0
    for name, net, x in (("syn_a", a, xa), ("syn_b", b, xb), ("syn_c", c, xc)):
        quiet(orig["model_io"].write, net, str(out_dir / f"{name}.txt"))
        out[f"{name}|X"] = x
        lrp_cases(net, x, mask_top, out, f"{name}|")
        # backward and update: one step with a fixed error signal
        y = net.forward(x)
        dy = np.random.RandomState(11).normal(0, 1, y.shape)
        out[f"{name}|DX"] = net.backward(dy)
        net.update(0.01)
        for i, layer in enumerate(net.modules):
            if hasattr(layer, "W"):
                out[f"{name}|updated|W{i}"] = layer.W
                out[f"{name}|updated|B{i}"] = layer.B


def training(orig, out):
    """The XOR net trained from a seed: weights after train() (batches and init drawn from numpy's global state)."""
    M = orig["modules"]
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 5)
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]] * 5)
    for name, kwargs in (("plain", dict(batchsize=4, iters=300, status=50)),
                         ("decay", dict(batchsize=6, iters=200, status=40, lrate=0.05, lrate_decay="sublinear",
                                        Xval=X[:4], Yval=Y[:4], convergence=2))):
        np.random.seed(5)
        nn = M.Sequential([M.Linear(2, 3), M.Tanh(), M.Linear(3, 2), M.SoftMax()])
        quiet(nn.train, X, Y, **kwargs)
        for i, layer in enumerate(nn.modules):
            if hasattr(layer, "W"):
                out[f"train|{name}|W{i}"] = layer.W
                out[f"train|{name}|B{i}"] = layer.B


def text_formats(orig, out_dir):
    """Models and data written by the original's writers (number formats, .mat, .nn)."""
    M = orig["modules"]
    tricky = np.array([0.1, 1e-05, -0.0, 1.0, 1e16, 12345678.9, 0.30000000000000004, 5e-324, -2.5e-300, 1e22,
                       123456789012345.6, 1234567890123456.7, 0.0001, 0.00001234, -7.0, 3.141592653589793])
    lin = M.Linear(4, 4)
    lin.W = tricky.reshape(4, 4)
    lin.B = np.array([1e100, -1e-100, 2.0**-1074 * 3, 65504.0])
    conv = M.Convolution((1, 2, 1, 2), (1, 3))
    conv.W = np.array([0.5, -0.25, 1e-7, 7e7]).reshape(1, 2, 1, 2)
    conv.B = np.array([0.0, -0.0])
    net = M.Sequential([conv, M.Rect(), M.SumPool((1, 1), (1, 2)), M.MaxPool((2, 1), (3, 1)), M.Flatten(), lin,
                        M.Tanh(), M.SoftMax()])
    quiet(orig["model_io"].write, net, str(out_dir / "formats_model.txt"))
    quiet(orig["model_io"].write, net, str(out_dir / "formats_model.nn"))
    data = np.vstack([tricky.reshape(2, 8), np.arange(8) * 0.5 - 1])
    quiet(orig["data_io"].write, data, str(out_dir / "formats_data.txt"))
    quiet(orig["data_io"].write, data, str(out_dir / "formats_data.mat"))
    quiet(orig["data_io"].write, data[:1, :3], str(out_dir / "formats_row.mat"))
    np.save(out_dir / "formats_data_expected.npy", data)


def colour_tables(out):
    import matplotlib.cm

    for name in ("jet", "binary"):
        cmap = getattr(matplotlib.cm, name)
        cmap._init()
        out[f"cmap|{name}|lut"] = cmap._lut
        probe = np.array([-1e9, -0.5, -1e-12, 0.0, 1e-12, 0.5 / 256, 1.0 / 256, 0.5, 0.999, 1.0 - 1e-16, 1.0,
                          1.0 + 1e-12, 2.0, np.nan, np.inf, -np.inf])
        out[f"cmap|{name}|probe"] = probe
        out[f"cmap|{name}|probe_rgba"] = cmap(probe)


def edge_cases(orig, shared, out):
    """canny as the original calls it (render.hm_to_rgb) on various images."""
    from skimage.feature import canny

    render = orig["render"]
    digits = np.load(shared / "data/mnist/test_images_first1000.npy")[:8] / 255.0
    rng = np.random.RandomState(3)
    images = {f"digit{i}_s3": render.enlarge_image(digits[i].reshape(28, 28), 3) for i in range(8)}
    images["digit0_mini"] = render.enlarge_image(digits[0].reshape(28, 28) * 2 - 1, 3)  # mini.py: X in [-1, 1]
    images["digit1_s1"] = digits[1].reshape(28, 28)
    images["noise"] = rng.uniform(0, 1, (40, 31))
    images["blocks"] = render.enlarge_image(rng.randint(0, 2, (7, 9)).astype(float), 4)
    images["constant"] = np.full((20, 20), 0.7)
    for name, img in images.items():
        for sigma in (1.0, 2.0, 3.0):
            out[f"canny|{name}|{sigma}|image"] = img
            out[f"canny|{name}|{sigma}|edges"] = canny(img, sigma=sigma)


def rendering(orig, shared, out, out_dir):
    """The CNN demo's images: digit and heatmap for the first digits, and save_image's PNG and array."""
    render, model_io = orig["render"], orig["model_io"]
    nn = quiet(model_io.read, str(shared / "data/toolbox-models/LeNet-5.txt"))
    X = np.load(shared / "data/mnist/test_images_first1000.npy")[:3] / 127.5 - 1.0
    X = np.pad(X.reshape(-1, 28, 28, 1), ((0, 0), (2, 2), (2, 2), (0, 0)), "constant", constant_values=(-1.0,))
    for i in range(3):
        x = X[i : i + 1]
        R = nn.lrp(mask_top(nn.forward(x)), "epsilon", 1.0).sum(axis=3)
        xs = ((x + 1.0) / 2.0).sum(axis=3)
        digit = render.digit_to_rgb(xs, scaling=3)
        hm = render.hm_to_rgb(R, X=xs, scaling=3, sigma=2)
        out[f"render|{i}|R"] = R
        out[f"render|{i}|xs"] = xs
        out[f"render|{i}|digit"] = digit
        out[f"render|{i}|hm"] = hm
        out[f"render|{i}|saved"] = quiet(render.save_image, [digit, hm], str(out_dir / f"cnn_demo_{i}.png"))
    rng = np.random.RandomState(4)
    R = rng.normal(0, 1, (12, 10))
    out["render|custom|R"] = R
    for name in render.custom_maps:
        out[f"render|custom|{name}"] = render.hm_to_rgb(R.copy(), scaling=2, shape=(12, 10), cmap=name)
    out["render|nonorm"] = render.hm_to_rgb(rng.uniform(-0.2, 1.2, (6, 6)), scaling=2, normalize=False)
    out["render|digit_shape"] = render.digit_to_rgb(rng.uniform(0, 1, 12), scaling=2, shape=(3, 4))
    out["render|corners"] = render.repaint_corner_pixels(rng.uniform(0, 1, (9, 12, 3)), scaling=3)


def mini(orig, shared, out_dir):
    """The manual's mini example on a seeded random MLP (weights re-creatable from the seed by the tests)."""
    M, render = orig["modules"], orig["render"]
    rs = np.random.RandomState(2024)
    l1, l2 = M.Linear(784, 16), M.Linear(16, 10)
    l1.W, l1.B = rs.normal(0, 784**-0.5, (784, 16)), rs.normal(0, 0.1, 16)
    l2.W, l2.B = rs.normal(0, 0.25, (16, 10)), rs.normal(0, 0.1, 10)
    nn = M.Sequential([l1, M.Rect(), l2, M.SoftMax()])
    X = np.load(shared / "data/mnist/test_images_first1000.npy")[None, 0, :] / 127.5 - 1
    R = nn.lrp(nn.forward(X))
    quiet(render.save_image, [render.digit_to_rgb(X), render.hm_to_rgb(R, X)], str(out_dir / "mini_hm.png"))


def main():
    global out_tmp
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="checkout of sebastian-lapuschkin/lrp_toolbox")
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "tests/data/toolbox")
    args = parser.parse_args()
    assert tuple(int(v) for v in np.__version__.split(".")[:2]) < (1, 24), "the original needs numpy < 1.24"
    args.out.mkdir(parents=True, exist_ok=True)
    out_tmp = args.out
    sys.path.insert(0, str(args.original.resolve() / "python"))
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import data_io
    import model_io
    import modules
    import render

    orig = {"modules": modules, "model_io": model_io, "data_io": data_io, "render": render}
    shared = args.shared.resolve()
    arrays, files = {}, {}
    lenet(orig, shared, arrays, files)
    xor(orig, shared, arrays, files)
    synthetic_nets(orig, args.out, arrays)
    training(orig, arrays)
    text_formats(orig, args.out)
    colour_tables(arrays)
    edge_cases(orig, shared, arrays)
    rendering(orig, shared, arrays, args.out)
    mini(orig, shared, args.out)
    np.savez_compressed(args.out / "oracle.npz", **arrays)
    files["versions"] = {"numpy": np.__version__}
    for mod in ("matplotlib", "skimage", "scipy"):
        files["versions"][mod] = __import__(mod).__version__
    (args.out / "oracle.json").write_text(json.dumps(files, indent=1, sort_keys=True) + "\n")


out_tmp = Path(".")

if __name__ == "__main__":
    main()
