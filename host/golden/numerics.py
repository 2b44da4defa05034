"""Number formats and the integer primitives every unit is built from.

This file is the specification of the accelerator's arithmetic. Gateware and firmware reproduce each function
bit for bit; the constants here are the single source that the C headers and the gateware parameters are
generated from. Why these widths: ../../README.md#numerics (measured on SmolLM2-135M).

Formats
- vector  : signed fixed point, VEC_FRAC fractional bits, saturated to VEC_BITS (residual stream, q/k/v,
            norms' outputs, GEMV outputs). SmolLM2's residual reaches 22,552, so 48 bits with 20 fractional.
- act     : block floating point for GEMV inputs: per group of 32, int16 mantissas in [-ACT_MAX, ACT_MAX]
            and one exponent ``e`` (value = mantissa * 2**e). 16 bits keep top-1 agreement at 100% where int8
            loses 4 points (DESIGN.md section 4).
- weights : unsigned codes q with integer scale dq and offset mq per group and a power-of-two exponent per row:
            w = (dq * q + mq) * 2**er.
- GEMV    : per group T = dq * sum(q * qa) + mq * sum(qa), scaled by 2**(e + er + ACC_FRAC) and floored into an
            accumulator with ACC_FRAC fractional bits; the row's sum is rounded to the vector format.

All shifts are arithmetic. ``floor`` means toward minus infinity (an arithmetic right shift); ``round`` means
half up: (x + 2**(s-1)) >> s.
"""

import numpy as np

GROUP = 32
VEC_FRAC = 20
VEC_BITS = 48
VEC_MAX = (1 << (VEC_BITS - 1)) - 1
ACT_BITS = 16
ACT_MAX = (1 << (ACT_BITS - 1)) - 1
SCALE_BITS = 16            # dq, mq: signed 16-bit integers
SCALE_MAX = (1 << (SCALE_BITS - 1)) - 1
ACC_FRAC = 28              # accumulator LSB is 2**-28
ACC_BITS = 64


def rshift_round(x, s):
    """Round-half-up arithmetic right shift by s >= 0 (elementwise; s may be an array)."""
    return np.right_shift(x + np.right_shift(np.left_shift(np.int64(1), s), 1), s)


def saturate(x, bits=VEC_BITS):
    lim = (1 << (bits - 1)) - 1
    return np.minimum(np.maximum(x, -lim), lim)


def bit_length(x):
    """Number of bits of |x| (0 for 0), elementwise; exact through frexp for |x| < 2**53."""
    return np.frexp(np.abs(np.asarray(x, dtype=np.int64)).astype(np.float64))[1].astype(np.int64)


def quantize_act(x, frac=VEC_FRAC):
    """Fixed-point values (..., n), n a multiple of 32 -> (mantissas int16-valued int64, exponents per group).

    Per group: sh = max(0, bitlen(max|x|) - 15); mantissa = clamp(round(x >> sh)); exponent = sh - frac
    (frac: the input's fractional bits, VEC_FRAC for vectors).
    """
    x = np.asarray(x, dtype=np.int64)
    g = x.reshape(*x.shape[:-1], x.shape[-1] // GROUP, GROUP)
    sh = np.maximum(bit_length(np.abs(g).max(axis=-1)) - (ACT_BITS - 1), 0)
    qa = np.minimum(np.maximum(rshift_round(g, sh[..., None]), -ACT_MAX), ACT_MAX)
    return qa.reshape(x.shape), sh - frac


def group_terms_to_vector(T, exp, axis=-1):
    """Sum over groups (along ``axis``) of floor(T * 2**(exp + ACC_FRAC)), rounded to the vector format.

    T and exp broadcast; exp may be given as the power of two itself (a float array, see pow2). Exact in
    float64: |T| < 2**53, scaling by a power of two and flooring are exact, and the partial sums stay below
    2**53 (checked), so numpy reproduces the integer definition without integer matmuls.
    """
    factor = exp if np.asarray(exp).dtype.kind == "f" else pow2(exp)
    scaled = np.multiply(T, factor)
    np.floor(scaled, out=scaled)
    if scaled.size and np.abs(scaled).max() * scaled.shape[axis] >= 2.0 ** 53:
        raise OverflowError("accumulator exceeds 2**53: the float64 evaluation would not be exact")
    return accumulator_to_vector(scaled.sum(axis=axis))


def accumulator_to_vector(acc):
    """Accumulator (ACC_FRAC fractional bits, integer-valued) -> vector format, rounded and saturated."""
    return saturate(rshift_round(acc.astype(np.int64), ACC_FRAC - VEC_FRAC))


def pow2(exp, extra=ACC_FRAC):
    """2**(exp + extra) as float64 (exact)."""
    return np.ldexp(1.0, np.asarray(exp, dtype=np.int64) + extra)


def to_vector(values_real):
    """Float -> vector format (used only for constants and test stimulus, never in the decode path)."""
    v = np.round(np.asarray(values_real, dtype=np.float64) * (1 << VEC_FRAC))
    return np.clip(v, -VEC_MAX, VEC_MAX).astype(np.int64)


def from_vector(x):
    return np.asarray(x, dtype=np.float64) / (1 << VEC_FRAC)
