"""The vector unit: element-wise and reduction ops on the vector memory (VM), one 32-element group per cycle,
each exactly as the golden model defines it (host/golden/functions.py, numerics.py).

VM words hold 32 elements of the vector format (VEC_BITS each), element e at bits [e*VEC_BITS, ...).
A command names an op, two source word addresses (a, b), a destination (dst), a word count (n) and an
auxiliary address (aux: the norm weights' first word). Ops:
  ADD      dst = saturate(a + b)                               residual
  QUANT    act[i] = quantize_act(a[i])  (to the activation write port, word dst + i)
  RMS_MAX  e = max(0, bitlen(max |a|) - NORM_IN_BITS)          RMSNorm, pass 1
  RMS_SS   ss = sum((a >> e)**2); then v, and R, sh = rsqrt_q(v)   pass 2
  NORM     dst = round(round(((a >> e) * R) >> (RSQRT_FRAC - VEC_FRAC + sh/2)) * gamma[aux + i] >> 16)
  SILU     dst = silu_mul(a, b)
Pipeline: issue, read, three compute stages, write (LATENCY cycles from issue to write).
"""

from migen import *

from roma.host.golden import functions as F
from roma.host.golden.numerics import ACT_BITS, ACT_MAX, GROUP, VEC_BITS, VEC_FRAC

from .arith import abs_, bit_length, clamp, max_, rshift_round, saturate, tree

OPS = {"add": 1, "quant": 2, "rms_max": 3, "rms_ss": 4, "norm": 5, "silu": 6}
LATENCY = 5
GAMMA_BITS = 32


def _elems(word, bits=VEC_BITS):
    out = []
    for e in range(GROUP):
        s = Signal((bits, True))
        out.append((s, s.eq(word[e * bits:(e + 1) * bits])))
    return out


