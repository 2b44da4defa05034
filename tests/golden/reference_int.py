"""A literal, slow, pure-Python-integer reading of the GEMV definition in numerics.py: the oracle the
fast numpy evaluation is checked against."""

from roma.host.golden.numerics import ACC_FRAC, ACT_BITS, ACT_MAX, GROUP, VEC_FRAC, VEC_MAX


def quantize_group(xs):
    m = max(abs(v) for v in xs)
    sh = max(0, m.bit_length() - (ACT_BITS - 1))
    q = [max(-ACT_MAX, min(ACT_MAX, (v + ((1 << sh) >> 1)) >> sh)) for v in xs]
    return q, sh - VEC_FRAC


def shift(v, k):
    return v << k if k >= 0 else v >> -k


def gemv_int(codes, dq, mq, er, x):
    """codes: list of rows (ints); dq, mq: per row per group; er per row; x: one vector (ints)."""
    groups = [quantize_group(x[g * GROUP:(g + 1) * GROUP]) for g in range(len(x) // GROUP)]
    out = []
    for r, row in enumerate(codes):
        acc = 0
        for g, (qa, e) in enumerate(groups):
            q = row[g * GROUP:(g + 1) * GROUP]
            T = dq[r][g] * sum(a * b for a, b in zip(q, qa)) + mq[r][g] * sum(qa)
            acc += shift(T, e + er[r] + ACC_FRAC)
        s = ACC_FRAC - VEC_FRAC
        y = (acc + (1 << (s - 1))) >> s
        out.append(max(-VEC_MAX, min(VEC_MAX, y)))
    return out
