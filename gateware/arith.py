"""Small Migen building blocks for the golden model's integer primitives (host/golden/numerics.py)."""

from migen import *
from migen.fhdl.bitcontainer import value_bits_sign


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
    """Statements setting `out` to the bit length of the non-negative x[:width] (0 for 0): the highest set bit's
    index found by halves (a mux tree log2(width) deep, not a priority chain width long), plus one."""
    n = 1 << max(1, (width - 1).bit_length())
    bits = Cat(x[:width], Replicate(0, n - width)) if n > width else x[:width]

    def msb(lo, size):                  # (any bit set, index of the highest set bit) of bits[lo:lo + size]
        if size == 2:
            return bits[lo] | bits[lo + 1], bits[lo + 1]
        (nzl, il), (nzh, ih) = msb(lo, size // 2), msb(lo + size // 2, size // 2)
        return nzl | nzh, Mux(nzh, Cat(ih, 1), Cat(il, 0))
    nz, idx = msb(0, n)
    return [out.eq(Mux(nz, idx + 1, 0))]


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


# Products in two stages -----------------------------------------------------------------------------------
# An ECP5 MULT18X18D multiplies 18-bit signed operands; yosys splits a wider product over several of them and
# sums the pieces in LUTs and carry chains, all in the cycle of the product: 30-40 ns for the vector unit's
# 45 x 31-bit products. Split by hand instead, one multiplier per pair of pieces, their products registered,
# the sum in the next stage.
PIECE = 17          # an unsigned 17-bit piece, or a signed top piece of at most 18 bits, fits one multiplier


def _pieces(x):
    """(piece, shift) of x from the bottom: unsigned PIECE-bit pieces and a top piece (signed if x is), each
    in a signed signal (Migen prints a slice of a signed signal as signed, Verilog takes it as unsigned: a
    product with a slice for operand would be unsigned), and the statements that fill them."""
    if isinstance(x, int):
        assert x >= 0
        n = max(1, x.bit_length())
        return [(Constant((x >> lo) & ((1 << PIECE) - 1), min(PIECE, n - lo)), lo) for lo in range(0, n, PIECE)], []
    n, signed = value_bits_sign(x)
    top = PIECE + 1 if signed else PIECE
    out, stmts, lo = [], [], 0
    while True:
        last = n - lo <= top
        width = n - lo if last else PIECE
        piece = Signal((width + (0 if last and signed else 1), True))
        stmts.append(piece.eq(x[lo:lo + width]))
        out.append((piece, lo))
        if last:
            return out, stmts
        lo += PIECE


class PipelinedProduct(Module):
    """a * b over two stages: the pieces' products load while `en` (one MULT18X18D each); `value`, their sum,
    is an expression on those registers for the next stage to load. With registered=False the pieces are
    combinational (the same sum, in the stage of its operands)."""

    def __init__(self, a, b, en, registered=True):
        (pa, sa), (pb, sb) = _pieces(a), _pieces(b)
        self.comb += sa + sb
        terms = []
        for xa, sa in pa:
            for xb, sb in pb:
                p = Signal((len(xa) + len(xb), True))
                if registered:
                    self.sync += If(en, p.eq(xa * xb))
                else:
                    self.comb += p.eq(xa * xb)
                terms.append(p << (sa + sb) if sa + sb else p)
        # (a signal as wide as the product: a Verilog sum is only as wide as its context)
        width = sum(v.bit_length() + 1 if isinstance(v, int) else value_bits_sign(v)[0] for v in (a, b))
        self.value = Signal((width + 1, True))
        self.comb += self.value.eq(tree(lambda p, q: p + q, terms))
