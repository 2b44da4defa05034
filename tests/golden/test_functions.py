"""functions.py: each function against a slow pure-Python-int re-statement of its docstring, bit for bit, and
against float math within a stated tolerance.

Oracle conventions (the docstrings' and numerics.py's): Python ints (no overflow), ``>>`` floors, "rounded"
means half up, results in the vector format are saturated to +-VEC_MAX.
"""

import math

import numpy as np
import pytest

from roma.host.golden.functions import (EXP2_TABLE, EXP_IN_MAX, LOG2E_Q, PROB_FRAC, RECIP_FRAC, RECIP_TABLE, RSQRT_FRAC,
                                        ROPE_IN_MAX, RSQRT_TABLE, SIG_TABLE, SILU_IN_MAX, attention_scores, attention_values, attn_scale_q,
                                        eps_q, exp_neg, gamma_q, recip_q, rmsnorm, rope, rope_tables, rsqrt_q,
                                        sigmoid, silu_mul, softmax)
from roma.host.golden.numerics import ACC_FRAC, GROUP, VEC_FRAC, VEC_MAX, from_vector, quantize_act, to_vector

ONE = 1 << VEC_FRAC


def rnd(x, s):
    return (x + ((1 << s) >> 1)) >> s


def sat(x):
    return max(-VEC_MAX, min(VEC_MAX, x))


def shift(v, k):
    return v << k if k >= 0 else v >> -k


# ---------------------------------------------------------------------------------------------------------
# RMSNorm

def normalise_oracle(v, even):
    """v >= 1 -> (m, sh): m = v >> sh (v << -sh when sh < 0), sh = bitlen(v) - 24, made even when asked."""
    sh = v.bit_length() - 24
    if even and sh % 2:
        sh += 1
    return (v >> sh if sh >= 0 else v << -sh), sh


def interp_oracle(table, m):
    """Table indexed by m's top 10 of 24 bits, linear interpolation with the low 14 (floor)."""
    i, f = m >> 14, m & ((1 << 14) - 1)
    t0, t1 = int(table[i]), int(table[i + 1])
    return t0 + (((t1 - t0) * f) >> 14)


def rsqrt_oracle(v):
    m, sh = normalise_oracle(v, True)
    return interp_oracle(RSQRT_TABLE, m), sh


def recip_oracle(v):
    m, sh = normalise_oracle(v, False)
    return interp_oracle(RECIP_TABLE, m), sh


