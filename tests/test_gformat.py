"""lrp_cli.gformat against Python's own ``'%g'`` (C's printf ``%g``, correctly rounded) on > 10 million values.

Run ``python tests/test_gformat.py census`` (about a minute) to count, over all 2³¹ positive float32
values, those that take the exact fallback: 2 (1.719005e-37 and 3.555835e+28, see KNOWN_UNSURE).
"""

from __future__ import annotations

import sys
from fractions import Fraction

import numpy as np
import pytest

from lrp_cli import gformat

CHUNK = 1 << 20
# The only positive float32 values whose 6-digit rounding the float64 pass cannot decide (within 1e-9
# of a tie without being one), found by census() below; their negatives are the other two of 2³².
KNOWN_UNSURE = np.array([40499861, 1860553307], dtype=np.uint32)


def printf_g(values: np.ndarray) -> list[str]:
    """``'%g' % float(x)`` for every value (and libstdc++'s ``-nan``): Python's correctly rounded dtoa."""
    with np.errstate(invalid="ignore"):  # signalling NaNs among random bit patterns
        v = np.asarray(values).astype(np.float64)
    fields = ("%g " * v.size % tuple(v.tolist())).split(" ")[:-1]
    for i in np.flatnonzero(np.isnan(v) & np.signbit(v)):
        fields[i] = "-nan"
    return fields


