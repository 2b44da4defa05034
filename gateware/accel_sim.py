"""Build the accelerator for a model and run decoder layers on it in Verilator, with golden-format I/O."""

import numpy as np

from roma.host.golden.numerics import GROUP, VEC_BITS

from .accel_build import build_accelerator
from .counters import COUNTERS
from .lora_image import lora_records
from .program import Geometry, LoraPlan, layer_program, packed, token_program
from .verilator import VerilatorSim
from .words import pack, unpack


class AcceleratorSim:
    def __init__(self, model, cfg, context=None, lora=None, gate_clocks=False):
        """lora: a golden DeviceLora; its A and B are loaded into the H-unit's banks by each run.
        gate_clocks: the units' clocks gated as in the SoC simulator (Accelerator)."""
        c = model.config
        self.cfg = cfg
        geo = Geometry.of(c, cfg.lanes, context)
        self.lora = LoraPlan(geo, lora, c) if lora is not None else None
        size = (self.lora.groups_per_bank, self.lora.rows_per_bank) if self.lora else None
        b = build_accelerator(model, cfg, context, lora_size=size, gate_clocks=gate_clocks)
        self.geo, self.table, vm, dut = b.geo, b.table, b.vm, b.dut
        ios = {"start": dut.start, "busy": dut.busy, "done": dut.done, "ncmds": dut.ncmds, "pos": dut.pos,
               "cmd_adr": dut.cmd_w.adr, "cmd_dat": dut.cmd_w.dat_w, "cmd_we": dut.cmd_w.we,
               "vm_adr": dut.vm_adr, "vm_dat_w": dut.vm_dat_w, "vm_we": dut.vm_we, "vm_dat_r": dut.vm_dat_r,
               **{f"cnt_{n}": getattr(dut, f"cnt_{n}") for n in COUNTERS},
               "h_bank": dut.h_bank, "h_w_adr": dut.h_w_adr, "h_w_dat": dut.h_w_dat, "h_w_we": dut.h_w_we,
               "h_e_adr": dut.h_e_adr, "h_e_dat": dut.h_e_dat, "h_e_we": dut.h_e_we, "token": dut.token}
        tag = (f"_lora{self.lora.R}_{len(self.lora.entries)}" if self.lora else "") + ("_gated" if gate_clocks else "")
        self.sim = VerilatorSim(dut, ios, f"roma_accel_{c.name.replace('-', '_')}_l{cfg.lanes}_m{cfg.macs_per_lane}{tag}")
        self.vm = vm
        self.line = dut.vm_line

    def lora_load_lines(self):
        """Script lines writing every adapted projection's A (zero rows up to R) and B into the banks."""
        lines = []
        for kind, bank, adr, vals in lora_records(self.lora, self.cfg):
            lines.append(f"poke h_bank {bank}")
            if kind == "w":
                lines.append("poke h_w_we 1")
                for k, word in enumerate(vals):
                    lines += [f"poke h_w_adr {adr + k}", f"poke h_w_dat 0x{pack(word, 16):x}", "step 1"]
                lines.append("poke h_w_we 0")
            else:
                lines.append("poke h_e_we 1")
                for k, v in enumerate(vals):
                    lines += [f"poke h_e_adr {adr + k}", f"poke h_e_dat {int(v) & 0xFF}", "step 1"]
                lines.append("poke h_e_we 0")
        return lines

    @staticmethod
    def _load_program_lines(cmds):
        lines = ["poke cmd_we 1"]
        for i, w in enumerate(packed(cmds)):
            lines += [f"poke cmd_adr {i}", f"poke cmd_dat 0x{w:x}", "step 1"]
        return lines + ["poke cmd_we 0", f"poke ncmds {len(cmds)}"]

    def _load_x_lines(self, x):
        """Script lines writing a vector-format input into VM region X (by line of `line` elements)."""
        n = self.line
        lines = [f"poke vm_we {(1 << n) - 1}"]
        for i in range(self.geo.dim // n):
            lines += [f"poke vm_adr {self.vm['X'] * GROUP // n + i}",
                      f"poke vm_dat_w 0x{pack(x[i * n:(i + 1) * n], VEC_BITS):x}", "step 1"]
        return lines + ["poke vm_we 0"]

    def _read_lines(self, word, n_elems):
        """Script lines peeking n_elems elements from VM word `word` on, line by line."""
        first = word * GROUP // self.line
        return [ln for i in range(n_elems // self.line)
                for ln in (f"poke vm_adr {first + i}", "step 1", "peek vm_dat_r")]

    def _unpack(self, words):
        return np.array([v for w in words for v in unpack(w, n=self.line)], dtype=np.int64)

    def _token_lines(self, pos, x):
        lines = [f"poke pos {pos}"] + self._load_x_lines(x)
        lines += ["peek cnt_cycles", "poke start 1", "step 1", "poke start 0",
                  "wait done 10000000", "step 1", "peek cnt_cycles", "peek token"]
        return lines + self._read_lines(self.vm['LOGITS'], self.geo.vocab)

    def run_tokens(self, xs):
        """One forward pass per input embedding (vector format), positions 0, 1, ...: every layer and the
        head on the accelerator. Returns per position (greedy next token, cycles, logits)."""
        lines = self.lora_load_lines() if self.lora else []
        lines += self._load_program_lines(token_program(self.geo, self.table, self.lora))
        for pos, x in enumerate(xs):
            lines += self._token_lines(pos, x)
        log = self.sim.run(lines).peek_log
        per = 3 + self.geo.vocab // self.line
        out = []
        for k in range(len(xs)):
            chunk = log[k * per:(k + 1) * per]
            (_, c0), (_, c1), (_, tok) = chunk[:3]
            logits = self._unpack([w for _, w in chunk[3:]])
            out.append((tok, c1 - c0, logits))
        return out

    def run_layers(self, steps):
        """steps: list of (layer, pos, x or None): x (dim,) vector-format input loaded into X first.
        One simulator run, the KV cache persisting across steps. Returns per step (x after, counters)."""
        lines = self.lora_load_lines() if self.lora else []
        D = self.geo.dim // self.line
        counters = [f"cnt_{n}" for n in COUNTERS]
        for layer, pos, x in steps:
            lines += self._load_program_lines(layer_program(self.geo, self.table, layer, self.lora))
            lines.append(f"poke pos {pos}")
            if x is not None:
                lines += self._load_x_lines(x)
            lines += [f"peek {c}" for c in counters]
            lines += ["poke start 1", "step 1", "poke start 0", "wait done 1000000", "step 1"]
            lines += [f"peek {c}" for c in counters]
            lines += self._read_lines(self.vm['X'], self.geo.dim)
        res = self.sim.run(lines)
        out = []
        log = res.peek_log
        per = 2 * len(counters) + D
        for s in range(len(steps)):
            chunk = log[s * per:(s + 1) * per]
            before = {n: v for n, v in chunk[:len(counters)]}
            after = {n: v for n, v in chunk[len(counters):2 * len(counters)]}
            xs = self._unpack([w for _, w in chunk[2 * len(counters):]])
            out.append((xs, {c: after[c] - before[c] for c in counters}))
        return out
