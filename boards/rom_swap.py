"""ROM swap without synthesis: another model's B-ROM words into an already routed design, in seconds.

The routed design is built once with placeholder ROM contents: seeded pseudo-random words, so that every
512-word bit column of every ROM is a unique 512-bit pattern (and no column looks constant to yosys, which
could otherwise trim it). nextpnr-ecp5's textual config (--textcfg, ecppack's input) holds each DP16KD's initial
contents as a `.bram_init` section; locate() finds every placeholder column there, swap_config() writes the new
model's columns in their place, and ecppack makes the .bit. check_config() reads the words back out of a config
(also one unpacked from a .bit by ecpunpack) and compares them with the export: the proof of a swap.

This is prjtrellis `ecpbram`'s method (the same six DP16KD data layouts, the same 512-bit columns), done in
Python rather than by calling ecpbram, because ecpbram
  - takes one memory per call (one hex file pair), reloading the chip database each time: an accelerator has
    three ROMs per lane and unit, so tens of calls;
  - needs depths that are multiples of 512 and silently leaves a column it cannot find unchanged (it reports
    nothing), where a swap must fail loudly if any word did not land;
  - gives no way to read contents back, which the check needs anyway.
Depths are padded to a multiple of 512 (padded_depth): whole columns, so every column is a full random pattern.
That costs no block RAM (every DP16KD shape is a multiple of 512 deep) and the padding words are never read.
"""

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from roma.gateware.rom_image import COLUMN, from_bits, padded_depth, placeholder_bits, placeholder_words
from roma.host.errors import RomaError

FORMAT = 1
INIT_WORDS = 2048           # a DP16KD's .bram_init: 2048 9-bit words (16 Kbit of data, 2 Kbit of parity)
# DP16KD data layouts as ecpbram reads them: (data width W, bits used per 9-bit init word, columns of 512 words)
MODES = ((1, 8, 32), (2, 8, 32), (4, 8, 32), (9, 9, 36), (18, 9, 36), (36, 9, 36))


# Words <-> bit matrices -------------------------------------------------------------------------------------

def to_bits(words, width, depth):
    """(depth, width) uint8 bits of `words` (ints, LSB first), zero-padded to depth."""
    if len(words) > depth:
        raise RomaError(f"{len(words)} words do not fit a ROM {depth} deep")
    out = np.zeros((depth, width), np.uint8)
    for lo in range(0, width, 64):          # 64-bit chunks: numpy has no wider integers
        n = min(64, width - lo)
        chunk = np.array([(w >> lo) & ((1 << n) - 1) for w in words], np.uint64)
        out[:len(words), lo:lo + n] = (chunk[:, None] >> np.arange(n, dtype=np.uint64)) & 1
    return out


# The .config's block RAM contents ---------------------------------------------------------------------------

_BRAM = re.compile(r"^\.bram_init (\S+)\n((?:[0-9a-fA-F]{3}[ \n])+)", re.M)


def read_brams(text):
    """{DP16KD id: its 2048 9-bit init words} of a nextpnr-ecp5 textual config."""
    out = {}
    for m in _BRAM.finditer(text):
        words = np.array([int(v, 16) for v in m.group(2).split()], np.uint16)
        if len(words) != INIT_WORDS:
            raise RomaError(f".bram_init {m.group(1)}: {len(words)} words, expected {INIT_WORDS}")
        out[m.group(1)] = words
    return out


def _format_init(words):
    return "".join(" ".join(f"{v:03x}" for v in words[i:i + 8]) + "\n" for i in range(0, len(words), 8))


def write_brams(text, brams):
    """The config with the given DP16KDs' init words replaced (the rest of the text unchanged)."""
    return _BRAM.sub(lambda m: f".bram_init {m.group(1)}\n" + _format_init(brams[m.group(1)])
                     if m.group(1) in brams else m.group(0), text)


def _flat_bits(init):
    """A DP16KD's init as 18432 bits, 9 per init word."""
    return ((init[:, None] >> np.arange(9, dtype=np.uint16)) & 1).astype(np.uint8).reshape(-1)


def _init_words(flat):
    return (flat.reshape(-1, 9).astype(np.uint16) << np.arange(9, dtype=np.uint16)).sum(1).astype(np.uint16)


