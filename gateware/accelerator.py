"""The accelerator: the L-unit (B-ROM lanes), the H-unit (SRAM lanes holding the KV cache), the vector unit,
the KV writer and a command sequencer that runs a program of whole operations back to back.

A command is one wide word (CMD_LAYOUT, the single definition the program builder and firmware pack):
  unit V: a vector-unit op; `tgt` routes its activation output (QUANT, AVEC, or `qout` of NORM, SILU and
          SM_NORM; words from `abase`): 0 L act, 1 H act, 2 K cache, 3 V cache;
          `dual` also writes the H act (a LoRA pass shares the base GEMV's quantized input); `to_head` writes
          the head's act instead of the L act
  unit D: the LM head's GEMV over its own ROM (the embedding, tied), logits into VM from word `dst`
  unit L / H: a GEMV (word_base, row_base, rows, groups, stride) whose rows land in VM from word `dst`
KV cache layout in every H bank (lanes divide 32): K of (layer, kv head) at group index kv_base, rows are
positions (pos // lanes in bank pos % lanes), head_dim / 32 groups each; V of (layer, kv head, group g) at
kv_base + g * (32 / lanes) * (context / 32): rows are the group's 32 dims (j // lanes in bank j % lanes),
columns are positions. V's exponents go to the vector unit's VE memory (ve_base + g * context / 32).
"""

from migen import *

from roma.host.golden.numerics import ACT_BITS, GROUP, VEC_BITS

from .gemv import GEMVUnit, SRAMUnit
from .vector_unit import VectorUnit

UNITS = {"V": 0, "L": 1, "H": 2, "D": 3}   # D: the LM head (its own ROM)
TARGETS = {"L": 0, "H": 1, "K": 2, "V": 3}
CMD_LAYOUT = [
    ("unit", 2), ("op", 4), ("tgt", 2), ("dual", 1), ("to_head", 1), ("qout", 1), ("abase", 8), ("dyn", 3),
    ("a", 16), ("b", 16), ("dst", 16), ("n", 16), ("aux", 16), ("count", 16),
    ("word_base", 24), ("row_base", 16), ("rows", 16), ("groups", 12), ("stride", 16),
    ("pos", 16), ("kv_base", 24), ("ve_base", 16),
]
CMD_BITS = sum(w for _, w in CMD_LAYOUT)
# Fields a command takes from the position register instead of its own word (`dyn`), so that one program
# serves every position: count = pos + 1 cached positions, words = ceil(count / 32), krows = ceil(count / lanes)
DYN = {"none": 0, "aux_pos": 1, "kv_pos": 2, "rows_krows": 3, "n_words_count": 4, "n_words": 5,
       "groups_words": 6}


def _log2(n):
    assert n & (n - 1) == 0, f"{n} is not a power of two"
    return n.bit_length() - 1


def _mod(sig, n):
    """sig % n for a power of two n (Migen has no % on signals)."""
    return sig[:_log2(n)] if n > 1 else 0


def _div(sig, n):
    return sig >> _log2(n)


def pack_command(**fields):
    word, off = 0, 0
    for name, width in CMD_LAYOUT:
        v = int(fields.get(name, 0))
        assert 0 <= v < (1 << width), (name, v)
        word |= v << off
        off += width
    return word