def rmsnorm_oracle(x, gq, epsq):
    """e = max(0, bitlen(max|x|) - 24); xs = x >> e; v = max(1, ((sum(xs**2) * round(2**32 / n)) >> 32)
    + (epsq >> 2e)); R, sh = rsqrt(v); y = round(xs * R >> (RSQRT_FRAC - VEC_FRAC + sh/2));
    out = saturate(round(y * gq >> 16))."""
    n = len(x)
    e = max(0, max(abs(v) for v in x).bit_length() - 24)
    xs = [v >> e for v in x]
    n_recip = round((1 << 32) / n)
    v = max(1, ((sum(a * a for a in xs) * n_recip) >> 32) + (epsq >> (2 * e)))
    R, sh = rsqrt_oracle(v)
    assert sh % 2 == 0
    return [sat(rnd(rnd(a * R, RSQRT_FRAC - VEC_FRAC + sh // 2) * g, 16)) for a, g in zip(xs, gq)]


def test_rsqrt_and_recip_tables():
    """rsqrt_q / recip_q against the oracle and float, for v from 1 to 2**62: 1/sqrt(v) within 1.5e-6 relative
    and 1/v within 1.1e-6 (linear interpolation over steps of 2**-8 resp. 2**-9 of the mantissa: the bounds are
    h**2/8 * |f''/f|, 1.4e-6 and 9.5e-7, plus rounding)."""
    rng = np.random.default_rng(5)
    v = [1, 2, 3, 4, 5, 65536, (1 << 24) - 1, 1 << 24, (1 << 24) + 1, (1 << 25) - 1, (1 << 62)]
    v += [int(a) for a in rng.integers(1, 1 << 62, 3000, dtype=np.int64) >> rng.integers(0, 62, 3000)]
    v = np.maximum(np.array(v, dtype=np.int64), 1)                # the domain is v >= 1
    R, sh = rsqrt_q(v)
    assert list(zip(R.tolist(), sh.tolist())) == [rsqrt_oracle(int(a)) for a in v]
    assert np.all(sh % 2 == 0)
    approx = R * np.ldexp(1.0, -(RSQRT_FRAC + sh // 2))
    assert np.all(np.abs(approx * np.sqrt(v.astype(np.float64)) - 1) <= 1.5e-6)
    R, sh = recip_q(v)
    assert list(zip(R.tolist(), sh.tolist())) == [recip_oracle(int(a)) for a in v]
    approx = R * np.ldexp(1.0, -(RECIP_FRAC + sh))
    assert np.all(np.abs(approx * v.astype(np.float64) - 1) <= 1.1e-6)


def rmsnorm_float(xr, gamma, eps):
    return xr / np.sqrt(np.mean(xr * xr, axis=-1, keepdims=True) + eps) * gamma


def _norm_inputs(rng, n):
    xs = [rng.standard_normal(n) * 2.0,
          rng.standard_normal(n) * 1e-3,
          rng.standard_normal(n) * 300.0]
    x = rng.standard_normal(n)
    x[7] = 22552.0                      # SmolLM2's largest residual: exercises the pre-shift (35 bits -> 24)
    xs.append(x)
    x = rng.standard_normal(n) * 0.5
    x[3] = -22552.0
    xs.append(x)
    return to_vector(np.stack(xs))


@pytest.mark.parametrize("n", [64, 576])
def test_rmsnorm_matches_oracle(n):
    rng = np.random.default_rng(n)
    gamma = rng.uniform(0.2, 3.0, n)
    gq, epsq = gamma_q(gamma), eps_q(1e-5)
    x = np.concatenate([_norm_inputs(rng, n), np.full((1, n), VEC_MAX), np.full((1, n), -VEC_MAX),
                        np.tile([VEC_MAX, -VEC_MAX], (1, n // 2)), rng.integers(-3, 4, (2, n)),
                        np.zeros((1, n), np.int64)])
    y = rmsnorm(x, gq, epsq)
    for t in range(len(x)):
        assert y[t].tolist() == rmsnorm_oracle([int(v) for v in x[t]], [int(g) for g in gq], epsq), t


def test_rmsnorm_close_to_float():
    """Within 1e-4 of the largest |output| (measured ~1e-6) plus 4 LSB, for unit-scale rows, tiny rows, large
    rows and rows with a 22552.0 outlier (pre-shift by 11 bits)."""
    rng = np.random.default_rng(7)
    n = 576
    gamma = rng.uniform(0.2, 3.0, n)
    x = _norm_inputs(rng, n)
    y = from_vector(rmsnorm(x, gamma_q(gamma), eps_q(1e-5)))
    ref = rmsnorm_float(from_vector(x), gamma_q(gamma) / 65536.0, 1e-5)
    err = np.abs(y - ref)
    assert np.all(err <= 1e-4 * np.abs(ref).max(axis=1, keepdims=True) + 4.0 / ONE)
    # relative to the float RMSNorm with the unquantized gamma: 1e-3 of the row's largest output
    ref_g = rmsnorm_float(from_vector(x), gamma, 1e-5)
    assert np.all(np.abs(y - ref_g) <= 1e-3 * np.abs(ref_g).max(axis=1, keepdims=True))


def test_rmsnorm_zero_and_huge_rows():
    n = 64
    gq = gamma_q(np.ones(n))
    with np.errstate(all="raise"):
        z = rmsnorm(np.zeros((2, n), np.int64), gq, eps_q(1e-5))
        assert np.all(z == 0)
        z0 = rmsnorm(np.zeros((1, n), np.int64), gq, 0)          # eps = 0: no division by zero either
        assert np.all(z0 == 0)
    # a single huge element: the normalized row is sqrt(n) there and 0 elsewhere
    x = np.zeros((1, n), np.int64)
    x[0, 5] = to_vector(22552.0)
    y = from_vector(rmsnorm(x, gq, eps_q(1e-5)))
    assert abs(y[0, 5] - math.sqrt(n)) < 1e-4 and np.all(y[0, np.arange(n) != 5] == 0)
    # saturated input rows normalize to +-1
    y = from_vector(rmsnorm(np.full((1, n), -VEC_MAX), gq, eps_q(1e-5)))
    assert np.allclose(y, -1.0, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# RoPE

def rope_oracle(x, pos, cos, sin, head_dim):
    half = head_dim // 2
    out = []
    for h in range(0, len(x), head_dim):
        a = [max(-ROPE_IN_MAX, min(ROPE_IN_MAX, v)) for v in x[h:h + half]]
        b = [max(-ROPE_IN_MAX, min(ROPE_IN_MAX, v)) for v in x[h + half:h + head_dim]]
        c, s = cos[pos], sin[pos]
        out += [rnd(a[i] * c[i] - b[i] * s[i], 16) for i in range(half)]
        out += [rnd(b[i] * c[i] + a[i] * s[i], 16) for i in range(half)]
    return out


def test_rope_matches_oracle_and_float():
    rng = np.random.default_rng(8)
    hd, heads, ctx, theta = 64, 3, 300, 100000.0
    cos, sin = rope_tables(hd, ctx, theta)
    assert cos.shape == (ctx, hd // 2) and cos[0].tolist() == [65536] * (hd // 2) and np.all(sin[0] == 0)
    pos = np.array([0, 1, 2, 37, 150, 299])
    xr = rng.standard_normal((len(pos), heads * hd)) * 5
    xr[2, 3] = 22552.0
    x = to_vector(xr)
    x[3, :4] = [VEC_MAX >> 2, -(VEC_MAX >> 2), -3, 3]
    y = rope(x, pos, cos, sin, hd)
    for t in range(len(pos)):
        assert y[t].tolist() == rope_oracle([int(v) for v in x[t]], int(pos[t]), cos.tolist(), sin.tolist(), hd)
    assert np.array_equal(y[0], x[0])                               # position 0 is the identity
    # float: HF's rotate_half RoPE; error <= |x| * 2**-16 * sqrt(2) (Q16 tables) + 1 LSB
    inv_freq = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = pos[:, None] * inv_freq[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    xr = from_vector(np.clip(x, -ROPE_IN_MAX, ROPE_IN_MAX)).reshape(len(pos), heads, hd)  # inputs clamp
    a, b = xr[..., :hd // 2], xr[..., hd // 2:]
    ref = np.concatenate([a * c - b * s, b * c + a * s], -1).reshape(len(pos), -1)
    mag = np.concatenate([np.abs(a) + np.abs(b)] * 2, -1).reshape(len(pos), -1)
    assert np.all(np.abs(from_vector(y) - ref) <= mag * 2.0 ** -17 + 1.0 / ONE)


# ---------------------------------------------------------------------------------------------------------
# exp_neg and softmax

def exp_neg_oracle(d):
    """t = (-d * LOG2E_Q) >> 16; n = t >> 20, f = t mod 2**20; 2**-f from EXP2_TABLE at f's top 10 bits,
    interpolated with the low 10 (floor); >> n; 0 when n >= 32."""
    t = (min(-d, EXP_IN_MAX) * LOG2E_Q) >> 16
    n = t >> VEC_FRAC
    f = t & ((1 << VEC_FRAC) - 1)
    i, lo = f >> 10, f & 1023
    t0, t1 = int(EXP2_TABLE[i]), int(EXP2_TABLE[i + 1])
    v = t0 + (((t1 - t0) * lo) >> 10)
    return 0 if n >= 32 else v >> n


def test_exp_neg_matches_oracle():
    rng = np.random.default_rng(9)
    d = [0, -1, -2, -(1 << 10), -ONE, -ONE + 1, -(ONE >> 1), -10 * ONE, -22 * ONE, -23 * ONE,
         -int(32 / math.log2(math.e) * ONE), -(1 << 40), -VEC_MAX]
    d += [-int(v) for v in rng.integers(0, 40 * ONE, 3000)]
    d += [-int(v) for v in rng.integers(0, 1 << 47, 200)]
    got = exp_neg(np.array(d, dtype=np.int64))
    assert got.tolist() == [exp_neg_oracle(v) for v in d]
    assert exp_neg(np.array([0]))[0] == 65536


def test_exp_neg_close_to_float():
    """|exp_neg(d) - 65536 e**d| <= 2e-5 of the value + 1 LSB for all d <= 0 (measured 9.3e-6 + 1: LOG2E_Q's
    rounding and the interpolated table; the final >> n truncates up to one LSB). So within 0.1% relative
    for d > -3 (results above 3200 LSB); further down the Q16 output resolution dominates."""
    d = -np.arange(0, 40 * ONE, 997, dtype=np.int64)
    got = exp_neg(d).astype(np.float64)
    ref = np.exp(from_vector(d)) * 65536
    assert np.all(np.abs(got - ref) <= 2e-5 * ref + 1.0)
    big = d > -3 * ONE
    assert np.all(np.abs(got[big] - ref[big]) <= 1e-3 * ref[big])
    assert np.all(np.diff(got) <= 0)                                          # monotone


def test_exp_neg_very_negative_is_zero():
    """n >= 32 -> 0: everything below ~ -22.2 real underflows Q16 to 0, down to the most negative vector value."""
    d = np.array([-23 * ONE, -1000 * ONE, -(1 << 40), -(1 << 46), -VEC_MAX, -(1 << 47)])
    assert exp_neg(d).tolist() == [0] * len(d)
    assert exp_neg(np.array([-22 * ONE]))[0] == 0                               # 65536 * e**-22 < 1 too
    assert exp_neg(np.array([-11 * ONE]))[0] == exp_neg_oracle(-11 * ONE) > 0


def test_exp_neg_no_int64_wrap_in_softmax_range():
    D = -(-(1 << 64) // LOG2E_Q)                       # ceil(2**64 / LOG2E_Q)
    assert D < 2 * VEC_MAX                             # max - min of two vector-format values reaches it
    assert exp_neg_oracle(-D) == 0
    assert exp_neg(np.array([-D]))[0] == 0


def softmax_oracle(s):
    """e = exp_neg(s - max); z = sum(e); R, sh = recip(z); p = round(e * R >> (RECIP_FRAC + sh - 20))."""
    m = max(s)
    e = [exp_neg_oracle(v - m) for v in s]
    R, sh = recip_oracle(sum(e))
    return [rnd(v * R, RECIP_FRAC + sh - PROB_FRAC) for v in e]


def test_softmax_matches_oracle_sums_to_one_and_close_to_float():
    rng = np.random.default_rng(11)
    rows = [rng.standard_normal(n) * sc for n, sc in ((1, 1), (7, 1), (64, 3), (300, 0.5), (513, 8))]
    rows.append(np.zeros(9))
    rows.append(np.array([5.0, 5.0, -100.0, 5.0]))
    for r in rows:
        s = to_vector(r)[None, :]
        p = softmax(s)
        assert p[0].tolist() == softmax_oracle([int(v) for v in s[0]])
        n = s.shape[1]
        assert abs(int(p.sum()) - (1 << PROB_FRAC)) <= max(n // 2, 2)  # roundings: half an LSB each
        ref = np.exp(r - r.max())
        ref /= ref.sum()
        assert np.abs(p[0] / 2.0 ** PROB_FRAC - ref).max() <= 1e-3 * ref.max() + 2.0 ** -19
    # several heads at once are independent rows
    s = to_vector(rng.standard_normal((3, 10)))
    p = softmax(s)
    for h in range(3):
        assert np.array_equal(p[h], softmax(s[h:h + 1])[0])
    # equal scores share equally; a dominant score takes (almost) everything
    assert len(set(softmax(to_vector(np.zeros((1, 8))))[0].tolist())) == 1
    assert softmax(to_vector(np.array([[0.0, -40.0]])))[0].tolist() == [1 << PROB_FRAC, 0]


# ---------------------------------------------------------------------------------------------------------
# Attention

def test_attention_scores_matches_oracle_and_float():
    rng = np.random.default_rng(12)
    H, P, hd = 3, 6, 64
    G = hd // GROUP
    scale = attn_scale_q(hd)
    assert scale == round(65536 / 8)
    qr = rng.standard_normal((H, hd)) * 3
    kr = rng.standard_normal((H, P, hd)) * 3
    kr[1, 2] *= 1000.0                                           # a large key
    qq, qe = quantize_act(to_vector(qr))
    kq, ke = quantize_act(to_vector(kr))
    qq, qe = qq.reshape(H, G, GROUP), qe.reshape(H, G)
    kq, ke = kq.reshape(H, P, G, GROUP), ke.reshape(H, P, G)
    s = attention_scores(qq, qe, kq, ke, scale)
    assert s.shape == (H, P)
    for h in range(H):
        for p in range(P):
            acc = 0
            for g in range(G):
                dot = sum(int(a) * int(b) for a, b in zip(qq[h, g], kq[h, p, g]))
                acc += shift(dot, int(qe[h, g]) + int(ke[h, p, g]) + ACC_FRAC)
            ref = rnd(sat(rnd(acc, ACC_FRAC - VEC_FRAC)) * scale, 16)
            assert int(s[h, p]) == ref, (h, p)
    # float: q.k / sqrt(hd); the act format keeps 15 bits per group -> within 1e-4 of |q||k|/sqrt(hd)
    ref = np.einsum("hd,hpd->hp", qr, kr) / math.sqrt(hd)
    bound = 1e-4 * np.linalg.norm(qr, axis=1)[:, None] * np.linalg.norm(kr, axis=2) / math.sqrt(hd) + 2.0 / ONE
    assert np.all(np.abs(from_vector(s) - ref) <= bound)


def quantize_oracle(xs, frac):
    """The act format of one group of 32 fixed-point values with ``frac`` fractional bits."""
    m = max(abs(v) for v in xs)
    sh = max(0, m.bit_length() - 15)
    return [max(-32767, min(32767, rnd(v, sh))) for v in xs], sh - frac


def attention_values_oracle(p, vq, ve):
    """Per the docstring: a[h, g, p] = p << (ve + VEC_FRAC) (2*VEC_FRAC fraction bits), zero-padded to whole
    blocks of 32 positions, quantized per block; out = round_vec(sum_blocks floor(sum_p aq * vq * 2**(ae+ACC)))."""
    H, P, G, K = vq.shape
    Pp = -(-P // GROUP) * GROUP
    out = np.zeros((H, G * K), np.int64)
    for h in range(H):
        for g in range(G):
            a = [int(p[h, q]) << (int(ve[h, q, g]) + VEC_FRAC) for q in range(P)] + [0] * (Pp - P)
            blocks = [quantize_oracle(a[b:b + GROUP], 2 * VEC_FRAC) for b in range(0, Pp, GROUP)]
            for j in range(K):
                acc = 0
                for bi, (aq, ae) in enumerate(blocks):
                    dot = sum(aq[k] * int(vq[h, bi * GROUP + k, g, j]) for k in range(GROUP) if bi * GROUP + k < P)
                    acc += shift(dot, ae + ACC_FRAC)
                out[h, g * K + j] = sat(rnd(acc, ACC_FRAC - VEC_FRAC))
    return out


@pytest.mark.parametrize("P", [1, 7, 40])
def test_attention_values_matches_oracle_and_float(P):
    rng = np.random.default_rng(13 + P)
    H, hd = 2, 64
    G = hd // GROUP
    vr = rng.standard_normal((H, P, hd)) * 2
    vr[0, min(3, P - 1), :32] *= 5000.0                          # a large value group
    vq, ve = quantize_act(to_vector(vr))
    vq, ve = vq.reshape(H, P, G, GROUP), ve.reshape(H, P, G)
    p = softmax(to_vector(rng.standard_normal((H, P)) * 2))
    out = attention_values(p, vq, ve)
    assert out.shape == (H, hd)
    assert np.array_equal(out, attention_values_oracle(p, vq, ve))
    # float, with the same Q20 probabilities and the same (dequantized) V: the weights a = p * 2**ve are
    # quantized to 15 bits per block of 32 positions (error <= 2**-14 of the block's largest a, clamp included),
    # plus one accumulator/vector LSB per block and the final rounding
    pf = p / 2.0 ** PROB_FRAC
    vdq = vq * np.ldexp(1.0, ve)[..., None]                      # (H, P, G, 32)
    ref = np.einsum("hp,hpgk->hgk", pf, vdq).reshape(H, hd)
    a = pf[:, :, None] * np.ldexp(1.0, ve)                       # (H, P, G)
    Pp = -(-P // GROUP) * GROUP
    apad = np.zeros((H, Pp, G))
    apad[:, :P] = a
    amax = np.repeat(np.abs(apad).reshape(H, Pp // GROUP, GROUP, G).max(axis=2), GROUP, axis=1)[:, :P]
    bound = np.einsum("hpg,hpgk->hgk", amax * 2.0 ** -14, np.abs(vq).astype(np.float64)).reshape(H, hd)
    bound += (Pp // GROUP + 1) / ONE
    assert np.all(np.abs(from_vector(out) - ref) <= bound)
    # and against the unquantized float V: V's own act-format rounding, 2**-16 of its group's largest |v|
    gmax = np.repeat(np.abs(vr).reshape(H, P, G, GROUP).max(-1), GROUP, axis=-1)
    bound2 = bound + np.einsum("hp,hpd->hd", pf, gmax) * 2.0 ** -15
    assert np.all(np.abs(from_vector(out) - np.einsum("hp,hpd->hd", pf, vr)) <= bound2)
    # relative to the output's scale the error is small: <= 1e-3 of the largest |v| involved
    assert np.abs(from_vector(out) - np.einsum("hp,hpd->hd", pf, vr)).max() <= 1e-3 * np.abs(vr).max()


# ---------------------------------------------------------------------------------------------------------
# sigmoid and SiLU

def sigmoid_oracle(x):
    sh = VEC_FRAC - 6
    lo = -16 << 6
    idx = x >> sh
    frac = x & ((1 << sh) - 1)
    if idx < lo:
        return int(SIG_TABLE[0])
    if idx >= -lo:
        return 1 << 16
    t0, t1 = int(SIG_TABLE[idx - lo]), int(SIG_TABLE[idx - lo + 1])
    return t0 + (((t1 - t0) * frac) >> sh)


def test_sigmoid_matches_oracle_and_float():
    rng = np.random.default_rng(14)
    edges = [0, 1, -1, 16 * ONE - 1, 16 * ONE, -16 * ONE, -16 * ONE - 1, VEC_MAX, -VEC_MAX, (1 << 14) - 1,
             1 << 14, -(1 << 14), 20 * ONE, -20 * ONE]
    x = np.array(edges + [int(v) for v in rng.integers(-20 * ONE, 20 * ONE, 5000)], dtype=np.int64)
    got = sigmoid(x)
    assert got.tolist() == [sigmoid_oracle(int(v)) for v in x]
    ref = 0.5 * (1 + np.tanh(from_vector(x) / 2))
    assert np.abs(got / 65536.0 - ref).max() <= 1e-4
    # saturation outside [-16, 16): exactly 0 and exactly 1.0
    assert sigmoid(np.array([16 * ONE, 17 * ONE, VEC_MAX])).tolist() == [65536] * 3
    assert sigmoid(np.array([-16 * ONE - 1, -17 * ONE, -VEC_MAX])).tolist() == [int(SIG_TABLE[0])] * 3 == [0] * 3
    xs = np.sort(x)
    assert np.all(np.diff(sigmoid(xs)) >= 0)


def silu_mul_oracle(g, u):
    g = max(-SILU_IN_MAX, min(SILU_IN_MAX, g))
    u = max(-SILU_IN_MAX, min(SILU_IN_MAX, u))
    s = rnd(g * sigmoid_oracle(g), 16)
    return sat(rnd(s * u, VEC_FRAC))


def test_silu_mul_matches_oracle_and_float():
    rng = np.random.default_rng(15)
    gr = np.concatenate([rng.standard_normal(3000) * 4, [0, 20, -20, 100, -100, 1000, 2000]])
    ur = np.concatenate([rng.standard_normal(3000) * 4, [5, 5, 5, -50, 50, 2000, -1000]])
    g, u = to_vector(gr), to_vector(ur)
    got = silu_mul(g, u)
    assert got.tolist() == [silu_mul_oracle(int(a), int(b)) for a, b in zip(g, u)]
    ref = from_vector(g) / (1 + np.exp(-from_vector(g))) * from_vector(u)
    # sigmoid within 1e-4 -> silu(g) * u within 1e-4 |g u| (+ rounding)
    assert np.all(np.abs(from_vector(got) - ref)
                  <= 1.2e-4 * np.abs(from_vector(g) * from_vector(u)) + (np.abs(from_vector(u)) + 2) / ONE)


def test_silu_mul_saturates_large_products():
    g = np.array([VEC_MAX, 1 << 40, to_vector(3000.0), -VEC_MAX])
    u = np.array([VEC_MAX, 1 << 40, to_vector(3000.0), VEC_MAX])
    assert silu_mul(g, u).tolist() == [silu_mul_oracle(int(a), int(b)) for a, b in zip(g, u)]


def test_rope_no_overflow_near_vec_max():
    hd = 32
    cos, sin = rope_tables(hd, 2, 10000.0)
    cos[1], sin[1] = 46341, 46341                     # a 45-degree rotation (cos = sin = round(65536/sqrt 2))
    x = np.full((1, hd), VEC_MAX)
    y = rope(x, np.array([1]), cos, sin, hd)
    assert y[0].tolist() == rope_oracle([VEC_MAX] * hd, 1, cos.tolist(), sin.tolist(), hd)
