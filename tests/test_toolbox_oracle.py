"""lrp_cli.toolbox against the ORIGINAL toolbox's outputs (tests/data/toolbox, made by
scripts/make_toolbox_fixtures.py running the original python code on numpy 1.23): forward, every lrp variant,
per-layer mixes, backward/update/train, file formats, colour maps, canny and rendered images."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED
from PIL import Image

from lrp_cli.toolbox import data_io, model_io, render
from lrp_cli.toolbox import modules as M
from lrp_cli.toolbox._canny import canny
from lrp_cli.toolbox._colormaps import colormap, lookup_table
from lrp_cli.toolbox.errors import MissingLrpMethodError

DATA = Path(__file__).parent / "data" / "toolbox"
ORACLE = np.load(DATA / "oracle.npz")
KEYS = ORACLE.files
MODELS = {
    "lenet": SHARED / "data/toolbox-models/LeNet-5.txt",
    "xor": SHARED / "data/toolbox-models/xor_net_small.txt",
    "syn_a": DATA / "syn_a.txt",
    "syn_b": DATA / "syn_b.txt",
    "syn_c": DATA / "syn_c.txt",
}
VARIANTS = [(None, None), ("slow", None), ("epsilon", 1.0), ("epsilon", 0.01), ("epsilon_slow", 0.01),
            ("alphabeta", 2.0), ("alphabeta", 1.0), ("alphabeta", 0.0), ("alphabeta", 0.5),
            ("alphabeta_slow", 2.0), ("alphabeta_slow", 1.0), ("alphabeta_slow", 0.0), ("flat", None), ("ww", None)]


def assert_relevance_equal(actual, expected):
    """Equal to 1e-5 relative (to the map's largest magnitude), NaN exactly where the original has NaN."""
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    scale = np.nanmax(np.abs(expected)) if np.isfinite(expected).any() else 1.0
    np.testing.assert_allclose(np.nan_to_num(actual), np.nan_to_num(expected), rtol=1e-5, atol=1e-5 * scale)


@pytest.fixture(scope="module")
def nets():
    return {name: model_io.read(path) for name, path in MODELS.items()}


def mask_top(y):
    return y * (np.arange(y.shape[1]) == np.argmax(y, axis=1)[:, None])


@pytest.mark.parametrize("net", list(MODELS))
def test_forward(nets, net):
    np.testing.assert_allclose(nets[net].forward(ORACLE[f"{net}|X"]), ORACLE[f"{net}|Y"], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("net", list(MODELS))
@pytest.mark.parametrize("variant,param", VARIANTS)
@pytest.mark.parametrize("kind", ["masked", "full"])
def test_every_lrp_variant(nets, net, variant, param, kind):
    nn = nets[net]
    y = nn.forward(ORACLE[f"{net}|X"])
    rinit = mask_top(y) if kind == "masked" else y
    key = f"{net}|{kind}|{variant}|{param}"
    if key not in KEYS:  # the original has no such method for some layer (MaxPool's slow ε and α-β)
        with pytest.raises(MissingLrpMethodError, match="missing in MaxPool"):
            nn.lrp(rinit, variant, param)
        return
    assert_relevance_equal(nn.lrp(rinit, variant, param), ORACLE[key])


def test_the_slow_alphabeta_quirks_are_exercised():
    """The fixtures contain the original's NaN (Linear) and its zeroed windows (Convolution: a window with a zero
    denominator gives nothing, so the slow rule differs from the stabilised one there)."""
    assert np.isnan(ORACLE["xor|full|alphabeta_slow|2.0"]).any()
    nn = model_io.read(MODELS["syn_c"])
    nn.forward(ORACLE["syn_c|X"])
    z_pos, _ = nn.modules[2]._split_sums()
    assert (z_pos == 0).any()
    slow, fast = ORACLE["syn_c|full|alphabeta_slow|1.0"], ORACLE["syn_c|full|alphabeta|1.0"]
    assert not np.isnan(slow).any() and not np.allclose(slow, fast)


@pytest.mark.parametrize("mix", ["alpha1_ww", "eps_flat_ab2"])
def test_per_layer_mixes_and_override_rules(nets, mix):
    nn = nets["lenet"]
    rinit = mask_top(nn.forward(ORACLE["lenet|X"]))
    if mix == "alpha1_ww":
        nn.set_lrp_parameters("alpha", 1.0)
        nn.modules[0].set_lrp_parameters("ww")
    else:
        nn.set_lrp_parameters("epsilon", 0.01)
        nn.modules[0].set_lrp_parameters("flat")
        nn.modules[3].set_lrp_parameters("alphabeta", 2.0)
    try:
        assert_relevance_equal(nn.lrp(rinit), ORACLE[f"lenet|mix|{mix}"])
        assert_relevance_equal(nn.lrp(rinit, "epsilon", 1.0), ORACLE[f"lenet|mix|{mix}|explicit_eps1"])
        assert_relevance_equal(nn.lrp(rinit, None, 2.0), ORACLE[f"lenet|mix|{mix}|param_only"])
    finally:
        nn.set_lrp_parameters(None, 1.0)


@pytest.mark.parametrize("net", ["syn_a", "syn_b", "syn_c"])
def test_backward_and_update(net):
    nn = model_io.read(MODELS[net])
    y = nn.forward(ORACLE[f"{net}|X"])
    dy = np.random.RandomState(11).normal(0, 1, y.shape)
    np.testing.assert_allclose(nn.backward(dy), ORACLE[f"{net}|DX"], rtol=1e-5, atol=1e-12)
    nn.update(0.01)
    for i, layer in enumerate(nn.modules):
        if hasattr(layer, "W"):
            np.testing.assert_allclose(layer.W, ORACLE[f"{net}|updated|W{i}"], rtol=1e-5, atol=1e-12)
            np.testing.assert_allclose(layer.B, ORACLE[f"{net}|updated|B{i}"], rtol=1e-5, atol=1e-12)


@pytest.mark.parametrize("name", ["plain", "decay"])
def test_train_from_a_seed_matches_the_original(name):
    """Same seed → same initial weights and batches as the original; the trained weights agree."""
    X = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]] * 5)
    Y = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]] * 5)
    kwargs = {"plain": dict(batchsize=4, iters=300, status=50),
              "decay": dict(batchsize=6, iters=200, status=40, lrate=0.05, lrate_decay="sublinear", Xval=X[:4],
                            Yval=Y[:4], convergence=2)}[name]
    np.random.seed(5)
    nn = M.Sequential([M.Linear(2, 3), M.Tanh(), M.Linear(3, 2), M.SoftMax()])
    nn.train(X, Y, silent=True, **kwargs)
    for i, layer in enumerate(nn.modules):
        if hasattr(layer, "W"):
            np.testing.assert_allclose(layer.W, ORACLE[f"train|{name}|W{i}"], rtol=1e-5, atol=1e-12)
            np.testing.assert_allclose(layer.B, ORACLE[f"train|{name}|B{i}"], rtol=1e-5, atol=1e-12)


