"""A small design with B-ROM-shaped memories, to develop and test the ROM swap (rom_swap.py) in a minute where the
accelerator's build takes far longer: a few ROMs read at a counting address, every output bit XORed onto one
pin so that yosys keeps them all. Built with yosys synth_ecp5, nextpnr-ecp5 --textcfg and ecppack.
"""

import re
from functools import reduce
from operator import xor
from pathlib import Path

from migen import *

from roma.gateware.synth import write_verilog

from .bitstream import RAM_STYLE, run_step, tool

# Shaped like tiny-260k's B-ROM per lane at 2 lanes x 8 MACs (codes 32 bits, scales dq|mq 32 bits, row exponents
# 8 bits), shorter; depths that are not multiples of 512 are padded by the swap's placeholders.
DEMO_ROMS = {"codes": (32, 1024), "scales": (32, 384), "rowexp": (8, 1600)}


class RomDemo(Module):
    def __init__(self, contents):
        """contents: {name: (width, words)}."""
        self.out = Signal()

        # # #

        depth = max(len(w) for _, w in contents.values())
        adr = Signal(max=depth)
        self.sync += adr.eq(adr + 1)
        outs = []
        for name, (width, words) in sorted(contents.items()):
            mem = Memory(width, len(words), init=words, name="brom_" + re.sub(r"\W", "_", name))
            port = mem.get_port()
            self.specials += mem, port
            self.comb += port.adr.eq(adr)
            outs.append(port.dat_r)
        self.sync += self.out.eq(_xor_tree([o[i] for o in outs for i in range(len(o))]))


def _xor_tree(bits):
    """A balanced XOR of many bits (a linear chain of a thousand exhausts YoWASP yosys's stack in abc9)."""
    while len(bits) > 1:
        bits = [reduce(xor, bits[i:i + 4]) for i in range(0, len(bits), 4)]
    return bits[0]


def build_demo(folder, contents, device="--25k", package="CABGA381", seed=1, progress=False):
    """yosys, nextpnr-ecp5 and ecppack for RomDemo(contents) in `folder` (under the project cache: YoWASP maps its
    own /tmp). Returns ({step: seconds}, the .config, the .bit)."""
    folder = Path(folder)
    m = RomDemo(contents)
    write_verilog(m, [m.out], "top", folder)        # (Migen adds the sys clock and reset inputs)
    steps = [("yosys", ["-q", "-p", f"read_verilog top.v; {RAM_STYLE}; synth_ecp5 -top top -json top.json"]),
             ("nextpnr-ecp5", ["--json", "top.json", "--textcfg", "top.config", device, "--package", package,
                               "--seed", str(seed), "--timing-allow-fail"]),
             ("ecppack", ["--compress", "top.config", "--bit", "top.bit"])]
    times = {}
    for exe, args in steps:
        times[exe] = run_step(exe, [tool(exe)] + args, folder, folder / f"{exe}.log", progress)
    return times, folder / "top.config", folder / "top.bit"
