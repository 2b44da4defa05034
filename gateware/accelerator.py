"""The accelerator: the L-unit (B-ROM lanes), the H-unit (SRAM lanes holding the KV cache), the vector unit,
the KV writer and a command sequencer that issues a program of whole operations in order, each unit running
while the following commands start on the others (see `wait`).

A command is one wide word (CMD_LAYOUT, the single definition the program builder and firmware pack):
  unit V: a vector-unit op; `tgt` routes its activation output (QUANT, AVEC, or `qout` of NORM, SILU and
          SM_NORM; words from `abase`): 0 L act, 1 H act, 2 K cache, 3 V cache;
          `dual` also writes the H act (a LoRA pass shares the base GEMV's quantized input); `to_head` writes
          the head's act instead of the L act
  unit D: the LM head's GEMV over its own ROM (the embedding, tied), logits into VM from word `dst`
  unit L / H: a GEMV (word_base, row_base, rows, groups, stride) over its activation buffer from word `abase`,
          whose rows land in VM from word `dst`
  every unit: `wait` (WAIT bits) names the units that must be idle before the command issues
KV cache layout in every H bank (lanes divide 32): K of (layer, kv head) at group index kv_base, rows are
positions (pos // lanes in bank pos % lanes), head_dim / 32 groups each; V of (layer, kv head, group g) at
kv_base + g * (32 / lanes) * (context / 32): rows are the group's 32 dims (j // lanes in bank j % lanes),
columns are positions. V's exponents go to the vector unit's VE memory (ve_base + g * context / 32).
"""

from migen import *
from migen.genlib.fifo import SyncFIFO
from migen.genlib.record import Record

from roma.host.golden.numerics import ACT_BITS, GROUP, VEC_BITS

from .arith import log2_exact
from .counters import COUNTERS
from .gemv import ABASE_BITS, GEMVUnit, SRAMUnit
from .vector_unit import VectorUnit

UNITS = {"V": 0, "L": 1, "H": 2, "D": 3}   # D: the LM head (its own ROM)
TARGETS = {"L": 0, "H": 1, "K": 2, "V": 3}
CMD_LAYOUT = [
    ("unit", 2), ("op", 4), ("tgt", 2), ("dual", 1), ("to_head", 1), ("qout", 1), ("abase", ABASE_BITS),
    ("dyn", 3), ("wait", 3),
    ("a", 16), ("b", 16), ("dst", 16), ("n", 16), ("aux", 16), ("count", 16),
    ("word_base", 24), ("row_base", 16), ("rows", 16), ("groups", 12), ("stride", 16),
    ("pos", 16), ("kv_base", 24), ("ve_base", 16),
]
CMD_BITS = sum(w for _, w in CMD_LAYOUT)
GQ_HOLD = 2         # GEMV rows queued for the VM's write port from which the vector unit stops issuing
# Fields a command takes from the position register instead of its own word (`dyn`), so that one program
# serves every position: count = pos + 1 cached positions, words = ceil(count / 32), krows = ceil(count / lanes)
# `wait` bits: the command issues only once these are idle (besides its own unit)
WAIT = {"V": 1, "G": 2, "KV": 4}     # the vector unit, every GEMV unit, the KV writer
DYN = {"none": 0, "aux_pos": 1, "kv_pos": 2, "rows_krows": 3, "n_words_count": 4, "n_words": 5,
       "groups_words": 6}


def _mod(sig, n):
    """sig % n for a power of two n (Migen has no % on signals)."""
    return sig[:log2_exact(n)] if n > 1 else 0