# ---------------------------------------------------------------- file formats written by the original
def test_text_writer_is_byte_identical_to_the_originals(tmp_path):
    ours = tmp_path / "m.txt"
    model_io.write(model_io.read(DATA / "formats_model.txt"), ours)
    assert ours.read_bytes() == (DATA / "formats_model.txt").read_bytes()
    sums = json.loads((DATA / "oracle.json").read_text())
    for name, key in (("lenet", "lenet_rewritten_sha256"), ("xor", "xor_rewritten_sha256")):
        model_io.write(model_io.read(MODELS[name]), ours)
        assert hashlib.sha256(ours.read_bytes()).hexdigest() == sums[key]
    # xor_net_small.txt re-writes byte-identically (spec 2.2)
    assert ours.read_bytes() == MODELS["xor"].read_bytes()


def test_reads_a_pickle_written_by_the_original():
    from_pickle = model_io.read(DATA / "formats_model.nn", allow_pickle=True)
    from_text = model_io.read(DATA / "formats_model.txt")
    assert [type(m) for m in from_pickle.modules] == [type(m) for m in from_text.modules]
    for a, b in zip(from_pickle.modules, from_text.modules, strict=True):
        for attr in ("W", "B"):
            if hasattr(b, attr):
                np.testing.assert_array_equal(getattr(a, attr), getattr(b, attr))
        for attr in ("stride", "pool"):
            if hasattr(b, attr):
                assert tuple(getattr(a, attr)) == tuple(getattr(b, attr))


