"""The accelerator as a LiteX peripheral: its command memory, vector memory, H-unit banks and embedding ROM
reached through CSRs, with auto-incrementing pointers so firmware streams words with one write each.

CSR map (names as csr.json and the generated csr.h give them, prefixed `roma_`):
  base, ncmds, pos            the program's first command, its length and the position it runs at
  start (write)               run the program; status.busy is 1 until it has finished
  cmd_adr, cmd_dat            command memory: set the pointer, then each write of cmd_dat stores a command
  vm_adr, vm_wdat, vm_rdat    vector memory by element (word * 32 + element): each vm_wdat write stores one
                              element and advances; vm_rdat reads the element at the pointer
  h_bank, h_w_adr, h_w_dat    H-unit bank loads (LoRA A and B): weights, then
  h_e_adr, h_e_dat            their row exponents; each data write advances its pointer
  emb_bank, emb_widx, emb_beat, emb_row -> emb_codes, emb_scale, emb_rowexp
                              the LM head's ROM (the embedding rows) while idle
  token                       the last ARGMAX (the greedy next token)
  cycles, l_mac, ...          performance counters (gateware/counters.py: COUNTERS)
Writes that reach a memory while the accelerator runs are ignored by it (the hardware owns the ports then).
"""

from migen import *

from litex.soc.interconnect.csr import CSR, AutoCSR, CSRField, CSRStatus, CSRStorage

from roma.gateware.accelerator import CMD_BITS
from roma.gateware.counters import COUNTERS
from roma.host.golden.numerics import VEC_BITS


class RomaAccel(Module, AutoCSR):
    def __init__(self, accel, cfg):
        self.submodules.core = a = accel
        # control -------------------------------------------------------------------------------------------
        self.ncmds = CSRStorage(16, description="Commands in the program")
        self.base = CSRStorage(16, description="The program's first command")
        self.pos = CSRStorage(16, description="Position the program runs at (for `dyn` fields)")
        self.start = CSR()
        self.status = CSRStatus(fields=[CSRField("busy", size=1, description="The program is running")])
        self.token = CSRStatus(16, description="The last ARGMAX")
        self.comb += [a.ncmds.eq(self.ncmds.storage), a.base.eq(self.base.storage), a.pos.eq(self.pos.storage),
                      a.start.eq(self.start.re & self.start.r[0]), self.status.fields.busy.eq(a.busy),
                      self.token.status.eq(a.token)]
        # command memory ---------------------------------------------------------------------------------------
        self.cmd_adr = CSRStorage(16)
        self.cmd_dat = CSRStorage(CMD_BITS)
        self._pointer(self.cmd_adr, self.cmd_dat, a.cmd_w.adr, a.cmd_w.dat_w, a.cmd_w.we)
        # vector memory by element -------------------------------------------------------------------------
        self.vm_adr = CSRStorage(21, description="Element address: word * 32 + element")
        self.vm_wdat = CSRStorage(VEC_BITS)
        self.vm_rdat = CSRStatus(VEC_BITS)
        # (the accelerator's VM port is by line of vm_line elements: the element pointer's low bits are the slot)
        ptr = Signal(21)
        line_bits = (a.vm_line - 1).bit_length()
        self.sync += If(self.vm_adr.re, ptr.eq(self.vm_adr.storage)).Elif(self.vm_wdat.re, ptr.eq(ptr + 1))
        slots = [a.vm_dat_r[e * VEC_BITS:(e + 1) * VEC_BITS] for e in range(a.vm_line)]
        self.comb += [
            a.vm_adr.eq(ptr[line_bits:]),
            a.vm_dat_w.eq(Replicate(self.vm_wdat.storage, a.vm_line)),
        ]
        if a.vm_line > 1:
            elem = ptr[:line_bits]
            self.comb += a.vm_we.eq(Mux(self.vm_wdat.re, 1 << elem, 0)), self.vm_rdat.status.eq(Array(slots)[elem])
        else:
            self.comb += a.vm_we.eq(self.vm_wdat.re), self.vm_rdat.status.eq(slots[0])
        # H-unit bank loads ----------------------------------------------------------------------------------
        self.h_bank = CSRStorage(8)
        self.h_w_adr = CSRStorage(len(a.h_w_adr))
        self.h_w_dat = CSRStorage(len(a.h_w_dat))
        self.h_e_adr = CSRStorage(len(a.h_e_adr))
        self.h_e_dat = CSRStorage(cfg.exp_bits)
        self.comb += a.h_bank.eq(self.h_bank.storage)
        self._pointer(self.h_w_adr, self.h_w_dat, a.h_w_adr, a.h_w_dat, a.h_w_we)
        self._pointer(self.h_e_adr, self.h_e_dat, a.h_e_adr, a.h_e_dat, a.h_e_we)
        # the embedding rows in the LM head's ROM ------------------------------------------------------------
        self.emb_bank = CSRStorage(len(a.emb_bank))
        self.emb_widx = CSRStorage(len(a.emb_widx))
        self.emb_beat = CSRStorage(len(a.emb_beat))
        self.emb_row = CSRStorage(len(a.emb_row))
        self.emb_codes = CSRStatus(len(a.emb_codes))
        self.emb_scale = CSRStatus(len(a.emb_scale))
        self.emb_rowexp = CSRStatus(len(a.emb_rowexp))
        self.comb += [
            a.emb_bank.eq(self.emb_bank.storage), a.emb_widx.eq(self.emb_widx.storage),
            a.emb_beat.eq(self.emb_beat.storage), a.emb_row.eq(self.emb_row.storage),
            self.emb_codes.status.eq(a.emb_codes), self.emb_scale.status.eq(a.emb_scale),
            self.emb_rowexp.status.eq(a.emb_rowexp),
        ]
        # counters ----------------------------------------------------------------------------------------------
        for name in COUNTERS:
            csr = CSRStatus(32, name=name)
            setattr(self, name, csr)
            self.comb += csr.status.eq(getattr(a, f"cnt_{name}"))

    def _pointer(self, adr_csr, dat_csr, adr, dat, we):
        """adr_csr sets a pointer; each write of dat_csr stores at it and advances it."""
        ptr = Signal(len(adr))
        self.sync += If(adr_csr.re, ptr.eq(adr_csr.storage)).Elif(dat_csr.re, ptr.eq(ptr + 1))
        self.comb += adr.eq(ptr), dat.eq(dat_csr.storage), we.eq(dat_csr.re)
