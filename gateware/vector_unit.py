"""The vector unit: element-wise and reduction ops on the vector memory (VM), one 32-element group per cycle,
each exactly as the golden model defines it (host/golden/functions.py, numerics.py).

VM words hold 32 elements of the vector format (VEC_BITS each), element e at bits [e*VEC_BITS, ...).
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
Pipeline: issue, read, three compute stages, write (LATENCY cycles from issue to write); the activation
port's quantizer is a two-stage tail after the write stage (ACT_LATENCY).
"""

from migen import *

from roma.host.golden import functions as F
from roma.host.golden.numerics import ACT_BITS, ACT_MAX, GROUP, VEC_BITS, VEC_FRAC

from .arith import abs_, bit_length, clamp, max_, rshift_round, saturate, tree
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


def _quant_word(cfg, vals, vmax, frac, width):
    """Statements and the activation word for one group (quantize_act; frac: the input's fractional bits,
    a constant or an expression): returns (stmts, word)."""
    bl, sh = Signal(8), Signal(8)
    stmts = bit_length(vmax, width, bl)
    stmts += [sh.eq(Mux(bl > ACT_BITS - 1, bl - (ACT_BITS - 1), 0))]
    half = Signal(width)
    stmts += [half.eq((1 << sh) >> 1)]
    m = [Signal((ACT_BITS + 1, True)) for _ in range(GROUP)]
    stmts += [mv.eq(clamp((v + half) >> sh, -ACT_MAX, ACT_MAX)) for mv, v in zip(m, vals)]
    gsum = Signal((cfg.group_sum_bits, True))
    stmts += [gsum.eq(tree(lambda p, q: p + q, m))]
    ea = Signal((cfg.exp_bits, True))
    stmts += [ea.eq(sh - frac)]
    return stmts, Cat(*[v[:ACT_BITS] for v in m], gsum, ea)