def test_reads_data_written_by_the_original(tmp_path):
    expected = np.load(DATA / "formats_data_expected.npy")
    np.testing.assert_array_equal(data_io.read(DATA / "formats_data.txt"), expected)
    np.testing.assert_array_equal(data_io.read(DATA / "formats_data.mat"), expected)
    np.testing.assert_array_equal(data_io.read(DATA / "formats_row.mat"), expected[:1, :3])
    data_io.write(expected, tmp_path / "d.txt")
    assert (tmp_path / "d.txt").read_bytes() == (DATA / "formats_data.txt").read_bytes()


# ---------------------------------------------------------------- rendering
@pytest.mark.parametrize("name", ["jet", "binary"])
def test_colour_tables_and_lookup_equal_matplotlibs(name):
    np.testing.assert_array_equal(lookup_table(name), ORACLE[f"cmap|{name}|lut"][:256, :3])
    rgb = colormap(name)(ORACLE[f"cmap|{name}|probe"])
    np.testing.assert_array_equal(rgb, ORACLE[f"cmap|{name}|probe_rgba"][:, :3])


CANNY_CASES = sorted({k.rsplit("|", 1)[0] for k in KEYS if k.startswith("canny|")})


@pytest.mark.parametrize("case", CANNY_CASES)
def test_canny_equals_scikit_images(case):
    sigma = float(case.split("|")[2])
    np.testing.assert_array_equal(canny(ORACLE[f"{case}|image"], sigma=sigma), ORACLE[f"{case}|edges"])


@pytest.mark.parametrize("i", range(3))
def test_cnn_demo_images_pixel_for_pixel(nets, i, tmp_path):
    """The demo's rendering of the original's relevance, and of ours, equals the original's pixels."""
    xs, R = ORACLE[f"render|{i}|xs"], ORACLE[f"render|{i}|R"]
    digit = render.digit_to_rgb(xs, scaling=3)
    hm = render.hm_to_rgb(R, X=xs, scaling=3, sigma=2)
    np.testing.assert_array_equal(digit, ORACLE[f"render|{i}|digit"])
    np.testing.assert_allclose(hm, ORACLE[f"render|{i}|hm"], rtol=0, atol=1e-15)
    saved = render.save_image([digit, hm], tmp_path / "h.png")
    np.testing.assert_array_equal(saved, ORACLE[f"render|{i}|saved"])
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "h.png")),
                                  np.asarray(Image.open(DATA / f"cnn_demo_{i}.png"))[:, :, :3])
    # our own relevance renders to the same pixels
    nn = nets["lenet"]
    x = ORACLE["lenet|X"][i : i + 1]
    ours = nn.lrp(mask_top(nn.forward(x)), "epsilon", 1.0).sum(axis=3)
    saved_ours = render.save_image([digit, render.hm_to_rgb(ours, X=xs, scaling=3, sigma=2)], tmp_path / "o.png")
    np.testing.assert_array_equal(saved_ours, ORACLE[f"render|{i}|saved"])


@pytest.mark.parametrize("name", list(render.custom_maps))
def test_custom_colour_maps(name):
    rgb = render.hm_to_rgb(ORACLE["render|custom|R"].copy(), scaling=2, shape=(12, 10), cmap=name)
    np.testing.assert_allclose(rgb, ORACLE[f"render|custom|{name}"], rtol=0, atol=1e-15)


def test_other_render_functions():
    rng = np.random.RandomState(4)
    rng.normal(0, 1, (12, 10))
    nonorm = render.hm_to_rgb(rng.uniform(-0.2, 1.2, (6, 6)), scaling=2, normalize=False)
    np.testing.assert_array_equal(nonorm, ORACLE["render|nonorm"])
    digit = render.digit_to_rgb(rng.uniform(0, 1, 12), scaling=2, shape=(3, 4))
    np.testing.assert_array_equal(digit, ORACLE["render|digit_shape"])
    corners = render.repaint_corner_pixels(rng.uniform(0, 1, (9, 12, 3)), scaling=3)
    np.testing.assert_array_equal(corners, ORACLE["render|corners"])
