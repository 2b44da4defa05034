"""B-ROM contents: the export's per-bank bytes -> Migen Memory init lists for a lane configuration; and the
placeholder contents a routed FPGA design is built with before a model is swapped in (boards/rom_swap.py).

The export stores each group of 32 codes as one word (code j at bits j*b); a lane reads macs_per_lane codes
per cycle, so each group becomes beats_per_group consecutive ROM words, low codes first.
"""

import hashlib
from dataclasses import dataclass

import numpy as np

from roma.host.golden.numerics import GROUP


@dataclass
class BankImage:
    codes: list     # ROM words, beats_per_group per group
    scales: list    # per (row, group): dq | mq << 16 (two's complement 16-bit fields)
    rowexp: list    # per row: er (8-bit two's complement)


def bank_image(code_bytes, scale_bytes, exp_bytes, cfg, bits=None):
    bits = bits or cfg.code_bits
    group_bytes = GROUP * bits // 8
    word_bits = cfg.macs_per_lane * bits
    words = []
    for off in range(0, len(code_bytes), group_bytes):
        g = int.from_bytes(code_bytes[off:off + group_bytes], "little")
        mask = (1 << word_bits) - 1
        words += [(g >> (k * word_bits)) & mask for k in range(cfg.beats_per_group)]
    sc = np.frombuffer(scale_bytes, "<u2").reshape(-1, 2).astype(np.int64)
    scales = (sc[:, 0] | (sc[:, 1] << 16)).tolist()
    rowexp = np.frombuffer(exp_bytes, "u1").astype(np.int64).tolist()
    return BankImage(words, scales, rowexp)


def bank_images(layout, cfg, bits=None):
    """From host.export.bank_layout(...) output to one BankImage per lane."""
    codes, scales, exps = layout[:3]
    return [bank_image(c, s, e, cfg, bits) for c, s, e in zip(codes, scales, exps)]


# Placeholders ---------------------------------------------------------------------------------------------

COLUMN = 512                # words per column: the smallest DP16KD depth unit (36-bit mode)


def padded_depth(depth):
    return max(-(-depth // COLUMN), 1) * COLUMN


def from_bits(bits):
    """The ints of a (depth, width) bit matrix."""
    words = [0] * bits.shape[0]
    for lo in range(0, bits.shape[1], 64):
        n = min(64, bits.shape[1] - lo)
        chunk = (bits[:, lo:lo + n].astype(np.uint64) << np.arange(n, dtype=np.uint64)).sum(1, dtype=np.uint64)
        words = [w | (int(c) << lo) for w, c in zip(words, chunk)]
    return words


def placeholder_bits(name, width, depth, seed=1):
    """A ROM's placeholder contents, (depth, width) bits, from a seed and the ROM's name (so each ROM differs)."""
    s = int.from_bytes(hashlib.sha256(f"roma-rom-placeholder:{seed}:{name}".encode()).digest()[:8], "little")
    return np.random.default_rng(s).integers(0, 2, (depth, width), dtype=np.uint8)


def placeholder_words(name, width, depth, seed=1):
    return from_bits(placeholder_bits(name, width, depth, seed))