class VectorUnit(Module):
    def __init__(self, cfg, vm_words, dim, eps_q, gamma_words, head_dim=32, context=64, ve_words=2):
        W = VEC_BITS
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

        # # #

        self.specials.vm = vm = Memory(GROUP * W, vm_words)
        ra, rb = vm.get_port(), vm.get_port()
        wp = vm.get_port(write_capable=True)
        self.vm_w = vm.get_port(write_capable=True, we_granularity=W)   # GEMV results (lane slices), loads
        self.vm_r = vm.get_port()
        self.specials.gamma = gmem = Memory(GROUP * GAMMA_BITS, max(len(gamma_words), 2), init=gamma_words)
        gp = gmem.get_port()
        self.gamma_w = gmem.get_port(write_capable=True)      # norm weights can also be (re)loaded
        self.specials += self.gamma_w
        self.specials.ve = vemem = Memory(GROUP * EXP_BITS, max(ve_words, 2), init=[0] * max(ve_words, 2))
        vep = vemem.get_port()
        self.ve_w = vemem.get_port(write_capable=True, we_granularity=EXP_BITS)
        self.specials += ra, rb, wp, self.vm_w, self.vm_r, gp, vep, self.ve_w
        half = head_dim // 2

        # issue: a word index i per cycle (ROPE on 64-wide heads: every other cycle) ---------------------
        i = Signal(16)
        issuing = Signal()
        op = Signal(4)
        qout, abase = Signal(), Signal(ABASE_BITS)
        wpr = head_dim // GROUP          # words per head for ROPE
        # ROPE on heads of two words writes two words per head: it issues every other cycle
        phase = Signal()
        slow = Signal()
        self.comb += slow.eq((op == OPS["rope"]) & (wpr > 1))
        self.sync += [
            If(self.start & ~self.busy,
                issuing.eq(self.n != 0), i.eq(0), op.eq(self.op), self.busy.eq(1), phase.eq(0),
                qout.eq(self.qout), abase.eq(self.abase),
            ).Elif(issuing & ~self.hold,
                phase.eq(slow & ~phase),
                If(~slow | phase,
                    i.eq(i + 1),
                    If(i == self.n - 1, issuing.eq(0)),
                ),
            )
        ]
        self.comb += [
            ra.adr.eq(Mux(op == OPS["rope"], self.a + i * wpr, self.a + i)),
            rb.adr.eq(Mux(op == OPS["rope"], self.a + i * wpr + (wpr - 1), self.b + i)),
            gp.adr.eq(self.aux + i), vep.adr.eq(self.aux + i),
            self.rd_a.eq(ra.adr), self.rd_b.eq(rb.adr),
            self.uses_b.eq((op == OPS["add"]) | (op == OPS["silu"]) | (op == OPS["rope"])),
        ]
        valid = [issuing & ~phase & ~self.hold] + [Signal() for _ in range(ACT_LATENCY)]
        idx = [i] + [Signal(16) for _ in range(ACT_LATENCY)]
        for k in range(ACT_LATENCY):
            self.sync += valid[k + 1].eq(valid[k]), idx[k + 1].eq(idx[k])

        # operands (stage 1 reads them) ------------------------------------------------------------------
        x, s = _elems(ra.dat_r)
        y, s2 = _elems(rb.dat_r)
        g, s3 = _elems(gp.dat_r, GAMMA_BITS)
        ve, s4 = _elems(vep.dat_r, EXP_BITS)
        self.comb += s + s2 + s3 + s4
        elem = [Signal(16) for _ in range(GROUP)]          # global element index of each slot
        inmask = [Signal() for _ in range(GROUP)]
        for e in range(GROUP):
            self.comb += elem[e].eq(idx[1] * GROUP + e), inmask[e].eq(elem[e] < self.count)

        # per-slot pipeline registers
        r1 = [Signal((2 * W + 8, True)) for _ in range(GROUP)]
        r1x = [Signal((W + 16, True)) for _ in range(GROUP)]
        r1y = [Signal((W, True)) for _ in range(GROUP)]
        r1g = [Signal((GAMMA_BITS, True)) for _ in range(GROUP)]
        r1m = [Signal() for _ in range(GROUP)]
        r2 = [Signal((2 * W + 8, True)) for _ in range(GROUP)]
        r2y = [Signal((W, True)) for _ in range(GROUP)]
        r3 = [Signal((W, True)) for _ in range(GROUP)]
        r1max = Signal(W + 16)

        # tables ---------------------------------------------------------------------------------------------
        self.submodules.sig = sig = _Table(F.SIG_TABLE, 12, F.SIG_FRAC + 1, GROUP)
        self.submodules.exp2 = exp2 = _Table(F.EXP2_TABLE, F.EXP_TABLE_BITS + 1, F.EXP_FRAC + 1, GROUP)
        sshift = VEC_FRAC - F.SIG_STEP_BITS
        slo = -F.SIG_RANGE << F.SIG_STEP_BITS
        elow = VEC_FRAC - F.EXP_TABLE_BITS

        # stage 1 ---------------------------------------------------------------------------------------------
        xs = [Signal((W, True)) for _ in range(GROUP)]
        scaled = [Signal((W + 1, True)) for _ in range(GROUP)]
        xscale = [Signal((W + 18, True)) for _ in range(GROUP)]
        tt = [Signal(W + 20) for _ in range(GROUP)]          # exp_neg's t (non-negative)
        vsh = [[Signal(6) for _ in range(GROUP)] for _ in range(3)]   # V's exponent + VEC_FRAC, stages 1-3
        for e in range(GROUP):
            gc = Signal((W, True))
            uc = Signal((W, True))
            tidx = Signal((W, True))
            negd = Signal((W + 2, True))
            self.comb += [
                xs[e].eq(x[e] >> self.e),
                gc.eq(clamp(x[e], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                uc.eq(clamp(y[e], -F.SILU_IN_MAX, F.SILU_IN_MAX)),
                tidx.eq(gc >> sshift),
                sig.adr[e].eq(clamp(tidx - slo, 0, len(F.SIG_TABLE) - 2)),
                xscale[e].eq(x[e] * scale_q),
                scaled[e].eq(rshift_round(xscale[e], 16)),
                negd.eq(self.smax - scaled[e]),
                tt[e].eq((Mux(negd > F.EXP_IN_MAX, F.EXP_IN_MAX, negd) * F.LOG2E_Q) >> 16),
                exp2.adr[e].eq(tt[e][elow:VEC_FRAC]),
            ]
            self.sync += [
                r1x[e].eq(Mux(op == OPS["silu"], gc, Mux(op == OPS["sm_exp"], tt[e], x[e]))),
                vsh[0][e].eq(ve[e] + VEC_FRAC), vsh[1][e].eq(vsh[0][e]), vsh[2][e].eq(vsh[1][e]),
                r1y[e].eq(Mux(op == OPS["silu"], uc, y[e])),
                r1g[e].eq(g[e]),
                r1m[e].eq(inmask[e]),
                Case(op, {
                    OPS["add"]: r1[e].eq(x[e] + y[e]),
                    OPS["norm"]: r1[e].eq(xs[e] * self.R),
                    OPS["silu"]: r1[e].eq(tidx),
                    OPS["sm_max"]: r1[e].eq(scaled[e]),
                    OPS["sm_norm"]: r1[e].eq(x[e] * self.Rz),
                    OPS["argmax"]: r1[e].eq(x[e]),
                    OPS["quant"]: r1[e].eq(x[e]),
                    OPS["avec"]: r1[e].eq(x[e]),
                    "default": r1[e].eq(0),
                }),
            ]
        self.sync += r1max.eq(tree(max_, [abs_(v) for v in x]))

        # ROPE: rotated pairs (j, j + head_dim/2) of one head, both halves computed at stage 1 ------------
        self.specials.cos = cmem = Memory(half * TRIG_BITS, context)
        self.specials.sin = smem = Memory(half * TRIG_BITS, context)
        cp, sp = cmem.get_port(), smem.get_port()
        self.specials += cp, sp
        self.comb += cp.adr.eq(self.aux), sp.adr.eq(self.aux)
        self.cos_mem, self.sin_mem = cmem, smem
        cs, s5 = _elems(cp.dat_r, TRIG_BITS, n=half)
        sn, s6 = _elems(sp.dat_r, TRIG_BITS, n=half)
        self.comb += s5 + s6
        # the head's elements: one word (head_dim 32) or two (64)
        head = x[:head_dim] if head_dim <= GROUP else x + y
        rot = [Signal((W, True)) for _ in range(head_dim)]
        for j in range(half):
            a_ = Signal((W, True))
            b_ = Signal((W, True))
            self.comb += a_.eq(clamp(head[j], -F.ROPE_IN_MAX, F.ROPE_IN_MAX)), \
                b_.eq(clamp(head[j + half], -F.ROPE_IN_MAX, F.ROPE_IN_MAX))
            ra_, rb_ = Signal((W + TRIG_BITS + 1, True)), Signal((W + TRIG_BITS + 1, True))
            self.comb += ra_.eq(a_ * cs[j] - b_ * sn[j]), rb_.eq(b_ * cs[j] + a_ * sn[j])
            self.comb += rot[j].eq(rshift_round(ra_, F.ROPE_FRAC)), rot[j + half].eq(rshift_round(rb_, F.ROPE_FRAC))
        rope_hi = [Signal((W, True)) for _ in range(GROUP)]     # second word of a 64-wide head
        r2hi = [Signal((W, True)) for _ in range(GROUP)]
        r3hi = [Signal((W, True)) for _ in range(GROUP)]
        rope_lo = rot[:GROUP] if head_dim >= GROUP else rot + x[head_dim:]
        r1rope = [Signal((W, True)) for _ in range(GROUP)]
        self.sync += [r1rope[e].eq(rope_lo[e]) for e in range(GROUP)]
        if head_dim > GROUP:
            self.sync += [rope_hi[e].eq(rot[GROUP + e]) for e in range(GROUP)]

        # stage 2 ------------------------------------------------------------------------------------------
        norm_shift = Signal(8)
        self.comb += norm_shift.eq(F.RSQRT_FRAC - VEC_FRAC + (self.sh >> 1))
        nhalf = Signal(W)
        self.comb += nhalf.eq((1 << norm_shift) >> 1)
        smn_shift = Signal(8)
        self.comb += smn_shift.eq(F.RECIP_FRAC + self.shz - F.PROB_FRAC)
        shalf = Signal(W + 8)
        self.comb += shalf.eq((1 << smn_shift) >> 1)
        r2rope = [Signal((W, True)) for _ in range(GROUP)]
        for e in range(GROUP):
            frac = Signal(sshift)
            self.comb += frac.eq(r1x[e][:sshift])
            sgm = Signal((F.SIG_FRAC + 2, True))
            sslope = Signal((F.SIG_FRAC + 2 + sshift + 1, True))
            inside = (r1[e] >= slo) & (r1[e] < -slo)
            self.comb += sslope.eq((sig.t1[e] - sig.t0[e]) * frac)
            self.comb += sgm.eq(Mux(inside, sig.t0[e] + (sslope >> sshift),
                                    Mux(r1[e] < slo, int(F.SIG_TABLE[0]), 1 << F.SIG_FRAC)))
            ynorm = Signal((W + 8, True))
            self.comb += ynorm.eq((r1[e] + nhalf) >> norm_shift)
            # exp_neg from t (r1x holds it for SM_EXP)
            ev = Signal((F.EXP_FRAC + 2, True))
            en = Signal(W + 20)
            lo_f = Signal(elow)
            self.comb += en.eq(r1x[e] >> VEC_FRAC), lo_f.eq(r1x[e][:elow])
            eslope = Signal((F.EXP_FRAC + 2 + elow + 1, True))
            self.comb += eslope.eq((exp2.t1[e] - exp2.t0[e]) * lo_f)
            self.comb += ev.eq(exp2.t0[e] + (eslope >> elow))
            self.sync += [
                r2y[e].eq(r1y[e]),
                r2rope[e].eq(r1rope[e]),
                Case(op, {
                    OPS["add"]: r2[e].eq(saturate(r1[e], W)),
                    OPS["norm"]: r2[e].eq(rshift_round(ynorm * r1g[e], F.GAMMA_FRAC)),
                    OPS["silu"]: r2[e].eq(rshift_round(r1x[e] * sgm, F.SIG_FRAC)),
                    OPS["sm_exp"]: r2[e].eq(Mux(r1m[e] & (en < 32), ev >> en[:6], 0)),
                    OPS["sm_norm"]: r2[e].eq((r1[e] + shalf) >> smn_shift),
                    OPS["sm_max"]: r2[e].eq(r1[e]),
                    OPS["quant"]: r2[e].eq(r1[e]),
                    OPS["avec"]: r2[e].eq(r1[e]),
                    "default": r2[e].eq(0),
                }),
            ]
            if head_dim > GROUP:
                self.sync += r2hi[e].eq(rope_hi[e])

        # stage 3 ------------------------------------------------------------------------------------------
        for e in range(GROUP):
            self.sync += Case(op, {
                OPS["silu"]: r3[e].eq(saturate(rshift_round(r2[e] * r2y[e], VEC_FRAC), W)),
                OPS["norm"]: r3[e].eq(saturate(r2[e], W)),
                OPS["rope"]: r3[e].eq(r2rope[e]),
                "default": r3[e].eq(r2[e]),
            })
            if head_dim > GROUP:
                self.sync += r3hi[e].eq(r2hi[e])

        # tail: the one quantizer to the activation port (its input is the stage-3 result: the value QUANT
        # reads, or what NORM/SILU write; probabilities shifted by V's exponents for AVEC and SM_NORM), and
        # the max |result| of ADD -----------------------------------------------------------------------------
        avmode = Signal()
        self.comb += avmode.eq((op == OPS["avec"]) | (op == OPS["sm_norm"]))
        tq = [Signal((W + 16, True)) for _ in range(GROUP)]
        t1q = [Signal((W + 16, True)) for _ in range(GROUP)]
        t1max = Signal(W + 16)
        self.comb += [tq[e].eq(Mux(avmode, r3[e] << vsh[2][e], r3[e])) for e in range(GROUP)]
        self.sync += [t1q[e].eq(tq[e]) for e in range(GROUP)]
        self.sync += t1max.eq(tree(max_, [abs_(v) for v in tq]))
        # QUANT's input has VEC_FRAC fractional bits, the shifted probabilities 2 * VEC_FRAC
        q_stmts, q_word = _quant_word(cfg, t1q, t1max, Mux(avmode, 2 * VEC_FRAC, VEC_FRAC), W + 16)
        self.comb += q_stmts
        r6act = Signal(len(self.act_dat))
        self.sync += r6act.eq(q_word)
        acts = Signal()
        self.comb += acts.eq((op == OPS["quant"]) | (op == OPS["avec"]) |
                             (qout & ((op == OPS["norm"]) | (op == OPS["silu"]) | (op == OPS["sm_norm"]))))

        # write back ------------------------------------------------------------------------------------------
        wv = valid[4]
        widx = idx[4]
        writes = (op == OPS["add"]) | (op == OPS["norm"]) | (op == OPS["silu"]) | (op == OPS["sm_exp"]) | \
                 (op == OPS["sm_norm"]) | (op == OPS["rope"])
        hi_pending = Signal()
        hi_adr = Signal(16)
        hi_dat = Signal(GROUP * W)
        self.comb += [
            If(hi_pending,
                wp.adr.eq(hi_adr), wp.dat_w.eq(hi_dat), wp.we.eq(1),
            ).Else(
                wp.adr.eq(Mux(op == OPS["rope"], self.a + widx * wpr, self.dst + widx)),
                wp.dat_w.eq(Cat(*[v[:W] for v in r3])), wp.we.eq(wv & writes),
            ),
            self.act_adr.eq(abase + idx[ACT_LATENCY - 1]), self.act_dat.eq(r6act),
            self.act_we.eq(valid[ACT_LATENCY - 1] & acts),
            self.writes_act.eq(acts), self.act_base.eq(abase),
        ]
        self.sync += If(self.start & ~self.busy, self.act_written.eq(0)).Elif(self.act_we,
                                                                              self.act_written.eq(self.act_written + 1))
        if head_dim > GROUP:
            # the second word of a rotated 64-wide head is written in the cycle after the first (the issue
            # skipped that cycle, so the write port is free)
            self.sync += hi_pending.eq(wv & (op == OPS["rope"])), hi_adr.eq(self.a + widx * wpr + 1), \
                hi_dat.eq(Cat(*[v[:W] for v in r3hi]))

        # reductions: sums of squares from stage 1 (valid[2]), the rest from stage 2 (valid[3]) -----------
        amax = Signal(W + 16)
        ss = Signal(2 * W + 16)
        z = Signal(W + 16)
        r2max = Signal(W + 16)
        sq = [Signal(2 * W) for _ in range(GROUP)]
        self.comb += [q.eq(v * v) for q, v in zip(sq, xs)]
        r1ss = Signal(2 * W + 8)
        self.sync += r1ss.eq(tree(lambda p, q: p + q, sq)), r2max.eq(r1max)
        self.sync += If(valid[2] & (op == OPS["rms_ss"]) & ~(self.start & ~self.busy), ss.eq(ss + r1ss))
        # masked max of the scaled scores, first maximum wins for ARGMAX
        best = Signal((W + 1, True))
        best_i = Signal(16)
        wbest = Signal((W + 1, True))
        wbest_i = Signal(16)
        cands = []
        for e in range(GROUP):
            sv = Signal((W + 1, True))                 # a signed view of the stage-1 value
            self.comb += sv.eq(Mux(r1m[e], r1[e], -(1 << W)))
            cands.append((sv, e))
        # a chain of distinct signals (a comb signal assigned and then read again in one block is not a chain
        # under the SoC's Verilog, whose comb blocks use non-blocking assignments)
        bv, bi = cands[0][0], Constant(0, 5)
        for v, e in cands[1:]:
            nv, ni = Signal((W + 1, True)), Signal(5)
            self.comb += nv.eq(Mux(v > bv, v, bv)), ni.eq(Mux(v > bv, e, bi))
            bv, bi = nv, ni
        self.comb += wbest.eq(bv), wbest_i.eq(idx[2] * GROUP + bi)
        r2best, r2best_i = Signal((W + 1, True)), Signal(16)
        self.sync += r2best.eq(wbest), r2best_i.eq(wbest_i)
        word_z = Signal(W + 16)
        self.comb += word_z.eq(tree(lambda p, q: p + q, [r2[e][:F.EXP_FRAC + 2] for e in range(GROUP)]))
        first = Signal()
        self.sync += [
            If(self.start & ~self.busy,
                amax.eq(0), ss.eq(0), z.eq(0), first.eq(1),
            ).Elif(valid[3],
                If(op == OPS["rms_max"], amax.eq(max_(amax, r2max))),
                If(op == OPS["sm_exp"], z.eq(z + word_z)),
                If((op == OPS["sm_max"]) | (op == OPS["argmax"]),
                    first.eq(0),
                    If(first | (r2best > best), best.eq(r2best), best_i.eq(r2best_i))),
            ),
            # ADD's outputs leave the tail's max two stages later
            If(valid[LATENCY] & (op == OPS["add"]) & ~(self.start & ~self.busy), amax.eq(max_(amax, t1max))),
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
        drain = Signal(4)
        vraw = Signal(2 * W + 16)
        self.comb += vraw.eq(((ss * self.dim_recip) >> F.MEAN_FRAC) + (eps_q >> (self.e << 1)))
        self.sync += [
            self.done.eq(0),
            # busy: running, except while its input is still being written (hold)
            If(self.busy & ~(issuing & self.hold), self.cnt_busy.eq(self.cnt_busy + 1)),
            If(self.busy & issuing & self.hold, self.cnt_hold.eq(self.cnt_hold + 1)),
            If(self.start & ~self.busy, drain.eq(0), fin.eq(0)),
            If(self.busy & ~issuing & ~(self.start & ~self.busy),
                If(drain < Mux(acts | (op == OPS["add"]), DRAIN + TAIL_DRAIN, DRAIN), drain.eq(drain + 1)).Else(
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
        """Fill the RoPE tables (context x head_dim/2 Q16 values) before conversion or simulation."""
        half = cos.shape[1]
        m = (1 << TRIG_BITS) - 1
        self.cos_mem.init = [sum((int(v) & m) << (TRIG_BITS * j) for j, v in enumerate(row)) for row in cos]
        self.sin_mem.init = [sum((int(v) & m) << (TRIG_BITS * j) for j, v in enumerate(row)) for row in sin]
        assert half * TRIG_BITS == self.cos_mem.width

