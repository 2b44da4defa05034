"""The vector unit in Verilator, driven by a script: one build (cached by content) serves every test."""

from dataclasses import replace

import numpy as np

from roma.gateware.vector_unit import GAMMA_BITS, OPS, VectorUnit
from roma.gateware.verilator import VerilatorSim, to_signed
from roma.gateware.words import pack, unpack
from roma.host.golden import functions as F
from roma.host.golden.numerics import GROUP, VEC_BITS
from roma.soc.config import AccelConfig

CFG = AccelConfig(lanes=4, macs_per_lane=8)
# (vec_lanes, pipeline): the simulator's shape (full width, short pipeline) and two FPGA ones (16 and 32 beats per
# word, every stage a register): the 2-lane unit roma fit chose for the 85F before, the 1-lane one it chooses now
SHAPES = ((32, "short"), (2, "deep"), (1, "deep"))


class VectorBench:
    """Collects a script (loads, commands, reads), runs it once, then fills in the results."""

    def __init__(self, dim=64, eps=1e-5, head_dim=32, context=64, theta=10000.0, vm_words=32, vec_lanes=32,
                 pipeline="short"):
        self.dim = dim
        self.cos, self.sin = F.rope_tables(head_dim, context, theta)
        dut = VectorUnit(replace(CFG, vec_lanes=vec_lanes, pipeline=pipeline), vm_words, dim, F.eps_q(eps),
                         [0] * (dim // GROUP), head_dim=head_dim, context=context, ve_words=8)
        dut.set_rope(self.cos, self.sin)
        ios = {"op": dut.op, "a": dut.a, "b": dut.b, "dst": dut.dst, "aux": dut.aux, "n": dut.n,
               "count": dut.count, "abase": dut.abase, "qout": dut.qout, "e": dut.e, "start": dut.start, "busy": dut.busy, "done": dut.done,
               "act_adr": dut.act_adr, "act_dat": dut.act_dat, "act_we": dut.act_we, "argmax": dut.argmax,
               "vm_w_adr": dut.vm_w.adr, "vm_w_dat": dut.vm_w.dat_w, "vm_w_we": dut.vm_w.we,
               "vm_r_adr": dut.vm_r.adr, "vm_r_dat": dut.vm_r.dat_r,
               "ve_w_adr": dut.ve_w.adr, "ve_w_dat": dut.ve_w.dat_w, "ve_w_we": dut.ve_w.we,
               "g_w_adr": dut.gamma_w.adr, "g_w_dat": dut.gamma_w.dat_w, "g_w_we": dut.gamma_w.we,
               "cnt_busy": dut.cnt_busy}
        self.sim = VerilatorSim(dut, ios, f"vector_unit_d{dim}_h{head_dim}_c{context}_v{vec_lanes}_{pipeline}")
        self.line, self.lpw, self.vec_lanes = dut.line, dut.lines_per_word, vec_lanes
        self.lines = ["watch act_we act_adr act_dat"]
        self.reads = []
        self.act = {}

    def _write(self, prefix, addr, words, we):
        self.lines.append(f"poke {prefix}_we {we}")
        for i, w in enumerate(words):
            self.lines += [f"poke {prefix}_adr {addr + i}", f"poke {prefix}_dat 0x{w:x}", "step 1"]
        self.lines.append(f"poke {prefix}_we 0")

    @staticmethod
    def _lines(vals, n, bits):
        return [pack(vals[i:i + n], bits) for i in range(0, len(vals), n)]

    def load(self, addr, vec):
        """Words from `addr` (the VM in lines of `line` elements)."""
        self._write("vm_w", addr * self.lpw, self._lines(vec, self.line, VEC_BITS), (1 << self.line) - 1)

    def load_ve(self, addr, exps):
        beats = GROUP // self.vec_lanes
        self._write("ve_w", addr * beats, self._lines(exps, self.vec_lanes, 8), (1 << self.vec_lanes) - 1)

    def load_gamma(self, addr, gq):
        beats = GROUP // self.vec_lanes
        self._write("g_w", addr * beats, self._lines(gq, self.vec_lanes, GAMMA_BITS), 1)

    def cmd(self, op, a=0, b=0, dst=0, n=1, aux=0, count=0, abase=0, qout=0, next_at_done=False):
        """next_at_done: the next command starts in the cycle `done` is seen (as the accelerator's sequencer may
        start it), not a cycle later."""
        for k, v in (("op", OPS[op]), ("a", a), ("b", b), ("dst", dst), ("n", n), ("aux", aux), ("count", count),
                     ("abase", abase), ("qout", qout)):
            self.lines.append(f"poke {k} {v}")
        self.lines += ["poke start 1", "step 1", "poke start 0", "wait done 100000"]
        if not next_at_done:
            self.lines.append("step 1")

    def read(self, addr, n):
        """A handle whose .value (int64 array) is filled by run()."""
        h = type("Read", (), {})()
        self.reads.append((h, n * self.lpw))
        for i in range(n * self.lpw):
            self.lines += [f"poke vm_r_adr {addr * self.lpw + i}", "step 1", "peek vm_r_dat"]
        return h

    def peek(self, name):
        self.lines.append(f"peek {name}")

    def run(self):
        res = self.sim.run(self.lines)
        vals = [v for name, v in res.peek_log if name == "vm_r_dat"]
        k = 0
        for h, n in self.reads:
            h.value = np.array([x for w in vals[k:k + n] for x in unpack(w, n=self.line)], dtype=np.int64)
            k += n
        for _, (adr, dat) in res.watch:
            self.act[adr] = dat
        self.peeks = res.peeks
        self.cycles = res.cycles
        self.res = res
        return res


def act_word_fields(w):
    A = 16
    mant = unpack(w, A, GROUP)
    gsum = unpack(w >> (GROUP * A), CFG.group_sum_bits, 1)[0]
    e = unpack(w >> (GROUP * A + CFG.group_sum_bits), CFG.exp_bits, 1)[0]
    return mant, gsum, e


__all__ = ["VectorBench", "act_word_fields", "pack", "unpack", "to_signed", "CFG"]
