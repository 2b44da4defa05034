"""Small Migen building blocks for the golden model's integer primitives (host/golden/numerics.py)."""

from migen import *


def log2_exact(n):
    """log2 of a power of two (an error otherwise): the shift for a constant multiply or divide."""
    assert n & (n - 1) == 0, f"{n} is not a power of two"
    return n.bit_length() - 1


def rshift_round(x, s):
    """Round-half-up arithmetic right shift by a constant s >= 0."""
    return x if s == 0 else (x + (1 << (s - 1))) >> s


def rshift_round_var(x, s, width):
    """Round-half-up arithmetic right shift by a signal s >= 0: (x + ((1 << s) >> 1)) >> s."""
    half = Signal(width)
    return [half.eq((1 << s) >> 1)], (x + half) >> s


def clamp(x, lo, hi):
    return Mux(x > hi, hi, Mux(x < lo, lo, x))


def saturate(x, bits):
    lim = (1 << (bits - 1)) - 1
    return clamp(x, -lim, lim)


def abs_(x):
    return Mux(x < 0, -x, x)


def bit_length(x, width, out):
    """Statements setting `out` to the bit length of the non-negative x (0 for 0): the highest set bit wins."""
    return [out.eq(0)] + [If(x[i], out.eq(i + 1)) for i in range(width)]


def tree(op, items):
    """A balanced reduction tree (max, sum) over a list of expressions."""
    items = list(items)
    while len(items) > 1:
        nxt = [op(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]
        if len(items) % 2:
            nxt.append(items[-1])
        items = nxt
    return items[0]


def max_(a, b):
    return Mux(a > b, a, b)