def _div(sig, n):
    return sig >> log2_exact(n)


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
        self.cnt_busy = Signal(32)
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
        self.sync += If(self.busy, self.cnt_busy.eq(self.cnt_busy + 1))
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
        # V's exponent at position pos: VE word ve_base + g * context / 32 + pos // 32, element pos % 32, in
        # the VE memory's lines of one vector-unit beat
        VW = cfg.vec_lanes
        self.ve_adr = Signal(16)
        self.comb += [
            self.ve_adr.eq(((self.ve_base + g_i * gctx + _div(self.pos, GROUP)) << log2_exact(GROUP // VW))
                           + _div(_mod(self.pos, GROUP), VW)),
        ]
        self.ve_dat = Signal(len(vunit.ve_w.dat_w))
        self.ve_we = Signal(len(vunit.ve_w.we))
        self.comb += self.ve_dat.eq(Replicate(ea, VW)), \
            self.ve_we.eq(Mux(active & self.is_v & (k_i == 0), 1 << _mod(self.pos, VW), 0))


class Accelerator(Module):
    def __init__(self, cfg, rom_images, l_max_cols, gamma_words, cos, sin, *, dim, head_dim, context,
                 eps_q, kv_groups_per_bank, kv_rows_per_bank, ve_words, vm_words=64, max_cmds=256,
                 head_images=None, head_bits=None, head_signed=False, h_act_cols=0, gate_clocks=False):
        assert GROUP % cfg.lanes == 0, "the KV layout and VM writes need lanes dividing 32"

        def gated(name, unit, keep=()):
            """gate_clocks (the simulator only): the unit in a clock domain of its own, clocked only in the
            cycles it has work (the enables below); Verilator then skips its logic in the other cycles. `keep`:
            the unit's domains that stay on the system clock."""
            if not gate_clocks:
                return ClockDomainsRenamer({k: "sys" for k in keep})(unit) if keep else unit
            self.clock_domains += ClockDomain(f"roma_{name}")
            # (Migen renames in the dict's order: sys first, so the kept domains are not renamed twice)
            return ClockDomainsRenamer({"sys": f"roma_{name}", **{k: "sys" for k in keep}})(unit)
        # (two activation regions: program.Geometry.l_act_regions)
        self.submodules.L = L = gated("l", GEMVUnit(cfg, rom_images, 2 * l_max_cols))
        self.submodules.D = D = gated("d", GEMVUnit(cfg, head_images, dim, code_bits=head_bits,
                                                    signed=head_signed)) if head_images else None
        self.submodules.H = H = gated("h", SRAMUnit(cfg, kv_groups_per_bank, kv_rows_per_bank,
                                                    max(context, l_max_cols, h_act_cols), group_exp=True))
        # (the VM's outside ports, GEMV results and host reads, and the hold counter stay on the system clock: the
        # vector unit's clock need not run for a GEMV's rows, a host read or while an op waits for its input)
        self.submodules.V = V = gated("v", VectorUnit(cfg, vm_words, dim, eps_q, gamma_words, head_dim=head_dim,
                                                      context=context, ve_words=ve_words,
                                                      outside_domain="roma_v_outside"),
                                      keep=("roma_v_outside",))
        V.set_rope(cos, sin)
        self.submodules.KV = KV = KVWriter(cfg, H, V, head_dim, context)
        # host interface --------------------------------------------------------------------------------
        self.specials.cmds = cmds = Memory(CMD_BITS, max_cmds)
        self.cmd_w = cmds.get_port(write_capable=True)
        cr = cmds.get_port()
        self.specials += self.cmd_w, cr
        self.ncmds = Signal(16)
        self.base = Signal(16)          # the program's first command (the base program at 0, an adapter's after it)
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
        # external VM access (loads, reads) when idle, by line (vm_line elements: element e of word w in line
        # (w * 32 + e) // vm_line, slot e % vm_line)
        self.vm_line = V.line
        self.vm_adr = Signal(16)
        self.vm_dat_w = Signal(V.line * VEC_BITS)
        self.vm_we = Signal(V.line)     # one enable per element
        self.vm_dat_r = Signal(V.line * VEC_BITS)
        self.comb += V.vm_r.adr.eq(self.vm_adr), self.vm_dat_r.eq(V.vm_r.dat_r)
        # counters (gateware/counters.py); the sequencer's are made below
        self.cnt_cycles = Signal(32)
        for name, u in (("l", L), ("h", H), ("d", D)):
            for kind in ("mac", "busy", "hold"):
                setattr(self, f"cnt_{name}_{kind}", getattr(u, f"cnt_{kind}") if u is not None else Constant(0, 32))
        self.cnt_v_busy, self.cnt_v_hold = V.cnt_busy, V.cnt_hold
        self.cnt_kv_busy = KV.cnt_busy
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

        # The sequencer issues commands in program order, each as soon as its unit is free and the units named
        # in its `wait` field are idle; so a unit may run while the next commands start on others (the program
        # builder sets `wait` where a command uses what a running one writes, or writes what it reads).
        # Rules the hardware keeps by itself: one GEMV at a time (they share the VM write-back), GEMVs after
        # the KV writer (it writes the H banks), a K/V-target op after the KV writer has emptied its buffer.
        head = Signal(CMD_BITS)         # the next command to issue
        fw = {}
        off = 0
        for name, width in CMD_LAYOUT:
            fw[name] = head[off:off + width]
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

        # A command issues in one cycle and its unit starts in the next, from registers: the start and the
        # unit's copy of the fields. The issue decision (every unit's state, through `ready`) is the sequencer's
        # longest path; it ends at those registers instead of running on into each unit's start logic. Until
        # its unit is busy, a start counts as busy (the idle signals below).
        issue = Signal()
        issue_to = {name: Signal() for name in UNITS}      # the head command issues to this unit now
        starts = {name: Signal() for name in UNITS}        # ... and the unit starts (the next cycle)
        for name, code in UNITS.items():
            self.comb += issue_to[name].eq(issue & (f["unit"] == code))
            self.sync += starts[name].eq(issue_to[name])

        def latch(unit, names):
            """A unit's copy of its command's fields, loaded as the command issues and held until the next."""
            held = {}
            for n in names:
                held[n] = Signal.like(f[n])
                self.sync += If(issue_to[unit], held[n].eq(f[n]))
            return held

        # vector unit
        vh = latch("V", ("op", "a", "b", "dst", "n", "aux", "count", "abase", "qout", "tgt", "dual", "to_head",
                         "pos", "kv_base", "ve_base"))
        self.comb += [
            V.op.eq(vh["op"]), V.a.eq(vh["a"]), V.b.eq(vh["b"]), V.dst.eq(vh["dst"]), V.n.eq(vh["n"]),
            V.aux.eq(vh["aux"]), V.count.eq(vh["count"]), V.abase.eq(vh["abase"]), V.qout.eq(vh["qout"]),
            V.start.eq(starts["V"]),
        ]
        # GEMV units
        gemvs = [(n, u) for n, u in (("L", L), ("H", H), ("D", D)) if u is not None]
        for name, u in gemvs:
            gu = latch(name, ("word_base", "row_base", "rows", "groups", "stride", "abase"))
            self.comb += [
                u.word_base.eq(gu["word_base"]), u.row_base.eq(gu["row_base"]), u.rows.eq(gu["rows"]),
                u.groups.eq(gu["groups"]), u.stride.eq(gu["stride"]), u.abase.eq(gu["abase"]),
                u.start.eq(starts[name]),
            ]
        # activation routing (the running vector op's target): L act, H act, head act, or the KV writer
        for u, t in ((L, "L"), (H, "H"), (D, "D")):
            if u is None:
                continue
            to_me = Signal(name=f"act_to_{t}")
            self.comb += to_me.eq({"L": (vh["tgt"] == TARGETS["L"]) & ~vh["to_head"],
                                   "H": (vh["tgt"] == TARGETS["H"]) | vh["dual"], "D": vh["to_head"]}[t])
            self.comb += [u.act.w.adr.eq(V.act_adr), u.act.w.dat_w.eq(V.act_dat), u.act.w.we.eq(V.act_we & to_me)]
            # chaining: a GEMV reading the activation words the running vector op writes waits word by word
            self.comb += u.hold.eq(V.busy & V.writes_act & to_me & (u.act_adr >= V.act_next)
                                   & (u.act_adr < V.act_stop))
        # the KV writer starts when a K/V-target op finishes, with that op's fields
        kv_start = Signal()
        self.comb += kv_start.eq(V.done & (vh["tgt"] >= TARGETS["K"]))
        kv_is_v = Signal()
        self.comb += kv_is_v.eq(vh["tgt"] == TARGETS["V"])
        kv_fields = {"is_v": kv_is_v, "pos": vh["pos"], "kv_base": vh["kv_base"], "ve_base": vh["ve_base"]}
        for name, src in kv_fields.items():
            held = Signal.like(src)
            self.sync += If(kv_start, held.eq(src))
            self.comb += getattr(KV, name).eq(Mux(kv_start, src, held))
        self.comb += [
            KV.cap_we.eq(V.act_we & (vh["tgt"] >= TARGETS["K"])), KV.cap_adr.eq(V.act_adr), KV.cap_dat.eq(V.act_dat),
            KV.start.eq(kv_start),
            V.ve_w.adr.eq(KV.ve_adr), V.ve_w.dat_w.eq(KV.ve_dat), V.ve_w.we.eq(KV.ve_we),
        ]

        # issue conditions
        gemv_idle, kv_idle, v_idle, all_idle = Signal(), Signal(), Signal(), Signal()
        gq_busy = Signal()              # GEMV rows still queued for the VM (below)
        self.comb += [
            gemv_idle.eq(~reduce(or_, [u.busy | starts[n] for n, u in gemvs]) & ~gq_busy),
            kv_idle.eq(~KV.busy & ~kv_start),
            v_idle.eq(~V.busy & ~starts["V"]),
            all_idle.eq(gemv_idle & kv_idle & v_idle),
        ]
        is_v = f["unit"] == UNITS["V"]
        ready = Signal()
        self.comb += ready.eq(
            Mux(is_v, v_idle & (kv_idle | (f["tgt"] < TARGETS["K"])), gemv_idle & kv_idle)
            & (v_idle | ~f["wait"][0]) & (gemv_idle | ~f["wait"][1]) & (kv_idle | ~f["wait"][2]))
        self.pc = pc = Signal(16)      # the next command to issue
        self.issue = issue
        self.submodules.fsm = fsm = FSM(reset_state="IDLE")
        end = Signal(16)
        self.comb += end.eq(self.base + self.ncmds)
        fsm.act("IDLE", If(self.start & (self.ncmds != 0), NextValue(pc, self.base), NextState("FETCH")))
        fsm.act("FETCH", NextState("LOAD"))
        fsm.act("LOAD", NextValue(head, cr.dat_r), NextState("ISSUE"))
        fsm.act("ISSUE", issue.eq(ready), If(ready,
            NextValue(pc, pc + 1), NextValue(head, cr.dat_r),
            If(pc + 1 == end, NextState("DRAIN"))))
        fsm.act("DRAIN", If(all_idle, NextState("DONE")))
        fsm.act("DONE", self.done.eq(1), NextState("IDLE"))
        # the command after the head is always read ahead: cr.dat_r holds command pc + 1 in ISSUE
        self.comb += [
            self.busy.eq(~fsm.ongoing("IDLE")),
            cr.adr.eq(Mux(fsm.ongoing("FETCH"), pc, Mux(issue, pc + 2, pc + 1))),
        ]
        self.sync += If(self.busy, self.cnt_cycles.eq(self.cnt_cycles + 1))
        # stall counters: cycles the head command waits to issue, by its unit
        for name, code in UNITS.items():
            cnt = Signal(32, name=f"cnt_{name.lower()}_stall")
            setattr(self, f"cnt_{name.lower()}_stall", cnt)
            self.sync += If(fsm.ongoing("ISSUE") & ~ready & (f["unit"] == code), cnt.eq(cnt + 1))
        assert all(hasattr(self, f"cnt_{n}") for n in COUNTERS)

        # GEMV results -> VM: a row step's `lanes` elements land at element dst * 32 + row * lanes, one VM line's
        # slots. The VM has one write port, and the vector unit's own results take it first: a row step that
        # finds it taken, or earlier ones queued, waits in a small queue (drained whenever the port is free).
        # The queue is never full: from GQ_HOLD entries on (one cycle later between the beats of a RoPE pair), the
        # vector unit issues nothing (V.hold), so its writes stop within V.latency cycles while at most one row
        # step a cycle comes in: at most GQ_HOLD + V.latency entries
        lanes, LINE = cfg.lanes, V.line
        spl = LINE // lanes             # row steps per line
        src_valid = Signal()
        src_row = Signal(16)
        src = [Signal((VEC_BITS, True)) for _ in range(lanes)]
        self.comb += [If(u.busy, src_valid.eq(u.out_valid), src_row.eq(u.out_row),
                         *[s.eq(o) for s, o in zip(src, u.out)]) for _, u in gemvs]
        g_dst = Signal(16)              # the running GEMV's, latched as it issues
        g_start = Signal()              # a GEMV issues (its fields are in f this cycle; it starts the next)
        self.comb += g_start.eq(reduce(or_, [issue_to[n] for n, _ in gemvs]))
        slot_bits = max(1, bits_for(spl - 1))
        entry = Record([("adr", 16), ("slot", slot_bits), ("data", lanes * VEC_BITS)])
        self.comb += [
            entry.adr.eq((g_dst << log2_exact(V.lines_per_word)) + _div(src_row, spl)),
            entry.slot.eq(_mod(src_row, spl)),
            entry.data.eq(Cat(*[s[:VEC_BITS] for s in src])),
        ]
        self.submodules.gq = gq = SyncFIFO(len(entry), GQ_HOLD + V.latency + 1)    # (see the hold below)
        self.comb += gq_busy.eq(gq.readable)
        to_vm = Record(entry.layout)
        direct, pop = Signal(), Signal()
        self.comb += [
            direct.eq(src_valid & ~gq.readable & V.vm_w_ready),
            pop.eq(gq.readable & V.vm_w_ready),
            gq.din.eq(entry.raw_bits()), gq.we.eq(src_valid & ~direct),
            gq.re.eq(pop),
            to_vm.raw_bits().eq(Mux(gq.readable, gq.dout, entry.raw_bits())),
        ]
        self.sync += If(g_start, g_dst.eq(f["dst"]))
        vw = V.vm_w
        self.comb += If(self.busy,
            vw.adr.eq(to_vm.adr), vw.dat_w.eq(Replicate(to_vm.data, spl)),
            Case(to_vm.slot, {k: vw.we.eq(Mux(direct | pop, ((1 << lanes) - 1) << (k * lanes), 0))
                              for k in range(spl)}),
        ).Else(
            vw.adr.eq(self.vm_adr), vw.dat_w.eq(self.vm_dat_w), vw.we.eq(self.vm_we),
        )
        # chaining: a vector op reading the running GEMV's output waits line by line, while a line holds elements
        # still to be written (elements [lo, hi): from dst * 32 + (row steps drained so far) * lanes to
        # dst * 32 + rows * lanes; in registers, as the hold is on the vector unit's issue path). Line l holds
        # elements [l * LINE, (l + 1) * LINE): it is pending while l < ceil(hi / LINE) (hi_line) and
        # l >= floor(lo / LINE) (lo's top bits): two comparisons of registers, no adder on the path
        lo, hi_line = Signal(24), Signal(24)
        lb = log2_exact(LINE)
        self.sync += If(g_start, lo.eq(f["dst"] << 5),
                        hi_line.eq(((f["dst"] << 5) + f["rows"] * lanes + LINE - 1) >> lb)) \
            .Elif(direct | pop, lo.eq(lo + lanes))

        def pending(line):
            return ~gemv_idle & (line < hi_line) & (line >= lo[lb:])
        self.comb += V.hold.eq(pending(V.rd_a) | (V.uses_b & pending(V.rd_b))
                               | ((gq.level >= GQ_HOLD) & ~V.mid_pair))

        if gate_clocks:
            # a gated unit's clock runs while it works (V: not while an op waits for its input with an empty
            # pipeline, which changes none of its state), finishes (its done pulse; V: until its pipeline has
            # drained, so no stage is left holding a beat), has a memory write coming from outside (activations
            # into its buffer, the KV writer or a host load into the H banks, V's exponents), for the LM head's
            # ROM a new embedding address to read from (once in the first idle cycle, then at each change), and
            # always while the system is in reset
            peek = Signal()
            if D is not None:
                peek_adr = Cat(D.peek_widx, D.peek_beat, D.peek_row)
                peek_prev, was_idle = Signal(len(peek_adr)), Signal()
                self.sync += peek_prev.eq(peek_adr), was_idle.eq(~self.busy)
                self.comb += peek.eq((peek_adr != peek_prev) | ~was_idle)
            enables = {"l": L.busy | L.done | starts["L"] | L.act.w.we,
                       "v": (V.busy & ~V.holding) | V.pipe_busy | V.done | starts["V"] | (V.ve_w.we != 0)
                            | V.gamma_w.we,
                       "h": H.busy | H.done | starts["H"] | H.act.w.we | KV.busy | kv_start
                            | (~self.busy & (self.h_w_we | self.h_e_we))}
            if D is not None:
                enables["d"] = D.busy | D.done | starts["D"] | D.act.w.we | (~self.busy & peek)
            # the enable is latched while the clock is low (as a clock-gating cell does), so a gated clock has
            # only whole pulses, each at a rising edge of sys
            self.clock_domains.cd_roma_gate = ClockDomain(reset_less=True)
            self.comb += self.cd_roma_gate.clk.eq(~ClockSignal("sys"))
            for name, en in enables.items():
                en_l = Signal(reset=1, name=f"roma_{name}_en")
                self.sync.roma_gate += en_l.eq(ResetSignal("sys") | en)
                self.comb += ClockSignal(f"roma_{name}").eq(ClockSignal("sys") & en_l), \
                    ResetSignal(f"roma_{name}").eq(ResetSignal("sys"))
