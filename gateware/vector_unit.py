"""The vector unit: element-wise and reduction ops on the vector memory (VM), `vec_lanes` elements per cycle
(a 32-element VM word in 32 / vec_lanes beats), each exactly as the golden model defines it
(host/golden/functions.py, numerics.py).

A VM word is 32 elements of the vector format (VEC_BITS each); the memory holds it as lines of `line` elements
(the wider of a beat and a GEMV row step; element e of word w in line w * lines_per_word + e // line).
A command names an op, two source word addresses (a, b), a destination (dst), a word count (n), an
auxiliary value (aux) and an element count (count, for masked softmax). Ops:
  ADD      dst = saturate(a + b); e as RMS_MAX computes it from dst    residual (and the next norm's pass 1)
  QUANT    act[abase + i] = quantize_act(a[i])                         to the activation write port
  RMS_MAX  e = max(0, bitlen(max |a|) - NORM_IN_BITS)                  RMSNorm, pass 1
  RMS_SS   ss = sum((a >> e)**2); v; R, sh = rsqrt_q(v)                pass 2
  NORM     dst = round(round((a >> e) * R >> (RSQRT_FRAC - VEC_FRAC + sh/2)) * gamma[aux + i] >> 16)
  SILU     dst = silu_mul(a, b)
  ROPE     heads a .. a + n (head_dim/32 words each) rotated in place at position aux
  SM_MAX   m = max over the first `count` elements of s = round(a * scale_q >> 16)   softmax, pass 1
  SM_EXP   dst = exp_neg(s - m) (0 past count); z = sum; Rz, shz = recip_q(z)      pass 2
  SM_NORM  dst = round(a * Rz >> (RECIP_FRAC + shz - PROB_FRAC))                    pass 3
  AVEC     act[abase + i] = quantize_act(a[i] << (ve[aux + i] + VEC_FRAC), frac=2*VEC_FRAC)
           (the probabilities scaled by V's exponents: the input of the weighted V sum)
  ARGMAX   index of the first maximum over the first `count` elements
With `qout`, NORM and SILU also quantize their result to the activation port (as QUANT of dst would), and
SM_NORM its probabilities scaled by V's exponents (as AVEC of dst would): one op instead of two.
Pipeline: issue, read, nine logical compute stages (about one adder, shift or table read each; a product takes
two), write (each beat written as it comes, `latency` - 1 cycles after its issue for the slowest op). With
cfg.pipeline "deep" every stage is a cycle (an FPGA's clock); "short" keeps only the registers a table read
needs, so the stages fall into three cycles (the simulator's: fewer cycles per op, the same arithmetic: Schedule).
The activation port's quantizer (which needs the whole group's max first) is a tail after the write stage: the
beats of a word collect with their running max, then the word is quantized vec_lanes elements a cycle (its
activation written tail_drain + beats - 1 cycles after its last beat's write). Each lane has one shared multiplier per product
stage (plus RoPE's second product and the softmax's scaling) with operands chosen by the op: operand widths
follow from the golden model's bounds, so most products fit 64 bits.
"""

from migen import *

from roma.host.golden import functions as F
from roma.host.golden.numerics import ACT_BITS, ACT_MAX, GROUP, VEC_BITS, VEC_FRAC

from .arith import PipelinedProduct, abs_, bit_length, clamp, log2_exact, max_, rshift_round, saturate, tree
from .gemv import ABASE_BITS

OPS = {"add": 1, "quant": 2, "rms_max": 3, "rms_ss": 4, "norm": 5, "silu": 6, "rope": 7, "sm_max": 8,
       "sm_exp": 9, "sm_norm": 10, "avec": 11, "argmax": 12}
# the logical stage whose output is an op's result before saturation (r3 takes it saturated, the write and the
# tail the cycle after)
FINAL_STAGE = {"quant": 1, "avec": 1, "add": 2, "rope": 4, "sm_norm": 4, "norm": 7, "silu": 9, "sm_exp": 9}
STAGES = max(FINAL_STAGE.values())
# the logical stages whose outputs are registers (the others pass theirs on within the cycle): "deep" every one,
# for an FPGA's clock; "short" only those a table's address comes from (SILU's table is addressed in stage 2, the
# exp table in stage 6: a block RAM answers the cycle after its address), for fewer cycles per op
REGISTERED = {"deep": frozenset(range(1, STAGES + 1)), "short": frozenset({2, 6})}
# the same for the finish's eight steps (after RMS_SS and SM_EXP: the value (0, 1), its bit length (2) and shift
# (3), the normalised mantissa (4, the table's address: a register), the table read (5), its entries (6), the
# interpolation (7, always a register)): short, three cycles
FINISH_REGISTERED = {"deep": frozenset(range(8)), "short": frozenset({4, 5, 7})}
# the quantizer tail's cycles after a word's last write until its activation word is written (deep: its three
# steps and the beat's shift each a cycle), and after ADD's last write until its max is in
TAIL_DRAIN = {"deep": 6, "short": 3}
ADD_DRAIN = {"deep": 3, "short": 2}


class Schedule:
    """The cycle (after a beat's issue) each logical stage computes in, for a pipeline ("deep", "short"): stage
    1 computes on the lines read (cycle 1), a stage in the cycle after its predecessor's if that one's output
    is a register, else in the same cycle. The finish's steps likewise (from its cycle 0)."""

    def __init__(self, pipeline):
        self.deep = pipeline == "deep"
        self.registered = REGISTERED[pipeline]
        self.cycle = {1: 1}
        for k in range(2, STAGES + 1):
            self.cycle[k] = self.cycle[k - 1] + ((k - 1) in self.registered)
        self.finish_registered = FINISH_REGISTERED[pipeline]
        self.finish_cycle = {0: 0}
        for k in range(1, 8):
            self.finish_cycle[k] = self.finish_cycle[k - 1] + ((k - 1) in self.finish_registered)
        self.tail_drain, self.add_drain = TAIL_DRAIN[pipeline], ADD_DRAIN[pipeline]

    def after(self, k):
        """The cycle stage k's output is read in."""
        return self.cycle[k] + (k in self.registered)

    def write(self, name):
        """The cycle an op's result is written in (and enters the tail): r3 takes it the cycle before."""
        return self.after(FINAL_STAGE[name]) + 1

    @property
    def latency(self):
        """Cycles from a beat's issue to the write of the slowest op, plus one."""
        return max(self.write(n) for n in FINAL_STAGE) + 1

    def drain(self, name):
        """Cycles after an op's last issue until it may finish: one before its last write lands (so the next op
        reads what it wrote; SM_EXP's sum of stage 9's output is in by then too), or, for ops that only reduce,
        once their last reduction is in (RMS_MAX's max of stage 2's output, RMS_SS's sum of stage 3's, the
        softmax max the cycle after that). Ops writing activations finish tail_drain + beats - 1 cycles later,
        ADD add_drain cycles later."""
        reduce_at = {"rms_max": self.after(2), "rms_ss": self.after(3), "sm_max": self.after(3) + 1,
                     "argmax": self.after(3) + 1}
        return reduce_at[name] if name in reduce_at else self.write(name) - 1
