"""The vector unit's and H-unit's functions, in exact integer arithmetic on the vector format.

Each function names its tables and shifts; the tables are generated here once (float math rounded to integers)
and exported as data, so hardware and firmware read the very same integers the golden model uses.
"""

import math

import numpy as np

from .numerics import (GROUP, VEC_FRAC, bit_length, group_terms_to_vector, pow2, quantize_act, rshift_round,
                       saturate)

# Tables shared by RMSNorm and softmax: 1/sqrt and 1/x on a normalised mantissa ------------------------------
# A positive integer v is normalised to m in [2**(MANT_BITS-2), 2**MANT_BITS) (rsqrt: even shift) or
# [2**(MANT_BITS-1), 2**MANT_BITS) (recip); the table is indexed by m's top bits and linearly interpolated with
# the rest. One table read and one multiply in hardware: no iterative square root or divider.
MANT_BITS = 24
TABLE_BITS = 10                      # index = m >> (MANT_BITS - TABLE_BITS)
INTERP_BITS = MANT_BITS - TABLE_BITS
RSQRT_FRAC = 40                      # RSQRT_TABLE[i] = round(2**40 / sqrt(i * 2**14))
RECIP_FRAC = 47                      # RECIP_TABLE[i] = round(2**47 / (i * 2**14))
_idx = np.arange(1 << TABLE_BITS, dtype=np.float64) * (1 << INTERP_BITS)
_idx[0] = 1.0                        # unused entries (m never has so few bits)
RSQRT_TABLE = np.rint(2.0 ** RSQRT_FRAC / np.sqrt(np.append(_idx, 2.0 ** MANT_BITS))).astype(np.int64)
RECIP_TABLE = np.rint(2.0 ** RECIP_FRAC / np.append(_idx, 2.0 ** MANT_BITS)).astype(np.int64)


def _interp(table, m):
    i = np.right_shift(m, INTERP_BITS)
    f = m & ((1 << INTERP_BITS) - 1)
    t0 = table[i]
    return t0 + np.right_shift((table[i + 1] - t0) * f, INTERP_BITS)


def _normalise(v, even):
    """v >= 1 -> (m, sh) with m = v >> sh (or << -sh) in the table's range; sh even when asked."""
    sh = bit_length(v) - MANT_BITS
    if even:
        sh = sh + (sh & 1)
    m = np.where(sh >= 0, np.right_shift(v, np.maximum(sh, 0)), np.left_shift(v, np.maximum(-sh, 0)))
    return m, sh


def rsqrt_q(v):
    """(R, sh): 1/sqrt(v) ~= R * 2**-(RSQRT_FRAC + sh/2), for integer v >= 1."""
    m, sh = _normalise(np.asarray(v, dtype=np.int64), even=True)
    return _interp(RSQRT_TABLE, m), sh


def recip_q(v):
    """(R, sh): 1/v ~= R * 2**-(RECIP_FRAC + sh), for integer v >= 1."""
    m, sh = _normalise(np.asarray(v, dtype=np.int64), even=False)
    return _interp(RECIP_TABLE, m), sh


# RMSNorm ------------------------------------------------------------------------------------------------
NORM_IN_BITS = 24      # the input is pre-shifted so its largest element has at most 24 bits
GAMMA_FRAC = 16        # norm weights as Q16
MEAN_FRAC = 32         # 1/n as round(2**32 / n)


def gamma_q(gamma):
    return np.rint(np.asarray(gamma, dtype=np.float64) * (1 << GAMMA_FRAC)).astype(np.int64)


def eps_q(eps):
    """eps in units of the squared vector format (2**-2*VEC_FRAC)."""
    return int(round(eps * (1 << (2 * VEC_FRAC))))


