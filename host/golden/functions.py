"""The vector unit's and H-unit's functions, in exact integer arithmetic on the vector format.

Each function names its tables and shifts; the tables are generated here once (float math rounded to integers)
and exported as data, so hardware and firmware read the very same integers the golden model uses.
"""

import math

import numpy as np

from .numerics import (ACC_FRAC, VEC_FRAC, bit_length, group_terms_to_vector, pow2, rshift_round,
                       saturate)

# RMSNorm ------------------------------------------------------------------------------------------------
NORM_IN_BITS = 24      # the input is pre-shifted so its largest element has at most 24 bits
NORM_INV_FRAC = 24     # extra fractional bits of the reciprocal
GAMMA_FRAC = 16        # norm weights as Q16


def gamma_q(gamma):
    return np.rint(np.asarray(gamma, dtype=np.float64) * (1 << GAMMA_FRAC)).astype(np.int64)


def eps_q(eps):
    """eps in units of the squared vector format (2**-2*VEC_FRAC)."""
    return int(round(eps * (1 << (2 * VEC_FRAC))))


def rmsnorm(x, gq, epsq):
    """x (ntok, n) vector format; gq norm weights (Q16); epsq from eps_q. Returns the vector format.

    e = max(0, bitlen(max|x|) - 24); xs = x >> e; ss = sum(xs**2); v = ss // n + (epsq >> 2e);
    r = isqrt(v << 32); inv = 2**(16 + VEC_FRAC + 24) // r; y = ((xs * inv) >> 24) * gq >> 16 (rounded).
    """
    x = np.asarray(x, dtype=np.int64)
    n = x.shape[-1]
    out = np.empty_like(x)
    for t in range(x.shape[0]):
        e = max(0, int(bit_length(np.abs(x[t]).max())) - NORM_IN_BITS)
        xs = x[t] >> e
        ss = int(np.dot(xs, xs))          # < 2**48 * n: exact in int64 for n < 2**15
        v = ss // n + (epsq >> (2 * e))
        r = math.isqrt(v << 32)
        inv = (1 << (16 + VEC_FRAC + NORM_INV_FRAC)) // max(r, 1)
        y = rshift_round(xs * inv, NORM_INV_FRAC)
        out[t] = rshift_round(y * gq, GAMMA_FRAC)
    return saturate(out)


# RoPE ---------------------------------------------------------------------------------------------------
ROPE_FRAC = 16


def rope_tables(head_dim, context, theta):
    """cos and sin (context, head_dim // 2) as Q16 integers (HF's default RoPE, rotate_half layout)."""
    inv_freq = 1.0 / (theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
    ang = np.arange(context, dtype=np.float64)[:, None] * inv_freq[None, :]
    return (np.rint(np.cos(ang) * (1 << ROPE_FRAC)).astype(np.int64),
            np.rint(np.sin(ang) * (1 << ROPE_FRAC)).astype(np.int64))


def rope(x, pos, cos, sin, head_dim):
    """x (ntok, heads * head_dim) vector format; pos (ntok,) positions. Rotates pairs (i, i + head_dim/2)."""
    ntok = x.shape[0]
    h = x.reshape(ntok, -1, head_dim)
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
EXP2_TABLE = np.rint(2.0 ** (-np.arange(1 << EXP_TABLE_BITS) / (1 << EXP_TABLE_BITS)) * (1 << EXP_FRAC)
                     ).astype(np.int64)


def exp_neg(d):
    """exp(d) for d <= 0 in the vector format -> Q16 integers.

    t = -(d * LOG2E) >> 16 (log2 units, VEC_FRAC fraction); n, f = integer and fraction of t;
    result = EXP2_TABLE[f >> (VEC_FRAC - 10)] >> n (0 when n >= 32).
    """
    t = np.right_shift(-np.asarray(d, dtype=np.int64) * LOG2E_Q, 16)
    n = np.right_shift(t, VEC_FRAC)
    f = np.right_shift(t & ((1 << VEC_FRAC) - 1), VEC_FRAC - EXP_TABLE_BITS)
    return np.where(n >= 32, 0, np.right_shift(EXP2_TABLE[f], np.minimum(n, 63)))


# Attention -----------------------------------------------------------------------------------------------
PROB_FRAC = 20         # softmax probabilities in Q20
RECIP_BITS = 48


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
    """scores (H, P) vector format -> probabilities (H, P) in Q20 (exp via EXP2_TABLE, one reciprocal)."""
    d = scores - scores.max(axis=-1, keepdims=True)
    e = exp_neg(d)
    z = e.sum(axis=-1, keepdims=True)
    recip = np.right_shift(np.int64(1) << RECIP_BITS, 0) // z
    return np.right_shift(e * recip, RECIP_BITS - PROB_FRAC)


def attention_values(p, vq, ve):
    """p (H, P) Q20; vq (H, P, G, 32) mantissas, ve (H, P, G) -> (H, G*32) vector format.

    out[h, j] = round_vec(sum_p floor(p * vq * 2**(ve + ACC - PROB_FRAC))).
    """
    H, P, G, K = vq.shape
    prod = p[:, :, None, None].astype(np.float64) * vq                      # |.| < 2**36: exact
    factor = pow2(ve - PROB_FRAC)[:, :, :, None]
    out = group_terms_to_vector(prod, factor, axis=1)                      # sum over positions
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


def silu_mul(g, u):
    """silu(g) * u, both vector format: ((g * sigmoid(g)) >> 16) * u >> VEC_FRAC, rounded."""
    s = rshift_round(g * sigmoid(g), SIG_FRAC)
    return saturate(rshift_round(s * u, VEC_FRAC))
