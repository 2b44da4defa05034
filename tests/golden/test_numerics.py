"""numerics.py primitives, the act format and the GEMV (gemv.py) against the pure-Python-integer oracle
(reference_int.py), bit for bit; the device weight format (weights.py) against the float QMatrix.

Oracle semantics: Python ints never overflow, ``>>`` is floor, round is half up ((x + 2**(s-1)) >> s).
"""

import math

import numpy as np
import pytest

from reference_int import gemv_int, quantize_group
from roma.host.golden.gemv import PreparedMatrix, gemv, gemv_act
from roma.host.golden.numerics import (ACT_MAX, GROUP, SCALE_MAX, VEC_FRAC, VEC_MAX, bit_length, from_vector,
                                       quantize_act, rshift_round, saturate, to_vector)
from roma.host.golden.weights import DeviceMatrix, int16_matrix, row_exponents, to_device
from roma.host.model import QMatrix


def rnd(x, s):
    """The docstring's round: half up."""
    return (x + ((1 << s) >> 1)) >> s


# ---------------------------------------------------------------------------------------------------------
# primitives

def test_rshift_round_matches_python_ints():
    rng = np.random.default_rng(1)
    # random magnitudes from 0 to 2**61, both signs, and shifts 0..40 (elementwise s)
    x = (rng.integers(-(1 << 61), 1 << 61, 4000) >> rng.integers(0, 61, 4000)).astype(np.int64)
    s = rng.integers(0, 41, 4000)
    got = rshift_round(x, s)
    assert got.dtype == np.int64
    assert got.tolist() == [rnd(int(a), int(b)) for a, b in zip(x, s)]
    # scalar shifts, including s = 0 (identity) and large values
    for sc in (0, 1, 8, 20, 31, 32, 47):
        assert rshift_round(x, sc).tolist() == [rnd(int(a), sc) for a in x]
    big = np.array([(1 << 62) - 1, -(1 << 62), (1 << 61) + (1 << 40), -(1 << 61) - (1 << 39) - 1])
    for sc in (0, 1, 40, 41, 61):
        assert rshift_round(big, sc).tolist() == [rnd(int(a), sc) for a in big]
    assert rshift_round(np.array([5, -5, 0]), 0).tolist() == [5, -5, 0]


def test_rshift_round_ties_round_up_and_shift_is_arithmetic():
    # exact halves go up (towards +inf), for negative values too
    assert rshift_round(np.array([1, 3, -1, -3, -5, 5]), 1).tolist() == [1, 2, 0, -1, -2, 3]
    assert rshift_round(np.array([-7, -8, -9, -24, -25]), 4).tolist() == [0, 0, -1, -1, -2]
    for s in range(1, 40):
        k = np.arange(-50, 50, dtype=np.int64)
        halves = k * (1 << s) + (1 << (s - 1))
        assert rshift_round(halves, s).tolist() == (k + 1).tolist()
        below = halves - 1
        assert rshift_round(below, s).tolist() == k.tolist()


def test_bit_length_matches_python_ints():
    vals = [0, 1, 2, 3, 4, 7, 8, 32767, 32768, 65535, 65536, VEC_MAX, VEC_MAX + 1, (1 << 52) + 1, (1 << 53) - 1]
    for k in range(53):
        vals += [1 << k, (1 << k) - 1, (1 << k) + 1]
    vals += [-v for v in vals]
    rng = np.random.default_rng(2)
    vals += [int(v) for v in rng.integers(-(1 << 53) + 1, 1 << 53, 2000) >> rng.integers(0, 53, 2000)]
    got = bit_length(np.array(vals, dtype=np.int64))
    assert got.tolist() == [abs(v).bit_length() for v in vals]
    assert int(bit_length(0)) == 0 and int(bit_length(-(1 << 47))) == 48