def rmsnorm(x, gq, epsq):
    """x (ntok, n) vector format; gq norm weights (Q16); epsq from eps_q. Returns the vector format.

    e  = max(0, bitlen(max|x|) - 24); xs = x >> e              (floor)
    v  = max(1, ((sum(xs**2) * round(2**32 / n)) >> 32) + (epsq >> 2e))
    R, sh = rsqrt_q(v)                                          (table, see above)
    y  = round(xs * R >> (RSQRT_FRAC - VEC_FRAC + sh/2));  out = round(y * gq >> 16)
    """
    x = np.asarray(x, dtype=np.int64)
    n = x.shape[-1]
    n_recip = int(round((1 << MEAN_FRAC) / n))
    e = np.maximum(bit_length(np.abs(x).max(axis=-1)) - NORM_IN_BITS, 0)          # (ntok,)
    xs = np.right_shift(x, e[:, None])
    ss = (xs * xs).sum(axis=-1)                    # < 2**48 * n: exact in int64 for n < 2**15
    # ss * n_recip needs up to 2**91: Python integers per token (one multiply per vector in hardware)
    v = np.array([max(1, ((int(a) * n_recip) >> MEAN_FRAC) + (epsq >> (2 * int(b)))) for a, b in zip(ss, e)],
                 dtype=np.int64)
    R, sh = rsqrt_q(v)
    y = rshift_round(xs * R[:, None], (RSQRT_FRAC - VEC_FRAC + sh // 2)[:, None])
    return saturate(rshift_round(y * gq, GAMMA_FRAC))


# RoPE ---------------------------------------------------------------------------------------------------
ROPE_FRAC = 16
ROPE_IN_MAX = (1 << 44) - 1   # inputs clamped so a*cos - b*sin stays within 62 bits (|q|, |k| < 16.7M real)


def rope_tables(head_dim, context, theta):
    """cos and sin (context, head_dim // 2) as Q16 integers (HF's default RoPE, rotate_half layout)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = np.arange(context, dtype=np.float64)[:, None] * inv_freq[None, :]
    return (np.rint(np.cos(ang) * (1 << ROPE_FRAC)).astype(np.int64),
            np.rint(np.sin(ang) * (1 << ROPE_FRAC)).astype(np.int64))


def rope(x, pos, cos, sin, head_dim):
    """x (ntok, heads * head_dim) vector format; pos (ntok,) positions. Rotates pairs (i, i + head_dim/2).

    a, b = clamp(x, +-ROPE_IN_MAX); out = round((a*cos - b*sin) >> 16), round((b*cos + a*sin) >> 16).
    """
    ntok = x.shape[0]
    h = np.clip(x, -ROPE_IN_MAX, ROPE_IN_MAX).reshape(ntok, -1, head_dim)
    half = head_dim // 2
    a, b = h[..., :half], h[..., half:]
    c = cos[pos][:, None, :]
    s = sin[pos][:, None, :]
    out = np.concatenate([rshift_round(a * c - b * s, ROPE_FRAC), rshift_round(b * c + a * s, ROPE_FRAC)], -1)
    return out.reshape(x.shape)


# exp2 for softmax and sampling -----------------------------------------------------------------------------
EXP_FRAC = 16          # exp results as Q16 (1.0 = 65536)
EXP_TABLE_BITS = 10    # 2**-f sampled at 1024 points of [0, 1)
LOG2E_Q = int(round(math.log2(math.e) * (1 << 16)))
EXP_IN_MAX = 64 << VEC_FRAC   # exp(-64) is 0 in Q16 already; clamping keeps -d * LOG2E_Q within 44 bits
EXP2_TABLE = np.rint(2.0 ** (-np.arange((1 << EXP_TABLE_BITS) + 1) / (1 << EXP_TABLE_BITS)) * (1 << EXP_FRAC)
                     ).astype(np.int64)


def exp_neg(d):
    """exp(d) for d <= 0 in the vector format -> Q16 integers.

    t = (min(-d, EXP_IN_MAX) * LOG2E_Q) >> 16 (log2 units, VEC_FRAC fraction); n, f = integer and fraction of t;
    2**-f by EXP2_TABLE (1025 entries) indexed by f's top 10 bits, linearly interpolated with the low 10;
    result = that >> n (0 when n >= 32).
    """
    t = np.right_shift(np.minimum(-np.asarray(d, dtype=np.int64), EXP_IN_MAX) * LOG2E_Q, 16)
    n = np.right_shift(t, VEC_FRAC)
    low = VEC_FRAC - EXP_TABLE_BITS
    f = t & ((1 << VEC_FRAC) - 1)
    i = np.right_shift(f, low)
    t0 = EXP2_TABLE[i]
    v = t0 + np.right_shift((EXP2_TABLE[i + 1] - t0) * (f & ((1 << low) - 1)), low)
    return np.where(n >= 32, 0, np.right_shift(v, np.minimum(n, 63)))


# Attention -----------------------------------------------------------------------------------------------
PROB_FRAC = 20         # softmax probabilities in Q20


def attn_scale_q(head_dim):
    return int(round((1 << 16) / math.sqrt(head_dim)))


def attention_scores(qq, qe, kq, ke, scale_q):
    """q in act format (heads, hd) mantissas + (heads, hd/32) exponents; K cache (pos, kvheads*, ...).

    qq (H, G, 32), qe (H, G); kq (H, P, G, 32), ke (H, P, G) with kv heads already repeated to H.
    score = round_vec(sum_g floor(P_g * 2**(qe + ke + ACC))) * scale_q >> 16 (rounded).
    """
    P = np.einsum("hgk,hpgk->hpg", qq.astype(np.float64), kq.astype(np.float64))   # |P| < 2**35: exact
    exp = qe[:, None, :] + ke
    s = group_terms_to_vector(P, pow2(exp), axis=-1)                              # (H, P)
    return rshift_round(s * scale_q, 16)


def softmax(scores):
    """scores (H, P) vector format -> probabilities (H, P) in Q20.

    e = exp_neg(s - max) (Q16); z = sum(e) >= 2**16; R, sh = recip_q(z); p = round(e * R >> (RECIP_FRAC + sh - 20)).
    """
    d = scores - scores.max(axis=-1, keepdims=True)
    e = exp_neg(d)
    z = e.sum(axis=-1, keepdims=True)
    R, sh = recip_q(z)
    return rshift_round(e * R, RECIP_FRAC + sh - PROB_FRAC)


def attention_values(p, vq, ve):
    """p (H, P) Q20; vq (H, P, G, 32) mantissas, ve (H, P, G) -> (H, G*32) vector format.

    The weighted sum is the GEMV primitive with V's mantissas as int16 weights (rows: the head's dims,
    columns: positions) and, as the activation, the probabilities scaled by V's exponents:
      a[h, g, p] = p[h, p] << (ve[h, p, g] + VEC_FRAC)        (fixed point with 2*VEC_FRAC fraction bits)
      (aq, ae)   = quantize_act(a, frac=2*VEC_FRAC)            per block of 32 positions, zero-padded
      out[h, g*32 + j] = round_vec(sum_blocks floor(sum_p aq * vq[h, p, g, j] * 2**(ae + ACC)))
    """
    H, P, G, K = vq.shape
    Pp = -(-P // GROUP) * GROUP
    a = np.zeros((H, G, Pp), np.int64)
    a[:, :, :P] = np.left_shift(p[:, :, None], ve + VEC_FRAC).transpose(0, 2, 1)
    aq, ae = quantize_act(a, frac=2 * VEC_FRAC)                           # (H, G, Pp), (H, G, Pp/32)
    v = np.zeros((H, G, Pp, K), np.float64)
    v[:, :, :P] = vq.transpose(0, 2, 1, 3)
    blocks = aq.reshape(H, G, Pp // GROUP, GROUP).astype(np.float64)
    T = np.einsum("hgbk,hgbkj->hgjb", blocks, v.reshape(H, G, Pp // GROUP, GROUP, K))  # |.| < 2**35: exact
    out = group_terms_to_vector(T, pow2(ae)[:, :, None, :], axis=-1)      # (H, G, K)
    return out.reshape(H, G * K)


# SiLU -----------------------------------------------------------------------------------------------------
SIG_FRAC = 16
SIG_STEP_BITS = 6      # table step 1/64
SIG_RANGE = 16         # covers [-16, 16)
SIG_TABLE = np.rint((1 << SIG_FRAC) / (1.0 + np.exp(-np.arange(-SIG_RANGE << SIG_STEP_BITS,
                                                                (SIG_RANGE << SIG_STEP_BITS) + 1)
                                                    / (1 << SIG_STEP_BITS)))).astype(np.int64)


def sigmoid(x):
    """x vector format -> Q16, linear interpolation in SIG_TABLE; saturates outside [-16, 16)."""
    shift = VEC_FRAC - SIG_STEP_BITS
    lo = -SIG_RANGE << SIG_STEP_BITS
    idx = np.right_shift(x, shift)
    frac = x & ((1 << shift) - 1)
    inside = (idx >= lo) & (idx < -lo)
    i = np.clip(idx - lo, 0, len(SIG_TABLE) - 2)
    t0, t1 = SIG_TABLE[i], SIG_TABLE[i + 1]
    val = t0 + np.right_shift((t1 - t0) * frac, shift)
    return np.where(inside, val, np.where(idx < lo, SIG_TABLE[0], 1 << SIG_FRAC))


SILU_IN_MAX = (1 << (VEC_FRAC + 11)) - 1   # gate and up clamped to +-2048 real: s * u stays within 62 bits


def silu_mul(g, u):
    """silu(g) * u, both vector format, each first clamped to +-SILU_IN_MAX:
    s = round((g * sigmoid(g)) >> 16); out = round((s * u) >> VEC_FRAC)."""
    g = np.clip(g, -SILU_IN_MAX, SILU_IN_MAX)
    u = np.clip(u, -SILU_IN_MAX, SILU_IN_MAX)
    s = rshift_round(g * sigmoid(g), SIG_FRAC)
    return saturate(rshift_round(s * u, VEC_FRAC))