class KVWriter(Module):
    """Takes the vector unit's quantized k or v groups (head_dim / 32 act words) and writes them into the
    H-unit's banks (and V's exponents into the VE memory), one position at a time."""

    def __init__(self, cfg, hunit, vunit, head_dim, context):
        lanes, M, beats = cfg.lanes, cfg.macs_per_lane, cfg.beats_per_group
        G = head_dim // GROUP
        rows_v, gctx = GROUP // lanes, context // GROUP
        self.start = Signal()           # after the QUANT that filled the buffer
        self.is_v = Signal()
        self.pos = Signal(16)
        self.kv_base = Signal(24)
        self.ve_base = Signal(16)
        self.busy = Signal()
        self.done = Signal()
        # capture port (from the vector unit's activation output)
        self.cap_we = Signal()
        self.cap_adr = Signal(16)
        self.cap_dat = Signal(len(vunit.act_dat))

        # # #

        buf = [Signal(len(self.cap_dat)) for _ in range(G)]
        for g in range(G):
            self.sync += If(self.cap_we & (self.cap_adr == g), buf[g].eq(self.cap_dat))
        g_i = Signal(max=max(G, 2))
        k_i = Signal(8)                 # beat (K) or row-in-group (V)
        cur = Signal(len(self.cap_dat))
        self.comb += cur.eq(Array(buf)[g_i])
        mant = [cur[j * ACT_BITS:(j + 1) * ACT_BITS] for j in range(GROUP)]
        ea = cur[GROUP * ACT_BITS + cfg.group_sum_bits:]
        bank = Signal(max=max(lanes, 2))
        lrow = Signal(16)
        self.comb += bank.eq(_mod(self.pos, lanes)), lrow.eq(_div(self.pos, lanes))
        last_k = Signal()
        self.comb += last_k.eq(k_i == Mux(self.is_v, rows_v - 1, beats - 1))
        self.sync += [
            self.done.eq(0),
            If(self.start & ~self.busy, self.busy.eq(1), g_i.eq(0), k_i.eq(0)),
            If(self.busy & ~self.start,
                If(last_k,
                    k_i.eq(0),
                    If(g_i == G - 1, self.busy.eq(0), self.done.eq(1)).Else(g_i.eq(g_i + 1)),
                ).Else(k_i.eq(k_i + 1)),
            ),
        ]
        active = Signal()
        self.comb += active.eq(self.busy & ~self.start)
        # K: one bank, `beats` words of macs_per_lane mantissas, and the group exponent
        kgroup = Signal(24)
        self.comb += kgroup.eq(self.kv_base + lrow * G + g_i)
        kword = Signal(M * ACT_BITS)
        self.comb += Case(k_i, {k: kword.eq(Cat(*mant[k * M:(k + 1) * M])) for k in range(beats)})
        # V: every bank one element per cycle, at column pos of row (k_i, bank)
        vcol_word = Signal(24)
        self.comb += vcol_word.eq((self.kv_base + g_i * rows_v * gctx + k_i * gctx + _div(self.pos, GROUP)) * beats
                                  + _div(_mod(self.pos, GROUP), M))
        slot = Signal(max=max(M, 2))
        self.comb += slot.eq(_mod(self.pos, M))
        # per-bank write requests; the accelerator muxes them with host loads onto the H-unit's ports
        self.w_adr = [Signal(len(p.adr)) for p in hunit.w_ports]
        self.w_dat = [Signal(len(p.dat_w)) for p in hunit.w_ports]
        self.w_we = [Signal(len(p.we)) for p in hunit.w_ports]
        for b in range(lanes):
            adr, dat, we, gp = self.w_adr[b], self.w_dat[b], self.w_we[b], hunit.g_ports[b]
            elem = Signal(ACT_BITS)
            self.comb += Case(k_i, {r: elem.eq(mant[r * lanes + b]) for r in range(rows_v)})
            self.comb += [
                If(self.is_v,
                    adr.eq(vcol_word), dat.eq(Replicate(elem, M)), we.eq(Mux(active, 1 << slot, 0)),
                ).Else(
                    adr.eq(kgroup * beats + k_i), dat.eq(kword), we.eq(Mux(active & (bank == b), (1 << M) - 1, 0)),
                ),
                gp.adr.eq(kgroup), gp.dat_w.eq(ea), gp.we.eq(active & ~self.is_v & (bank == b) & (k_i == 0)),
            ]
        self.ve_adr = Signal(16)
        self.comb += [
            self.ve_adr.eq(self.ve_base + g_i * gctx + _div(self.pos, GROUP)),
        ]
        self.ve_dat = Signal(len(vunit.ve_w.dat_w))
        self.ve_we = Signal(len(vunit.ve_w.we))
        self.comb += self.ve_dat.eq(Replicate(ea, GROUP)), \
            self.ve_we.eq(Mux(active & self.is_v & (k_i == 0), 1 << _mod(self.pos, GROUP), 0))