def test_saturate_and_vector_conversions():
    x = np.array([VEC_MAX + 1, -VEC_MAX - 1, VEC_MAX, -VEC_MAX, 0, 1 << 60, -(1 << 60)])
    assert saturate(x).tolist() == [VEC_MAX, -VEC_MAX, VEC_MAX, -VEC_MAX, 0, VEC_MAX, -VEC_MAX]
    assert saturate(np.array([40000, -40000, 5]), 16).tolist() == [32767, -32767, 5]
    assert to_vector([1.0, -0.5, 2.0 ** -21, -(2.0 ** -21) * 3, 2.0 ** 27, -(2.0 ** 27)]).tolist() == \
        [1 << VEC_FRAC, -(1 << (VEC_FRAC - 1)), 0, -2, VEC_MAX, -VEC_MAX]   # np.round: half to even
    assert from_vector(to_vector([22552.0]))[0] == 22552.0


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_to_vector_saturates_huge_values():
    assert to_vector([1e30, -1e30, 2.0 ** 44]).tolist() == [VEC_MAX, -VEC_MAX, VEC_MAX]


# ---------------------------------------------------------------------------------------------------------
# act format

def _groups_with_bitlengths(rng, bits_list):
    """One group per entry, whose max |x| has exactly that many bits (0: the all-zero group)."""
    out = []
    for b in bits_list:
        if b == 0:
            out.append(np.zeros(GROUP, np.int64))
            continue
        g = rng.integers(-(1 << b) + 1, 1 << b, GROUP)
        j = rng.integers(GROUP)
        g[j] = rng.choice([-1, 1]) * int(rng.integers(1 << (b - 1), 1 << b))
        out.append(np.clip(g, -VEC_MAX, VEC_MAX))
    return np.concatenate(out)


def _edge_groups():
    """Hand-picked groups at the act format's boundaries."""
    G = []

    def group(*vals, fill=0):
        g = [fill] * GROUP
        g[:len(vals)] = vals
        G.append(g)

    group()                                         # all zero
    group(32767)                                    # exactly 15 bits: sh = 0, kept as is
    group(-32767, 1, -1)
    group(16384, -16384, 3)                         # 2**14: 15 bits
    group(-32768, 3, -3, 1, -1, 5, -5)              # 2**15: 16 bits, sh = 1; halves round up
    group(32768, -1, 1)
    group(65535, -65535, 65534)                     # 16 bits: 65535 / 2 rounds to 32768 -> clamped
    group(65533, -65533)
    group(VEC_MAX, -VEC_MAX, 1, -1)                 # 47 bits: rounds to 32768 -> clamped
    group(-VEC_MAX, (1 << 31), -(1 << 31), (1 << 31) - 1, -(1 << 31) - 1)
    group(1 << 46, -(1 << 46))                      # powers of two
    group(-(1 << 46))
    group(1 << 40, (1 << 25) + (1 << 24), -(1 << 25) - (1 << 24))
    for k in (16, 17, 20, 33, 47):                  # max = (2 * ACT_MAX + 1) << (k - 16): 32767.5 -> 32768
        m = (2 * ACT_MAX + 1) << (k - 16)
        group(m, -m, m - 1, -(m - 1), fill=1)
    for k in range(47):
        group((1 << k), -(1 << k) + 1, fill=-1)
    group(*([-1] * GROUP))
    group(*([7] * GROUP))
    return np.array(G, dtype=np.int64).reshape(-1)