def assert_like_printf(values: np.ndarray) -> int:
    """gformat's text of ``values`` (in rows of 1000 and one long row) equals printf's, chunk by chunk."""
    values = np.asarray(values).ravel()
    for lo in range(0, values.size, CHUNK):
        chunk = values[lo : lo + CHUNK]
        want = printf_g(chunk)
        with np.errstate(invalid="ignore"):
            got = gformat.format_g_text(chunk[None, :]).decode("ascii")
        if got != " ".join(want) + " \n":
            fields = got[:-2].split(" ")
            bad = next(i for i, (a, b) in enumerate(zip(fields, want, strict=False)) if a != b)
            raise AssertionError(f"{chunk[bad]!r} ({chunk.dtype}): got {fields[bad]!r}, printf gives {want[bad]!r}")
        width = 1000  # and the first 64 rows of 1000 values as rows
        rows = chunk[: min(64_000, chunk.size // width * width)].reshape(-1, width)
        with np.errstate(invalid="ignore"):
            text = gformat.format_g_text(rows).decode("ascii")
        lines = ["".join(f + " " for f in want[r * width : (r + 1) * width]) for r in range(rows.shape[0])]
        assert text == "".join(line + "\n" for line in lines)
    return values.size


def f32(bits) -> np.ndarray:
    return np.asarray(bits, dtype=np.int64).astype(np.uint32).view(np.float32)


def neighbours(values: np.ndarray, ulps: int) -> np.ndarray:
    """Every float32 within ``ulps`` steps of each (positive, finite) value, both signs."""
    bits = np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.int64)
    around = (bits[:, None] + np.arange(-ulps, ulps + 1)[None, :]).ravel()
    around = np.clip(around, 0, 0x7F7FFFFF)
    return np.concatenate([f32(around), -f32(around)])


# ---- float32: random bit patterns, every binade, targeted sets (> 10 million values) -------------


def test_random_bit_patterns():
    """4·2²⁰ uniformly random 32-bit patterns: every exponent ~16000 times, subnormals, ±inf, NaNs with
    any sign and payload (quiet and signalling)."""
    bits = np.random.default_rng(11).integers(0, 1 << 32, 4 * CHUNK, dtype=np.uint64)
    assert assert_like_printf(f32(bits)) == 4 * CHUNK


def test_every_binade_both_signs():
    """For each of the 256 exponent fields (0: ±0 and subnormals, 255: ±inf and NaNs) and both signs,
    8192 random mantissas: 4.2 million values."""
    rng = np.random.default_rng(12)
    exponent = np.repeat(np.arange(256, dtype=np.int64), 2 * 8192)
    sign = np.tile(np.repeat([0, 1], 8192), 256).astype(np.int64)
    mantissa = rng.integers(0, 1 << 23, exponent.size)
    values = f32((sign << 31) | (exponent << 23) | mantissa)
    assert assert_like_printf(values) == 256 * 2 * 8192


def test_decimal_boundaries_and_round_up_to_a_power_of_ten():
    """±300 ulps around every power of ten in float32's range (the 1e-5 and 1e6 notation switches
    among them) and around every d.99999|5·10^X (9.999995e-5, 999999.5, 0.0009999995, …: the
    values that round up to the next power of ten), both signs."""
    centres = []
    for x in range(-45, 39):
        for mantissa in ("1", "9.999995", "9.99999", "9.9999949999", "9.9999950001", "1.000005", "5"):
            centres.append(float(f"{mantissa}e{x}"))
    centres = np.array([c for c in centres if 1e-45 <= c <= 3.4e38], dtype=np.float32)
    values = neighbours(centres, 300)
    assert values.size > 300_000
    assert_like_printf(values)
    for literal in ("9.999995e-05", "999999.5", "0.0009999995", "0.000999999", "1e-05", "1e+06", "99999.95"):
        assert_like_printf(np.array([float(literal)], dtype=np.float32))
    assert gformat.format_g_text(np.array([[999999.5, 9.999995e-5, 1e-5, 1e6, 99999.95]])) == (
        b"1e+06 0.0001 1e-05 1e+06 99999.9 \n"  # exact ties and round-ups, as doubles
    )


def exact_ties() -> np.ndarray:
    """float32 values x for which x·10^(5−X) is exactly half an odd integer (X: x's decimal exponent).

    Such a value is m·5^k / 2 / 10^k with m odd: for X = 5 − k, k = 0 … 9 it is m'·2^−(k+1) with m'
    odd; for X = 6, 7 the integers m·5^j·2^(j−1), j = 1, 2 (other exponents have none in float32).
    """
    rng = np.random.default_rng(13)
    out = []
    for k in range(10):
        lo, hi = -(-200_000 // 5**k), 2_000_000 // 5**k
        m = np.arange(lo | 1, hi, 2)
        m = m[rng.permutation(m.size)[:40_000]]
        out.append(np.ldexp(m.astype(np.float64), -(k + 1)))
    for j in (1, 2):
        m = np.arange(200_001, min(2_000_000, (1 << 24) // 5**j), 2)
        m = m[rng.permutation(m.size)[:40_000]]
        out.append(m * 5.0**j * 2.0 ** (j - 1))
    return np.concatenate(out).astype(np.float32)


def test_exact_ties_round_to_even():
    ties = exact_ties()
    sample = ties[np.random.default_rng(14).permutation(ties.size)[:2000]]
    for x in sample.tolist():  # they really are ties, checked in exact rational arithmetic
        e = int(np.floor(np.log10(x)))
        y = Fraction(x) * Fraction(10) ** (5 - e)
        if not 100_000 <= y < 1_000_000:
            e += 1 if y >= 1_000_000 else -1
            y = Fraction(x) * Fraction(10) ** (5 - e)
        assert y.denominator == 2, x
    values = np.concatenate([ties, -ties, neighbours(ties[::10], 3)])
    assert_like_printf(values)
    halves = [float(t) for t in ties[:3]]
    assert [f"{h:.5e}" for h in halves] != [f"{h * (1 + 1e-15):.5e}" for h in halves]  # ties matter


def test_subnormals_zeros_infinities_nans():
    values = np.concatenate(
        [
            f32(np.arange(0, 200_001)),  # +0 and the smallest subnormals
            f32(np.arange(0x007FFFFF - 100_000, 0x00800000 + 100_000)),  # around the normal boundary
            f32(np.arange(0, 200_001) | (1 << 31)),  # -0 and negative subnormals
            f32([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0xFFFFFFFF]),
        ]
    )
    assert_like_printf(values)
    text = gformat.format_g_text(f32([[0, 1 << 31, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000]]))
    assert text == b"0 -0 inf -inf nan -nan \n"


def test_the_exact_fallback():
    """The two positive float32 values the float64 pass leaves unsure go through Python's '%.5e'."""
    unsure = f32(KNOWN_UNSURE).astype(np.float64)
    _, _, flagged = gformat._round6(unsure)
    assert flagged.tolist() == [0, 1]
    _, _, around = gformat._round6(np.abs(neighbours(f32(KNOWN_UNSURE), 50)).astype(np.float64))
    assert around.size == 4  # the two values (and again for their negatives), none of their neighbours
    assert_like_printf(np.concatenate([f32(KNOWN_UNSURE), -f32(KNOWN_UNSURE)]))
    assert gformat.format_g_text(f32(KNOWN_UNSURE)[None]) == b"1.719e-37 3.55584e+28 \n"


def test_census_of_one_binade():
    """Every float32 of the binade [2⁻¹²³, 2⁻¹²²) (8 million values): the fallback takes exactly the
    one known there."""
    bits = np.arange(4 << 23, 5 << 23, dtype=np.int64)
    _, _, unsure = gformat._round6(f32(bits).astype(np.float64))
    assert bits[unsure].tolist() == [int(KNOWN_UNSURE[0])]


# ---- doubles that are not float32 -----------------------------------------------------------------


def test_doubles():
    rng = np.random.default_rng(15)
    random_bits = rng.integers(0, 1 << 63, CHUNK // 2, dtype=np.uint64) | (
        rng.integers(0, 2, CHUNK // 2, dtype=np.uint64) << np.uint64(63)
    )
    doubles = random_bits.view(np.float64)  # every binade of float64, subnormals, beyond the fast range
    literals = np.array(
        [float(f"{d}e{x}") for x in range(-320, 309) for d in ("1.000005", "1.234565", "9.999995", "1", "4.5")],
    )  # decimal near-ties: within 1e-16 of a tie, only the exact fallback rounds them right
    extremes = np.array([5e-324, 2.2250738585072014e-308, 1e-290, 9.99e-291, 1e300, 1.01e300, 1.7976931348623157e308])
    values = np.concatenate([doubles, literals, -literals, extremes, -extremes])
    assert_like_printf(values)
    _, _, unsure = gformat._round6(literals[(literals >= 1e-290) & (literals <= 1e300)])
    assert unsure.size > 100  # the near-ties really went to the fallback


def test_decimal6_is_percent_e():
    values = np.concatenate(
        [
            np.random.default_rng(16).standard_normal(20_000) * 10.0 ** np.arange(-20, 20).repeat(500),
            exact_ties()[:5000].astype(np.float64),
        ]
    )
    digits, exponent = gformat.decimal6(values.reshape(2, -1))
    assert digits.shape == exponent.shape == (2, values.size // 2)
    want = [f"{v:.5e}".split("e") for v in values.tolist()]
    assert digits.ravel().tolist() == [int(m.replace(".", "").lstrip("-")) for m, _ in want]
    assert exponent.ravel().tolist() == [int(e) for _, e in want]


# ---- layout ---------------------------------------------------------------------------------------


def test_rows_head_and_empty():
    a = np.array([[1.5, -2.0, 1e-7], [0.0, 123456789.0, -0.000123456789]], dtype=np.float32)
    assert gformat.format_g_text(a, b"H\n") == b"H\n1.5 -2 1e-07 \n0 1.23457e+08 -0.000123457 \n"
    half = np.array([[1.5, 1e-7, np.inf, -0.000123456789]]).astype(np.float16)
    assert bytes(gformat.format_g_buffer(half)) == b"1.5 1.19209e-07 inf -0.000123501 \n"
    assert gformat.format_g_text(np.zeros((3, 0)), b"x") == b"x\n\n\n"
    assert gformat.format_g_text(np.zeros((0, 5))) == b""
    assert gformat.format_g_text(np.arange(6).reshape(2, 3)) == b"0 1 2 \n3 4 5 \n"
    with pytest.raises(ValueError, match="rows, width"):
        gformat.format_g_text(np.zeros(3))


def test_blocks_of_rows_do_not_matter():
    """Rows much wider and much narrower than a block, and a width that does not divide it."""
    rng = np.random.default_rng(17)
    for shape in [(1, 50_000), (20_000, 1), (5000, 7), (3, gformat._BLOCK + 1), (2, 3 * gformat._BLOCK - 5)]:
        a = (rng.standard_normal(shape) * 10.0 ** rng.integers(-12, 12, shape)).astype(np.float32)
        want = "".join("".join(f + " " for f in printf_g(row)) + "\n" for row in a)
        assert gformat.format_g_text(a).decode("ascii") == want


# ---- the census (not part of the test run) --------------------------------------------------------


def census() -> list[int]:
    """Bit patterns of all positive finite float32 values that take the exact fallback."""
    found = []
    step = 1 << 22
    for lo in range(1, 0x7F800000, step):
        bits = np.arange(lo, min(lo + step, 0x7F800000), dtype=np.int64)
        _, _, unsure = gformat._round6(f32(bits).astype(np.float64))
        found += bits[unsure].tolist()
    return found


if __name__ == "__main__" and sys.argv[1:] == ["census"]:
    unsure_bits = census()
    print(f"{len(unsure_bits)} of 2139095039 positive finite float32 values take the exact fallback:")
    for b in unsure_bits:
        v = float(f32([b])[0])
        print(f"  bits {b}: {v!r} = {v:.25e} -> %g {v:g}")
