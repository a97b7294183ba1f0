"""Properties of lrp_cli.toolbox's rules (spec sections 4-5): conservation, signs, batch = one by one, and a slow
literal per-window implementation of the convolution and sum-pooling rules equal to the vectorised one."""

import numpy as np
import pytest
from conftest import SHARED

from lrp_cli.toolbox import model_io
from lrp_cli.toolbox import modules as M
from lrp_cli.toolbox.errors import LrpVariantError, ShapeError

RNG = np.random.RandomState(0)


def layer(kind):
    """A layer with zero biases and a batch of mixed-sign inputs for it."""
    if kind == "linear":
        return M.Linear.from_weights(RNG.normal(size=(7, 5)), np.zeros(5)), RNG.normal(size=(3, 7))
    if kind == "conv":
        conv = M.Convolution.from_weights(RNG.normal(size=(3, 2, 2, 4)), np.zeros(4), (2, 1))
        return conv, RNG.normal(size=(2, 9, 8, 2))  # rows 7..8 partly uncovered? (9 − 3) // 2 + 1 = 4 windows
    signs = np.where(np.arange(9) % 2 == 0, 1.0, -1.0)[None, None, :, None]  # every window holds both signs
    return M.SumPool((2, 3), (2, 3)), np.abs(RNG.normal(size=(2, 6, 9, 3))) * signs


@pytest.mark.parametrize("kind", ["linear", "conv", "sumpool"])
@pytest.mark.parametrize("variant,param", [("flat", None), ("ww", None), (None, None), ("alphabeta", 2.0),
                                           ("alphabeta", 0.5), ("slow", None)])
def test_conservation_without_bias(kind, variant, param):
    """flat and ww always conserve; simple and α-β (β = 1 − α) conserve when no bias and every output has
    contributions of both signs (mixed-sign inputs and weights). The sum pool's general α-β multiplies its β part
    by R twice (Q2, kept): it conserves only where R = 1."""
    net, x = layer(kind)
    y = net.forward(x)
    R = RNG.uniform(0.5, 1.5, y.shape)
    if kind == "sumpool" and variant == "alphabeta":
        assert not np.allclose(net.lrp(R, variant, param).sum(), R.sum(), rtol=1e-3)
        R = np.ones(y.shape)
    r_in = net.lrp(R, variant, param)
    np.testing.assert_allclose(r_in.reshape(len(x), -1).sum(1), R.reshape(len(x), -1).sum(1), rtol=1e-9)


@pytest.mark.parametrize("kind", ["linear", "conv", "sumpool"])
def test_epsilon_absorbs_exactly_its_share(kind):
    """Σ R_in = Σ_j R_j · z_j / (z_j + ε s(z_j)) without bias (the sum pool's z is the window sum)."""
    net, x = layer(kind)
    y = net.forward(x)
    z = y / net.normalizer if kind == "sumpool" else y
    R = RNG.uniform(0.5, 1.5, y.shape)
    expected = (R * z / (z + 0.3 * np.where(y >= 0, 1, -1))).reshape(len(x), -1).sum(1)
    np.testing.assert_allclose(net.lrp(R, "epsilon", 0.3).reshape(len(x), -1).sum(1), expected, rtol=1e-9)


@pytest.mark.parametrize("alpha", [1.0, 0.0])
@pytest.mark.parametrize("kind", ["linear", "conv", "sumpool"])
def test_alphabeta_single_term_signs(kind, alpha):
    """α = 1 (only z⁺) and α = 0 (only z⁻, divided by their negative sum): positive R gives non-negative R_in."""
    net, x = layer(kind)
    R = RNG.uniform(0.5, 1.5, net.forward(x).shape)
    assert (net.lrp(R, "alphabeta", alpha) >= 0).all()


def test_alphabeta_2_doubles_relevance_through_a_sumpool_after_rect():
    """Q1: with non-negative inputs, α-β returns α·R at a SumPool (the β part has nothing to act on)."""
    pool = M.SumPool((2, 2), (2, 2))
    y = pool.forward(np.abs(RNG.normal(size=(2, 4, 4, 3))) + 0.1)
    np.testing.assert_allclose(pool.lrp(y, "alphabeta", 2.0).sum(), 2 * y.sum(), rtol=1e-12)


def test_maxpool_splits_ties_equally_and_backward_gives_each_tie_everything():
    pool = M.MaxPool((2, 2), (2, 2))
    x = np.array([[1.0, 1.0], [0.0, -1.0]]).reshape(1, 2, 2, 1)
    pool.forward(x)
    np.testing.assert_array_equal(pool.lrp(np.array([[[[4.0]]]])).ravel(), [2, 2, 0, 0])
    np.testing.assert_array_equal(pool.backward(np.array([[[[4.0]]]])).ravel(), [4, 4, 0, 0])


@pytest.mark.parametrize("variant,param", [(None, None), ("epsilon", 0.01), ("alphabeta", 2.0), ("ww", None)])
def test_batch_equals_one_by_one(variant, param):
    nn = model_io.read(SHARED / "data/toolbox-models/LeNet-5.txt")
    X = RNG.uniform(-1, 1, (3, 32, 32, 1))
    batch = nn.lrp(nn.forward(X), variant, param)
    for i in range(3):
        one = nn.lrp(nn.forward(X[i : i + 1]), variant, param)
        np.testing.assert_allclose(one, batch[i : i + 1], rtol=1e-10, atol=1e-14)