def test_quantize_act_matches_oracle():
    rng = np.random.default_rng(3)
    bits = list(range(0, 48)) * 3
    x = np.concatenate([_groups_with_bitlengths(rng, bits), _edge_groups()])
    x = x[:len(x) // GROUP * GROUP]
    qa, ea = quantize_act(x)
    assert qa.shape == x.shape and ea.shape == (len(x) // GROUP,)
    for g in range(len(x) // GROUP):
        q, e = quantize_group([int(v) for v in x[g * GROUP:(g + 1) * GROUP]])
        assert qa[g * GROUP:(g + 1) * GROUP].tolist() == q, g
        assert int(ea[g]) == e, g
    assert np.abs(qa).max() <= ACT_MAX


def test_quantize_act_boundaries():
    def q1(*vals):
        g = np.zeros(GROUP, np.int64)
        g[:len(vals)] = vals
        qa, ea = quantize_act(g)
        return qa[:len(vals)].tolist(), int(ea[0])

    assert q1(0, 0) == ([0, 0], -VEC_FRAC)
    assert q1(32767, -32767) == ([32767, -32767], -VEC_FRAC)            # 15 bits: untouched
    assert q1(32768, -3, 3, -1, 1) == ([16384, -1, 2, 0, 1], 1 - VEC_FRAC)  # 16 bits: halves round up
    assert q1(65535, -65535) == ([ACT_MAX, -ACT_MAX], 1 - VEC_FRAC)     # 32768 clamped, -32767 not
    assert q1(VEC_MAX, -VEC_MAX) == ([ACT_MAX, -ACT_MAX], 32 - VEC_FRAC)
    assert q1(1 << 46) == ([1 << 14], 32 - VEC_FRAC)
    # frac: the input's fractional bits only shift the exponent
    g = _edge_groups()[:8 * GROUP]
    qa, ea = quantize_act(g)
    qa40, ea40 = quantize_act(g, frac=2 * VEC_FRAC)
    assert np.array_equal(qa, qa40) and np.array_equal(ea40, ea - VEC_FRAC)
    # the clamp costs exactly one LSB, never a sign flip or wrap
    qa, _ = quantize_act(np.full(GROUP, VEC_MAX))
    assert np.all(qa == ACT_MAX)
    # batched rows quantize independently, group by group
    x = np.stack([_edge_groups()[:4 * GROUP], np.roll(_edge_groups()[:4 * GROUP], 37)])
    qa, ea = quantize_act(x)
    for t in range(2):
        qt, et = quantize_act(x[t])
        assert np.array_equal(qa[t], qt) and np.array_equal(ea[t], et)


# ---------------------------------------------------------------------------------------------------------
# GEMV

def dm_random(rng, rows, cols, kind, er=None, codes=None):
    """A DeviceMatrix of one of the four kinds, with random (or given) codes and scales and row exponents."""
    groups = cols // GROUP
    given = er is not None
    if er is None:
        er = rng.integers(-40, -18, rows)
    er = np.broadcast_to(np.asarray(er, np.int64), (rows,)).copy()
    if kind == "q4":
        c = rng.integers(0, 16, (rows, cols)).astype(np.uint8) if codes is None else codes
        return DeviceMatrix(c, rng.integers(-SCALE_MAX, SCALE_MAX + 1, (rows, groups)),
                            rng.integers(-SCALE_MAX, SCALE_MAX + 1, (rows, groups)), er, 4, False)
    if kind == "q2":
        c = rng.integers(0, 4, (rows, cols)).astype(np.uint8) if codes is None else codes
        return DeviceMatrix(c, rng.integers(0, SCALE_MAX + 1, (rows, groups)),
                            rng.integers(-SCALE_MAX, 1, (rows, groups)), er, 2, False)
    if kind == "q8":
        c = rng.integers(-128, 128, (rows, cols)).astype(np.int8) if codes is None else codes
        return DeviceMatrix(c, rng.integers(0, SCALE_MAX + 1, (rows, groups)),
                            np.zeros((rows, groups), np.int64), er, 8, True)
    if kind == "i16":
        w = rng.standard_normal((rows, cols)) * np.exp(rng.uniform(-8, 2, (rows, 1)))
        dm = int16_matrix(w)
        if codes is not None:
            dm.codes = codes.astype(np.int16)
        if given:
            dm.er = er
        return dm
    raise ValueError(kind)


def oracle(dm, x):
    """gemv_int over tokens: x (ntok, cols) -> (ntok, rows)."""
    codes = [[int(v) for v in row] for row in dm.codes]
    dq, mq, er = dm.dq.tolist(), dm.mq.tolist(), dm.er.tolist()
    return np.array([gemv_int(codes, dq, mq, er, [int(v) for v in xt]) for xt in x], dtype=np.int64)


def stimulus(rng, ntok, cols):
    """Vector-format activations whose groups span the whole range: 0 to 47 bits, zero groups included."""
    groups = cols // GROUP
    bits = rng.integers(0, 48, (ntok, groups))
    bits[:, 0] = 0  # one all-zero group per token
    return np.stack([_groups_with_bitlengths(rng, b) for b in bits])


KINDS = ["q4", "q2", "q8", "i16"]


@pytest.mark.parametrize("kind", KINDS)
def test_gemv_matches_oracle_random(kind):
    rng = np.random.default_rng(10 + KINDS.index(kind))
    rows, cols, ntok = 24, 128, 3
    # exponents low enough that even 47-bit activations keep the float64 accumulation exact (< 2**53)
    dm = dm_random(rng, rows, cols, kind, er=rng.integers(-45, -34, rows))
    x = stimulus(rng, ntok, cols)
    got = PreparedMatrix(dm)(x)
    assert got.shape == (ntok, rows) and got.dtype == np.int64
    assert np.array_equal(got, oracle(dm, x))


@pytest.mark.parametrize("kind", KINDS)
def test_gemv_matches_oracle_typical(kind):
    """Realistic magnitudes: residual-like activations (a few units, outliers to 22552) and weights ~ 0.05."""
    rng = np.random.default_rng(20 + KINDS.index(kind))
    rows, cols, ntok = 32, 96, 4
    dm = dm_random(rng, rows, cols, kind, er=rng.integers(-22, -17, rows))
    xr = rng.standard_normal((ntok, cols)) * 3
    xr[:, 5] = [22552.0, -22552.0, 0.0, 1e-6][:ntok]
    x = to_vector(xr)
    assert np.array_equal(PreparedMatrix(dm)(x), oracle(dm, x))


@pytest.mark.parametrize("kind,lo,hi", [("q4", 0, 15), ("q2", 0, 3), ("q8", -128, 127), ("q8", 0, 0)])
def test_gemv_extreme_codes_and_scales(kind, lo, hi):
    rng = np.random.default_rng(30)
    rows, cols = 8, 64
    x = np.concatenate([stimulus(rng, 2, cols),
                        np.full((1, cols), VEC_MAX), np.full((1, cols), -VEC_MAX),
                        np.tile([VEC_MAX, -VEC_MAX], (1, cols // 2)), np.zeros((1, cols), np.int64)])
    dtype = np.int8 if kind == "q8" else np.uint8
    for code in (lo, hi):
        codes = np.full((rows, cols), code, dtype)
        dm = dm_random(rng, rows, cols, kind, er=-45, codes=codes)
        # extreme scales in some rows
        dm.dq[0], dm.dq[1] = SCALE_MAX, -SCALE_MAX
        if kind != "q8":
            dm.mq[0], dm.mq[1], dm.mq[2] = SCALE_MAX, -SCALE_MAX, 0
        assert np.array_equal(PreparedMatrix(dm)(x), oracle(dm, x))


def test_gemv_refuses_inexact_evaluation():
    """When the float64 evaluation could not be exact (accumulator >= 2**53) it raises OverflowError, never
    returns a wrong number. A consequence: the GEMV's 48-bit output saturation is unreachable in the golden
    model (saturating needs |acc| >= 2**55 > 2**53); where the integer definition (the oracle) saturates, the
    golden model raises instead."""
    rows, cols = 3, 64
    dm = DeviceMatrix(np.full((rows, cols), 15, np.uint8), np.full((rows, 2), SCALE_MAX),
                      np.zeros((rows, 2), np.int64), np.array([-3, -3, -30]), 4, False)
    dm.dq[1] = -SCALE_MAX
    x = np.full((1, cols), 1 << 30)
    assert oracle(dm, x)[0, :2].tolist() == [VEC_MAX, -VEC_MAX]
    with pytest.raises(OverflowError):
        PreparedMatrix(dm)(x)
    # the same matrix with a smaller exponent stays exact and matches
    dm.er[:] = -30
    assert np.array_equal(PreparedMatrix(dm)(x), oracle(dm, x))
    big = DeviceMatrix(np.full((2, cols), 15, np.uint8), np.full((2, 2), SCALE_MAX), np.full((2, 2), SCALE_MAX),
                       np.zeros(2, np.int64), 4, False)
    with pytest.raises(OverflowError):
        PreparedMatrix(big)(np.full((1, cols), VEC_MAX))


@pytest.mark.parametrize("kinds", [("q4", "q4", "q4"), ("q4", "q8"), ("q2", "q4"), ("q4", "i16", "q8")])
def test_stacked_equals_separate(kinds):
    rng = np.random.default_rng(40)
    cols = 96
    dms = [dm_random(rng, r, cols, k) for r, k in zip((16, 8, 8), kinds)]
    if "i16" in kinds:
        dms = [int16_matrix(rng.standard_normal((dm.shape[0], cols)) * 0.01) if k == "i16" else dm
               for dm, k in zip(dms, kinds)]
    x = to_vector(rng.standard_normal((5, cols)) * 4)
    x[2, 7] = to_vector(22552.0)
    stacked = PreparedMatrix(*dms)(x)
    assert len(stacked) == len(dms)
    for dm, y in zip(dms, stacked):
        assert y.shape == (5, dm.shape[0])
        assert np.array_equal(y, PreparedMatrix(dm)(x))
        assert np.array_equal(y, oracle(dm, x))


@pytest.mark.parametrize("kind", KINDS)
def test_batched_equals_one_at_a_time(kind):
    rng = np.random.default_rng(50)
    cols = 128
    dm = dm_random(rng, 40, cols, kind)
    x = np.concatenate([to_vector(rng.standard_normal((6, cols)) * 2), stimulus(rng, 2, cols) >> 12])
    pm = PreparedMatrix(dm)
    batch = pm(x)
    for t in range(len(x)):
        assert np.array_equal(batch[t], pm(x[t:t + 1])[0])
    qa, ea = quantize_act(x)
    assert np.array_equal(gemv_act(pm, qa, ea), batch)
    assert np.array_equal(gemv(pm, x), batch)


def test_gemv_zero_weights_and_zero_input_give_zero():
    rng = np.random.default_rng(51)
    dm = dm_random(rng, 8, 64, "q4")
    assert np.all(PreparedMatrix(dm)(np.zeros((2, 64), np.int64)) == 0)
    dm.dq[:] = 0
    dm.mq[:] = 0
    assert np.all(PreparedMatrix(dm)(stimulus(rng, 2, 64) >> 20) == 0)


# ---------------------------------------------------------------------------------------------------------
# device weight format

def _row_exponent_oracle(maxabs):
    """Smallest integer er with round_half_even(maxabs / 2**er) <= SCALE_MAX, searched upward."""
    if maxabs == 0:
        return 0
    er = math.floor(math.log2(maxabs)) - 20
    while round(math.ldexp(maxabs, -er)) > SCALE_MAX:
        er += 1
    assert round(math.ldexp(maxabs, -(er - 1))) > SCALE_MAX   # smallest
    return er


def test_row_exponents_boundaries():
    vals = [0.0]
    for k in (-60, -30, -24, -15, -1, 0, 1, 7, 20):
        exact = math.ldexp(SCALE_MAX, k)                    # maxabs exactly SCALE_MAX * 2**k -> er = k
        vals += [exact, np.nextafter(exact, np.inf), np.nextafter(exact, 0),
                 math.ldexp(SCALE_MAX + 0.5, k),                 # rounds (half even) to 32768 -> er = k + 1
                 np.nextafter(math.ldexp(SCALE_MAX + 0.5, k), 0),  # rounds to 32767 -> er = k
                 math.ldexp(SCALE_MAX - 0.5, k), math.ldexp(16383.5, k), math.ldexp(16384, k),
                 math.ldexp(1, k), math.ldexp(3, k)]
    rng = np.random.default_rng(60)
    vals += list(np.exp(rng.uniform(-40, 20, 500)))
    er = row_exponents(np.array(vals))
    assert er.tolist() == [_row_exponent_oracle(float(v)) for v in vals]
    assert row_exponents(np.array([math.ldexp(SCALE_MAX, -24)]))[0] == -24
    assert row_exponents(np.array([math.ldexp(SCALE_MAX + 0.5, -24)]))[0] == -23
    assert row_exponents(np.array([0.0]))[0] == 0


def _qmatrix(rng, rows, cols, bits=4, span=None, signed=False):
    """A QMatrix with float16-valued scales (as GGUF Q4_1 / Q8_0 carry); ``span`` limits max/min |scale|."""
    groups = cols // GROUP
    base = np.exp(rng.uniform(-9, -3, (rows, 1)))
    if span is None:
        d = base * np.exp(rng.uniform(-6, 0, (rows, groups)))
    else:
        d = base * rng.uniform(1.0 / span, 1.0, (rows, groups))
    d = d.astype(np.float16).astype(np.float32)
    if signed:
        codes = rng.integers(-128, 128, (rows, cols)).astype(np.int8)
        return QMatrix(codes, d, np.zeros_like(d), 8, True)
    m = (-d * rng.uniform(0, 1 << bits, (rows, groups))).astype(np.float16).astype(np.float32)
    codes = rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint8)
    return QMatrix(codes, d, m, bits)


def test_to_device_dequantize_close_to_float():
    """|w_dev - w| <= (|q| + 1) * 2**(er-1) per element (dq and mq each within half a unit of 2**er), which
    is <= (|q| + 1) * rowmax / 32766.5 with rowmax = max(|d|, |m|) of the row: relative to the row's scales,
    about 3e-5 per code step."""
    rng = np.random.default_rng(61)
    for kw in (dict(bits=4), dict(bits=2), dict(signed=True)):
        q = _qmatrix(rng, 40, 256, **kw)
        dev = to_device(q)
        assert dev.codes is q.codes and dev.bits == q.bits and dev.signed == q.signed
        assert np.abs(dev.dq).max() <= SCALE_MAX and np.abs(dev.mq).max() <= SCALE_MAX
        exact = q.codes.reshape(40, -1, GROUP).astype(np.float64) * q.d[:, :, None].astype(np.float64) \
            + q.m[:, :, None].astype(np.float64)
        exact = exact.reshape(40, 256)
        err = np.abs(dev.dequantize() - exact)
        qabs = np.abs(q.codes.astype(np.float64))
        assert np.all(err <= (qabs + 1) * np.ldexp(0.5, dev.er)[:, None])
        rowmax = np.maximum(np.abs(q.d), np.abs(q.m)).max(axis=1).astype(np.float64)
        assert np.all(err <= (qabs + 1) * (rowmax / 32766.5)[:, None])
        # and against QMatrix.dequantize (float32 arithmetic): also its own float32 rounding
        f32 = q.dequantize().astype(np.float64)
        assert np.all(np.abs(dev.dequantize() - f32) <= (qabs + 1) * np.ldexp(0.5, dev.er)[:, None]
                      + np.abs(f32) * 2.0 ** -23)
        assert np.abs(dev.dequantize() - f32).max() > 0 or kw.get("signed")  # not trivially exact


def test_to_device_exact_when_scales_span_less_than_16():
    """fp16 scales within a factor 16 of the row's largest fit dq/mq's 15 bits: the conversion is exact."""
    rng = np.random.default_rng(62)
    q = _qmatrix(rng, 30, 128, span=15.9)
    q.m[:] = 0  # offsets would widen the span
    dev = to_device(q)
    exact = (q.codes.reshape(30, -1, GROUP) * q.d[:, :, None].astype(np.float64)).reshape(30, 128)
    assert np.array_equal(dev.dequantize(), exact)
    assert np.array_equal(np.ldexp(dev.dq.astype(np.float64), dev.er[:, None]), q.d)


def test_to_device_zero_row_and_int16_matrix():
    rng = np.random.default_rng(63)
    q = _qmatrix(rng, 4, 64)
    q.d[2] = 0
    q.m[2] = 0
    dev = to_device(q)
    assert dev.er[2] == 0 and np.all(dev.dq[2] == 0) and np.all(dev.mq[2] == 0)
    assert np.all(dev.dequantize()[2] == 0)
    w = rng.standard_normal((5, 64)) * np.array([[1e-3], [1.0], [0.0], [300.0], [2.0 ** -30]])
    d16 = int16_matrix(w)
    assert d16.codes.dtype == np.int16 and d16.bits == 16 and d16.signed
    assert np.all(d16.dq == 1) and np.all(d16.mq == 0)
    assert np.abs(d16.codes).max() <= SCALE_MAX and np.all(d16.codes[2] == 0) and d16.er[2] == 0
    # each row uses its 16 bits: largest |code| in (16383, 32767], error <= half a unit of 2**er
    assert np.all(np.abs(d16.codes[[0, 1, 3, 4]]).max(axis=1) > SCALE_MAX // 2)
    assert np.all(np.abs(d16.dequantize() - w) <= np.ldexp(0.5, d16.er)[:, None])
