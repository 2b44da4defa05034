"""Packing vectors of signed integers into wide memory words and back (element j at bits j*bits)."""

from roma.host.golden.numerics import GROUP, VEC_BITS


def pack(vals, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * j) for j, v in enumerate(vals))


def unpack(word, bits=VEC_BITS, n=GROUP, signed=True):
    out = []
    for j in range(n):
        v = (word >> (bits * j)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out
