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
Pipeline: issue, read, three compute stages, write (LATENCY cycles from a beat's issue to its write, each beat
written as it comes); the activation port's quantizer (which needs the whole group's max first) is a tail after
the write stage: the beats of a word collect with their running max, then the word is quantized vec_lanes
elements a cycle (its activation written ACT_LATENCY + beats - 1 cycles after its last beat's issue). Each lane
has one shared multiplier per stage (plus RoPE's second product and the softmax's scaling) with operands chosen
by the op: operand widths follow from the golden model's bounds, so most products fit 64 bits.
"""

from migen import *

from roma.host.golden import functions as F
from roma.host.golden.numerics import ACT_BITS, ACT_MAX, GROUP, VEC_BITS, VEC_FRAC

from .arith import abs_, bit_length, clamp, log2_exact, max_, rshift_round, saturate, tree
from .gemv import ABASE_BITS

OPS = {"add": 1, "quant": 2, "rms_max": 3, "rms_ss": 4, "norm": 5, "silu": 6, "rope": 7, "sm_max": 8,
       "sm_exp": 9, "sm_norm": 10, "avec": 11, "argmax": 12}
LATENCY = 5
ACT_LATENCY = LATENCY + 2
# cycles after the last issue until the op may finish: the last write lands LATENCY - 1 cycles after its
# issue and the reductions one cycle before that, so finishing DRAIN + 1 cycles later lets the next op read;
# ops using the quantizer tail (act writes, ADD's max) finish TAIL_DRAIN cycles later
DRAIN = LATENCY - 2
TAIL_DRAIN = ACT_LATENCY - LATENCY
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


def _round_product(a, b, s):
    """round(a * b >> s) for signed a, b: the rounding constant is as wide as the whole product, because a
    Verilog product is only as wide as its expression's context."""
    return (a * b + Constant(1 << (s - 1), (len(a) + len(b) + 1, True))) >> s


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
        self.e = Signal(8)
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
        # act_written counts those already written, so a GEMV can start reading them as they come
        self.writes_act = Signal()
        self.act_base = Signal(ABASE_BITS)
        self.act_written = Signal(16)
        self.cnt_hold = Signal(32)
        self.pipe_busy = Signal()       # a beat is still in the pipeline (past the issue stage) or the tail
        self.holding = Signal()         # waiting for its input (`hold`): no state changes but the hold counter
        self.tail_busy = Signal()       # the quantizer tail's second pass is running
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
        rope = Signal()
        self.comb += rope.eq(op == OPS["rope"])
        last_beat = Signal()            # the last beat of a VM word (of a head for ROPE)
        starting = Signal()             # a command accepted this cycle
        self.comb += last_beat.eq(t == Mux(rope, HB - 1, BEATS - 1)), starting.eq(self.start & ~self.busy)
        self.sync += [
            If(starting,
                issuing.eq(self.n != 0), i.eq(0), t.eq(0), op.eq(self.op), self.busy.eq(1),
                qout.eq(self.qout), abase.eq(self.abase),
            ).Elif(issuing & ~self.hold,
                t.eq(Mux(last_beat, 0, t + 1)),
                If(last_beat,
                    i.eq(i + 1),
                    If(i == self.n - 1, issuing.eq(0)),
                ),
            )
        ]
        hb, pb = Signal(len(t)), Signal(len(t))     # ROPE: this beat and its partner, in the head
        if HB > 1:
            self.comb += hb.eq((t >> 1) + Mux(t[0], HB // 2, 0)), pb.eq(hb ^ (HB // 2))
        # (a pair's second beat reads the first's partner, which the first's in-place write changes LATENCY - 1
        # cycles after it issued: the two issue back to back, so only a hold for input not yet written, which
        # holds both alike, may come between them)
        self.comb += self.mid_pair.eq(rope & t[0] if HB > 1 else 0)
        bt0 = Signal(len(t))            # the beat within the word (head) this cycle
        self.comb += bt0.eq(Mux(rope, hb, t))
        a_word = Signal(16)
        self.comb += a_word.eq(Mux(rope, self.a + (i << (wpr - 1)), self.a + i))

        aux_beat = Signal(16)           # beat t of word aux + i in the one-beat lines of gamma and VE

        def line(word, beat):
            return (word << lpw_log) + (beat >> bpl_log)
        self.comb += [
            ra.adr.eq(line(a_word, bt0)),
            self.rd_b.eq(Mux(rope, line(a_word, pb), line(self.b + i, t))),
            rb.adr.eq(Mux(self.busy, self.rd_b, self.vm_r.adr)),
            aux_beat.eq(((self.aux + i) << beats_log) + t), gp.adr.eq(aux_beat), vep.adr.eq(aux_beat),
            self.rd_a.eq(ra.adr),
            self.uses_b.eq((op == OPS["add"]) | (op == OPS["silu"]) | rope),
        ]
        # pipeline bookkeeping: valid, word (head) index, beat, partner beat, last beat of a word
        valid = [issuing & ~self.hold] + [Signal() for _ in range(ACT_LATENCY)]
        idx = [i] + [Signal(16) for _ in range(ACT_LATENCY)]
        bt = [bt0] + [Signal(len(t)) for _ in range(ACT_LATENCY)]
        wl = [last_beat] + [Signal() for _ in range(ACT_LATENCY)]
        for k in range(ACT_LATENCY):
            self.sync += valid[k + 1].eq(valid[k]), idx[k + 1].eq(idx[k]), bt[k + 1].eq(bt[k]), wl[k + 1].eq(wl[k])
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

        # per-slot pipeline registers
        r1 = [Signal((A1 + B1, True)) for _ in range(VW)]      # stage 1: the op's value (a product for some)
        r1b = [Signal((ROPE_BITS + TRIG_BITS, True)) for _ in range(VW)]   # ROPE's second product
        r1x = [Signal((SILU_BITS + 2, True)) for _ in range(VW)]   # SILU's clamped gate, SM_EXP's t
        r1y = [Signal((SILU_BITS, True)) for _ in range(VW)]       # SILU's clamped up
        r1g = [Signal((GAMMA_BITS, True)) for _ in range(VW)]
        r1m = [Signal() for _ in range(VW)]
        r1n = [Signal() for _ in range(VW)]
        r2 = [Signal((W + 2, True)) for _ in range(VW)]
        r2y = [Signal((SILU_BITS, True)) for _ in range(VW)]
        r3 = [Signal((W, True)) for _ in range(VW)]
        vexp = [[Signal(6) for _ in range(VW)] for _ in range(3)]   # V's exponent + VEC_FRAC, stages 1-3
        r1max = Signal(W + 16)

        # stage 1 --------------------------------------------------------------------------------------------
        # every op's stage registers load only while a beat of that op is in the stage: an idle unit (most
        # cycles) evaluates none of its products in the simulator
        v1 = valid[1]
        m1_op = Signal()            # the ops whose stage-1 value is the shared product
        self.comb += m1_op.eq((op == OPS["norm"]) | (op == OPS["rms_ss"]) | (op == OPS["sm_norm"]) | rope)
        xs = [Signal((W, True)) for _ in range(VW)]
        tt = [Signal(W) for _ in range(VW)]          # exp_neg's t (non-negative for the unmasked slots)
        # (values only some beats use are computed under their condition: 0 otherwise, and the simulator skips
        # them; one statement per signal, since a comb block's assignments are not seen by its own later reads)
        sm1 = Signal()
        self.comb += sm1.eq(v1 & ((op == OPS["sm_max"]) | (op == OPS["sm_exp"])))
        for k in range(VW):
            gc, uc = Signal((SILU_BITS, True)), Signal((SILU_BITS, True))
            tidx = Signal((SILU_BITS, True))
            xscale = Signal((W + 16, True))
            scaled = Signal((W + 1, True))
            negd = Signal((W + 2, True))
            dclamp = Signal(F.EXP_IN_MAX.bit_length())
            a1, b1 = Signal((A1, True)), Signal((B1, True))
            ra_, rb_ = Signal((ROPE_BITS, True)), Signal((ROPE_BITS, True))
            xs26 = Signal((XS_BITS, True))
            self.comb += [
                xs[k].eq(x[k] >> self.e), xs26.eq(xs[k]),
                gc.eq(clamp(x[k], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                uc.eq(clamp(y[k], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                tidx.eq(gc >> sshift),
                sig.adr[k].eq(clamp(tidx - slo, 0, len(F.SIG_TABLE) - 2)),
                If(sm1, xscale.eq(x[k] * scale_q)),
                If(sm1, scaled.eq(rshift_round(xscale, 16))),
                If(sm1, negd.eq(self.smax - scaled)),
                If(sm1, dclamp.eq(clamp(negd, 0, F.EXP_IN_MAX))),
                If(sm1, tt[k].eq((dclamp * F.LOG2E_Q) >> 16)),
                exp2.adr[k].eq(tt[k][elow:VEC_FRAC]),
                ra_.eq(clamp(x[k], -F.ROPE_IN_MAX, F.ROPE_IN_MAX)),
                rb_.eq(clamp(yrope[k], -F.ROPE_IN_MAX, F.ROPE_IN_MAX)),
                # the one shared stage-1 multiplier's operands
                Case(op, {
                    OPS["norm"]: [a1.eq(xs26), b1.eq(Rs)],
                    OPS["rms_ss"]: [a1.eq(xs26), b1.eq(xs26)],
                    OPS["sm_norm"]: [a1.eq(x[k][:P_BITS]), b1.eq(Rzs)],
                    "default": [a1.eq(ra_), b1.eq(cs[k])],
                }),
            ]
            self.sync += If(v1,
                vexp[0][k].eq(ve[k] + VEC_FRAC),
                r1m[k].eq(inmask[k]), r1n[k].eq(neg[k]),
                # (one product in the text: one multiplier however many ops use it)
                If(m1_op, r1[k].eq(a1 * b1)).Else(Case(op, {
                    OPS["add"]: r1[k].eq(x[k] + y[k]),
                    OPS["silu"]: r1[k].eq(tidx),
                    OPS["sm_max"]: r1[k].eq(scaled),
                    "default": r1[k].eq(x[k]),
                })),
                Case(op, {
                    OPS["norm"]: r1g[k].eq(g[k]),
                    OPS["rope"]: r1b[k].eq(rb_ * sn[k]),
                    OPS["silu"]: [r1x[k].eq(gc), r1y[k].eq(uc)],
                    OPS["sm_exp"]: r1x[k].eq(tt[k]),
                }),
            )
            self.sync += vexp[1][k].eq(vexp[0][k]), vexp[2][k].eq(vexp[1][k])
        self.sync += If(v1 & (op == OPS["rms_max"]), r1max.eq(tree(max_, [abs_(v) for v in x])))

        # stage 2 ------------------------------------------------------------------------------------------
        v2 = valid[2]
        norm_shift = Signal(8)
        self.comb += norm_shift.eq(F.RSQRT_FRAC - VEC_FRAC + (self.sh >> 1))
        nhalf = Signal(W)
        self.comb += nhalf.eq((1 << norm_shift) >> 1)
        smn_shift = Signal(8)
        self.comb += smn_shift.eq(F.RECIP_FRAC + self.shz - F.PROB_FRAC)
        shalf = Signal(W + 8)
        self.comb += shalf.eq((1 << smn_shift) >> 1)
        assert F.GAMMA_FRAC == F.SIG_FRAC        # NORM and SILU share the stage-2 product and its rounding
        interp2, norm2 = Signal(), Signal()
        self.comb += interp2.eq(v2 & ((op == OPS["silu"]) | (op == OPS["sm_exp"]))), norm2.eq(v2 & (op == OPS["norm"]))
        for k in range(VW):
            # the tables' interpolation: one small product (SILU's sigmoid or SM_EXP's 2**-f)
            dt = Signal((F.SIG_FRAC + 3, True))
            fr = Signal(max(sshift, elow))
            slope = Signal((len(dt) + len(fr) + 1, True))
            self.comb += [
                dt.eq(Mux(op == OPS["silu"], sig.t1[k] - sig.t0[k], exp2.t1[k] - exp2.t0[k])),
                fr.eq(Mux(op == OPS["silu"], r1x[k][:sshift], r1x[k][:elow])),
                If(interp2, slope.eq(dt * fr)),
            ]
            sgm = Signal((F.SIG_FRAC + 2, True))
            inside = (r1[k] >= slo) & (r1[k] < -slo)
            self.comb += sgm.eq(Mux(inside, sig.t0[k] + (slope >> sshift),
                                    Mux(r1[k] < slo, int(F.SIG_TABLE[0]), 1 << F.SIG_FRAC)))
            ynorm = Signal((Y_BITS, True))
            self.comb += If(norm2, ynorm.eq((r1[k] + nhalf) >> norm_shift))
            ev = Signal((F.EXP_FRAC + 2, True))
            en = Signal(W - VEC_FRAC)
            self.comb += en.eq(r1x[k] >> VEC_FRAC), ev.eq(exp2.t0[k] + (slope >> elow))
            # the shared stage-2 multiplier: NORM's y * gamma or SILU's gate * sigmoid
            a2, b2 = Signal((max(Y_BITS, SILU_BITS), True)), Signal((GAMMA_BITS, True))
            self.comb += If(op == OPS["norm"], a2.eq(ynorm), b2.eq(r1g[k])).Else(a2.eq(r1x[k]), b2.eq(sgm))
            p2 = _round_product(a2, b2, F.GAMMA_FRAC)
            rot = Signal((len(r1b[k]) + 1, True))
            self.comb += rot.eq(Mux(r1n[k], r1[k] - r1b[k], r1[k] + r1b[k]))
            self.sync += If(v2,
                r2y[k].eq(r1y[k]),
                # (one product in the text, as at stage 1)
                If((op == OPS["norm"]) | (op == OPS["silu"]), r2[k].eq(p2)).Else(Case(op, {
                    OPS["add"]: r2[k].eq(saturate(r1[k], W)),
                    OPS["sm_exp"]: r2[k].eq(Mux(r1m[k] & (en < 32), ev >> en[:6], 0)),
                    OPS["sm_norm"]: r2[k].eq((r1[k] + shalf) >> smn_shift),
                    OPS["rope"]: r2[k].eq(rshift_round(rot, F.ROPE_FRAC)),
                    OPS["rms_ss"]: [],
                    "default": r2[k].eq(r1[k]),
                })),
            )

        # stage 3 ------------------------------------------------------------------------------------------
        silu3 = Signal()
        self.comb += silu3.eq(valid[3] & (op == OPS["silu"]))
        for k in range(VW):
            g3 = Signal((SILU_BITS + 2, True))          # SILU's gate * sigmoid
            self.comb += g3.eq(r2[k])
            p3 = Signal((2 * SILU_BITS + 2 - VEC_FRAC, True))
            self.comb += If(silu3, p3.eq(_round_product(g3, r2y[k], VEC_FRAC)))
            self.sync += If(valid[3], Case(op, {
                OPS["silu"]: r3[k].eq(saturate(p3, W)),
                "default": r3[k].eq(saturate(r2[k], W)),
            }))

        # tail: the one quantizer to the activation port (its input is the word's results: the value QUANT
        # reads, or what NORM/SILU write; probabilities shifted by V's exponents for AVEC and SM_NORM), and the
        # max |result| of ADD. quantize_act needs the group's max before any element, so it runs in two passes
        # of VW elements a cycle: as the beats leave stage 3 they collect (a shift register) with a running max;
        # once a word is complete, its shift and rounding are fixed and its elements quantized over the next
        # BEATS cycles (while the next word collects), the activation word written one cycle after the last ---
        wv = valid[4]
        wdone = wv & wl[4]                  # a word's last beat this cycle
        r3cat = Cat(*r3)
        avmode = Signal()
        self.comb += avmode.eq((op == OPS["avec"]) | (op == OPS["sm_norm"]))
        acts = Signal()
        self.comb += acts.eq((op == OPS["quant"]) | (op == OPS["avec"]) |
                             (qout & ((op == OPS["norm"]) | (op == OPS["silu"]) | (op == OPS["sm_norm"]))))
        TQ = W + 16
        tail_op, tail = Signal(), Signal()  # the op uses the tail; its first pass runs this cycle
        self.comb += tail_op.eq(acts | (op == OPS["add"])), tail.eq(wv & tail_op)
        bq = [Signal((TQ, True)) for _ in range(VW)]
        bmax, wmax, run = Signal(TQ), Signal(TQ), Signal(TQ)
        for k in range(VW):
            self.comb += If(tail, bq[k].eq(Mux(avmode, r3[k] << vexp[2][k], r3[k])))
        self.comb += If(tail, bmax.eq(tree(max_, [abs_(v) for v in bq])))
        self.comb += wmax.eq(Mux(bt[4] == 0, bmax, max_(run, bmax)))     # max over the word's beats so far
        self.sync += If(tail, run.eq(wmax))
        bcat = Cat(*bq)
        if BEATS > 1:
            col = Signal((BEATS - 1) * VW * TQ)
            self.sync += If(tail, col.eq(Cat(col[VW * TQ:], bcat)))
            whole = Cat(col, bcat)
        else:
            whole = bcat
        # second pass: the word's values, shift, rounding half, and what has been quantized so far
        t1max = Signal(TQ)                  # the last complete word's max |value| (ADD's e)
        qbuf = Signal(GROUP * TQ)
        q_sh, q_left = Signal(8), Signal(max=BEATS + 1)
        q_half = Signal(TQ)
        q_idx = Signal(16)
        q_mant = Signal(GROUP * ACT_BITS)
        q_gsum = Signal((cfg.group_sum_bits, True))
        qbl, sh = Signal(8), Signal(8)
        self.comb += If(wdone & acts, *bit_length(wmax, TQ, qbl))
        self.comb += sh.eq(Mux(qbl > ACT_BITS - 1, qbl - (ACT_BITS - 1), 0))
        qm = [Signal((ACT_BITS + 1, True)) for _ in range(VW)]
        quantizing = Signal()
        self.comb += quantizing.eq(q_left != 0)
        for k in range(VW):
            v_ = Signal((TQ, True))
            self.comb += v_.eq(qbuf[k * TQ:(k + 1) * TQ])
            self.comb += If(quantizing, qm[k].eq(clamp((v_ + q_half) >> q_sh, -ACT_MAX, ACT_MAX)))
        newm = Cat(*[m[:ACT_BITS] for m in qm])
        mant_next = Cat(q_mant[VW * ACT_BITS:], newm) if BEATS > 1 else newm
        gsum_next = Signal((cfg.group_sum_bits, True))
        self.comb += gsum_next.eq(q_gsum + tree(lambda p, q: p + q, qm))
        ea = Signal((cfg.exp_bits, True))
        # QUANT's input has VEC_FRAC fractional bits, the shifted probabilities 2 * VEC_FRAC
        self.comb += ea.eq(q_sh - Mux(avmode, 2 * VEC_FRAC, VEC_FRAC))
        r6act = Signal(len(self.act_dat))
        act_pulse = Signal()
        act_adr = Signal(16)
        self.sync += [
            act_pulse.eq(0),
            If(quantizing,
                qbuf.eq(qbuf[VW * TQ:]) if BEATS > 1 else [], q_mant.eq(mant_next), q_gsum.eq(gsum_next),
                q_left.eq(q_left - 1),
                If(q_left == 1, r6act.eq(Cat(mant_next, gsum_next, ea)), act_pulse.eq(1),
                   act_adr.eq(abase + q_idx)),
            ),
            # (after the step above: a word completing in the cycle the last one's last step runs takes over)
            If(wdone & tail_op, t1max.eq(wmax)),
            If(wdone & acts,
                qbuf.eq(whole), q_sh.eq(sh), q_half.eq((1 << sh) >> 1), q_idx.eq(idx[4]), q_left.eq(BEATS),
                q_gsum.eq(0),
            ),
        ]
        self.comb += self.tail_busy.eq(quantizing | act_pulse)

        # write back: each beat into its line's slots as it leaves stage 3 (ROPE's in place, in its head) -----
        writes = (op == OPS["add"]) | (op == OPS["norm"]) | (op == OPS["silu"]) | (op == OPS["sm_exp"]) | \
                 (op == OPS["sm_norm"]) | rope
        own_we = Signal()
        self.comb += own_we.eq(wv & writes), self.vm_w_ready.eq(~own_we)
        w_word = Mux(rope, self.a + (idx[4] << (wpr - 1)), self.dst + idx[4])
        beat_mask = (1 << VW) - 1
        self.comb += [
            If(own_we,
                wp.adr.eq(line(w_word, bt[4])), wp.dat_w.eq(Replicate(r3cat, BPL)),
                Case(bt[4][:bpl_log], {v: wp.we.eq(beat_mask << (v * VW)) for v in range(BPL)})
                if BPL > 1 else wp.we.eq(beat_mask),
            ).Else(
                wp.adr.eq(self.vm_w.adr), wp.dat_w.eq(self.vm_w.dat_w), wp.we.eq(self.vm_w.we),
            ),
            self.act_adr.eq(act_adr), self.act_dat.eq(r6act), self.act_we.eq(act_pulse),
            self.writes_act.eq(acts), self.act_base.eq(abase),
        ]
        self.sync += If(starting, self.act_written.eq(0)).Elif(self.act_we, self.act_written.eq(self.act_written + 1))

        # reductions: sums of squares from stage 1's products (valid[2]), the rest from stage 2 (valid[3]) ---
        amax = Signal(W + 16)
        ss = Signal(2 * W + 16)
        z = Signal(W + 16)
        r2max = Signal(W + 16)
        self.sync += r2max.eq(r1max)
        self.sync += If(v2 & (op == OPS["rms_ss"]) & ~starting,
                        ss.eq(ss + tree(lambda p, q: p + q, [r1[k][:2 * XS_BITS] for k in range(VW)])))
        # masked max of the scaled scores, first maximum wins for ARGMAX
        best = Signal((W + 1, True))
        best_i = Signal(16)
        wbest = Signal((W + 1, True))
        wbest_i = Signal(16)
        cands = []
        max2 = Signal()
        self.comb += max2.eq(v2 & ((op == OPS["sm_max"]) | (op == OPS["argmax"])))
        for k in range(VW):
            sv = Signal((W + 1, True))                 # a signed view of the stage-1 value
            self.comb += If(max2, sv.eq(Mux(r1m[k], r1[k], -(1 << W))))
            cands.append((sv, k))
        # a chain of distinct signals (a comb signal assigned and then read again in one block is not a chain
        # under the SoC's Verilog, whose comb blocks use non-blocking assignments)
        bv, bi = cands[0][0], Constant(0, max(1, bits_for(VW - 1)))
        for v, k in cands[1:]:
            nv, ni = Signal((W + 1, True)), Signal(len(bi))
            self.comb += If(max2, nv.eq(Mux(v > bv, v, bv))), If(max2, ni.eq(Mux(v > bv, k, bi)))
            bv, bi = nv, ni
        self.comb += wbest.eq(bv), wbest_i.eq(idx[2] * GROUP + bt[2] * VW + bi)
        r2best, r2best_i = Signal((W + 1, True)), Signal(16)
        self.sync += r2best.eq(wbest), r2best_i.eq(wbest_i)
        word_z = Signal(W + 16)
        self.comb += If(valid[3] & (op == OPS["sm_exp"]),
                        word_z.eq(tree(lambda p, q: p + q, [r2[k][:F.EXP_FRAC + 2] for k in range(VW)])))
        first = Signal()
        self.sync += [
            If(starting,
                amax.eq(0), ss.eq(0), z.eq(0), first.eq(1),
            ).Elif(valid[3],
                If(op == OPS["rms_max"], amax.eq(max_(amax, r2max))),
                If(op == OPS["sm_exp"], z.eq(z + word_z)),
                If((op == OPS["sm_max"]) | (op == OPS["argmax"]),
                    first.eq(0),
                    If(first | (r2best > best), best.eq(r2best), best_i.eq(r2best_i))),
            ),
            # ADD's outputs leave the tail's max two stages later
            If(valid[LATENCY] & wl[LATENCY] & (op == OPS["add"]) & ~starting,
               amax.eq(max_(amax, t1max))),
        ]
        self.comb += self.smax.eq(best), self.argmax.eq(best_i)

        # finish: e after RMS_MAX, (R, sh) after RMS_SS, (Rz, shz) after SM_EXP ------------------------------
        bl = Signal(8)
        self.comb += bit_length(amax, W + 16, bl)
        v = Signal(2 * W + 16)
        self.submodules.rsq = rsq = _Table(F.RSQRT_TABLE, F.TABLE_BITS + 1, F.RSQRT_FRAC, 1)
        self.submodules.rcp = rcp = _Table(F.RECIP_TABLE, F.TABLE_BITS + 1, F.RECIP_FRAC, 1)
        vbl = Signal(8)
        vsh = Signal((8, True))
        m = Signal(F.MANT_BITS + 1)
        even = Signal()
        self.comb += bit_length(v, 2 * W + 16, vbl)
        self.comb += vsh.eq(vbl - F.MANT_BITS + Mux(even, (vbl - F.MANT_BITS) & 1, 0))
        self.comb += m.eq(Mux(vsh >= 0, v >> vsh, v << -vsh))
        self.comb += rsq.adr[0].eq(m >> F.INTERP_BITS), rcp.adr[0].eq(m >> F.INTERP_BITS)
        rfrac = Signal(F.INTERP_BITS)
        fin = Signal(3)
        drain = Signal(max=DRAIN + TAIL_DRAIN + BEATS + 1)
        vraw = Signal(2 * W + 16)
        self.comb += vraw.eq(((ss * self.dim_recip) >> F.MEAN_FRAC) + (eps_q >> (self.e << 1)))
        self.sync += [
            self.done.eq(0),
            # busy: running, except while its input is still being written (hold)
            If(self.busy & ~(issuing & self.hold), self.cnt_busy.eq(self.cnt_busy + 1)),
            If(starting, drain.eq(0), fin.eq(0)),
            If(self.busy & ~issuing & ~starting,
                If(drain < Mux(acts, DRAIN + TAIL_DRAIN + BEATS - 1,
                               Mux(op == OPS["add"], DRAIN + TAIL_DRAIN, DRAIN)),
                   drain.eq(drain + 1)).Else(
                    If((op == OPS["rms_max"]) | (op == OPS["add"]),
                        self.e.eq(Mux(bl > F.NORM_IN_BITS, bl - F.NORM_IN_BITS, 0)),
                        self.busy.eq(0), self.done.eq(1),
                    ).Elif((op == OPS["rms_ss"]) | (op == OPS["sm_exp"]),
                        fin.eq(fin + 1),
                        Case(fin, {
                            0: [v.eq(Mux(op == OPS["rms_ss"], Mux(vraw == 0, 1, vraw), z)),
                                even.eq(op == OPS["rms_ss"])],
                            1: [rfrac.eq(m[:F.INTERP_BITS]),
                                If(op == OPS["rms_ss"], self.sh.eq(vsh)).Else(self.shz.eq(vsh))],
                            2: [],
                            3: [If(op == OPS["rms_ss"],
                                   self.R.eq(rsq.t0[0] + (((rsq.t1[0] - rsq.t0[0]) * rfrac) >> F.INTERP_BITS)),
                                ).Else(
                                   self.Rz.eq(rcp.t0[0] + (((rcp.t1[0] - rcp.t0[0]) * rfrac) >> F.INTERP_BITS)),
                                ),
                                self.busy.eq(0), self.done.eq(1)],
                        }),
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
