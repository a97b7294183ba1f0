"""C's ``%g`` for whole arrays at once: numpy integer arithmetic on the decimal digits.

``printf("%g", x)`` (and Python's ``'%g' % x``, and libstdc++'s ``ostream << double``) prints x with 6
significant digits, correctly rounded (ties of the exact binary value to even): with the decimal
exponent X of the rounded value, ``%f``-style when −4 ≤ X < 6 and ``%e``-style (``d.ddddde±XX``, at
least two exponent digits) otherwise, trailing fraction zeros and a bare decimal point removed.

Speed: every step is a numpy operation on a block of values, so the heavy work runs
without the GIL, in parallel with BLAS in another thread.

1. Digits (:func:`decimal6`): X₀ = ⌊log₁₀|x|⌋ (corrected where the logarithm rounded across a power of
   ten), y = |x|·10^(5−X₀) in float64 and d = round(y), an integer of 6 digits (a carry to 10⁶ moves
   to X₀ + 1).  y carries a relative error ≤ 2u (u = 2⁻⁵³: the rounded power of ten and the product),
   i.e. < 2.3·10⁻¹⁰ for y < 10⁶, so round(y) is the correctly rounded d unless y lies within
   ``_TIE_WINDOW`` = 10⁻⁹ of a half-integer.  There an integer test on the binary mantissa decides
   whether the exact value is a tie (then half-to-even); only a value that is within 10⁻⁹ of a tie
   without being one is handed to Python's correctly rounded ``'%.5e'``.  Among all 2³² float32
   values that happens for 4 (±1.719005e-37, ±3.555835e+28: the census in tests/test_gformat.py),
   so this exact fallback costs nothing in practice.  Values outside 10⁻²⁹⁰ ≤ |x| ≤ 10³⁰⁰ (never a
   widened float32) take the fallback too.
2. Text (:func:`format_g_buffer`): each value's field (sign, digits with the decimal point, exponent,
   the separator) is assembled left-aligned in a 16-byte record held as two little-endian uint64
   words, with shifts; the records are then added into one zeroed word buffer at their byte
   offsets (cumulative lengths).  Records never overlap and carry zero bytes past their length,
   so the sums are plain concatenation.
"""

from __future__ import annotations

import threading

import numpy as np

__all__ = ["decimal6", "format_g_buffer", "format_g_text"]

_U64 = np.uint64
# The fast path's range of |x|: powers of ten 10^k, |k| ≤ 300, stay normal, and so does y.
_FAST_MIN, _FAST_MAX = 1e-290, 1e300
_K_OFFSET = 300
# float64 10^k, correctly rounded (CPython's strtod), for k = -300 … 300.
_POW10 = np.array([float(f"1e{k}") for k in range(-_K_OFFSET, _K_OFFSET + 1)])
# Half-width of the window around half-integers where round(y) may differ from the exact rounding:
# 4× the error bound 2u·10⁶ ≈ 2.2e-10 of y.
_TIE_WINDOW = 1e-9
# Values per block of format_g_buffer: its scratch (_Scratch) is 24 rows of 8·_BLOCK bytes (12 MB) per
# thread. Larger blocks cost a little more cache traffic but need fewer numpy calls per value, and every call
# hands the GIL over: with a 16384-value block, two threads formatting at once took longer than one after the
# other (6.6 against 5.9 ms per 3×227×227 map); with 65536 they take 4.8 (best of 4; alone: 6.1).
_BLOCK = 65536
# 5^j for j = 0 … 27 (5²⁷ < 2⁶³); a 53-bit odd mantissa is never divisible by 5^j for j ≥ 23.
_POW5 = np.array([5**j for j in range(28)], dtype=np.int64)


def _pack(text: str) -> int:
    """ASCII text as a little-endian integer (first character in the lowest byte)."""
    return int.from_bytes(text.encode("ascii"), "little")