GAMMA_BITS = 32
TRIG_BITS = F.ROPE_FRAC + 2
EXP_BITS = 8        # VE memory: V's group exponents, 32 positions per word


class _Port:
    """The signals of a memory port the unit arbitrates itself (adr, dat_w, we or adr, dat_r)."""

    def __init__(self, **signals):
        self.__dict__.update(signals)


def _elems(word, bits=VEC_BITS, signed=True, n=GROUP):
    """n signed elements of a packed word, and the statements that slice them out."""
    sigs = [Signal((bits, signed)) for _ in range(n)]
    return sigs, [s.eq(word[e * bits:(e + 1) * bits]) for e, s in enumerate(sigs)]


class _Table(Module):
    """A constant table read at two neighbouring entries per element, for linear interpolation."""

    def __init__(self, values, index_bits, data_bits, n):
        self.specials.mem = mem = Memory(data_bits, len(values), init=[int(v) for v in values])
        self.adr = [Signal(index_bits) for _ in range(n)]
        self.t0 = [Signal((data_bits + 1, True)) for _ in range(n)]
        self.t1 = [Signal((data_bits + 1, True)) for _ in range(n)]
        for k in range(n):
            p0, p1 = mem.get_port(), mem.get_port()
            self.specials += p0, p1
            self.comb += p0.adr.eq(self.adr[k]), p1.adr.eq(self.adr[k] + 1)
            self.comb += self.t0[k].eq(p0.dat_r), self.t1[k].eq(p1.dat_r)