def _mode_index():
    """Per mode, (columns, 512) indices into the flat bits: where column j's word k lives (ecpbram's formula)."""
    out = []
    for W, NW, B in MODES:
        j, k = np.arange(B)[:, None], np.arange(COLUMN)[None, :]
        bn = k * W + j % W + (j // W) * COLUMN * W
        out.append((bn // NW) * 9 + bn % NW)
    return out


MODE_INDEX = _mode_index()


# Locating the placeholders ----------------------------------------------------------------------------------

@dataclass
class RomMap:
    """Where each ROM's columns live in the routed design: roms {name: (width, depth)}, places {(name, bit,
    block): [(DP16KD id, mode, column), ...]} (a ROM copied for several read ports has several places)."""
    roms: dict
    places: dict = field(default_factory=dict)

    def to_json(self):
        return json.dumps({"format": FORMAT, "roms": {n: list(v) for n, v in sorted(self.roms.items())},
                           "places": [[n, b, k, p] for (n, b, k), p in sorted(self.places.items())]})

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        if d.get("format") != FORMAT:
            raise RomaError(f"ROM map format {d.get('format')}, expected {FORMAT}: rebuild")
        return cls({n: tuple(v) for n, v in d["roms"].items()},
                   {(n, b, k): [tuple(x) for x in p] for n, b, k, p in d["places"]})


def _columns(bits):
    """{(bit, block): packed 512-bit column} of a (depth, width) bit matrix."""
    depth, width = bits.shape
    return {(b, k): np.packbits(bits[k * COLUMN:(k + 1) * COLUMN, b]).tobytes()
            for b in range(width) for k in range(depth // COLUMN)}


def locate(text, placeholders):
    """The RomMap of a config built with placeholders {name: (depth, width) bits}. Raises RomaError when a
    column is ambiguous or missing (a ROM yosys put in logic, or not the placeholder build)."""
    pattern = {}
    for name, bits in placeholders.items():
        if bits.shape[0] % COLUMN:
            raise RomaError(f"ROM {name}: depth {bits.shape[0]} is not a multiple of {COLUMN} (padded_depth)")
        for (b, k), col in _columns(bits).items():
            if col in pattern or not any(col):
                raise RomaError(f"ROM {name}: column {b} of block {k} is not unique; another placeholder seed")
            pattern[col] = (name, b, k)
    rmap = RomMap({n: (bits.shape[1], bits.shape[0]) for n, bits in placeholders.items()})
    for bram, init in read_brams(text).items():
        flat = _flat_bits(init)
        for mode, index in enumerate(MODE_INDEX):
            for j, col in enumerate(np.packbits(flat[index], axis=1)):
                hit = pattern.get(col.tobytes())
                if hit:
                    rmap.places.setdefault(hit, []).append((bram, mode, j))
    missing = {}
    for col, (name, b, k) in pattern.items():
        if (name, b, k) not in rmap.places:
            missing[name] = missing.get(name, 0) + 1
    if missing:
        raise RomaError("ROM columns not found in block RAM (a ROM mapped to logic or LUT RAM cannot be swapped): "
                        + ", ".join(f"{n} {c} of {rmap.roms[n][0] * rmap.roms[n][1] // COLUMN}"
                                    for n, c in sorted(missing.items())))
    return rmap


# Swap and check ---------------------------------------------------------------------------------------------

def swap_config(text, rmap, contents):
    """The config with each ROM's words replaced by contents {name: words} (every ROM of the map)."""
    if set(contents) != set(rmap.roms):
        raise RomaError(f"contents for {sorted(contents)}, the design has ROMs {sorted(rmap.roms)}")
    brams = read_brams(text)
    flats = {n: _flat_bits(v) for n, v in brams.items()}
    for name, (width, depth) in rmap.roms.items():
        if any(w >> width or w < 0 for w in contents[name]):
            raise RomaError(f"ROM {name}: a word outside its {width} bits (a model of another shape than the "
                            "routed design's?)")
        bits = to_bits(contents[name], width, depth)
        for b in range(width):
            for k in range(depth // COLUMN):
                col = bits[k * COLUMN:(k + 1) * COLUMN, b]
                for bram, mode, j in rmap.places[(name, b, k)]:
                    flats[bram][MODE_INDEX[mode][j]] = col
    touched = {bram for places in rmap.places.values() for bram, _, _ in places}
    return write_brams(text, {n: _init_words(flats[n]) for n in touched})


def read_roms(text, rmap):
    """{name: (depth, width) bits} read back out of a config at the map's places (the first of each)."""
    flats = {n: _flat_bits(v) for n, v in read_brams(text).items()}
    out = {}
    for name, (width, depth) in rmap.roms.items():
        bits = np.zeros((depth, width), np.uint8)
        for b in range(width):
            for k in range(depth // COLUMN):
                bram, mode, j = rmap.places[(name, b, k)][0]
                bits[k * COLUMN:(k + 1) * COLUMN, b] = flats[bram][MODE_INDEX[mode][j]]
        out[name] = bits
    return out


def check_config(text, rmap, contents):
    """The proof of a swap: every copy of every ROM in the config holds exactly `contents` {name: words}
    (zero padding included). Returns a list of mismatches, empty when all equal."""
    flats = {n: _flat_bits(v) for n, v in read_brams(text).items()}
    bad = []
    for name, (width, depth) in rmap.roms.items():
        want = to_bits(contents[name], width, depth)
        wrong = set()
        for b in range(width):
            for k in range(depth // COLUMN):
                col = want[k * COLUMN:(k + 1) * COLUMN, b]
                for bram, mode, j in rmap.places[(name, b, k)]:
                    got = flats[bram][MODE_INDEX[mode][j]]
                    wrong.update(k * COLUMN + np.nonzero(got != col)[0])
        if wrong:
            bad.append(f"{name}: {len(wrong)} of {depth} words differ (first at {min(wrong)})")
    return bad


def strip_brams(text):
    """The config without its block RAM contents: what must not change in a swap."""
    return _BRAM.sub(lambda m: f".bram_init {m.group(1)}\n", text)


# Packing ----------------------------------------------------------------------------------------------------

def ecppack(config, bit, options=("--compress",)):
    """config -> bit with ecppack (native or YoWASP); returns the seconds it took."""
    from .bitstream import tool
    t0 = time.monotonic()
    p = subprocess.run([tool("ecppack"), *options, str(config), "--bit", str(bit)], capture_output=True, text=True)
    if p.returncode:
        raise RomaError(f"ecppack failed: {(p.stderr or p.stdout).strip()[-2000:]}")
    return time.monotonic() - t0


def ecpunpack(bit, config):
    """bit -> textual config with ecpunpack: the contents the bitstream really holds."""
    from .bitstream import tool
    p = subprocess.run([tool("ecpunpack"), str(bit), str(config)], capture_output=True, text=True)
    if p.returncode:
        raise RomaError(f"ecpunpack failed: {(p.stderr or p.stdout).strip()[-2000:]}")
    return Path(config).read_text()