class VectorUnit(Module):
    def __init__(self, cfg, vm_words, dim, eps_q, gamma_words, act_bits=None):
        W = VEC_BITS
        self.dim_recip = int(round((1 << F.MEAN_FRAC) / dim))
        # command interface ---------------------------------------------------------------------------
        self.op = Signal(4)
        self.a, self.b, self.dst, self.aux = (Signal(16) for _ in range(4))
        self.n = Signal(16)
        self.start = Signal()
        self.busy = Signal()
        self.done = Signal()
        # the activation write port (QUANT): one group per word, as ActivationBuffer lays it out
        self.act_adr = Signal(16)
        self.act_dat = Signal(GROUP * ACT_BITS + cfg.group_sum_bits + cfg.exp_bits)
        self.act_we = Signal()
        # RMSNorm state, visible for tests
        self.e = Signal(8)
        self.R = Signal(48)
        self.sh = Signal((8, True))
        self.cnt_busy = Signal(32)

        # # #

        self.specials.vm = vm = Memory(GROUP * W, vm_words)
        ra, rb = vm.get_port(), vm.get_port()
        wp = vm.get_port(write_capable=True)
        self.vm_w = vm.get_port(write_capable=True)          # external writes (GEMV results, loads)
        self.vm_r = vm.get_port()                            # external reads
        self.specials.gamma = gmem = Memory(GROUP * GAMMA_BITS, max(len(gamma_words), 2), init=gamma_words)
        gp = gmem.get_port()
        self.specials += ra, rb, wp, self.vm_w, self.vm_r, gp

        # issue: a word index i per cycle --------------------------------------------------------------
        i = Signal(16)
        issuing = Signal()
        op = Signal(4)
        self.sync += [
            If(self.start & ~self.busy,
                issuing.eq(self.n != 0), i.eq(0), op.eq(self.op), self.busy.eq(1),
            ).Elif(issuing,
                i.eq(i + 1),
                If(i == self.n - 1, issuing.eq(0)),
            )
        ]
        self.comb += [ra.adr.eq(self.a + i), rb.adr.eq(self.b + i), gp.adr.eq(self.aux + i)]
        # valid and word index travel down the pipeline
        valid = [issuing] + [Signal() for _ in range(LATENCY)]
        idx = [i] + [Signal(16) for _ in range(LATENCY)]
        for k in range(LATENCY):
            self.sync += valid[k + 1].eq(valid[k]), idx[k + 1].eq(idx[k])

        # stage 1: operands read ---------------------------------------------------------------------
        xa = _elems(ra.dat_r)
        xb = _elems(rb.dat_r)
        gm = _elems(gp.dat_r, GAMMA_BITS)
        self.comb += [s for _, s in xa + xb + gm]
        x = [s for s, _ in xa]
        y = [s for s, _ in xb]
        g = [s for s, _ in gm]

        # RMSNorm reductions ---------------------------------------------------------------------------
        amax = Signal(W)
        ss = Signal(2 * W + 16)
        word_max = Signal(W)
        word_ss = Signal(2 * W + 8)
        xs = [Signal((W, True)) for _ in range(GROUP)]
        self.comb += [s.eq(v >> self.e) for s, v in zip(xs, x)]
        self.comb += word_max.eq(tree(max_, [abs_(v) for v in x]))
        sq = [Signal(2 * W) for _ in range(GROUP)]
        self.comb += [q.eq(v * v) for q, v in zip(sq, xs)]
        self.comb += word_ss.eq(tree(lambda p, q: p + q, sq))

        # stage registers --------------------------------------------------------------------------------
        r1 = [Signal((2 * W + 8, True)) for _ in range(GROUP)]   # per-element stage-1 results
        r1x = [Signal((W, True)) for _ in range(GROUP)]
        r1y = [Signal((W, True)) for _ in range(GROUP)]
        r1g = [Signal((GAMMA_BITS, True)) for _ in range(GROUP)]
        r2 = [Signal((2 * W + 8, True)) for _ in range(GROUP)]
        r2y = [Signal((W, True)) for _ in range(GROUP)]
        r3 = [Signal((W, True)) for _ in range(GROUP)]
        r1max = Signal(W)
        r2act = Signal(len(self.act_dat))

        # SiLU: sigmoid table, two entries per element -------------------------------------------------
        sig_table = [int(v) for v in F.SIG_TABLE]
        self.specials.sig = smem = Memory(F.SIG_FRAC + 2, len(sig_table), init=sig_table)
        sshift = VEC_FRAC - F.SIG_STEP_BITS
        lo = -F.SIG_RANGE << F.SIG_STEP_BITS
        sig1 = []
        for e in range(GROUP):
            gc = Signal((W, True))
            uc = Signal((W, True))
            self.comb += gc.eq(clamp(x[e], -F.SILU_IN_MAX, F.SILU_IN_MAX)), uc.eq(clamp(y[e], -F.SILU_IN_MAX, F.SILU_IN_MAX))
            tidx = Signal((W, True))
            self.comb += tidx.eq(gc >> sshift)
            p0, p1 = smem.get_port(), smem.get_port()
            self.specials += p0, p1
            ti = Signal(12)
            self.comb += ti.eq(clamp(tidx - lo, 0, len(sig_table) - 2))
            self.comb += p0.adr.eq(ti), p1.adr.eq(ti + 1)
            sig1.append((gc, uc, tidx, p0, p1))

        # stage 1 (end of the read cycle) ------------------------------------------------------------
        for e in range(GROUP):
            gc, uc, tidx, _, _ = sig1[e]
            self.sync += [
                r1x[e].eq(Mux(op == OPS["silu"], gc, x[e])),
                r1y[e].eq(Mux(op == OPS["silu"], uc, y[e])),
                r1g[e].eq(g[e]),
                Case(op, {
                    OPS["add"]: r1[e].eq(x[e] + y[e]),
                    OPS["norm"]: r1[e].eq(xs[e] * self.R),
                    OPS["silu"]: r1[e].eq(tidx),
                    "default": r1[e].eq(0),
                }),
            ]
        self.sync += r1max.eq(word_max)

        # stage 2 ------------------------------------------------------------------------------------------
        norm_shift = Signal(8)
        self.comb += norm_shift.eq(F.RSQRT_FRAC - VEC_FRAC + (self.sh >> 1))
        # QUANT: one group per word
        qsh = Signal(8)
        qbl = Signal(8)
        self.comb += bit_length(r1max, W, qbl)
        self.comb += qsh.eq(Mux(qbl > ACT_BITS - 1, qbl - (ACT_BITS - 1), 0))
        qm = [Signal((ACT_BITS + 1, True)) for _ in range(GROUP)]
        qhalf = Signal(W)
        self.comb += qhalf.eq((1 << qsh) >> 1)
        for e in range(GROUP):
            self.comb += qm[e].eq(clamp((r1x[e] + qhalf) >> qsh, -ACT_MAX, ACT_MAX))
        qsum = Signal((cfg.group_sum_bits, True))
        self.comb += qsum.eq(tree(lambda p, q: p + q, qm))
        act_word = Cat(*[m[:ACT_BITS] for m in qm], qsum, (qsh - VEC_FRAC)[:cfg.exp_bits])
        nhalf = Signal(W)
        self.comb += nhalf.eq((1 << norm_shift) >> 1)
        for e in range(GROUP):
            gc, uc, tidx, p0, p1 = sig1[e]
            frac = Signal(sshift)
            self.comb += frac.eq(r1x[e][:sshift])
            t0 = Signal((F.SIG_FRAC + 2, True))
            t1 = Signal((F.SIG_FRAC + 2, True))
            self.comb += t0.eq(p0.dat_r), t1.eq(p1.dat_r)
            sig = Signal((F.SIG_FRAC + 2, True))
            inside = (r1[e] >= lo) & (r1[e] < -lo)
            self.comb += sig.eq(Mux(inside, t0 + (((t1 - t0) * frac) >> sshift),
                                    Mux(r1[e] < lo, sig_table[0], 1 << F.SIG_FRAC)))
            ynorm = Signal((W + 8, True))
            self.comb += ynorm.eq((r1[e] + nhalf) >> norm_shift)
            self.sync += [
                r2y[e].eq(r1y[e]),
                Case(op, {
                    OPS["add"]: r2[e].eq(saturate(r1[e], W)),
                    OPS["norm"]: r2[e].eq(rshift_round(ynorm * r1g[e], F.GAMMA_FRAC)),
                    OPS["silu"]: r2[e].eq(rshift_round(r1x[e] * sig, F.SIG_FRAC)),
                    "default": r2[e].eq(0),
                }),
            ]
        self.sync += r2act.eq(act_word)

        # stage 3 ------------------------------------------------------------------------------------------
        for e in range(GROUP):
            self.sync += Case(op, {
                OPS["silu"]: r3[e].eq(saturate(rshift_round(r2[e] * r2y[e], VEC_FRAC), W)),
                OPS["norm"]: r3[e].eq(saturate(r2[e], W)),
                "default": r3[e].eq(r2[e]),
            })
        r3act = Signal(len(self.act_dat))
        self.sync += r3act.eq(r2act)

        # write back and reductions ---------------------------------------------------------------------------
        wv = valid[4]
        widx = idx[4]
        writes = (op == OPS["add"]) | (op == OPS["norm"]) | (op == OPS["silu"])
        self.comb += [
            wp.adr.eq(self.dst + widx), wp.dat_w.eq(Cat(*[v[:W] for v in r3])), wp.we.eq(wv & writes),
            self.act_adr.eq(self.dst + widx), self.act_dat.eq(r3act), self.act_we.eq(wv & (op == OPS["quant"])),
        ]
        # reductions take stage-1 values (valid[2] marks them)
        self.sync += [
            If(self.start & ~self.busy,
                If(self.op == OPS["rms_max"], amax.eq(0)),
                If(self.op == OPS["rms_ss"], ss.eq(0)),
            ).Elif(valid[2] & (op == OPS["rms_max"]), amax.eq(max_(amax, r1max))),
        ]
        sq_reg = Signal(2 * W + 8)
        self.sync += sq_reg.eq(word_ss)
        self.sync += If(valid[2] & (op == OPS["rms_ss"]), ss.eq(ss + sq_reg))

        # finish: e after RMS_MAX, v -> (R, sh) after RMS_SS, then done -------------------------------------
        bl = Signal(8)
        self.comb += bit_length(amax, W, bl)
        v = Signal(2 * W + 16)
        vbl = Signal(8)
        vsh = Signal((8, True))
        m = Signal(F.MANT_BITS + 1)
        self.comb += bit_length(v, 2 * W + 16, vbl)
        self.comb += vsh.eq(vbl - F.MANT_BITS + ((vbl - F.MANT_BITS) & 1))
        self.comb += m.eq(Mux(vsh >= 0, v >> vsh, v << -vsh))
        rs_table = [int(t) for t in F.RSQRT_TABLE]
        self.specials.rsq = rmem = Memory(F.RSQRT_FRAC, len(rs_table), init=rs_table)
        q0, q1 = rmem.get_port(), rmem.get_port()
        self.specials += q0, q1
        ri = Signal(F.TABLE_BITS + 1)
        self.comb += ri.eq(m >> F.INTERP_BITS), q0.adr.eq(ri), q1.adr.eq(ri + 1)
        rfrac = Signal(F.INTERP_BITS)
        fin = Signal(3)
        drain = Signal(4)
        ss_mean = Signal(2 * W + 16)
        self.comb += ss_mean.eq((ss * self.dim_recip) >> F.MEAN_FRAC)
        vraw = Signal(2 * W + 16)
        self.comb += vraw.eq(ss_mean + (eps_q >> (self.e << 1)))
        t0s = Signal((F.RSQRT_FRAC + 1, True))
        t1s = Signal((F.RSQRT_FRAC + 1, True))
        self.comb += t0s.eq(q0.dat_r), t1s.eq(q1.dat_r)
        self.sync += [
            self.done.eq(0),
            If(self.busy, self.cnt_busy.eq(self.cnt_busy + 1)),
            If(self.start & ~self.busy, drain.eq(0), fin.eq(0)),
            If(self.busy & ~issuing & ~(self.start & ~self.busy),
                If(drain < LATENCY, drain.eq(drain + 1)).Else(
                    If(op == OPS["rms_max"],
                        self.e.eq(Mux(bl > F.NORM_IN_BITS, bl - F.NORM_IN_BITS, 0)),
                        self.busy.eq(0), self.done.eq(1),
                    ).Elif(op == OPS["rms_ss"],
                        fin.eq(fin + 1),
                        Case(fin, {
                            0: v.eq(Mux(vraw == 0, 1, vraw)),
                            1: [rfrac.eq(m[:F.INTERP_BITS]), self.sh.eq(vsh)],      # table read issued
                            2: [],
                            3: [self.R.eq(t0s + (((t1s - t0s) * rfrac) >> F.INTERP_BITS)),
                                self.busy.eq(0), self.done.eq(1)],
                        }),
                    ).Else(self.busy.eq(0), self.done.eq(1)),
                ),
            ),
        ]