class Accelerator(Module):
    def __init__(self, cfg, rom_images, l_max_cols, gamma_words, cos, sin, *, dim, head_dim, context,
                 eps_q, kv_groups_per_bank, kv_rows_per_bank, ve_words, vm_words=64, max_cmds=256,
                 head_images=None, head_bits=None, head_signed=False):
        assert GROUP % cfg.lanes == 0, "the KV layout and VM writes need lanes dividing 32"
        self.submodules.L = L = GEMVUnit(cfg, rom_images, l_max_cols)
        self.submodules.D = D = GEMVUnit(cfg, head_images, dim, code_bits=head_bits, signed=head_signed) \
            if head_images else None
        self.submodules.H = H = SRAMUnit(cfg, kv_groups_per_bank, kv_rows_per_bank, max(context, l_max_cols),
                                         group_exp=True)
        self.submodules.V = V = VectorUnit(cfg, vm_words, dim, eps_q, gamma_words, head_dim=head_dim,
                                           context=context, ve_words=ve_words)
        V.set_rope(cos, sin)
        self.submodules.KV = KV = KVWriter(cfg, H, V, head_dim, context)
        # host interface --------------------------------------------------------------------------------
        self.specials.cmds = cmds = Memory(CMD_BITS, max_cmds)
        self.cmd_w = cmds.get_port(write_capable=True)
        cr = cmds.get_port()
        self.specials += self.cmd_w, cr
        self.ncmds = Signal(16)
        self.pos = Signal(16)           # the position the program runs at (for `dyn` fields)
        self.start = Signal()
        self.busy = Signal()
        self.done = Signal()
        # H-unit bank loads (LoRA A and B weights and their row exponents) when idle
        self.h_bank = Signal(8)
        self.h_w_adr = Signal(len(H.w_ports[0].adr))
        self.h_w_dat = Signal(len(H.w_ports[0].dat_w))
        self.h_w_we = Signal()
        self.h_e_adr = Signal(len(H.e_ports[0].adr))
        self.h_e_dat = Signal(cfg.exp_bits)
        self.h_e_we = Signal()
        for b in range(cfg.lanes):
            wp, ep = H.w_ports[b], H.e_ports[b]
            mine = self.h_bank == b
            self.comb += [
                If(self.busy,
                    wp.adr.eq(KV.w_adr[b]), wp.dat_w.eq(KV.w_dat[b]), wp.we.eq(KV.w_we[b]),
                ).Else(
                    wp.adr.eq(self.h_w_adr), wp.dat_w.eq(self.h_w_dat),
                    wp.we.eq(Mux(self.h_w_we & mine, (1 << len(wp.we)) - 1, 0)),
                ),
                ep.adr.eq(self.h_e_adr), ep.dat_w.eq(self.h_e_dat), ep.we.eq(self.h_e_we & mine & ~self.busy),
            ]
        # external VM access (loads, reads) when idle
        self.vm_adr = Signal(16)
        self.vm_dat_w = Signal(GROUP * VEC_BITS)
        self.vm_we = Signal(GROUP)      # one enable per element
        self.vm_dat_r = Signal(GROUP * VEC_BITS)
        self.comb += V.vm_r.adr.eq(self.vm_adr), self.vm_dat_r.eq(V.vm_r.dat_r)
        # counters
        self.cnt_cycles = Signal(32)
        self.cnt_l_mac = L.cnt_mac
        self.cnt_h_mac = H.cnt_mac
        self.cnt_l_busy = L.cnt_busy
        self.cnt_h_busy = H.cnt_busy
        self.cnt_v_busy = V.cnt_busy
        self.token = V.argmax                # the last ARGMAX: the greedy next token
        # the embedding rows, read by the CPU from the LM head's ROM (tied) while the accelerator is idle
        if D is not None:
            self.emb_bank = Signal(max=max(cfg.lanes, 2))
            self.emb_widx, self.emb_beat, self.emb_row = D.peek_widx, D.peek_beat, D.peek_row
            self.emb_codes = Signal(len(D.peek_codes[0]))
            self.emb_scale = Signal(2 * cfg.scale_bits)
            self.emb_rowexp = Signal(cfg.exp_bits)
            self.comb += [
                self.emb_codes.eq(Array(D.peek_codes)[self.emb_bank]),
                self.emb_scale.eq(Array(D.peek_scales)[self.emb_bank]),
                self.emb_rowexp.eq(Array(D.peek_rowexp)[self.emb_bank]),
            ]

        # # #

        # fields: `cur` is the running command; units are driven from `sel`, which is already the next command
        # in the cycle the running one completes, so consecutive commands start back to back
        cmd = Signal(CMD_BITS)
        sel = Signal(CMD_BITS)
        go_now = Signal()
        self.comb += sel.eq(Mux(go_now, cr.dat_r, cmd))
        fc, fw = {}, {}
        off = 0
        for name, width in CMD_LAYOUT:
            fc[name], fw[name] = cmd[off:off + width], sel[off:off + width]
            off += width
        # position-derived fields
        count, words, krows = Signal(16), Signal(16), Signal(16)
        self.comb += count.eq(self.pos + 1), words.eq(_div(count + GROUP - 1, GROUP)), \
            krows.eq(_div(count + cfg.lanes - 1, cfg.lanes))
        f = dict(fw)
        dyn = fw["dyn"]
        for name, pairs in (("aux", [("aux_pos", self.pos)]), ("pos", [("kv_pos", self.pos)]),
                            ("rows", [("rows_krows", krows)]),
                            ("n", [("n_words_count", words), ("n_words", words)]),
                            ("count", [("n_words_count", count)]), ("groups", [("groups_words", words)])):
            expr = fw[name]
            for code, val in pairs:
                expr = Mux(dyn == DYN[code], val, expr)
            f[name] = Signal(len(fw[name]))
            self.comb += f[name].eq(expr)
        pc = Signal(16)
        self.submodules.fsm = fsm = FSM(reset_state="IDLE")
        unit_done = Signal()
        needs_kv = Signal()
        last = Signal()
        self.comb += [
            unit_done.eq(Mux(fc["unit"] == UNITS["V"], V.done, Mux(fc["unit"] == UNITS["L"], L.done,
                         Mux(fc["unit"] == UNITS["H"], H.done, D.done if D is not None else 1)))),
            needs_kv.eq((fc["unit"] == UNITS["V"]) & (fc["tgt"] >= TARGETS["K"])),
            last.eq(pc + 1 == self.ncmds),
        ]
        fsm.act("IDLE", If(self.start & (self.ncmds != 0), NextValue(pc, 0), NextState("FETCH")))
        fsm.act("FETCH", NextState("DECODE"))
        fsm.act("DECODE", go_now.eq(1), NextValue(cmd, cr.dat_r), NextState("WAIT"))
        advance = If(last, NextState("DONE")).Else(
            go_now.eq(1), NextValue(pc, pc + 1), NextValue(cmd, cr.dat_r), NextState("WAIT"))
        fsm.act("WAIT", If(unit_done, If(needs_kv, NextState("KV")).Else(advance)))
        fsm.act("KV", If(KV.done, advance))
        fsm.act("DONE", self.done.eq(1), NextState("IDLE"))
        # the next command is read while the current one runs
        self.comb += self.busy.eq(~fsm.ongoing("IDLE")), cr.adr.eq(Mux(fsm.ongoing("FETCH"), pc, pc + 1))
        self.sync += If(self.busy, self.cnt_cycles.eq(self.cnt_cycles + 1))
        issue = go_now
        # vector unit
        self.comb += [
            V.op.eq(f["op"]), V.a.eq(f["a"]), V.b.eq(f["b"]), V.dst.eq(f["dst"]), V.n.eq(f["n"]),
            V.aux.eq(f["aux"]), V.count.eq(f["count"]), V.abase.eq(f["abase"]), V.qout.eq(f["qout"]),
            V.start.eq(issue & (f["unit"] == UNITS["V"])),
        ]
        # GEMV units
        for u, name in ((L, "L"), (H, "H"), (D, "D")):
            if u is None:
                continue
            self.comb += [
                u.word_base.eq(f["word_base"]), u.row_base.eq(f["row_base"]), u.rows.eq(f["rows"]),
                u.groups.eq(f["groups"]), u.stride.eq(f["stride"]),
                u.start.eq(issue & (f["unit"] == UNITS[name])),
            ]
        # activation routing: L act, H act, or the KV writer's capture
        for u, t in ((L, "L"), (H, "H"), (D, "D")):
            if u is None:
                continue
            to_me = {"L": (f["tgt"] == TARGETS["L"]) & ~f["to_head"],
                     "H": (f["tgt"] == TARGETS["H"]) | f["dual"], "D": f["to_head"]}[t]
            self.comb += [u.act.w.adr.eq(V.act_adr), u.act.w.dat_w.eq(V.act_dat), u.act.w.we.eq(V.act_we & to_me)]
        self.comb += [
            KV.cap_we.eq(V.act_we & (f["tgt"] >= TARGETS["K"])), KV.cap_adr.eq(V.act_adr), KV.cap_dat.eq(V.act_dat),
            KV.start.eq(fsm.ongoing("WAIT") & unit_done & needs_kv),
            KV.is_v.eq(f["tgt"] == TARGETS["V"]), KV.pos.eq(f["pos"]), KV.kv_base.eq(f["kv_base"]),
            KV.ve_base.eq(f["ve_base"]),
            V.ve_w.adr.eq(KV.ve_adr), V.ve_w.dat_w.eq(KV.ve_dat), V.ve_w.we.eq(KV.ve_we),
        ]
        # GEMV results -> VM (lanes elements per row step), else external writes
        lanes = cfg.lanes
        per_word = GROUP // lanes
        src_valid = Signal()
        src_row = Signal(16)
        src = [Signal((VEC_BITS, True)) for _ in range(lanes)]
        units = [(UNITS["L"], L), (UNITS["H"], H)] + ([(UNITS["D"], D)] if D is not None else [])
        self.comb += Case(f["unit"], {code: [src_valid.eq(u.out_valid), src_row.eq(u.out_row),
                                             *[s.eq(o) for s, o in zip(src, u.out)]] for code, u in units})
        slot = Signal(max=max(per_word, 2))
        self.comb += slot.eq(_mod(src_row, per_word))
        data = Cat(*[s[:VEC_BITS] for s in src])
        vw = V.vm_w
        self.comb += If(self.busy,
            vw.adr.eq(f["dst"] + _div(src_row, per_word)),
            Case(slot, {k: [vw.dat_w.eq(data << (k * lanes * VEC_BITS)),
                            vw.we.eq(Mux(src_valid, ((1 << lanes) - 1) << (k * lanes), 0))]
                        for k in range(per_word)}),
        ).Else(
            vw.adr.eq(self.vm_adr), vw.dat_w.eq(self.vm_dat_w), vw.we.eq(self.vm_we),
        )
