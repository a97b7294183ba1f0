"""The relevance rules against slow literal implementations of the spec's formulas (§5.4), and the formula table.

Every linear rule is checked on small random layers whose dense matrix is built explicitly with loops over output
positions and kernel offsets (groups, stride, padding, dilation), then the rule's formula of §5.4.1 is applied
literally in float64 and compared with the vectorised float32 rule: max |difference| ≤ 1e-6 · max |R_literal|.
Pooling (§5.4.6), LRN (§5.4.7) and Eltwise SUM under ε get literal references of their own.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from lrp_cli.caffe import caffe_pb2
from lrp_cli.composite import FORMULAS, RelevanceSettings, formula
from lrp_cli.errors import RelevanceError
from lrp_cli.layers import Saved
from lrp_cli.layers.convolution import Convolution
from lrp_cli.layers.eltwise import Eltwise
from lrp_cli.layers.inner_product import InnerProduct
from lrp_cli.layers.lrn import LRN
from lrp_cli.layers.pooling import Pooling
from lrp_cli.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gradient,
    Guided,
    LrnRule,
    Pass,
    Positive,
    Proportional,
    Transposed,
    WinnerTakesAll,
    WSquare,
    ZBox,
    alpha_beta_generic,
)

TOLERANCE = 1e-6
N = 2  # images per batch in the layer tests


def relative_error(got, expected) -> float:
    expected = np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    assert scale > 0, "degenerate test data: the literal result is all zero"
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / scale)


# ---------------------------------------------------------------------------------------------------------------
# Layers and their dense matrices, built slowly


@dataclass(frozen=True)
class ConvCase:
    cin: int
    cout: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: int = 1
    group: int = 1
    hw: tuple[int, int] = (7, 7)
    bias: bool = True

    @property
    def id(self) -> str:
        return (f"c{self.cin}-{self.cout}_k{self.kernel[0]}x{self.kernel[1]}_s{self.stride[0]}x{self.stride[1]}"
                f"_p{self.pad[0]}x{self.pad[1]}_d{self.dilation}_g{self.group}_{self.hw[0]}x{self.hw[1]}"
                f"{'' if self.bias else '_nobias'}")


CONV_CASES = [
    ConvCase(3, 4, (3, 3), pad=(1, 1), hw=(7, 8)),
    ConvCase(4, 6, (3, 3), stride=(2, 2), pad=(1, 1), group=2, hw=(9, 9)),
    ConvCase(4, 4, (5, 5), pad=(2, 2), group=2, hw=(8, 7)),
    ConvCase(3, 4, (5, 5), stride=(2, 2), hw=(11, 10), bias=False),
    ConvCase(3, 4, (3, 3), pad=(2, 2), dilation=2, hw=(8, 8)),
    ConvCase(4, 6, (3, 3), stride=(2, 2), pad=(1, 1), dilation=2, group=2, hw=(9, 10)),
    ConvCase(4, 3, (1, 1), hw=(5, 6)),
    ConvCase(4, 4, (1, 1), stride=(2, 2), group=2, hw=(7, 6)),
    ConvCase(3, 4, (11, 11), stride=(4, 4), hw=(23, 23)),
    ConvCase(3, 2, (11, 11), stride=(4, 4), pad=(2, 2), hw=(21, 22)),
    ConvCase(2, 3, (3, 3), stride=(4, 4), pad=(1, 1), hw=(10, 9)),  # stride > kernel: uncovered pixels
    ConvCase(2, 3, (3, 2), stride=(1, 2), pad=(1, 0), hw=(6, 7)),  # non-square kernel and stride
]


def conv_param(case: ConvCase) -> caffe_pb2.LayerParameter:
    param = caffe_pb2.LayerParameter(name="conv", type="Convolution")
    p = param.convolution_param
    p.num_output = case.cout
    if case.kernel[0] == case.kernel[1]:
        p.kernel_size.append(case.kernel[0])
    else:
        p.kernel_h, p.kernel_w = case.kernel
    if case.stride[0] == case.stride[1]:
        p.stride.append(case.stride[0])
    else:
        p.stride_h, p.stride_w = case.stride
    if case.pad[0] == case.pad[1]:
        p.pad.append(case.pad[0])
    else:
        p.pad_h, p.pad_w = case.pad
    p.dilation.append(case.dilation)
    p.group = case.group
    p.bias_term = case.bias
    return param


@dataclass
class Dense:
    """A linear layer written out: A[j, i] (weight from input i to output j), conn[j, i] = 1 where output j reads
    input i, W2[j, i] = w², S[j] = Σ w² over the whole kernel of j (padding entries included), bias b[j]."""

    A: np.ndarray
    conn: np.ndarray
    W2: np.ndarray
    S: np.ndarray
    b: np.ndarray
    flat_divisor: int
    out_shape: tuple[int, ...]


@cache
def conv_layer(case: ConvCase, seed: int = 0) -> tuple[Convolution, Dense]:
    rng = np.random.default_rng(seed)
    kh, kw = case.kernel
    cg = case.cin // case.group
    w = rng.normal(size=(case.cout, cg, kh, kw)).astype(np.float32)
    b = rng.normal(size=case.cout).astype(np.float32)
    layer = Convolution("conv", conv_param(case), (w, b) if case.bias else (w,))
    H, W = case.hw
    (sh, sw), (ph, pw), d = case.stride, case.pad, case.dilation
    Ho = (H + 2 * ph - ((kh - 1) * d + 1)) // sh + 1
    Wo = (W + 2 * pw - ((kw - 1) * d + 1)) // sw + 1
    rows, cols = case.cout * Ho * Wo, case.cin * H * W
    A, conn, W2, S = np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros((rows, cols)), np.zeros(rows)
    bias = np.zeros(rows)
    per_group = case.cout // case.group
    for m in range(case.cout):
        g = m // per_group
        for oy in range(Ho):
            for ox in range(Wo):
                j = (m * Ho + oy) * Wo + ox
                bias[j] = b[m] if case.bias else 0.0
                for cl in range(cg):
                    c = g * cg + cl
                    for ki in range(kh):
                        for kj in range(kw):
                            value = float(w[m, cl, ki, kj])
                            S[j] += value * value  # whole kernel, padding entries included
                            y, x = oy * sh - ph + ki * d, ox * sw - pw + kj * d
                            if 0 <= y < H and 0 <= x < W:
                                i = (c * H + y) * W + x
                                A[j, i] += value
                                W2[j, i] += value * value
                                conn[j, i] += 1
    return layer, Dense(A, conn, W2, S, bias, kh * kw, (case.cout, Ho, Wo))


@dataclass(frozen=True)
class IPCase:
    in_shape: tuple[int, ...]
    outputs: int
    transpose: bool = False
    bias: bool = True

    @property
    def id(self) -> str:
        return f"ip{'x'.join(map(str, self.in_shape))}-{self.outputs}{'_T' if self.transpose else ''}" \
               f"{'' if self.bias else '_nobias'}"


IP_CASES = [IPCase((20,), 7), IPCase((2, 3, 4), 5, transpose=True), IPCase((12,), 9, bias=False)]


@cache
def ip_layer(case: IPCase, seed: int = 0) -> tuple[InnerProduct, Dense]:
    rng = np.random.default_rng(seed)
    k = int(np.prod(case.in_shape))
    w = rng.normal(size=(case.outputs, k)).astype(np.float32)
    b = rng.normal(size=case.outputs).astype(np.float32)
    param = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    param.inner_product_param.num_output = case.outputs
    param.inner_product_param.transpose = case.transpose
    param.inner_product_param.bias_term = case.bias
    stored = np.ascontiguousarray(w.T) if case.transpose else w
    layer = InnerProduct("fc", param, (stored, b) if case.bias else (stored,))
    A = w.astype(np.float64)
    S = np.array([sum(float(v) ** 2 for v in row) for row in w])
    bias = b.astype(np.float64) if case.bias else np.zeros(case.outputs)
    return layer, Dense(A, np.ones_like(A), A * A, S, bias, k, (case.outputs,))


def make_input(shape, kind: str, rng) -> np.ndarray:
    """``signed``: a first-layer input with negative values; ``relu``: non-negative with ~40% exact zeros."""
    x = rng.normal(size=shape).astype(np.float32)
    if kind == "relu":
        x = np.maximum(x + np.float32(0.25), 0).astype(np.float32)
    return x


# ---------------------------------------------------------------------------------------------------------------
# The spec's formulas, literally, on one image (vectors x: inputs, R: output relevance), float64


def literal_epsilon(d: Dense, x, R, eps, z_given=None):
    """``z_given``: the layer's float32 forward output that the rule receives (checked against the literal z,
    then used, so that a float32 rounding of a z near 0 is not mistaken for a rule error)."""
    z = d.A @ x + d.b  # bias inside z
    if z_given is not None:
        assert np.abs(z - z_given).max() <= 1e-6 * np.abs(z).max()
        z = z_given
    out = np.zeros_like(x)
    for j in range(len(z)):
        if z[j] > 0:
            div = z[j] + eps
        elif z[j] < 0:
            div = z[j] - eps
        else:
            div = 1.0  # z == 0: no division at all
        out += x * d.A[j] * (R[j] / div)
    return out


def literal_alphabeta(d: Dense, x, R, beta):
    """§5.4.1 AB items 2-7: the "4 cases" with x⁺/x⁻ and w⁺/w⁻, bias only in the denominators."""
    alpha = 1.0 + beta
    xp, xn = np.maximum(x, 0), np.minimum(x, 0)
    Ap, An = np.maximum(d.A, 0), np.minimum(d.A, 0)
    zp = Ap @ xp + An @ xn + np.maximum(d.b, 0)
    zn = An @ xp + Ap @ xn + np.minimum(d.b, 0)
    Rp = np.where(zp > 0, R / np.where(zp > 0, zp, 1), R)  # the "else R_j" branch has a zero numerator
    Rn = np.where(zn < 0, R / np.where(zn < 0, zn, 1), R)
    out = alpha * (xp * (Ap.T @ Rp) + xn * (An.T @ Rp))
    if beta != 0:
        out -= beta * (xn * (Ap.T @ Rn) + xp * (An.T @ Rn))
    return out


def literal_alphabeta_terms(d: Dense, x, R, beta):
    """§5.4.1 AB item 8: term by term, dropping terms whose denominator is zero or has the wrong sign."""
    alpha = 1.0 + beta
    out = np.zeros_like(x)
    for j in range(d.A.shape[0]):
        contrib = x * d.A[j]
        zp = np.maximum(contrib, 0).sum() + max(d.b[j], 0)
        zn = np.minimum(contrib, 0).sum() + min(d.b[j], 0)
        if zp > 0:
            out += alpha * np.maximum(contrib, 0) / zp * R[j]
        if zn < 0:
            out -= beta * np.minimum(contrib, 0) / zn * R[j]
    return out


def literal_flat(d: Dense, x, R):
    out = np.zeros_like(x)
    for j in range(d.A.shape[0]):
        out += d.conn[j] * R[j] / d.flat_divisor
    return out


def literal_wsquare(d: Dense, x, R):
    out = np.zeros_like(x)
    for j in range(d.A.shape[0]):
        if d.S[j] > 0:
            out += d.W2[j] / d.S[j] * R[j]
    return out


def literal_transposed(d: Dense, x, R):
    out = np.zeros_like(x)
    for j in range(d.A.shape[0]):
        out += d.A[j] * R[j]
    return out


def literal_zbox(d: Dense, x, R, low, high):
    out = np.zeros_like(x)
    for j in range(d.A.shape[0]):
        terms = x * d.A[j] - low * np.maximum(d.A[j], 0) - high * np.minimum(d.A[j], 0)
        Z = terms.sum() + max(d.b[j], 0)
        out += terms * (R[j] / Z if abs(Z) > 1e-12 else R[j])
    return out


RULES = {
    "epsilon_0.01": (Epsilon(0.01), lambda d, x, R, lo, hi, z: literal_epsilon(d, x, R, 0.01, z)),
    "epsilon_1": (Epsilon(1.0), lambda d, x, R, lo, hi, z: literal_epsilon(d, x, R, 1.0, z)),
    "alphabeta_0": (AlphaBeta(0.0), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 0.0)),
    "alphabeta_1": (AlphaBeta(1.0), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 1.0)),
    "alphabeta_0.5": (AlphaBeta(0.5), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 0.5)),
    "alphabeta_2": (AlphaBeta(2.0), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 2.0)),
    "flat": (Flat(), lambda d, x, R, lo, hi, z: literal_flat(d, x, R)),
    "wsquare": (WSquare(), lambda d, x, R, lo, hi, z: literal_wsquare(d, x, R)),
    "transposed": (Transposed(), lambda d, x, R, lo, hi, z: literal_transposed(d, x, R)),
    "zbox": (None, lambda d, x, R, lo, hi, z: literal_zbox(d, x, R, lo, hi)),
}



@dataclass(frozen=True)
class GenericAlphaBeta(AlphaBeta):
    """The α-β rule through the generic step, as layers without fused kernels (Eltwise, BatchNorm) compute it."""

    def relevance(self, layer, x, z, relevance, state=None):
        beta = np.float32(self.beta)
        return alpha_beta_generic(layer, x, relevance, np.float32(1) + beta, beta)


RULES["alphabeta_generic_0"] = (GenericAlphaBeta(0.0), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 0.0))
RULES["alphabeta_generic_1"] = (GenericAlphaBeta(1.0), lambda d, x, R, lo, hi, z: literal_alphabeta(d, x, R, 1.0))


def check_rule(layer, dense: Dense, rule_name: str, kind: str, in_shape, seed: int) -> float:
    rng = np.random.default_rng(seed)
    x = make_input((N, *in_shape), kind, rng)
    low = high = None
    if rule_name == "zbox":
        # pixels in [1, 3] of a [0, 4] range, minus a mean: x − l and h − x stay ≥ 1, so the float32 sums
        # away from the bounds (test_zbox_near_the_bounds covers pixels close to l or h)
        mean = rng.uniform(0.5, 3.5, size=x.shape).astype(np.float32)
        x = (rng.uniform(1, 3, size=x.shape).astype(np.float32) - mean).astype(np.float32)
        if kind == "relu":
            x = np.maximum(x, 0)
        low, high = (-mean).astype(np.float32), (np.float32(4) - mean).astype(np.float32)
        rule = ZBox(low, high)
    else:
        rule = RULES[rule_name][0]
    (z,), _ = layer.forward([x])
    R = rng.normal(size=z.shape).astype(np.float32)
    got = layer.relevance(rule, Saved([x], [z], {}), [R])[0]
    assert got.shape == x.shape and got.dtype == np.float32
    literal = RULES[rule_name][1]
    expected = np.stack([
        literal(
            dense, x[n].astype(np.float64).ravel(), R[n].astype(np.float64).ravel(),
            None if low is None else low[n].astype(np.float64).ravel(),
            None if high is None else high[n].astype(np.float64).ravel(),
            z[n].astype(np.float64).ravel(),
        ).reshape(in_shape)
        for n in range(N)
    ])
    error = relative_error(got, expected)
    assert error <= TOLERANCE, (rule_name, kind, error)
    return error


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("case", CONV_CASES, ids=[c.id for c in CONV_CASES])
def test_convolution_rule_equals_literal_formula(case, rule_name, kind):
    layer, dense = conv_layer(case)
    seed = zlib.crc32(f"{case.id}/{rule_name}/{kind}".encode())
    check_rule(layer, dense, rule_name, kind, (case.cin, *case.hw), seed=seed)


@pytest.mark.parametrize("kind", ["signed", "relu"])
@pytest.mark.parametrize("rule_name", sorted(RULES))
@pytest.mark.parametrize("case", IP_CASES, ids=[c.id for c in IP_CASES])
def test_inner_product_rule_equals_literal_formula(case, rule_name, kind):
    layer, dense = ip_layer(case)
    seed = zlib.crc32(f"{case.id}/{rule_name}/{kind}".encode())
    check_rule(layer, dense, rule_name, kind, case.in_shape, seed=seed)


def test_dense_matrix_is_the_layer():
    """The slow matrices really are the layers (else the literal checks would prove nothing)."""
    rng = np.random.default_rng(5)
    for case in CONV_CASES:
        layer, dense = conv_layer(case)
        x = rng.normal(size=(1, case.cin, *case.hw)).astype(np.float32)
        z = layer.forward([x])[0][0]
        assert z.shape[1:] == dense.out_shape
        assert relative_error(z.ravel(), dense.A @ x.ravel().astype(np.float64) + dense.b) < 1e-6, case.id
        # the transposed correlation is the adjoint
        s = rng.normal(size=z.shape).astype(np.float32)
        back = layer.linear_transposed(s, layer.weight, x.shape)
        assert relative_error(back.ravel(), dense.A.T @ s.ravel().astype(np.float64)) < 1e-6, case.id
    for case in IP_CASES:
        layer, dense = ip_layer(case)
        x = rng.normal(size=(1, *case.in_shape)).astype(np.float32)
        z = layer.forward([x])[0][0]
        assert relative_error(z, dense.A @ x.ravel().astype(np.float64) + dense.b) < 1e-6


ADJOINT_GEOMETRIES = [
    (kh, kw, sh, sw, ph, pw, d, h, w)
    for kh, kw in ((1, 1), (1, 2), (2, 2), (3, 2), (3, 3), (5, 5))
    for sh, sw in ((1, 1), (1, 2), (2, 2), (3, 2), (4, 4))
    for ph, pw in ((0, 0), (1, 0), (2, 2))
    for d in (1, 2)
    for h, w in ((7, 7), (8, 6))
    if (kh - 1) * d + 1 <= h + 2 * ph and (kw - 1) * d + 1 <= w + 2 * pw
]


def test_correlate_transposed_is_the_adjoint():
    """⟨correlate(x), s⟩ = ⟨x, correlate_transposed(s)⟩ in float64 for every geometry, including inputs whose last
    rows/columns no window reads (stride not dividing H + 2p − k) and kernels that stride divides exactly."""
    from lrp_cli.layers.windows import correlate, correlate_transposed

    rng = np.random.default_rng(13)
    bad = []
    for kh, kw, sh, sw, ph, pw, d, h, w in ADJOINT_GEOMETRIES:
        for group in (1, 2):
            x = rng.normal(size=(2, 2 * group, h, w))
            weight = rng.normal(size=(2 * group, 2, kh, kw))
            y = correlate(x, weight, (sh, sw), (ph, pw), (d, d), group)
            s = rng.normal(size=y.shape)
            back = correlate_transposed(s, weight, (h, w), (sh, sw), (ph, pw), (d, d), group)
            assert back.shape == x.shape
            lhs, rhs = float((y * s).sum()), float((x * back).sum())
            if abs(lhs - rhs) > 1e-9 * (np.abs(y * s).sum() + 1):
                bad.append((kh, kw, sh, sw, ph, pw, d, h, w, group))
    assert not bad, f"{len(bad)} geometries (kh, kw, sh, sw, ph, pw, dilation, H, W, group) fail, e.g. {bad[:5]}"


def test_literal_alphabeta_forms_agree():
    """The 4-case form (items 2-7) and the term-by-term form (item 8) of the spec are the same function."""
    rng = np.random.default_rng(7)
    for case in CONV_CASES[:4]:
        _, dense = conv_layer(case)
        for kind in ("signed", "relu"):
            x = make_input(dense.A.shape[1], kind, rng).astype(np.float64)
            R = rng.normal(size=dense.A.shape[0])
            for beta in (0.0, 1.0, 0.5):
                a = literal_alphabeta(dense, x, R, beta)
                b = literal_alphabeta_terms(dense, x, R, beta)
                assert relative_error(a, b) < 1e-12


def test_padding_weights_count_in_wsquare_divisor():
    """w²: S_j runs over the whole kernel, so a border output hands out less than its relevance."""
    case = ConvCase(1, 1, (3, 3), pad=(1, 1), hw=(3, 3), bias=False)
    w = np.ones((1, 1, 3, 3), np.float32)
    layer = Convolution("conv", conv_param(case), (w,))
    x = np.ones((1, 1, 3, 3), np.float32)
    R = np.zeros((1, 1, 3, 3), np.float32)
    R[0, 0, 0, 0] = 9  # the corner output reads 4 real pixels and 5 padding entries
    got = layer.relevance(WSquare(), Saved([x], layer.forward([x])[0], {}), [R])[0]
    expected = np.zeros((3, 3), np.float32)
    expected[:2, :2] = 1  # 9·1/9 each, the 5·1 on padding is lost
    np.testing.assert_array_equal(got[0, 0], expected)
    # flat divides by k_h·k_w and loses the padding parts too
    got = layer.relevance(Flat(), Saved([x], layer.forward([x])[0], {}), [R])[0]
    np.testing.assert_array_equal(got[0, 0], expected)


# ---------------------------------------------------------------------------------------------------------------
# ε with exact zeros in z (dyadic values make float32 sums exact, so z == 0 happens and is the same in float64)


def test_epsilon_exact_zero_z_is_not_divided_inner_product():
    param = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    param.inner_product_param.num_output = 2
    w = np.array([[0.5, -0.5, 0.25], [1.0, 1.0, 0.0]], np.float32)
    b = np.array([0.0, -2.0], np.float32)
    layer = InnerProduct("fc", param, (w, b))
    x = np.array([[1.0, 1.0, 0.0]], np.float32)
    (z,), _ = layer.forward([x])
    np.testing.assert_array_equal(z, [[0.0, 0.0]])  # first by cancellation, second through the bias
    R = np.array([[3.0, 5.0]], np.float32)
    got = layer.relevance(Epsilon(0.01), Saved([x], [z], {}), [R])[0]
    # undivided: R_i = x_i·Σ_j w_ij·R_j
    np.testing.assert_allclose(got, [[1.5 + 5.0, -1.5 + 5.0, 0.0]], rtol=0, atol=0)
    # and -0.0 counts as zero too
    got = layer.relevance(Epsilon(0.01), Saved([x], [np.array([[-0.0, 0.0]], np.float32)], {}), [R])[0]
    np.testing.assert_allclose(got, [[6.5, 3.5, 0.0]], rtol=0, atol=0)


@pytest.mark.parametrize("case", [CONV_CASES[0], CONV_CASES[1], CONV_CASES[4]], ids=lambda c: c.id)
@pytest.mark.parametrize("kind", ["signed", "relu"])
def test_epsilon_exact_zero_z_convolution(case, kind):
    rng = np.random.default_rng(11)
    layer, dense = conv_layer(case)
    # dyadic weights and inputs: every product and sum is exact in float32
    w = (rng.integers(-2, 3, size=layer.weight.shape) / 2).astype(np.float32)
    b = (rng.integers(-1, 2, size=case.cout) / 2).astype(np.float32) if case.bias else None
    layer = Convolution("conv", conv_param(case), (w, b) if case.bias else (w,))
    dense = conv_dense_with(case, w, b)
    lo = -1 if kind == "signed" else 0
    x = (rng.integers(lo, 2, size=(N, case.cin, *case.hw)) / 2).astype(np.float32)
    (z,), _ = layer.forward([x])
    zeros = z == 0
    # exact zeros that do matter: some output with z == 0 has nonzero terms x_i·w_ij
    reads_signal = np.stack([(np.abs(dense.A) @ np.abs(x[n].ravel())).reshape(z.shape[1:]) for n in range(N)]) > 0
    assert (zeros & reads_signal).sum() >= 3
    R = rng.normal(size=z.shape).astype(np.float32)
    for eps in (0.01, 1.0):
        got = layer.relevance(Epsilon(eps), Saved([x], [z], {}), [R])[0]
        expected = np.stack([literal_epsilon(dense, x[n].ravel().astype(np.float64), R[n].ravel().astype(np.float64),
                                             eps).reshape(x.shape[1:]) for n in range(N)])
        assert relative_error(got, expected) <= TOLERANCE


def conv_dense_with(case: ConvCase, w, b) -> Dense:
    """The dense matrix of ``case`` with other weights (reuses the loops of conv_layer through its cache-free core)."""
    _, template = conv_layer(case)
    A = np.zeros_like(template.A)
    H, W = case.hw
    Ho, Wo = template.out_shape[1:]
    kh, kw = case.kernel
    (sh, sw), (ph, pw), d = case.stride, case.pad, case.dilation
    cg, per_group = case.cin // case.group, case.cout // case.group
    bias = np.zeros(A.shape[0])
    for m in range(case.cout):
        for oy in range(Ho):
            for ox in range(Wo):
                j = (m * Ho + oy) * Wo + ox
                bias[j] = 0.0 if b is None else b[m]
                for cl in range(cg):
                    c = m // per_group * cg + cl
                    for ki in range(kh):
                        for kj in range(kw):
                            y, x = oy * sh - ph + ki * d, ox * sw - pw + kj * d
                            if 0 <= y < H and 0 <= x < W:
                                A[j, (c * H + y) * W + x] += w[m, cl, ki, kj]
    return Dense(A, template.conn, A * A, template.S, bias, template.flat_divisor, template.out_shape)


def test_zbox_small_total_is_not_divided():
    """|Z_j| ≤ 1e-12: R_j is used undivided (possible only for inputs outside [l, h])."""
    param = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    param.inner_product_param.num_output = 1
    param.inner_product_param.bias_term = False
    layer = InnerProduct("fc", param, (np.array([[1.0, -1.0]], np.float32),))
    x = np.array([[1.0, 2.0]], np.float32)
    low, high = np.zeros_like(x), np.ones_like(x)
    R = np.array([[3.0]], np.float32)
    got = layer.relevance(ZBox(low, high), Saved([x], layer.forward([x])[0], {}), [R])[0]
    # terms: x·w − l·w⁺ − h·w⁻ = (1, −2 + 1) → Z = 0 → (3, −3)
    np.testing.assert_array_equal(got, [[3.0, -3.0]])
    # a normal case: Z = 2·1 + (0.5 − 1)·(−1) + b⁺ (b = −1 → 0): 2.5
    x = np.array([[2.0, 0.5]], np.float32)
    got = layer.relevance(ZBox(low, high), Saved([x], layer.forward([x])[0], {}), [R])[0]
    np.testing.assert_allclose(got, [[2 * 3 / 2.5, 0.5 * 3 / 2.5]], rtol=1e-6)


def test_zbox_near_the_bounds():
    """Dark pixels (x just above l = −mean) under a mostly positive filter: written as x·w − l·w⁺ − h·w⁻, Z_j would
    be a small difference of large float32 sums; the rule computes (x − l)·w⁺ + (x − h)·w⁻ instead, whose terms
    all have one sign, and matches the literal float64 rule to 1e-6 (the original's per-term code did not)."""
    rng = np.random.default_rng(0)
    k = 27
    param = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    param.inner_product_param.num_output = 4
    w = rng.uniform(0.01, 0.1, size=(4, k)).astype(np.float32)
    w[2, :5] *= -1
    w[3] *= -1
    b = np.array([0.0, 0.5, -0.5, 0.0], np.float32)
    layer = InnerProduct("fc", param, (w, b))
    mean = rng.uniform(90, 130, size=(2, k)).astype(np.float32)
    pixels = rng.uniform(0, 0.5, size=(2, k)).astype(np.float32)
    pixels[1, ::2] = rng.uniform(254.5, 255, size=14).astype(np.float32)  # bright ones near h
    x, low, high = (pixels - mean).astype(np.float32), -mean, (np.float32(255) - mean).astype(np.float32)
    R = rng.normal(size=(2, 4)).astype(np.float32)
    got = layer.relevance(ZBox(low, high), Saved([x], layer.forward([x])[0], {}), [R])[0]
    dense = Dense(w.astype(np.float64), np.ones((4, k)), w.astype(np.float64) ** 2, (w.astype(np.float64) ** 2).sum(1),
                  b.astype(np.float64), k, (4,))
    expected = np.stack([literal_zbox(dense, *(a[n].astype(np.float64) for a in (x, R, low, high)))
                         for n in range(2)])
    error = relative_error(got, expected)
    assert error <= 1e-6


def test_alphabeta_drops_terms_without_positive_or_negative_part():
    """z⁺ ≤ 0 or z⁻ ≥ 0: those parts are dropped (not divided by ~0); the bias absorbs but gets nothing."""
    param = caffe_pb2.LayerParameter(name="fc", type="InnerProduct")
    param.inner_product_param.num_output = 3
    w = np.array([[1.0, 2.0], [-1.0, -1.0], [1.0, -3.0]], np.float32)
    b = np.array([0.0, 0.0, 1.0], np.float32)
    layer = InnerProduct("fc", param, (w, b))
    x = np.array([[1.0, 1.0]], np.float32)
    (z,), _ = layer.forward([x])
    R = np.array([[3.0, 7.0, 4.0]], np.float32)
    got = layer.relevance(AlphaBeta(1.0), Saved([x], [z], {}), [R])[0]
    # j0: z⁺ = 3, no negative part → α·(1, 2)/3·3 = (2, 4)
    # j1: no positive part (z⁺ = 0) → dropped; z⁻ = -2 → −β·(−1, −1)/(−2)·7 = (−3.5, −3.5)
    # j2: z⁺ = 1 + b⁺ = 2 → α·(1, 0)/2·4 = (4, 0); z⁻ = −3 → −β·(0, −3)/(−3)·4 = (0, −4)
    np.testing.assert_allclose(got, [[2 - 3.5 + 4, 4 - 3.5 - 4]], rtol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Pooling (§5.4.6): Caffe ceil-mode windows with padding, literally


def caffe_windows(length, kernel, stride, pad):
    """[(start, end, size)] per output, as Caffe's pooling_layer.cpp computes them."""
    out = int(np.ceil((length + 2 * pad - kernel) / stride)) + 1
    if pad > 0 and (out - 1) * stride >= length + pad:
        out -= 1
    windows = []
    for p in range(out):
        start = p * stride - pad
        end = min(start + kernel, length + pad)
        size = end - start
        windows.append((max(start, 0), min(end, length), size))
    return windows


def pool_layer(method, kernel, stride, pad):
    param = caffe_pb2.LayerParameter(name="pool", type="Pooling")
    p = param.pooling_param
    p.pool = method
    p.kernel_size = kernel
    p.stride = stride
    p.pad = pad
    return Pooling("pool", param, ())


POOL_CASES = [(3, 2, 0, (7, 7)), (3, 2, 0, (6, 8)), (2, 2, 0, (5, 7)), (3, 2, 1, (6, 6)), (3, 3, 1, (7, 8)),
              (2, 1, 1, (4, 5)), (4, 3, 2, (9, 7))]


def literal_max_pool(x, R, kernel, stride, pad):
    n_, c_, H, W = x.shape
    rows, cols = caffe_windows(H, kernel, stride, pad), caffe_windows(W, kernel, stride, pad)
    y = np.zeros((n_, c_, len(rows), len(cols)))
    out = np.zeros(x.shape)
    for n in range(n_):
        for c in range(c_):
            for ph, (hs, he, _) in enumerate(rows):
                for pw, (ws, we, _) in enumerate(cols):
                    best, arg = -np.finfo(np.float32).max, None
                    for h in range(hs, he):  # row-major scan, strictly greater replaces: first maximum wins
                        for w in range(ws, we):
                            if x[n, c, h, w] > best:
                                best, arg = x[n, c, h, w], (h, w)
                    y[n, c, ph, pw] = best
                    out[n, c, arg[0], arg[1]] += R[n, c, ph, pw]
    return y, out


def literal_ave_pool(x, R, kernel, stride, pad):
    n_, c_, H, W = x.shape
    rows, cols = caffe_windows(H, kernel, stride, pad), caffe_windows(W, kernel, stride, pad)
    y = np.zeros((n_, c_, len(rows), len(cols)))
    out = np.zeros(x.shape)
    for n in range(n_):
        for c in range(c_):
            for ph, (hs, he, hsize) in enumerate(rows):
                for pw, (ws, we, wsize) in enumerate(cols):
                    window = x[n, c, hs:he, ws:we].astype(np.float64)
                    s = window.sum()
                    y[n, c, ph, pw] = s / (hsize * wsize)  # Caffe's divisor counts padding cells
                    if abs(s) >= 1e-6:
                        out[n, c, hs:he, ws:we] += R[n, c, ph, pw] * window / s
                    else:
                        out[n, c, hs:he, ws:we] += window  # the original adds x_i, not relevance
    return y, out


@pytest.mark.parametrize("kernel,stride,pad,hw", POOL_CASES)
def test_max_pooling_winner_takes_all_first_maximum(kernel, stride, pad, hw):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + pad)
    layer = pool_layer(0, kernel, stride, pad)
    # small integers: many exact ties, including ties between negative maxima
    x = rng.integers(-3, 3, size=(2, 3, *hw)).astype(np.float32)
    (y,), extra = layer.forward([x])
    R = rng.normal(size=y.shape).astype(np.float32)
    y_lit, expected = literal_max_pool(x, R.astype(np.float64), kernel, stride, pad)
    np.testing.assert_array_equal(y, y_lit)
    got = layer.relevance(WinnerTakesAll(), Saved([x], [y], extra), [R])[0]
    assert relative_error(got, expected) <= TOLERANCE
    # ties really happened
    rows = caffe_windows(hw[0], kernel, stride, pad)
    cols = caffe_windows(hw[1], kernel, stride, pad)
    ties = sum(int((x[n, c, hs:he, ws:we] == y[n, c, i, j]).sum() > 1)
               for n in range(2) for c in range(3) for i, (hs, he, _) in enumerate(rows)
               for j, (ws, we, _) in enumerate(cols))
    assert ties > 0
    # relevance is conserved (every window's argmax lies inside the input)
    assert abs(got.sum() - R.sum()) <= 1e-5 * np.abs(R).sum()


def test_max_pooling_tie_goes_to_first_in_row_major_order():
    layer = pool_layer(0, 2, 2, 0)
    x = np.array([[[[0, 5, 1, 1], [5, 5, 1, 2], [-1, -1, 0, 0], [-1, -1, 0, 0]]]], np.float32)
    (y,), extra = layer.forward([x])
    R = np.array([[[[1, 2], [3, 4]]]], np.float32)
    got = layer.relevance(WinnerTakesAll(), Saved([x], [y], extra), [R])[0]
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = 1  # first 5 in row-major order, not the one below
    expected[0, 0, 1, 3] = 2
    expected[0, 0, 2, 0] = 3  # all equal negative: the first one
    expected[0, 0, 2, 2] = 4
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kernel,stride,pad,hw", POOL_CASES)
def test_ave_pooling_proportional_rule(kernel, stride, pad, hw):
    rng = np.random.default_rng(kernel * 100 + stride * 10 + pad + 1)
    layer = pool_layer(1, kernel, stride, pad)
    x = rng.normal(size=(2, 3, *hw)).astype(np.float32)
    x[0, 0] = 0  # whole plane zero: s = 0 everywhere
    x[0, 1, :3, :3] = np.float32(3e-8)  # tiny positive values: |s| < 1e-6 in windows inside this block
    x[1, 2] = np.where(rng.random(hw) < 0.5, 0.5, -0.5).astype(np.float32)  # frequent exact cancellation
    (y,), extra = layer.forward([x])
    R = rng.normal(size=y.shape).astype(np.float32)
    y_lit, expected = literal_ave_pool(x, R.astype(np.float64), kernel, stride, pad)
    assert relative_error(y, y_lit) <= TOLERANCE
    got = layer.relevance(Proportional(), Saved([x], [y], extra), [R])[0]
    assert relative_error(got, expected) <= TOLERANCE
    # the tiny block (where present) gets back the activations, to within float32 rounding
    small = np.abs(got[0, 1] - expected[0, 1])
    assert small.max() <= 1e-6 * np.abs(expected[0, 1]).max() + 1e-12


def test_ave_pooling_small_sum_adds_activation_not_relevance():
    layer = pool_layer(1, 2, 2, 0)
    x = np.array([[[[0.5, -0.5, 1.0, 3.0], [0.25, -0.25, 0.0, 0.0]]]], np.float32)
    (y,), extra = layer.forward([x])
    np.testing.assert_array_equal(y, [[[[0.0, 1.0]]]])
    R = np.array([[[[10.0, 8.0]]]], np.float32)
    got = layer.relevance(Proportional(), Saved([x], [y], extra), [R])[0]
    # left window sums to exactly 0 → R_i += x_i (the 10 is lost); right window: 8·x_i/4
    np.testing.assert_allclose(got, [[[[0.5, -0.5, 2.0, 6.0], [0.25, -0.25, 0.0, 0.0]]]], rtol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# LRN (§5.4.7): the original's rule and the exact gradient


def lrn_layer(size, alpha, beta, k):
    param = caffe_pb2.LayerParameter(name="norm", type="LRN")
    p = param.lrn_param
    p.local_size, p.alpha, p.beta, p.k = size, alpha, beta, k
    return LRN("norm", param, ())


LRN_CASES = [(5, 1e-4 * 3e3, 0.75, 1.0), (3, 0.5, 0.75, 2.0), (5, 2.0, 0.5, 1.0), (1, 1.0, 0.75, 1.0)]


def literal_lrn(x, R, size, alpha, beta, k):
    n_, C, H, W = x.shape
    p = (size - 1) // 2
    an = alpha / size
    s = np.zeros(x.shape)
    for c in range(C):
        s[:, c] = k + an * sum(x[:, cc] ** 2 for cc in range(max(0, c - p), min(C, c + p + 1)))
    y = x * s ** (-beta)
    out = np.zeros(x.shape)
    for n in range(n_):
        for h in range(H):
            for w in range(W):
                for c in range(C):
                    xc = x[n, c, h, w]
                    total = R[n, c, h, w] * xc * (k + an * xc * xc) ** (-beta)  # own square only
                    for cc in range(max(0, c - p), min(C, c + p + 1)):
                        if cc != c:
                            total += xc * xc * (-2 * an * beta * s[n, cc, h, w] ** (-beta - 1) * x[n, cc, h, w]
                                                * R[n, cc, h, w])
                    out[n, c, h, w] = total
    return y, s, out


def lrn_forward64(x, size, alpha, beta, k):
    C = x.shape[1]
    p = (size - 1) // 2
    s = np.stack([k + alpha / size * sum(x[:, cc] ** 2 for cc in range(max(0, c - p), min(C, c + p + 1)))
                  for c in range(C)], axis=1)
    return x * s ** (-beta)


@pytest.mark.parametrize("size,alpha,beta,k", LRN_CASES)
def test_lrn_rule_equals_literal(size, alpha, beta, k):
    rng = np.random.default_rng(size)
    layer = lrn_layer(size, alpha, beta, k)
    alpha, beta, k = layer.alpha, layer.beta, layer.k  # the prototxt's float32 values
    x = (rng.normal(size=(2, 7, 3, 4)) * 2).astype(np.float32)
    x[0, :, 0, 0] = np.maximum(x[0, :, 0, 0], 0)
    (y,), extra = layer.forward([x])
    R = rng.normal(size=y.shape).astype(np.float32)
    y_lit, s_lit, expected = literal_lrn(x.astype(np.float64), R.astype(np.float64), size, alpha, beta, k)
    assert relative_error(y, y_lit) <= TOLERANCE
    assert relative_error(extra["scale"], s_lit) <= TOLERANCE
    got = layer.relevance(LrnRule(), Saved([x], [y], extra), [R])[0]
    error = relative_error(got, expected)
    assert error <= TOLERANCE


@pytest.mark.parametrize("size,alpha,beta,k", LRN_CASES)
def test_lrn_gradient_is_exact(size, alpha, beta, k):
    rng = np.random.default_rng(size + 10)
    layer = lrn_layer(size, alpha, beta, k)
    alpha, beta, k = layer.alpha, layer.beta, layer.k  # the prototxt's float32 values
    x = (rng.normal(size=(2, 7, 2, 3)) * 2).astype(np.float32)
    (y,), extra = layer.forward([x])
    dy = rng.normal(size=y.shape).astype(np.float32)
    got = layer.relevance(Gradient(), Saved([x], [y], extra), [dy])[0]
    # literal Jacobian-transpose product in float64
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    C, p, an = x.shape[1], (size - 1) // 2, alpha / size
    s = np.stack([k + an * sum(x64[:, cc] ** 2 for cc in range(max(0, c - p), min(C, c + p + 1)))
                  for c in range(C)], axis=1)
    expected = np.zeros_like(x64)
    for c in range(C):  # ∂L/∂x_c = Σ_c' dy_c'·∂y_c'/∂x_c
        expected[:, c] = dy64[:, c] * s[:, c] ** (-beta)
        for cc in range(max(0, c - p), min(C, c + p + 1)):  # windows of c' that contain c (symmetric for odd n)
            expected[:, c] += dy64[:, cc] * x64[:, cc] * (-beta) * s[:, cc] ** (-beta - 1) * an * 2 * x64[:, c]
    error = relative_error(got, expected)
    assert error <= TOLERANCE
    # central finite differences of the layer's own forward pass, in float64
    numeric = np.zeros_like(x64)
    h = 1e-6
    for index in np.ndindex(x.shape):
        plus, minus = x64.copy(), x64.copy()
        plus[index] += h
        minus[index] -= h
        yp = layer.forward([plus])[0][0]
        ym = layer.forward([minus])[0][0]
        assert yp.dtype == np.float64
        numeric[index] = ((yp - ym) * dy64).sum() / (2 * h)
    assert relative_error(numeric, expected) <= 1e-6
    assert relative_error(layer.forward([x64])[0][0], lrn_forward64(x64, size, alpha, beta, k)) < 1e-12
    # and the layer's gradient computed in float64 agrees with finite differences tightly
    (y64,), extra64 = layer.forward([x64])
    got64 = layer.relevance(Gradient(), Saved([x64], [y64], extra64), [dy64])[0]
    assert relative_error(got64, numeric) <= 1e-6


# ---------------------------------------------------------------------------------------------------------------
# Eltwise SUM under ε


def eltwise_sum_case(coeff: tuple, rng) -> tuple[Eltwise, list[np.ndarray]]:
    """An Eltwise SUM with these coefficients (none: all 1) and random bottoms for it (at least two, 2×3×4×5)."""
    param = caffe_pb2.LayerParameter(name="sum", type="Eltwise")
    param.eltwise_param.operation = 1
    param.eltwise_param.coeff.extend(coeff)
    return Eltwise("sum", param, ()), [rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
                                       for _ in range(max(2, len(coeff)))]


@pytest.mark.parametrize("coeff", [(), (1.0, -0.5), (2.0, 1.0, -1.0)])
def test_eltwise_sum_epsilon(coeff):
    rng = np.random.default_rng(len(coeff))
    layer, bottoms = eltwise_sum_case(coeff, rng)
    # exact zero sums at some positions (z == 0 → undivided)
    c = coeff or (1.0,) * len(bottoms)
    bottoms[1][0, 0, 0] = (-np.float32(c[0]) * bottoms[0][0, 0, 0] / np.float32(c[1])).astype(np.float32)
    for b in bottoms[2:]:
        b[0, 0, 0] = 0
    (y,), extra = layer.forward(bottoms)
    assert (y[0, 0, 0] == 0).sum() >= 3
    R = rng.normal(size=y.shape).astype(np.float32)
    for eps in (0.01, 1.0):
        got = layer.relevance(Epsilon(eps), Saved(bottoms, [y], extra), [R])
        z = sum(ck * b.astype(np.float64) for ck, b in zip(c, bottoms, strict=True))
        for k, (ck, b) in enumerate(zip(c, bottoms, strict=True)):
            expected = np.zeros(b.shape)
            for index in np.ndindex(b.shape):
                zi = z[index]
                div = zi + eps if zi > 0 else zi - eps if zi < 0 else 1.0
                expected[index] = ck * b[index] * R[index] / div
            error = relative_error(got[k], expected)
            assert error <= TOLERANCE


# ---------------------------------------------------------------------------------------------------------------
# The formula table (§5.5) for a CaffeNet-shaped index layout

CONV_INDICES = (0, 4, 8, 10, 12)
IP_INDICES = (15, 18, 21)
FC6 = 15
FIRST = 0
ALL_FORMULAS = (0, 2, 6, 8, 11, 18, 22, 26, 54, 56, 58, 60, 99, 100, 102, 104, 114, 166)


def spec_rule(number: int, layer: str, idx: int, aux: int) -> str:
    """§5.5, written out: the rule of a conv ("conv") or inner-product ("ip") layer at index idx."""
    below = idx <= aux
    high_low = "alphabeta_beta0" if idx > FC6 else "alphabeta_beta1"
    conv = layer == "conv"
    table = {
        0: "epsilon",
        2: "alphabeta",
        6: ("zbox" if idx == FIRST else "alphabeta") if conv else high_low,
        8: ("zbox" if idx == FIRST else "epsilon") if conv else high_low,
        11: "transposed",  # routed to the gradient (§5.7)
        18: ("zbox" if idx == FIRST else high_low) if conv else high_low,
        22: high_low,
        26: "transposed",
        54: "flat" if below else "epsilon",
        56: "wsquare" if below else "epsilon",
        58: "flat" if below else "alphabeta",
        60: "wsquare" if below else "alphabeta",
        99: "transposed",
        100: "alphabeta" if conv else "epsilon",
        102: "flat" if below else ("alphabeta" if conv else "epsilon"),
        104: "wsquare" if below else ("alphabeta" if conv else "epsilon"),
        114: "alphabeta" if below else "epsilon",
        166: "transposed",
    }
    return table[number]


SPEC_RELU = {26: Positive(), 166: Guided(), 11: Gradient(), 99: Gradient()}


def table_rule(settings: RelevanceSettings, type_name: str, index: int):
    """The formula table's rule for a layer of this type at this Caffe index (fc6 at 15, as in CaffeNet)."""
    entry = formula(settings.formula)
    choice = entry.convolution if type_name == "Convolution" else entry.inner_product
    return choice.choose(index, settings, FC6)(settings)


def test_formula_table_covers_exactly_the_spec_numbers():
    assert sorted(FORMULAS) == list(ALL_FORMULAS)


@pytest.mark.parametrize("aux", [0, 8])
@pytest.mark.parametrize("number", ALL_FORMULAS)
def test_formula_table_selects_spec_rule(number, aux):
    settings = RelevanceSettings(number, epsilon=0.25, beta=0.5, aux=aux, first_layer_index=FIRST)
    settings.check()
    for layer, type_name, indices in (("conv", "Convolution", CONV_INDICES), ("ip", "InnerProduct", IP_INDICES)):
        for idx in indices:
            expected = {
                "epsilon": Epsilon(0.25), "alphabeta": AlphaBeta(0.5), "alphabeta_beta0": AlphaBeta(0.0),
                "alphabeta_beta1": AlphaBeta(1.0), "flat": Flat(), "wsquare": WSquare(), "transposed": Transposed(),
            }.get(spec_rule(number, layer, idx, aux))
            rule = table_rule(settings, type_name, idx)
            if expected is None:
                assert isinstance(rule, ZBox) and rule.low is None, (number, layer, idx)
            else:
                assert rule == expected, (number, layer, idx)
    f = formula(number)
    assert f.relu == SPEC_RELU.get(number, Pass())
    assert f.gradient == (number in (11, 99))
    assert f.l2_norm == (number == 99)


def test_formula_table_aux_one_layer_at_a_time():
    """aux is compared with the layer index (≤), not a count of convolutions."""
    for aux, expected in ((3, [Flat(), Epsilon(1.0)]), (4, [Flat(), Flat(), Epsilon(1.0)]),
                          (12, [Flat()] * 5 + [Epsilon(1.0)])):
        settings = RelevanceSettings(54, epsilon=1.0, beta=0.0, aux=aux, first_layer_index=FIRST)
        rules = [table_rule(settings, "Convolution", i) for i in CONV_INDICES]
        rules.append(table_rule(settings, "InnerProduct", 15))
        assert rules[: len(expected)] == expected


@pytest.mark.parametrize("number", [1, 3, 10, 12, 14, 20, 31, -1, 167])
def test_unknown_formula_is_refused(number):
    with pytest.raises(RelevanceError, match=rf"unknown relpropformulatype {number}\b.*supported: 0, 2, 6") as info:
        formula(number)
    assert info.value.key == "relpropformulatype"


AUX_FORMULAS = (54, 56, 58, 60, 102, 104, 114)


@pytest.mark.parametrize("number", ALL_FORMULAS)
def test_negative_aux_only_for_the_54_family(number):
    settings = RelevanceSettings(number, aux=-1)
    if number in AUX_FORMULAS:
        with pytest.raises(RelevanceError, match=r"auxiliaryvariable_maxlayerindexforflatdistinconv.*got -1") as info:
            settings.check()
        assert info.value.key == "auxiliaryvariable_maxlayerindexforflatdistinconv"
    else:
        settings.check()


@pytest.mark.parametrize("number", ALL_FORMULAS)
def test_negative_beta_is_refused(number):
    """As the config refuses it (the original aborted in every α-β, conv w² and z^B layer)."""
    with pytest.raises(RelevanceError, match=r"alphabeta_beta must be non-negative \(got -0.5\)") as info:
        RelevanceSettings(number, beta=-0.5, aux=3).check()
    assert info.value.key == "alphabeta_beta"
    with pytest.raises(RelevanceError, match=r"alphabeta_beta must be non-negative"):
        AlphaBeta(-0.5)


def test_zbox_without_bounds_is_a_clear_error():
    rule = table_rule(RelevanceSettings(6), "Convolution", 0)
    layer, _ = conv_layer(CONV_CASES[0])
    x = np.ones((1, CONV_CASES[0].cin, *CONV_CASES[0].hw), np.float32)
    (z,), _ = layer.forward([x])
    with pytest.raises(RelevanceError, match="z\\^B rule needs the image mean"):
        layer.relevance(rule, Saved([x], [z], {}), [z])


@pytest.mark.parametrize("coeff", [(), (1.0, -0.5), (2.0, 1.0, -1.0)])
@pytest.mark.parametrize("beta", [0.0, 1.0, 0.5])
def test_eltwise_sum_conserving_alpha_beta(coeff, beta):
    """The α-β rule of residual sums: α·p_k/z⁺·R − β·n_k/z⁻·R with p_k, n_k the positive and negative parts of the
    contributions c_k·x_k; where one part is empty the other takes R whole. Conserving wherever the sum has a
    non-zero contribution, and |R_k| ≤ α|R|."""
    rng = np.random.default_rng(int(10 * beta) + len(coeff))
    layer, bottoms = eltwise_sum_case(coeff, rng)
    bottoms[0][0, 0, 0] = np.abs(bottoms[0][0, 0, 0])  # rows where every contribution is positive ...
    for k, b in enumerate(bottoms[1:], start=1):
        b[0, 0, 0] = np.abs(b[0, 0, 0]) * np.sign(coeff[k] if coeff else 1.0)
    bottoms[0][1, 0, 0] = 0  # ... and a row where one input is zero
    (y,), extra = layer.forward(bottoms)
    R = rng.normal(size=y.shape).astype(np.float32)
    got = layer.relevance(AlphaBeta(beta, conserving=True), Saved(bottoms, [y], extra), [R])
    c = coeff or (1.0,) * len(bottoms)
    contributions = np.stack([ck * b.astype(np.float64) for ck, b in zip(c, bottoms, strict=True)])
    alpha = 1 + beta
    expected = np.zeros_like(contributions)
    for index in np.ndindex(y.shape):
        parts = contributions[(slice(None), *index)]
        zp, zn = parts[parts > 0].sum(), parts[parts < 0].sum()
        for k, part in enumerate(parts):
            share = 0.0
            if part > 0:
                share = (alpha if zn < 0 else 1.0) * part / zp
            elif part < 0:
                share = (-beta if zp > 0 else 1.0) * part / zn
            expected[(k, *index)] = share * R[index]
    assert relative_error(np.stack(got), expected) <= TOLERANCE
    total = np.stack(got).astype(np.float64).sum(axis=0)
    nonzero = np.abs(contributions).sum(axis=0) > 0
    np.testing.assert_allclose(total[nonzero], R.astype(np.float64)[nonzero], rtol=1e-5, atol=1e-6)
    assert np.abs(np.stack(got)).max() <= alpha * np.abs(R).max() * (1 + 1e-6)