# Byte masks: _MASK[n] keeps the lowest n bytes of a uint64 (n = 0 … 8).
_MASK = np.array([(1 << (8 * n)) - 1 for n in range(9)], dtype=_U64)
# _DIGITS3[v]: the three ASCII digits of 0 ≤ v < 1000, packed.
_DIGITS3 = np.array([_pack(f"{v:03d}") for v in range(1000)], dtype=_U64)
_ZEROS6 = _pack("000000")

# Per decimal exponent X (index X + _X_OFFSET, X = -330 … 330; a double has -324 ≤ X ≤ 308), the
# layout of %g: _INT_DIGITS[X] digits before the decimal point (X + 1 for 0 ≤ X ≤ 5, 1 in the
# exponent form X < -4 or X > 5, 0 for -4 ≤ X ≤ -1), _POINT[X] whether a point may follow them
# (not for -4 ≤ X ≤ -1, where the prefix "0.0…" carries it), the prefix and the suffix ("e±XX").
_X_OFFSET = 330
_XS = range(-_X_OFFSET, _X_OFFSET + 1)


def _prefix(x: int) -> str:
    return "0." + "0" * (-x - 1) if -4 <= x <= -1 else ""


def _suffix(x: int) -> str:
    return "" if -4 <= x <= 5 else f"e{x:+03d}"


_INT_DIGITS = np.array([x + 1 if 0 <= x <= 5 else 0 if -4 <= x <= -1 else 1 for x in _XS], dtype=_U64)
_POINT = np.array([not -4 <= x <= -1 for x in _XS], dtype=_U64)
_PREFIX = np.array([_pack(_prefix(x)) for x in _XS], dtype=_U64)
_PREFIX_LEN = np.array([len(_prefix(x)) for x in _XS], dtype=_U64)
_SUFFIX = np.array([_pack(_suffix(x)) for x in _XS], dtype=_U64)
_SUFFIX_LEN = np.array([len(_suffix(x)) for x in _XS], dtype=_U64)
_MINUS, _DOT, _SPACE, _SPACE_NEWLINE = _pack("-"), _pack("."), _pack(" "), _pack(" \n")
# "0", "inf", "nan" and their lengths
_SPECIAL = np.array([_pack("0"), _pack("inf"), _pack("nan")], dtype=_U64)
_SPECIAL_LEN = np.array([1, 3, 3], dtype=_U64)