class VectorUnit(Module):
    def __init__(self, cfg, vm_words, dim, eps_q, gamma_words, head_dim=32, context=64, ve_words=2,
                 outside_domain="sys"):
        """outside_domain: the clock domain of what must run while the unit's own clock may be stopped (the
        simulator's gated clocks): the VM's outside ports (vm_w: GEMV results and loads; vm_r: reads) and the
        hold counter (an op waiting for its input is held with its clock stopped)."""
        W = VEC_BITS
        VW = cfg.vec_lanes                      # elements per cycle
        S = self.schedule = Schedule(cfg.pipeline)
        assert {2, 6} <= S.registered           # the SILU and exp tables' addresses: a block RAM answers a cycle on
        self.latency = S.latency
        BEATS = GROUP // VW                     # cycles per VM word
        if head_dim not in (GROUP, 2 * GROUP):
            raise ValueError(f"head_dim={head_dim}: RoPE handles heads of one or two VM words (32 or 64)")
        self.dim_recip = int(round((1 << F.MEAN_FRAC) / dim))
        scale_q = F.attn_scale_q(head_dim)
        # command interface ---------------------------------------------------------------------------
        self.op = Signal(4)
        self.a, self.b, self.dst, self.aux, self.n, self.count = (Signal(16) for _ in range(6))
        self.abase = Signal(ABASE_BITS) # first activation word written (QUANT, AVEC, qout)
        self.qout = Signal()
        self.start = Signal()
        self.busy = Signal()
        self.done = Signal()
        # the activation write port (QUANT, AVEC): one group per word, as ActivationBuffer lays it out
        self.act_adr = Signal(16)
        self.act_dat = Signal(GROUP * ACT_BITS + cfg.group_sum_bits + cfg.exp_bits)
        self.act_we = Signal()
        # results and state
        # (as narrow as its values: e <= bit length of a W + 16-bit max - NORM_IN_BITS, so x >> e, at the head of
        # stage 1, has no more shifter levels than it needs)
        self.e = Signal(max=W + 16 - F.NORM_IN_BITS + 1)
        self.R = Signal(48)
        self.sh = Signal((8, True))
        self.smax = Signal((W, True))
        self.Rz = Signal(48)
        self.shz = Signal((8, True))
        self.argmax = Signal(16)
        self.cnt_busy = Signal(32)
        # chaining: the words the issue stage reads this cycle; `hold` (from outside: one of them is still
        # being written by a GEMV) makes it wait, so an op can start while its input is being produced
        self.rd_a = Signal(16)
        self.rd_b = Signal(16)
        self.uses_b = Signal()
        self.hold = Signal()
        # the activation words this op writes (from abase, n of them when writes_act), written in order:
        # those below act_next are written, so a GEMV can start reading them as they come; act_stop is one past
        # the last (both registers: a GEMV's issue waits on comparisons with them)
        self.writes_act = Signal()
        self.act_next = Signal(17)
        self.act_stop = Signal(17)
        self.cnt_hold = Signal(32)
        self.pipe_busy = Signal()       # a beat is still in the pipeline (past the issue stage) or the tail
        self.holding = Signal()         # waiting for its input (`hold`): no state changes but the hold counter
        self.tail_busy = Signal()       # the quantizer tail holds a beat or a word
        self.mid_pair = Signal()        # ROPE between a beat and its partner: `hold` must not split them

        # # #

        wpr = head_dim // GROUP          # VM words per head (ROPE)
        HB = wpr * BEATS                 # beats per head
        half = head_dim // 2
        # The VM is a memory of lines of LINE elements (element e of word w: line w * LPW + e // LINE, slot
        # e % LINE): as wide as one beat of this unit or one row step of the GEMV units, whichever is wider, so
        # that every write is one line's slots and the memory maps onto block RAM (one write port, read ports
        # READ_FIRST). The unit's own results take the write port first; outside writes (GEMV results, host
        # loads) when it writes none (vm_w_ready). Host reads share the b read port while the unit is idle.
        LINE = max(VW, cfg.lanes)
        LPW, BPL = GROUP // LINE, LINE // VW        # lines per word, beats per line
        self.line, self.lines_per_word = LINE, LPW
        lpw_log, bpl_log, beats_log = (log2_exact(v) for v in (LPW, BPL, BEATS))
        self.specials.vm = vm = Memory(LINE * W, vm_words * LPW)
        # the read ports register the line read (READ_FIRST), not the address: a write at the same clock edge is
        # not seen (the unit never needs a slot in the cycle it is written: the chaining and the drain see to
        # that, and an op writing in place or ROPE reads every slot before writing it); block RAM needs no bypass
        # logic for it. Every VM port is on the outside domain: a GEMV's rows, host reads and the unit's own
        # reads share the memory whether or not the unit's clock runs (the logic on the lines read depends on the
        # unit's registers only, so a port clocked while the unit's clock is stopped changes none of its state)
        ra = vm.get_port(mode=READ_FIRST, clock_domain=outside_domain)
        rb = vm.get_port(mode=READ_FIRST, clock_domain=outside_domain)
        wp = vm.get_port(write_capable=True, we_granularity=W, clock_domain=outside_domain)
        self.vm_w = _Port(adr=Signal(len(wp.adr)), dat_w=Signal(LINE * W), we=Signal(LINE))
        self.vm_w_ready = Signal()      # the outside write is taken this cycle (the unit writes none)
        self.vm_r = _Port(adr=Signal(len(rb.adr)), dat_r=rb.dat_r)
        # norm weights and V's exponents: lines of one beat (word w, beat b at w * BEATS + b)
        g_lines = [(w >> (b * VW * GAMMA_BITS)) & ((1 << (VW * GAMMA_BITS)) - 1)
                   for w in gamma_words for b in range(BEATS)]
        self.specials.gamma = gmem = Memory(VW * GAMMA_BITS, max(len(g_lines), 2), init=g_lines)
        gp = gmem.get_port()
        self.gamma_w = gmem.get_port(write_capable=True)      # norm weights can also be (re)loaded
        self.specials += self.gamma_w
        ve_depth = max(ve_words * BEATS, 2)
        self.specials.ve = vemem = Memory(VW * EXP_BITS, ve_depth, init=[0] * ve_depth)
        vep = vemem.get_port()
        self.ve_w = vemem.get_port(write_capable=True, we_granularity=EXP_BITS)
        self.specials += ra, rb, wp, gp, vep, self.ve_w

        # issue: one beat (VW elements) per cycle: beat t of word i, or for ROPE beat hb of head i (wpr words)
        # in the order 0, HB/2, 1, HB/2 + 1, ...: each beat is read with its partner beat (the other half of
        # the head) in two adjacent cycles, both before either is written in place ---------------------------
        i = Signal(16)
        t = Signal(max(1, bits_for(HB - 1)))
        issuing = Signal()
        op = Signal(4)
        qout, abase = Signal(), Signal(ABASE_BITS)
        starting = Signal()             # a command accepted this cycle
        self.comb += starting.eq(self.start & ~self.busy)
        op_flags = {}

        def is_cmd(*names):
            """The command's op (self.op, while it is offered) is one of `names`."""
            return reduce(or_, [self.op == OPS[n] for n in names])

        def is_op(*names):
            """A register: the op is one of `names`, decoded from the command as `op` loads (a decode of `op`
            would sit at the head of the hold, chaining and tail paths, which are an FPGA clock's longest)."""
            key = frozenset(names)
            if key not in op_flags:
                op_flags[key] = flag = Signal(name="op_" + "_".join(sorted(names)))
                self.sync += If(starting, flag.eq(is_cmd(*names)))
            return op_flags[key]
        rope = is_op("rope")
        last_beat = Signal()            # the last beat of a VM word (of a head for ROPE)
        self.comb += last_beat.eq(t == Mux(rope, HB - 1, BEATS - 1))
        n_last = Signal(16)             # the last word's index (a register: the enable compares with it)
        self.sync += [
            If(starting,
                issuing.eq(self.n != 0), i.eq(0), t.eq(0), op.eq(self.op), self.busy.eq(1), n_last.eq(self.n - 1),
                qout.eq(self.qout), abase.eq(self.abase),
            ).Elif(issuing & ~self.hold,
                t.eq(Mux(last_beat, 0, t + 1)),
                If(last_beat,
                    i.eq(i + 1),
                    If(i == n_last, issuing.eq(0)),
                ),
            )
        ]
        hb, pb = Signal(len(t)), Signal(len(t))     # ROPE: this beat and its partner, in the head
        if HB > 1:
            self.comb += hb.eq((t >> 1) + Mux(t[0], HB // 2, 0)), pb.eq(hb ^ (HB // 2))
        # (a pair's second beat reads the first's partner, which the first's in-place write changes
        # S.write("rope") cycles after it issued (3 short, 6 deep): the two issue back to back, so only a hold for
        # input not yet written, which holds both alike, may come between them)
        self.comb += self.mid_pair.eq(rope & t[0] if HB > 1 else 0)
        bt0 = Signal(len(t))            # the beat within the word (head) this cycle
        self.comb += bt0.eq(Mux(rope, hb, t))
        # the words read: a + i (a + i * wpr for ROPE's heads) and b + i, counted in registers beside i, so the
        # read addresses (and the outside's hold on them) start from registers rather than an adder
        a_word, b_word = Signal(16), Signal(16)
        self.sync += If(starting, a_word.eq(self.a), b_word.eq(self.b)) \
            .Elif(issuing & ~self.hold & last_beat, a_word.eq(a_word + Mux(rope, wpr, 1)), b_word.eq(b_word + 1))

        aux_beat = Signal(16)           # beat t of word aux + i in the one-beat lines of gamma and VE

        def line(word, beat):
            return (word << lpw_log) + (beat >> bpl_log)
        self.comb += [
            ra.adr.eq(line(a_word, bt0)),
            self.rd_b.eq(Mux(rope, line(a_word, pb), line(b_word, t))),
            rb.adr.eq(Mux(self.busy, self.rd_b, self.vm_r.adr)),
            aux_beat.eq(((self.aux + i) << beats_log) + t), gp.adr.eq(aux_beat), vep.adr.eq(aux_beat),
            self.rd_a.eq(ra.adr),
            self.uses_b.eq(is_op("add", "silu", "rope")),
        ]
        # pipeline bookkeeping, by cycles after the issue: valid, word (head) index, beat, last beat of a word
        valid = [issuing & ~self.hold] + [Signal() for _ in range(S.latency)]
        idx = [i] + [Signal(16) for _ in range(S.latency)]
        bt = [bt0] + [Signal(len(t)) for _ in range(S.latency)]
        wl = [last_beat] + [Signal() for _ in range(S.latency)]
        # (a new op clears the beats the last one left past its final stage: they would pass for the new op's)
        for k in range(S.latency):
            self.sync += valid[k + 1].eq(valid[k] & ~starting), idx[k + 1].eq(idx[k]), bt[k + 1].eq(bt[k]), \
                wl[k + 1].eq(wl[k])
        pb1 = Signal(len(t))
        self.sync += pb1.eq(pb)
        self.comb += self.pipe_busy.eq(reduce(or_, valid[1:]) | self.tail_busy), \
            self.holding.eq(self.busy & issuing & self.hold)
        sync_outside = getattr(self.sync, outside_domain)
        sync_outside += If(self.holding, self.cnt_hold.eq(self.cnt_hold + 1))

        # operands (stage 1 reads them): this beat's slots of the lines read ---------------------------------
        la, s = _elems(ra.dat_r, n=LINE)
        lb, s2 = _elems(rb.dat_r, n=LINE)
        g, s3 = _elems(gp.dat_r, GAMMA_BITS, n=VW)
        ve, s4 = _elems(vep.dat_r, EXP_BITS, n=VW)
        # RoPE's tables: rows of TW values (cos and sin at head position p mod half), TROWS rows per position
        TW = min(VW, half)
        TROWS = half // TW
        self.specials.cos = cmem = Memory(TW * TRIG_BITS, context * TROWS)
        self.specials.sin = smem = Memory(TW * TRIG_BITS, context * TROWS)
        cp, sp = cmem.get_port(), smem.get_port()
        self.specials += cp, sp
        trow = (self.aux << log2_exact(TROWS)) + (hb & (TROWS - 1)) if TROWS > 1 else self.aux
        self.comb += cp.adr.eq(trow), sp.adr.eq(trow)
        self.cos_mem, self.sin_mem = cmem, smem
        cs_all, s5 = _elems(cp.dat_r, TRIG_BITS, n=TW)
        sn_all, s6 = _elems(sp.dat_r, TRIG_BITS, n=TW)
        self.comb += s + s2 + s3 + s4 + s5 + s6

        def pick(elems, k, sel):
            """Slot k of the beat `sel` (mod BPL) of a line: a constant mux over the beats of a line."""
            choices = [elems[v * VW + k] for v in range(BPL)]
            if BPL == 1:
                return choices[0]
            out = Signal.like(choices[0])
            self.comb += Case(sel[:bpl_log], {v: out.eq(c) for v, c in enumerate(choices)})
            return out

        ysel = Signal(len(t))
        self.comb += ysel.eq(Mux(rope, pb1, bt[1]))
        x = [pick(la, k, bt[1]) for k in range(VW)]
        y = [pick(lb, k, ysel) for k in range(VW)]
        # ROPE: at head position p, out[p] = x[p] cos - x[p + half] sin for p < half, else x[p] cos + x[p - half]
        # sin, with cos and sin at p mod half: the partner is y (the partner beat's same slot), or for a head of
        # one beat (VW = head_dim = 32) the same line's other half
        yrope = y if HB > 1 else [la[(k + half) % GROUP] for k in range(VW)]
        cs = [cs_all[k % TW] for k in range(VW)]
        sn = [sn_all[k % TW] for k in range(VW)]
        neg = [bt[1] < HB // 2 for _ in range(VW)] if HB > 1 else [int(k < half) for k in range(VW)]
        inmask = [Signal() for _ in range(VW)]
        for k in range(VW):
            self.comb += inmask[k].eq(idx[1] * GROUP + bt[1] * VW + k < self.count)

        # tables ---------------------------------------------------------------------------------------------
        self.submodules.sig = sig = _Table(F.SIG_TABLE, 12, F.SIG_FRAC + 1, VW)
        self.submodules.exp2 = exp2 = _Table(F.EXP2_TABLE, F.EXP_TABLE_BITS + 1, F.EXP_FRAC + 1, VW)
        sshift = VEC_FRAC - F.SIG_STEP_BITS
        slo = -F.SIG_RANGE << F.SIG_STEP_BITS
        elow = VEC_FRAC - F.EXP_TABLE_BITS

        # operand widths the golden model bounds (so the products fit 64 bits where they can, and share the
        # multipliers): x >> e has at most NORM_IN_BITS bits plus sign (e from RMS_MAX or ADD); R and Rz
        # come from the tables at normalised indices; probabilities (SM_NORM's input) are at most 1.0 in Q16;
        # a normalised value is at most sqrt(dim) in VEC_FRAC, so it times gamma fits the golden int64
        XS_BITS = F.NORM_IN_BITS + 2
        R_BITS = int(F.RSQRT_TABLE[1 << (F.TABLE_BITS - 2):].max()).bit_length() + 1
        RZ_BITS = int(F.RECIP_TABLE[1 << (F.TABLE_BITS - 1):].max()).bit_length() + 1
        P_BITS = F.EXP_FRAC + 2
        ROPE_BITS = F.ROPE_IN_MAX.bit_length() + 1
        Y_BITS = W - 14             # a normalised value: |y| < 2**(VEC_FRAC + 8) for dim < 2**16
        SILU_BITS = F.SILU_IN_MAX.bit_length() + 1
        A1, B1 = max(XS_BITS, P_BITS, ROPE_BITS), max(R_BITS, RZ_BITS, XS_BITS, TRIG_BITS)
        Rs, Rzs = Signal((R_BITS, True)), Signal((RZ_BITS, True))
        self.comb += Rs.eq(self.R[:R_BITS - 1]), Rzs.eq(self.Rz[:RZ_BITS - 1])

        # The per-slot pipeline: stage k computes from stage k - 1's outputs (stage 1 from the lines read) and
        # loads its own registers while its cycle's beat is valid (or, if they are not registers under the
        # Schedule, passes them on in that cycle), so a stage holds about one adder, shift or table read, and each
        # product takes two (its 18x18 pieces, then their sum: arith.PipelinedProduct). An op's beats run through the
        # stages up to its FINAL_STAGE (one op at a time: a shared multiplier's operands are chosen by op):
        #  1 pick the beat's slots; x >> e; the clamps                  7 NORM/SILU: round(product >> 16)
        #  2 the shared product's pieces; SILU's table address          SM_EXP: the exp table's difference
        #  3 the product; SM_*: the scaled score; SILU's table read     8 SILU: gate * up (pieces)
        #  4 NORM/SM_NORM's rounding shift; ROPE's rotation; SM_EXP:    SM_EXP: its interpolation product
        #    max(0, m - s); SILU: its interpolation product             9 SILU: its rounding; SM_EXP: 2**-t
        #  5 SM_EXP: t's product (pieces); SILU: the sigmoid           then saturate (r3) and write back
        #  6 NORM's y * gamma or SILU's gate * sigmoid (pieces);        (latency - 1 for the slowest), tail
        #    SM_EXP: t, the exp table's read
        # (a table answers in the stage after its address: SILU's is read in stage 2, the exp table in 6)
        def regs(shape, n=VW):
            return [Signal(shape) for _ in range(n)]

        def step(registered, en, *stmts):
            """Statements loaded into their registers while `en` if registered, else passed on within the cycle
            (the Schedule's choice: the stages below, the tail's steps)."""
            if registered:
                self.sync += If(en, *stmts)
            else:
                self.comb += stmts

        def stage(k, *stmts):
            step(k in S.registered, valid[S.cycle[k]], *stmts)

        def product(a, b, k, when):
            """a * b: pieces at stage k (while `when`), the product's expression for stage k + 1."""
            p = PipelinedProduct(a, b, valid[S.cycle[k]] & when, registered=k in S.registered)
            self.submodules += p
            return p.value

        m1_op = is_op("norm", "rms_ss", "sm_norm", "rope")      # the ops whose stage-3 value is the shared product
        sm, silu_op, norm_op, exp_op = is_op("sm_max", "sm_exp"), is_op("silu"), is_op("norm"), is_op("sm_exp")
        # what passes from stage to stage unchanged: the in-count mask, ROPE's sign, V's exponent + VEC_FRAC
        mask = [inmask] + [regs(1) for _ in range(STAGES - 1)]
        negs = [neg] + [regs(1) for _ in range(3)]
        vx = [[ve[k] + VEC_FRAC for k in range(VW)]] + [regs(6) for _ in range(FINAL_STAGE["sm_norm"])]
        for k in range(VW):
            for s in range(1, STAGES):
                stage(s, mask[s][k].eq(mask[s - 1][k]))
            for s in range(1, 4):
                stage(s, negs[s][k].eq(negs[s - 1][k]))
            for s in range(1, len(vx)):
                stage(s, vx[s][k].eq(vx[s - 1][k]))

        # stage 1: the beat's operands ------------------------------------------------------------------------
        x1, y1 = regs((W, True)), regs((W, True))
        xs1 = regs((XS_BITS, True))                                # x >> e (NORM, RMS_SS)
        gc1, uc1 = regs((SILU_BITS, True)), regs((SILU_BITS, True))   # SILU's clamped gate and up
        ra1, rb1 = regs((ROPE_BITS, True)), regs((ROPE_BITS, True))   # ROPE's clamped pair
        g1, cs1, sn1 = regs((GAMMA_BITS, True)), regs((TRIG_BITS, True)), regs((TRIG_BITS, True))
        for k in range(VW):
            stage(1, x1[k].eq(x[k]), y1[k].eq(y[k]), xs1[k].eq(x[k] >> self.e),
                  gc1[k].eq(clamp(x[k], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                  uc1[k].eq(clamp(y[k], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                  ra1[k].eq(clamp(x[k], -F.ROPE_IN_MAX, F.ROPE_IN_MAX)),
                  rb1[k].eq(clamp(yrope[k], -F.ROPE_IN_MAX, F.ROPE_IN_MAX)),
                  g1[k].eq(g[k]), cs1[k].eq(cs[k]), sn1[k].eq(sn[k]))

        # stage 2: the products' pieces; SILU's table address ------------------------------------------------
        val2 = regs((W + 1, True))
        gc2, uc2, g2 = regs((SILU_BITS, True)), regs((SILU_BITS, True)), regs((GAMMA_BITS, True))
        tidx2 = regs((SILU_BITS, True))
        amax2 = Signal(W + 16)                                  # RMS_MAX: the beat's max |x|
        p1, p1b, pscale = [], [], []
        for k in range(VW):
            a1, b1 = Signal((A1, True)), Signal((B1, True))
            self.comb += Case(op, {             # the one shared stage-2 multiplier's operands
                OPS["norm"]: [a1.eq(xs1[k]), b1.eq(Rs)],
                OPS["rms_ss"]: [a1.eq(xs1[k]), b1.eq(xs1[k])],
                OPS["sm_norm"]: [a1.eq(x1[k][:P_BITS]), b1.eq(Rzs)],
                "default": [a1.eq(ra1[k]), b1.eq(cs1[k])],
            })
            p1.append(product(a1, b1, 2, m1_op))
            p1b.append(product(rb1[k], sn1[k], 2, rope))                # ROPE's second product
            pscale.append(product(x1[k], scale_q, 2, sm))               # SM_*: the scaled score
            self.comb += sig.adr[k].eq(clamp((gc1[k] >> sshift) - slo, 0, len(F.SIG_TABLE) - 2))
            stage(2, val2[k].eq(Mux(is_op("add"), x1[k] + y1[k], x1[k])),
                  gc2[k].eq(gc1[k]), uc2[k].eq(uc1[k]), g2[k].eq(g1[k]), tidx2[k].eq(gc1[k] >> sshift))
        stage(2, If(is_op("rms_max"), amax2.eq(tree(max_, [abs_(v) for v in x1]))))

        # stage 3: the products (NORM's and SM_NORM's with their rounding half for stage 4's shift: rhalf, fixed
        # for an op); SILU's table entries ------------------------------------------------------------------------
        # (one shift for both, NORM's or SM_NORM's by the op: a barrel shifter of the 77-bit product is among
        # the unit's largest and most wired blocks; NORM's rounding half in W bits, SM_NORM's in W + 8)
        m_shift, m_half = Signal(8), Signal(W + 8)
        rhalf = Signal(W + 8)
        self.sync += m_shift.eq(Mux(norm_op, F.RSQRT_FRAC - VEC_FRAC + (self.sh >> 1),
                                    F.RECIP_FRAC + self.shz - F.PROB_FRAC)), \
            rhalf.eq(Mux(norm_op, m_half[:W], Mux(is_op("sm_norm"), m_half, 0)))
        self.comb += m_half.eq((1 << m_shift) >> 1)
        # (rhalf is in three cycles after a command's start: its op flag, m_shift, rhalf; a beat's stage 3 reads it
        # no sooner: issue at start + 1, stage 3 at least two cycles after its issue)
        assert S.cycle[3] >= 2
        val3 = regs((A1 + B1 + 1, True))
        rb3 = regs((ROPE_BITS + TRIG_BITS, True))
        gc3, uc3, g3 = regs((SILU_BITS, True)), regs((SILU_BITS, True)), regs((GAMMA_BITS, True))
        dt3, t03 = regs((F.SIG_FRAC + 3, True)), regs((F.SIG_FRAC + 2, True))
        fr3 = regs(sshift)
        tin3, tlo3 = regs(1), regs(1)
        for k in range(VW):
            stage(3, If(m1_op, val3[k].eq(p1[k] + rhalf)).Elif(sm, val3[k].eq(rshift_round(pscale[k], 16)))
                  .Else(val3[k].eq(val2[k])),
                  rb3[k].eq(p1b[k]), gc3[k].eq(gc2[k]), uc3[k].eq(uc2[k]), g3[k].eq(g2[k]),
                  dt3[k].eq(sig.t1[k] - sig.t0[k]), t03[k].eq(sig.t0[k]), fr3[k].eq(gc2[k][:sshift]),
                  tin3[k].eq((tidx2[k] >= slo) & (tidx2[k] < -slo)), tlo3[k].eq(tidx2[k] < slo))

        # stage 4: rounding shifts (by registered shift amounts: R's and Rz's are fixed for an op) -----------
        val4 = regs((W + 2, True))
        y4 = regs((Y_BITS, True))
        d4 = regs(F.EXP_IN_MAX.bit_length())                       # SM_EXP: max(0, m - s), clamped
        slope4 = regs((F.SIG_FRAC + 3 + sshift + 1, True))
        gc4, uc4, g4, t04 = regs((SILU_BITS, True)), regs((SILU_BITS, True)), regs((GAMMA_BITS, True)), \
            regs((F.SIG_FRAC + 2, True))
        tin4, tlo4 = regs(1), regs(1)
        for k in range(VW):
            negd = Signal((W + 2, True))
            rot = Signal((len(rb3[k]) + 1, True))
            msh = Signal.like(val3[k])          # val3 >> m_shift: NORM's y4, SM_NORM's val4
            self.comb += negd.eq(self.smax - val3[k]), \
                rot.eq(Mux(negs[3][k], val3[k] - rb3[k], val3[k] + rb3[k])), msh.eq(val3[k] >> m_shift)
            stage(4, Case(op, {
                    OPS["sm_norm"]: val4[k].eq(msh),
                    OPS["rope"]: val4[k].eq(rshift_round(rot, F.ROPE_FRAC)),
                    "default": val4[k].eq(val3[k]),
                  }),
                  y4[k].eq(msh), d4[k].eq(clamp(negd, 0, F.EXP_IN_MAX)),
                  slope4[k].eq(dt3[k] * fr3[k]),
                  gc4[k].eq(gc3[k]), uc4[k].eq(uc3[k]), g4[k].eq(g3[k]), t04[k].eq(t03[k]),
                  tin4[k].eq(tin3[k]), tlo4[k].eq(tlo3[k]))

        # stage 5: SM_EXP's t (pieces); SILU's sigmoid ---------------------------------------------------------
        y5 = regs((Y_BITS, True))
        gc5, uc5, g5 = regs((SILU_BITS, True)), regs((SILU_BITS, True)), regs((GAMMA_BITS, True))
        sgm5 = regs((F.SIG_FRAC + 2, True))
        ptt = []
        for k in range(VW):
            ptt.append(product(d4[k], F.LOG2E_Q, 5, exp_op))
            stage(5, y5[k].eq(y4[k]), gc5[k].eq(gc4[k]), uc5[k].eq(uc4[k]), g5[k].eq(g4[k]),
                  sgm5[k].eq(Mux(tin4[k], t04[k] + (slope4[k] >> sshift),
                                 Mux(tlo4[k], int(F.SIG_TABLE[0]), 1 << F.SIG_FRAC))))

        # stage 6: NORM's y * gamma or SILU's gate * sigmoid (pieces: one shared multiplier); SM_EXP's t -------
        assert F.GAMMA_FRAC == F.SIG_FRAC        # NORM and SILU share the product and its rounding
        uc6 = regs((SILU_BITS, True))
        tt6 = regs(W)                            # exp_neg's t (non-negative for the unmasked slots)
        p2 = []
        for k in range(VW):
            a2, b2 = Signal((max(Y_BITS, SILU_BITS), True)), Signal((GAMMA_BITS, True))
            self.comb += If(norm_op, a2.eq(y5[k]), b2.eq(g5[k])).Else(a2.eq(gc5[k]), b2.eq(sgm5[k]))
            p2.append(product(a2, b2, 6, norm_op | silu_op))
            tt = Signal(W)
            self.comb += tt.eq(ptt[k] >> 16), exp2.adr[k].eq(tt[elow:VEC_FRAC])    # (read in stage 6)
            stage(6, uc6[k].eq(uc5[k]), tt6[k].eq(tt))

        # stage 7: the rounded product; SM_EXP's table entries ----------------------------------------------
        val7, uc7 = regs((W + 2, True)), regs((SILU_BITS, True))
        dt7, t07, tt7 = regs((F.SIG_FRAC + 3, True)), regs((F.EXP_FRAC + 2, True)), regs(W)
        for k in range(VW):
            stage(7, val7[k].eq((p2[k] + (1 << (F.GAMMA_FRAC - 1))) >> F.GAMMA_FRAC),
                  uc7[k].eq(uc6[k]), dt7[k].eq(exp2.t1[k] - exp2.t0[k]), t07[k].eq(exp2.t0[k]), tt7[k].eq(tt6[k]))

        # stage 8: SILU's gate * sigmoid * up (pieces); SM_EXP's interpolation product ----------------------
        slope8 = regs((F.SIG_FRAC + 3 + elow + 1, True))
        t08, en8 = regs((F.EXP_FRAC + 2, True)), regs(W - VEC_FRAC)
        p3 = []
        for k in range(VW):
            g7 = Signal((SILU_BITS + 2, True))          # SILU's gate * sigmoid
            self.comb += g7.eq(val7[k])
            p3.append(product(g7, uc7[k], 8, silu_op))
            stage(8, slope8[k].eq(dt7[k] * tt7[k][:elow]), t08[k].eq(t07[k]),
                  en8[k].eq(tt7[k] >> VEC_FRAC))

        # stage 9: SILU's rounding; SM_EXP's 2**-t -------------------------------------------------------------
        val9 = regs((W + 2, True))
        for k in range(VW):
            p3r = Signal((2 * SILU_BITS + 2 - VEC_FRAC, True))
            ev = Signal((F.EXP_FRAC + 2, True))
            self.comb += p3r.eq((p3[k] + (1 << (VEC_FRAC - 1))) >> VEC_FRAC), \
                ev.eq(t08[k] + (slope8[k] >> elow))
            stage(9, If(silu_op, val9[k].eq(p3r)).Else(
                val9[k].eq(Mux(mask[8][k] & (en8[k] < 32), ev >> en8[k][:6], 0))))

        # the op's value, saturated, in r3 (with V's exponents for AVEC and SM_NORM) the cycle its FINAL_STAGE's
        # output is read in; written (and into the tail) the cycle after that: an op's beats leave the pipeline
        # as soon as its value is ready
        values = {"quant": x1, "avec": x1, "add": val2, "rope": val4, "sm_norm": val4, "norm": val7, "silu": val9,
                  "sm_exp": val9}
        r3 = regs((W, True))
        vxw = regs(6)
        for k in range(VW):
            self.sync += Case(op, {OPS[n]: If(valid[S.after(FINAL_STAGE[n])], r3[k].eq(saturate(v[k], W)),
                                              *([vxw[k].eq(vx[FINAL_STAGE[n]][k])] if n in ("avec", "sm_norm")
                                                else []))
                                   for n, v in values.items()})

        def at_write(arr, shape):
            """The op's write cycle's entry of a per-cycle list (0 for the ops that write nothing)."""
            out = Signal(shape)
            self.comb += Case(op, {OPS[n]: out.eq(arr[S.write(n)]) for n in FINAL_STAGE})
            return out

        # tail: the one quantizer to the activation port (its input is the word's results: the value QUANT
        # reads, or what NORM/SILU write; probabilities shifted by V's exponents for AVEC and SM_NORM), and the
        # max |result| of ADD. quantize_act needs the group's max before any element, so it runs in two passes
        # of VW elements a cycle: as the beats are written they are shifted (T1), then collect (a shift
        # register) with a running max (T2); once a word is complete its shift and rounding are fixed (T3) and
        # its elements quantized over the next BEATS cycles (while the next word collects), each in three steps
        # (add the rounding half, shift and clamp, gather), the activation word written one cycle after the last.
        # Deep, T1 and the first two steps are registers; short, they pass on within the cycle
        wv, wbt, wwl, widx = at_write(valid, 1), at_write(bt, len(t)), at_write(wl, 1), at_write(idx, 16)
        tv, tbt, twl, tidx = [wv], [wbt], [wwl], [widx]        # the tail's own stages, from the write stage
        for j in range(2):
            tv.append(Signal()), tbt.append(Signal(len(t))), twl.append(Signal()), tidx.append(Signal(16))
            # (a new op clears the last op's beats: ADD would take the last tail word's max for its own)
            self.sync += tv[j + 1].eq(tv[j] & ~starting), tbt[j + 1].eq(tbt[j]), twl[j + 1].eq(twl[j]), \
                tidx[j + 1].eq(tidx[j])
        r3cat = Cat(*r3)
        avmode = is_op("avec", "sm_norm")
        # (registers beside op, as is_op's: the GEMVs' chaining waits on acts)
        acts, tail_op = Signal(), Signal()  # the op writes activations; it uses the tail (those, and ADD)
        acts_cmd = Signal()
        self.comb += acts_cmd.eq(is_cmd("quant", "avec") | (self.qout & is_cmd("norm", "silu", "sm_norm")))
        self.sync += If(starting, acts.eq(acts_cmd), tail_op.eq(acts_cmd | is_cmd("add")))
        TQ = W + 16
        T2 = int(S.deep)                    # T2's cycle after the write
        # T1 (the write stage): the beat's values (shifted by V's exponents) and their magnitudes
        bq, babs = regs((TQ, True)), regs(TQ)
        for k in range(VW):
            sv_ = Signal((TQ, True))
            self.comb += sv_.eq(Mux(avmode, r3[k] << vxw[k], r3[k]))
            step(S.deep, wv & tail_op, bq[k].eq(sv_), babs[k].eq(abs_(sv_)))
        # T2: collect, running max over the word's beats
        t2 = Signal()
        self.comb += t2.eq(tv[T2] & tail_op)
        bmax, wmax, run = Signal(TQ), Signal(TQ), Signal(TQ)
        self.comb += bmax.eq(tree(max_, babs))         # (taken only while t2)
        self.comb += wmax.eq(Mux(tbt[T2] == 0, bmax, max_(run, bmax)))
        col = Signal(BEATS * VW * TQ)
        bcat = Cat(*bq)
        self.sync += If(t2, run.eq(wmax), col.eq(Cat(col[VW * TQ:], bcat) if BEATS > 1 else bcat))
        t1max = Signal(TQ)                  # the last complete word's max |value| (ADD's e)
        wready = Signal()                   # a word's values are all in `col`, its max in t1max
        self.sync += wready.eq(t2 & twl[T2] & acts), If(t2 & twl[T2], t1max.eq(wmax))
        # T3: the word's shift and rounding half, and its values to quantize
        qbl, sh = Signal(8), Signal(8)
        self.comb += If(wready, *bit_length(t1max, TQ, qbl))
        self.comb += sh.eq(Mux(qbl > ACT_BITS - 1, qbl - (ACT_BITS - 1), 0))
        qbuf = Signal(GROUP * TQ)
        q_sh, q_left = Signal(8), Signal(max=BEATS + 1)
        q_half = Signal(TQ)                 # (from the register q_sh, not from sh: the bit length's path ends at q_sh)
        self.comb += q_half.eq((1 << q_sh) >> 1)
        q_idx = Signal(16)
        quantizing = Signal()
        self.comb += quantizing.eq(q_left != 0)
        # Q1: value + half; Q2: shift and clamp; Q3: gather into the word (each with its word's shift and index:
        # the next word may load while this one's last steps run)
        vq = regs((TQ + 1, True))
        sh1, sh2 = Signal(8), Signal(8)
        first1, first2, last1, last2, qv1, qv2 = (Signal() for _ in range(6))
        idx1, idx2 = Signal(16), Signal(16)
        qm = [Signal((ACT_BITS + 1, True)) for _ in range(VW)]
        for k in range(VW):
            v_ = Signal((TQ, True))
            self.comb += v_.eq(qbuf[k * TQ:(k + 1) * TQ])
            step(S.deep, quantizing, vq[k].eq(v_ + q_half))
            step(S.deep, qv1, qm[k].eq(clamp(vq[k] >> sh1, -ACT_MAX, ACT_MAX)))
        step(S.deep, 1, qv1.eq(quantizing))
        step(S.deep, 1, qv2.eq(qv1))
        step(S.deep, quantizing, sh1.eq(q_sh), first1.eq(q_left == BEATS), last1.eq(q_left == 1), idx1.eq(q_idx))
        step(S.deep, qv1, sh2.eq(sh1), first2.eq(first1), last2.eq(last1), idx2.eq(idx1))
        q_mant = Signal(GROUP * ACT_BITS)
        q_gsum = Signal((cfg.group_sum_bits, True))
        newm = Cat(*[m[:ACT_BITS] for m in qm])
        mant_next = Cat(q_mant[VW * ACT_BITS:], newm) if BEATS > 1 else newm
        gsum_next = Signal((cfg.group_sum_bits, True))
        self.comb += gsum_next.eq(Mux(first2, 0, q_gsum) + tree(lambda p, q: p + q, qm))
        ea = Signal((cfg.exp_bits, True))
        # QUANT's input has VEC_FRAC fractional bits, the shifted probabilities 2 * VEC_FRAC
        self.comb += ea.eq(sh2 - Mux(avmode, 2 * VEC_FRAC, VEC_FRAC))
        r6act = Signal(len(self.act_dat))
        act_pulse = Signal()
        act_adr = Signal(16)
        self.sync += [
            act_pulse.eq(0),
            If(quantizing, qbuf.eq(qbuf[VW * TQ:]) if BEATS > 1 else [], q_left.eq(q_left - 1)),
            If(qv2,
                q_mant.eq(mant_next), q_gsum.eq(gsum_next),
                If(last2, r6act.eq(Cat(mant_next, gsum_next, ea)), act_pulse.eq(1), act_adr.eq(abase + idx2)),
            ),
            # (after the step above: a word completing in the cycle the last one's last step runs takes over)
            If(wready,
                qbuf.eq(col), q_sh.eq(sh), q_idx.eq(tidx[T2 + 1]), q_left.eq(BEATS),
            ),
        ]
        self.comb += self.tail_busy.eq(quantizing | qv1 | qv2 | act_pulse | wready | tv[1] | tv[2])

        # write back: each beat into its line's slots as it leaves r3 (ROPE's in place, in its head) -----------
        writes = is_op("add", "norm", "silu", "sm_exp", "sm_norm", "rope")
        own_we = Signal()
        self.comb += own_we.eq(wv & writes), self.vm_w_ready.eq(~own_we)
        w_word = Mux(rope, self.a + (widx << (wpr - 1)), self.dst + widx)
        beat_mask = (1 << VW) - 1
        self.comb += [
            If(own_we,
                wp.adr.eq(line(w_word, wbt)), wp.dat_w.eq(Replicate(r3cat, BPL)),
                Case(wbt[:bpl_log], {v: wp.we.eq(beat_mask << (v * VW)) for v in range(BPL)})
                if BPL > 1 else wp.we.eq(beat_mask),
            ).Else(
                wp.adr.eq(self.vm_w.adr), wp.dat_w.eq(self.vm_w.dat_w), wp.we.eq(self.vm_w.we),
            ),
            self.act_adr.eq(act_adr), self.act_dat.eq(r6act), self.act_we.eq(act_pulse),
            self.writes_act.eq(acts),
        ]
        self.sync += If(starting, self.act_next.eq(self.abase), self.act_stop.eq(self.abase + self.n)) \
            .Elif(self.act_we, self.act_next.eq(self.act_next + 1))

        # reductions, each in the cycle its inputs' stage output is read in: RMS_MAX's max |x| (stage 2's),
        # RMS_SS's sum of squares and the softmax's max (stage 3's, the max's winner the cycle after), SM_EXP's sum
        # (stage 9's, one before the write) ---------------------------------------------------------------------
        amax = Signal(W + 16)
        ss = Signal(2 * W + 16)
        z = Signal(W + 16)
        best = Signal((W + 1, True))
        best_i = Signal(16)
        wbest = Signal((W + 1, True))
        wbest_i = Signal(16)
        max4 = Signal()
        self.comb += max4.eq(valid[S.after(3)] & is_op("sm_max", "argmax"))
        cands = []
        for k in range(VW):
            sv = Signal((W + 1, True))                 # a signed view of the stage-3 value
            self.comb += If(max4, sv.eq(Mux(mask[3][k], val3[k], -(1 << W))))
            cands.append((sv, k))
        # a chain of distinct signals (a comb signal assigned and then read again in one block is not a chain
        # under the SoC's Verilog, whose comb blocks use non-blocking assignments)
        bv, bi = cands[0][0], Constant(0, max(1, bits_for(VW - 1)))
        for v, k in cands[1:]:
            nv, ni = Signal((W + 1, True)), Signal(len(bi))
            self.comb += If(max4, nv.eq(Mux(v > bv, v, bv))), If(max4, ni.eq(Mux(v > bv, k, bi)))
            bv, bi = nv, ni
        self.comb += wbest.eq(bv), wbest_i.eq(idx[S.after(3)] * GROUP + bt[S.after(3)] * VW + bi)
        r4best, r4best_i = Signal((W + 1, True)), Signal(16)
        self.sync += r4best.eq(wbest), r4best_i.eq(wbest_i)
        word_z = Signal(W + 16)
        self.comb += If(valid[S.after(9)] & exp_op,
                        word_z.eq(tree(lambda p, q: p + q, [val9[k][:F.EXP_FRAC + 2] for k in range(VW)])))
        first = Signal()
        self.sync += [
            If(starting,
                amax.eq(0), ss.eq(0), z.eq(0), first.eq(1),
            ).Else(
                If(valid[S.after(2)] & is_op("rms_max"), amax.eq(max_(amax, amax2))),
                If(valid[S.after(3)] & is_op("rms_ss"),
                   ss.eq(ss + tree(lambda p, q: p + q, [val3[k][:2 * XS_BITS] for k in range(VW)]))),
                If(valid[S.after(3) + 1] & is_op("sm_max", "argmax"),
                    first.eq(0),
                    If(first | (r4best > best), best.eq(r4best), best_i.eq(r4best_i))),
                If(valid[S.after(9)] & exp_op, z.eq(z + word_z)),
                # ADD's outputs leave the tail's max (t1max) the cycle after T2
                If(tv[T2 + 1] & twl[T2 + 1] & is_op("add"), amax.eq(max_(amax, t1max))),
            ),
        ]
        self.comb += self.smax.eq(best), self.argmax.eq(best_i)

        # finish: e after RMS_MAX and ADD; (R, sh) after RMS_SS, (Rz, shz) after SM_EXP over eight steps: the
        # value (0, 1), its bit length (2) and shift (3), the normalised mantissa and table address (4), the
        # table read (5), its entries (6), the interpolation (7): each a cycle if deep (Schedule) -------------
        bl = Signal(8)
        self.comb += bit_length(amax, W + 16, bl)
        v = Signal(2 * W + 16)
        vsum = Signal(2 * W + 16)
        self.submodules.rsq = rsq = _Table(F.RSQRT_TABLE, F.TABLE_BITS + 1, F.RSQRT_FRAC, 1)
        self.submodules.rcp = rcp = _Table(F.RECIP_TABLE, F.TABLE_BITS + 1, F.RECIP_FRAC, 1)
        vbl, vbl_c = Signal(8), Signal(8)
        vsh = Signal((8, True))
        m = Signal(F.MANT_BITS + 1)
        even = Signal()
        self.comb += bit_length(v, 2 * W + 16, vbl_c)
        self.comb += rsq.adr[0].eq(m >> F.INTERP_BITS), rcp.adr[0].eq(m >> F.INTERP_BITS)
        rfrac = Signal(F.INTERP_BITS)
        TF = max(F.RSQRT_FRAC, F.RECIP_FRAC)
        tdt, tt0 = Signal((TF + 2, True)), Signal((TF + 1, True))
        fin = Signal(3)
        drain = Signal(max=S.latency + S.tail_drain + BEATS + 1)
        base = Signal(max=S.latency)        # the op's drain (Schedule.drain) before the tail's
        self.comb += Case(op, {OPS[n]: base.eq(S.drain(n)) for n in OPS})
        rsq_op = is_op("rms_ss")
        steps = {
            0: [vsum.eq(((ss * self.dim_recip) >> F.MEAN_FRAC) + (eps_q >> (self.e << 1)))],
            1: [v.eq(Mux(rsq_op, Mux(vsum == 0, 1, vsum), z)), even.eq(rsq_op)],
            2: [vbl.eq(vbl_c)],
            3: [vsh.eq(vbl - F.MANT_BITS + Mux(even, (vbl - F.MANT_BITS) & 1, 0))],
            4: [m.eq(Mux(vsh >= 0, v >> vsh, v << -vsh))],
            5: [rfrac.eq(m[:F.INTERP_BITS])],         # (the tables read m's entries)
            6: [If(rsq_op, tt0.eq(rsq.t0[0]), tdt.eq(rsq.t1[0] - rsq.t0[0]))
                .Else(tt0.eq(rcp.t0[0]), tdt.eq(rcp.t1[0] - rcp.t0[0]))],
            # (vsh holds from step 3 on either way)
            7: [If(rsq_op, self.R.eq(tt0 + ((tdt * rfrac) >> F.INTERP_BITS)), self.sh.eq(vsh))
                .Else(self.Rz.eq(tt0 + ((tdt * rfrac) >> F.INTERP_BITS)), self.shz.eq(vsh)),
                self.busy.eq(0), self.done.eq(1)],
        }
        assert {4, 5, 7} <= S.finish_registered     # the table's address a cycle before its data; the results
        fin_cases = {}
        for k, stmts in steps.items():
            if k in S.finish_registered:
                fin_cases.setdefault(S.finish_cycle[k], []).extend(stmts)
            else:
                self.comb += stmts
        self.sync += [
            self.done.eq(0),
            # busy: running, except while its input is still being written (hold)
            If(self.busy & ~(issuing & self.hold), self.cnt_busy.eq(self.cnt_busy + 1)),
            If(starting, drain.eq(0), fin.eq(0)),
            If(self.busy & ~issuing & ~starting,
                If(drain < Mux(acts, base + S.tail_drain + BEATS - 1,
                               Mux(is_op("add"), base + S.add_drain, base)),
                   drain.eq(drain + 1)).Else(
                    If(is_op("rms_max", "add"),
                        self.e.eq(Mux(bl > F.NORM_IN_BITS, bl - F.NORM_IN_BITS, 0)),
                        self.busy.eq(0), self.done.eq(1),
                    ).Elif(rsq_op | exp_op,
                        fin.eq(fin + 1),
                        Case(fin, fin_cases),
                    ).Else(self.busy.eq(0), self.done.eq(1)),
                ),
            ),
        ]


    def set_rope(self, cos, sin):
        """Fill the RoPE tables (context x head_dim/2 Q16 values) before conversion or simulation: each
        position's values in rows of the tables' width."""
        tw = self.cos_mem.width // TRIG_BITS
        m = (1 << TRIG_BITS) - 1

        def rows(table):
            return [sum((int(v) & m) << (TRIG_BITS * j) for j, v in enumerate(row[r:r + tw]))
                    for row in table for r in range(0, table.shape[1], tw)]
        self.cos_mem.init, self.sin_mem.init = rows(cos), rows(sin)
        assert cos.shape[1] % tw == 0 and len(self.cos_mem.init) == self.cos_mem.depth