def literal_conv_alphabeta(conv, x, R, alpha):
    """The original's per-window loop, written out: messages z = x·w per window, general α·β ≠ 0 case."""
    beta = 1 - alpha
    out = np.zeros_like(x)
    hf, wf, _, _ = conv.W.shape
    s0, s1 = conv.stride
    y = conv.forward(x)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            z = conv.W[None] * x[:, i * s0 : i * s0 + hf, j * s1 : j * s1 + wf, :, None]
            zp = z * (z > 0)
            dp = zp.sum(axis=(1, 2, 3), keepdims=True) + np.maximum(conv.B, 0) + 1e-16
            dn = y[:, i : i + 1, j : j + 1, None, :] - dp - 1e-16
            share = alpha * zp / dp + beta * (z - zp) / dn
            r = R[:, i : i + 1, j : j + 1, None, :]
            out[:, i * s0 : i * s0 + hf, j * s1 : j * s1 + wf, :] += (share * r).sum(4)
    return out


def literal_sumpool_alphabeta(pool, x, R, alpha):
    """The original's per-window loop for the sum pool's general α-β case, R² bug included."""
    beta = 1 - alpha
    out = np.zeros_like(x)
    (h, w), (s0, s1) = pool.pool, pool.stride
    y = pool.forward(x)
    for i in range(y.shape[1]):
        for j in range(y.shape[2]):
            z = x[:, i * s0 : i * s0 + h, j * s1 : j * s1 + w, :]
            zp = z * (z > 0)
            dp = zp.sum(axis=(1, 2), keepdims=True) + 1e-16
            dn = y[:, i : i + 1, j : j + 1, :] / pool.normalizer - dp - 1e-16
            r = R[:, i : i + 1, j : j + 1, :]
            out[:, i * s0 : i * s0 + h, j * s1 : j * s1 + w, :] += (alpha * zp / dp + beta * (z - zp) * r / dn) * r
    return out


def test_literal_per_window_loops_equal_the_vectorised_rules():
    conv = M.Convolution.from_weights(RNG.normal(size=(3, 2, 2, 4)), RNG.normal(size=4), (1, 2))  # overlapping
    x = RNG.normal(size=(2, 8, 9, 2))
    R = RNG.normal(size=conv.forward(x).shape)
    np.testing.assert_allclose(conv.lrp(R, "alphabeta", 1.5), literal_conv_alphabeta(conv, x, R, 1.5), rtol=1e-9,
                               atol=1e-12)
    pool = M.SumPool((3, 2), (2, 1))
    x = RNG.normal(size=(2, 7, 6, 3))
    R = RNG.normal(size=pool.forward(x).shape)
    np.testing.assert_allclose(pool.lrp(R, "alphabeta", 2.0), literal_sumpool_alphabeta(pool, x, R, 2.0),
                               rtol=1e-9, atol=1e-12)


def test_variant_dispatch_and_presets():
    lin, x = layer("linear")
    y = lin.forward(x)
    np.testing.assert_array_equal(lin.lrp(y, "EPS", 0.1), lin.lrp(y, "epsilon", 0.1))  # the manual's alias
    np.testing.assert_array_equal(lin.lrp(y, "W^2"), lin.lrp(y, "ww"))
    lin.set_lrp_parameters("alpha", 2.0)
    np.testing.assert_array_equal(lin.lrp(y), lin.lrp(y, "alphabeta", 2.0))
    np.testing.assert_array_equal(lin.lrp(y, None, 3.0), lin.lrp(y, "simple"))  # Q5: only param → simple
    with pytest.raises(LrpVariantError, match="unknown lrp variant 'zB'"):
        lin.lrp(y, "zB")
    with pytest.raises(LrpVariantError, match="needs a parameter"):
        lin.lrp(y, "epsilon")


def test_shape_errors_are_clear():
    conv = M.Convolution((5, 5, 1, 2), (1, 1))
    with pytest.raises(ShapeError, match="smaller than the window"):
        conv.forward(np.zeros((1, 4, 4, 1)))
    with pytest.raises(ShapeError, match="2 channels, the filters 1"):
        conv.forward(np.zeros((1, 6, 6, 2)))
    with pytest.raises(ShapeError, match="call forward before"):
        M.Linear(2, 2).lrp(np.zeros((1, 2)))
    lin = M.Linear(2, 2)
    lin.forward(np.zeros((1, 2)))
    with pytest.raises(ShapeError, match="relevance has shape"):
        lin.lrp(np.zeros((1, 3)))


def test_softmax_does_not_overflow():
    y = M.SoftMax().forward(np.array([[1000.0, 0.0], [1.0, 2.0]]))
    np.testing.assert_allclose(y, [[1.0, 0.0], np.exp([1.0, 2.0]) / np.exp([1.0, 2.0]).sum()], rtol=1e-15)