def _exact_decimal6(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The exact fallback: (digits, exponent) of finite nonzero values from Python's ``'%.5e'``."""
    parts = [f"{v:.5e}".split("e") for v in np.asarray(values, dtype=np.float64).tolist()]
    digits = np.array([int(mantissa.replace(".", "").lstrip("-")) for mantissa, _ in parts], dtype=np.int64)
    exponents = np.array([int(exponent) for _, exponent in parts], dtype=np.int64)
    return digits, exponents


def _exact_ties(ax: np.ndarray, exponent: np.ndarray) -> np.ndarray:
    """Whether |x|·10^k, k = 5 − X, is exactly half an odd integer (float64 |x| > 0, exponents X).

    With |x| = M·2^E, M odd: 2|x|·10^k = M·5^k·2^(E+1+k) is an odd integer iff E + 1 + k = 0 and, for
    k < 0, 5^(−k) divides M.
    """
    bits = np.ascontiguousarray(ax, dtype=np.float64).view(np.int64)
    biased = bits >> 52
    fraction = bits & ((1 << 52) - 1)
    mantissa = np.where(biased > 0, fraction | (1 << 52), fraction)
    e2 = np.where(biased > 0, biased - 1075, -1074)
    low_bit = mantissa & -mantissa
    shift = np.frexp(low_bit.astype(np.float64))[1].astype(np.int64) - 1  # log2 of a power of two, exact
    odd = mantissa >> shift
    k = 5 - exponent
    divisible = odd % _POW5[np.clip(-k, 0, 27)] == 0
    return (e2 + shift + 1 + k == 0) & ((k >= 0) | divisible)


def _round6_careful(ax: np.ndarray, exponent: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_round6` for the few values its fast pass leaves in doubt, from the estimate ``exponent``:
    the decade corrected, exact ties found and rounded to even, the carry to 10⁶ moved into the
    exponent; ``unsure`` marks near-ties that are not ties."""
    y = ax * np.take(_POW10, (5 + _K_OFFSET) - exponent)
    exponent = exponent + (y >= 1e6) - (y < 1e5)  # log10 rounded across a power of ten
    y = ax * np.take(_POW10, (5 + _K_OFFSET) - exponent)
    whole = np.floor(y)
    frac = y - whole
    digits = whole.astype(np.int64) + (frac > 0.5)
    near = np.abs(frac - 0.5) <= _TIE_WINDOW
    tie = np.zeros_like(near)
    tie[near] = _exact_ties(ax[near], exponent[near])
    digits[tie] = whole[tie] + (whole[tie] % 2)
    carry = digits == 1_000_000
    digits[carry] = 100_000
    return digits, exponent + carry, near & ~tie


class _Scratch:
    """Arrays for one block of ``_BLOCK`` values, reused by every block and every call of a thread.

    Why not plain numpy temporaries: a block makes about 30 of them (512 kB each); freeing them lets
    glibc's malloc hand the top of the heap back to the system after every block and fault it in
    again for the next one (~300 page faults per 8192 values), which took two thirds of the time.
    """

    def __init__(self) -> None:
        self.words = np.empty((24, _BLOCK), dtype=_U64)  # also seen as float64 / int64 rows
        self.flags = np.empty((4, _BLOCK), dtype=bool)

    def rows(self, n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
        """The first ``n`` entries of every row: as uint64, float64, int64 (the same memory) and bool."""
        u = [r[:n] for r in self.words]
        return u, [r.view(np.float64) for r in u], [r.view(np.int64) for r in u], [r[:n] for r in self.flags]


_LOCAL = threading.local()


def _scratch() -> _Scratch:
    scratch = getattr(_LOCAL, "scratch", None)
    if scratch is None:
        scratch = _LOCAL.scratch = _Scratch()
    return scratch


def _round6_into(
    ax: np.ndarray,
    digits: np.ndarray,
    exponent: np.ndarray,
    tmp: np.ndarray,
    tmp2: np.ndarray,
    doubt: np.ndarray,
    flag: np.ndarray,
) -> np.ndarray:
    """Fast pass of :func:`_round6` writing into the given arrays (``tmp``, ``tmp2`` float64, ``doubt``,
    ``flag`` bool: scratch); returns the ``unsure`` indices."""
    np.log10(ax, out=tmp)
    np.floor(tmp, out=tmp)
    exponent[...] = tmp
    np.subtract(5 + _K_OFFSET, exponent, out=digits)
    np.take(_POW10, digits, out=tmp, mode="clip")
    np.multiply(ax, tmp, out=tmp)  # y = ax·10^(5−X₀)
    np.floor(tmp, out=tmp2)  # its whole part
    np.subtract(tmp, tmp2, out=tmp)  # its fraction (exact: y < 2^53)
    digits[...] = tmp2
    np.greater(tmp, 0.5, out=flag)
    np.add(digits, flag, out=digits)
    np.subtract(tmp, 0.5, out=tmp)
    np.abs(tmp, out=tmp)
    np.less_equal(tmp, _TIE_WINDOW, out=doubt)  # near a half-integer
    np.less(tmp2, 1e5, out=flag)  # X₀ one too large
    np.logical_or(doubt, flag, out=doubt)
    np.greater_equal(digits, 1_000_000, out=flag)  # X₀ one too small, or a carry
    np.logical_or(doubt, flag, out=doubt)
    if not doubt.any():
        return np.empty(0, dtype=np.intp)
    idx = np.flatnonzero(doubt)
    digits[idx], exponent[idx], unsure = _round6_careful(ax[idx], exponent[idx])
    return idx[unsure]


def _round6(ax: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(digits, exponent, unsure) for float64 ``ax`` with 1e-290 ≤ ax ≤ 1e300 (module doc, step 1).

    A fast pass rounds y = ax·10^(5−X₀), X₀ = ⌊log₁₀ ax⌋; the values where y lies outside
    [10⁵, 10⁶), rounds up to 10⁶ or lies within ``_TIE_WINDOW`` of a half-integer go through
    :func:`_round6_careful`.  ``unsure``: indices whose digits/exponent are not valid (a near-tie
    that is not a tie); the caller must use :func:`_exact_decimal6` there.
    """
    digits, exponent = np.empty(ax.shape, dtype=np.int64), np.empty(ax.shape, dtype=np.int64)
    tmp, tmp2 = np.empty(ax.shape), np.empty(ax.shape)
    doubt, flag = np.empty(ax.shape, dtype=bool), np.empty(ax.shape, dtype=bool)
    unsure = _round6_into(ax, digits, exponent, tmp, tmp2, doubt, flag)
    return digits, exponent, unsure


def decimal6(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``'%.5e'`` as integers: for finite nonzero ``values`` (any shape, widened to float64) the digits
    d (int64, 10⁵ ≤ d < 10⁶) and exponents X (int64) with |x| ≈ d·10^(X−5), correctly rounded with
    ties to even.  Zeros, infinities and NaNs give unspecified entries."""
    ax = np.abs(np.asarray(values, dtype=np.float64)).ravel()
    fast = (ax >= _FAST_MIN) & (ax <= _FAST_MAX)
    digits, exponent, unsure = _round6(np.where(fast, ax, 1.0))
    slow = np.union1d(unsure, np.flatnonzero(~fast & (ax > 0) & (ax < np.inf)))
    if slow.size:
        digits[slow], exponent[slow] = _exact_decimal6(ax[slow])
    shape = np.shape(values)
    return digits.reshape(shape), exponent.reshape(shape)


def _records(x: np.ndarray, tail: np.ndarray, tail_len: np.ndarray, scratch: _Scratch):
    """Every value's text ``'%g' % x`` followed by its tail (packed separator): left-aligned 16-byte
    records as (lo, hi) uint64 words, zero past the text, and their lengths (uint64), all views of
    ``scratch`` rows.

    A record is: "-" if the sign bit is set, the prefix "0.0…" (−4 ≤ X ≤ −1), the digits (the integer
    digits, then a point and the rest unless nothing is left after trailing zeros), the suffix
    "e±XX" (X < −4 or X > 5), the tail; or the sign and "0", "inf", "nan", the tail.  Written with
    ``out=`` into the scratch rows (see :class:`_Scratch`), one statement per numpy operation; the
    longest function of the module for that reason.
    """
    u, f, i, b = scratch.rows(x.size)
    neg, ax, digits, exponent = u[0], f[1], i[2], i[3]
    np.signbit(x, out=b[0])
    neg[...] = b[0]
    np.abs(x, out=ax)
    np.greater_equal(ax, _FAST_MIN, out=b[0])
    np.less_equal(ax, _FAST_MAX, out=b[1])
    np.logical_and(b[0], b[1], out=b[0])
    special = kind = None
    all_inside = bool(b[0].all())
    if not all_inside:  # zeros, infinities, NaNs, and doubles beyond the fast range
        outside = np.flatnonzero(~b[0])
        ax_outside = ax[outside]
        ax[outside] = 1.0
    unsure = _round6_into(ax, digits, exponent, f[4], f[5], b[2], b[3])
    if not all_inside:
        finite = (ax_outside > 0) & (ax_outside < np.inf)
        unsure = np.concatenate([unsure, outside[finite]])
        special = outside[~finite]
        kind = np.where(np.isnan(ax_outside[~finite]), 2, np.where(ax_outside[~finite] == 0, 0, 1))
    if unsure.size:
        digits[unsure], exponent[unsure] = _exact_decimal6(x[unsure])
    # the six digit characters, and how many are significant: the byte length of the digit values
    # without trailing zeros, from their bit length (float64's exponent field)
    packed, sig, kept, xi, high, low = u[4], u[5], u[6], i[7], i[8], i[9]  # rows 10, 11: temporaries
    np.floor_divide(digits, 1000, out=high)
    np.multiply(high, 1000, out=low)
    np.subtract(digits, low, out=low)
    np.take(_DIGITS3, high, out=packed, mode="clip")
    np.take(_DIGITS3, low, out=u[10], mode="clip")
    np.left_shift(u[10], 24, out=u[10])
    np.bitwise_or(packed, u[10], out=packed)
    np.bitwise_xor(packed, _ZEROS6, out=u[10])
    np.copyto(f[11], u[10], casting="unsafe")
    np.right_shift(i[11], 52, out=i[11])
    np.subtract(i[11], 1015, out=i[11])
    np.right_shift(i[11], 3, out=i[5])  # sig
    np.take(_MASK, i[5], out=kept, mode="clip")
    np.bitwise_and(kept, packed, out=kept)
    # the digits piece: whole digits, a point when digits follow, the rest of the kept digits
    np.add(exponent, _X_OFFSET, out=xi)
    whole, point, shift, body, body_len, tmp = u[8], u[9], u[10], u[11], u[12], u[13]
    np.take(_INT_DIGITS, xi, out=whole, mode="clip")
    np.greater(sig, whole, out=b[1])
    point[...] = b[1]
    np.take(_POINT, xi, out=tmp, mode="clip")
    np.bitwise_and(point, tmp, out=point)
    np.left_shift(whole, 3, out=shift)
    np.take(_MASK, whole.view(np.int64), out=body, mode="clip")
    np.bitwise_and(body, packed, out=body)
    np.multiply(point, _DOT, out=tmp)
    np.left_shift(tmp, shift, out=tmp)
    np.bitwise_or(body, tmp, out=body)
    np.right_shift(kept, shift, out=tmp)
    np.left_shift(point, 3, out=u[14])
    np.add(u[14], shift, out=u[14])
    np.left_shift(tmp, u[14], out=tmp)
    np.bitwise_or(body, tmp, out=body)
    np.maximum(whole, sig, out=body_len)
    np.add(body_len, point, out=body_len)
    if special is not None and special.size:
        body[special] = np.take(_SPECIAL, kind)
        body_len[special] = np.take(_SPECIAL_LEN, kind)
    # front = sign + prefix (≤ 6 bytes), back = suffix + tail (≤ 7 bytes), body (≤ 7 bytes) between
    front, front_len, back, suffix_len, lo, hi, length = u[14], u[15], u[16], u[17], u[18], u[19], u[20]
    np.take(_PREFIX_LEN, xi, out=front_len, mode="clip")
    np.add(front_len, neg, out=front_len)
    np.take(_PREFIX, xi, out=front, mode="clip")
    np.left_shift(neg, 3, out=tmp)
    np.left_shift(front, tmp, out=front)
    np.multiply(neg, _MINUS, out=tmp)
    np.bitwise_or(front, tmp, out=front)
    np.take(_SUFFIX_LEN, xi, out=suffix_len, mode="clip")
    np.take(_SUFFIX, xi, out=back, mode="clip")
    np.left_shift(suffix_len, 3, out=tmp)
    np.left_shift(tail, tmp, out=tmp)
    np.bitwise_or(back, tmp, out=back)
    np.left_shift(front_len, 3, out=shift)
    np.left_shift(body, shift, out=lo)
    np.bitwise_or(lo, front, out=lo)
    np.subtract(_U64(64), shift, out=shift)
    np.right_shift(body, shift, out=hi)
    at = shift
    np.add(front_len, body_len, out=at)
    np.left_shift(at, 3, out=at)  # 8 … 104 bits: shifts of 64 or more give 0
    np.left_shift(back, at, out=tmp)
    np.bitwise_or(lo, tmp, out=lo)
    np.subtract(_U64(64), at, out=tmp)
    np.right_shift(back, tmp, out=tmp)
    np.bitwise_or(hi, tmp, out=hi)
    np.subtract(at, _U64(64), out=tmp)
    np.left_shift(back, tmp, out=tmp)
    np.bitwise_or(hi, tmp, out=hi)
    np.add(front_len, body_len, out=length)
    np.add(length, suffix_len, out=length)
    np.add(length, tail_len, out=length)
    return lo, hi, length


def _tails(first: int, size: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Separators (packed " " or " \\n") and their lengths for values ``first:first + size`` of rows of ``width``."""
    tail = np.full(size, _SPACE, dtype=_U64)
    tail_len = np.ones(size, dtype=_U64)
    ends = np.arange((width - 1 - first) % width, size, width)
    tail[ends] = _SPACE_NEWLINE
    tail_len[ends] = 2
    return tail, tail_len


def _place(words: np.ndarray, start: int, lo: np.ndarray, hi: np.ndarray, length: np.ndarray, scratch: _Scratch) -> int:
    """Add the records into ``words`` one after the other from byte ``start`` on; returns the end."""
    u, _, i, _ = scratch.rows(lo.size)
    offset, shift, back, word, tmp = u[21], u[22], u[23], i[8], u[9]
    np.cumsum(length, out=offset)
    end = start + int(offset[-1])
    np.subtract(offset, length, out=offset)
    np.add(offset, _U64(start), out=offset)
    np.bitwise_and(offset, 7, out=shift)
    np.left_shift(shift, 3, out=shift)
    np.right_shift(offset, 3, out=word.view(_U64))
    np.subtract(_U64(64), shift, out=back)
    np.left_shift(lo, shift, out=tmp)
    np.add.at(words, word, tmp)
    np.add(word, 1, out=word)
    np.left_shift(hi, shift, out=tmp)
    np.right_shift(lo, back, out=offset)
    np.bitwise_or(tmp, offset, out=tmp)
    np.add.at(words, word, tmp)
    np.add(word, 1, out=word)
    np.right_shift(hi, back, out=tmp)
    np.add.at(words, word, tmp)
    return end


def format_g_buffer(values: np.ndarray, head: bytes = b"") -> np.ndarray:
    """Rows of ``%g`` text as a uint8 array: ``head``, then for every row of ``values`` (R, W), any
    real dtype widened to float64, its W values each as ``'%g' % x`` followed by one space, then a
    newline (``-nan`` for a NaN with the sign bit set, as libstdc++ prints it).  ASCII, at most
    15 bytes per value.

    Works through blocks of about ``_BLOCK`` values (whole rows when they are narrower), in scratch
    arrays reused by every block (:class:`_Scratch`).
    """
    v = np.asarray(values)
    if v.ndim != 2:
        raise ValueError(f"values must be (rows, width), got shape {v.shape}")
    rows, width = v.shape
    if v.size == 0:
        return np.frombuffer(head + b"\n" * rows, dtype=np.uint8)
    flat = v.reshape(-1)
    block = width * (_BLOCK // width) if width <= _BLOCK else _BLOCK
    tail, tail_len = _tails(0, block, width)  # the same for every block when blocks are whole rows
    scratch = _scratch()
    x_all = np.empty(block)
    start = len(head)
    words = np.zeros((start + v.size * 15) // 8 + 3, dtype="<u8")  # the text: the words' bytes, little-endian
    text = words.view(np.uint8)
    text[:start] = np.frombuffer(head, dtype=np.uint8)
    for first in range(0, flat.size, block):
        chunk = flat[first : first + block]
        x = x_all[: chunk.size]
        x[...] = chunk  # widened to float64
        if width > _BLOCK:
            tail, tail_len = _tails(first, x.size, width)
        lo, hi, length = _records(x, tail[: x.size], tail_len[: x.size], scratch)
        start = _place(words, start, lo, hi, length, scratch)
    return text[:start]


def format_g_text(values: np.ndarray, head: bytes = b"") -> bytes:
    """:func:`format_g_buffer` as bytes."""
    return format_g_buffer(values, head).tobytes()
