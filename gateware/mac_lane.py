"""A MAC lane: one B-ROM bank's codes times the broadcast activations, then the group scale, in the golden
model's exact fixed point (host/golden/numerics.py: GEMV).

Per beat: beat = sum_j q_j * a_j over macs_per_lane codes. Per group (32 / macs_per_lane beats):
P = sum of beats; T = dq * P + mq * S; term = floor(T * 2**(ea + er + ACC_FRAC)); acc += term.
Per row: y = saturate(round(acc >> (ACC_FRAC - VEC_FRAC))).

Pipeline (one beat per cycle, no bubbles between groups or rows):
  cycle 1 products and their sum | 2 group sum P | 3 T | 4 shift | 5 accumulate | 6 round, saturate
With cfg.pipeline "deep" (an FPGA's clock) the products are registered before their sum, one cycle more; the
lane array then also registers the lane's inputs (lane_latency counts the products' register,
LaneArray.latency the inputs').
Without scales (SRAM weights: dq = 1, mq = 0) T is P itself: no multiplier. With scales and at least two beats
per group, T's two products take turns on one multiplier over two cycles (a group's P comes at most every other
cycle), one cycle more (lane_latency): half the MULT18X18D of the lane's scale stage on an FPGA.
"""

from migen import *

PIPELINE_CYCLES = 6


def shares_scale_multiplier(cfg, scaled=True):
    return scaled and cfg.beats_per_group >= 2


def lane_latency(cfg, scaled=True):
    """Cycles from a beat's codes to the row's result leaving the lane (its last beat's)."""
    return PIPELINE_CYCLES + int(shares_scale_multiplier(cfg, scaled)) + int(cfg.pipeline == "deep")


def rshift_round(x, s):
    return (x + (1 << (s - 1))) >> s


class MACLane(Module):
    """wbits/wsigned: the weight operand (ROM codes by default; 16-bit signed for SRAM weights: LoRA, K, V)."""

    def __init__(self, cfg, candidates=None, wbits=None, wsigned=False, scaled=True):
        M = cfg.macs_per_lane
        b = wbits or cfg.code_bits
        pbits = b + cfg.act_bits + 5                        # sum of 32 products, signed
        # interface -------------------------------------------------------------------------------
        self.codes = Signal(M * b)                          # this lane's weight word (ROM or SRAM)
        self.acts = [Signal((cfg.act_bits, True)) for _ in range(M)]   # broadcast activation mantissas
        self.valid = Signal()
        self.first_beat = Signal()                          # first beat of a group
        self.last_beat = Signal()
        self.first_group = Signal()                         # first group of a row
        self.last_group = Signal()
        self.gsum = Signal((cfg.group_sum_bits, True))      # S = sum of the group's mantissas (with last_beat)
        self.ea = Signal((cfg.exp_bits, True))              # the group's activation exponent (with last_beat)
        self.er = Signal((cfg.exp_bits, True))              # this row's weight exponent (with last_beat)
        self.ew = Signal((cfg.exp_bits, True))              # a per-group weight exponent (K cache), else 0
        self.dq = Signal((cfg.scale_bits, True))            # with last_beat
        self.mq = Signal((cfg.scale_bits, True))
        self.out = Signal((cfg.vec_bits, True))
        self.out_valid = Signal()
        # candidates: for multiplier="lut", the broadcast multiples k * a_j, k = 0 .. 2**b - 1
        self.candidates = candidates

        # # #

        # 1: products -------------------------------------------------------------------------------
        # (every stage below loads only on a valid beat: a lane array that is not running, such as the LM
        # head's during the layers, then evaluates none of its products in the simulator)
        prod_bits = b + cfg.act_bits + 1
        products = []
        for j in range(M):
            q = Signal((b, wsigned))
            self.comb += q.eq(self.codes[j * b:(j + 1) * b])
            p = Signal((prod_bits if candidates is not None else b + cfg.act_bits + int(not wsigned), True))
            if candidates is None:      # "dsp", or not the base code format (H-unit's 16-bit, a signed head)
                self.comb += p.eq(q * self.acts[j])
            else:
                self.comb += p.eq(Array(candidates[j])[q])
            products.append(p)
        ins = [self.valid, self.first_beat, self.last_beat, self.first_group, self.last_group,
               self.gsum, self.ea, self.er, self.ew, self.dq, self.mq]
        if cfg.pipeline == "deep":      # the products in registers (with the beat's inputs), summed a cycle later
            regd = [Signal.like(p) for p in products]
            self.sync += If(self.valid, *[r.eq(p) for r, p in zip(regd, products)])
            later = [Signal.like(x) for x in ins]
            self.sync += [r.eq(x) for r, x in zip(later, ins)]
            products, ins = regd, later
        valid, first_beat, last_beat, first_group, last_group, gsum, ea, er, ew, dq, mq = ins
        beat = Signal((pbits, True))
        v1, fb1, lb1, fg1, lg1 = (Signal() for _ in range(5))
        gsum1 = Signal.like(self.gsum)
        shift1 = Signal((cfg.exp_bits + 3, True))
        dq1, mq1 = Signal.like(self.dq), Signal.like(self.mq)
        self.sync += [
            If(valid, beat.eq(sum(products))),
            v1.eq(valid), fb1.eq(first_beat), lb1.eq(last_beat), fg1.eq(first_group), lg1.eq(last_group),
        ]
        self.sync += If(valid & last_beat,
                        gsum1.eq(gsum), shift1.eq(ea + er + ew + cfg.acc_frac), dq1.eq(dq), mq1.eq(mq))

        # 2: group product sum P --------------------------------------------------------------------
        psum = Signal((pbits, True))
        pnext = Signal((pbits, True))
        P = Signal((pbits, True))
        g2, fg2, lg2 = Signal(), Signal(), Signal()
        gsum2, shift2 = Signal.like(self.gsum), Signal.like(shift1)
        dq2, mq2 = Signal.like(self.dq), Signal.like(self.mq)
        self.comb += pnext.eq(Mux(fb1, 0, psum) + beat)
        self.sync += [
            If(v1, psum.eq(pnext)),
            g2.eq(v1 & lb1),
            If(v1 & lb1, P.eq(pnext), fg2.eq(fg1), lg2.eq(lg1),
               gsum2.eq(gsum1), shift2.eq(shift1), dq2.eq(dq1), mq2.eq(mq1)),
        ]

        # 3: T = dq * P + mq * S --------------------------------------------------------------------
        t_bits = cfg.scale_bits + pbits + 1
        T = Signal((t_bits, True))
        g3, fg3, lg3 = Signal(), Signal(), Signal()
        shift3 = Signal.like(shift1)
        if not scaled:
            self.sync += If(g2, T.eq(P))
        elif shares_scale_multiplier(cfg):
            # dq * P in the group's first cycle, mq * S in the next (P, S, dq and mq stay until the next group's
            # last beat, at least two cycles on), on one multiplier
            ga, fga, lga = Signal(), Signal(), Signal()
            shifta = Signal.like(shift1)
            opa, opb = Signal.like(self.dq), Signal((max(pbits, cfg.group_sum_bits), True))
            prod, first = Signal((t_bits, True)), Signal((t_bits, True))
            self.comb += opa.eq(Mux(g2, dq2, mq2)), opb.eq(Mux(g2, P, gsum2))
            self.comb += If(g2 | ga, prod.eq(opa * opb))
            self.sync += [
                If(g2, first.eq(prod)),
                ga.eq(g2), fga.eq(fg2), lga.eq(lg2), shifta.eq(shift2),
                If(ga, T.eq(first + prod)),
            ]
            g2, fg2, lg2, shift2 = ga, fga, lga, shifta
        else:
            self.sync += If(g2, T.eq(dq2 * P + mq2 * gsum2))
        self.sync += g3.eq(g2), fg3.eq(fg2), lg3.eq(lg2), shift3.eq(shift2)

        # 4: term = floor(T * 2**shift), an arithmetic barrel shift either way -----------------------
        A = cfg.acc_bits
        term = Signal((A, True))
        g4, fg4, lg4 = Signal(), Signal(), Signal()
        left = Signal(6)
        right = Signal(6)
        self.comb += [
            left.eq(Mux(shift3 > 63, 63, Mux(shift3 < 0, 0, shift3))),
            right.eq(Mux(shift3 < -63, 63, Mux(shift3 > 0, 0, -shift3))),
        ]
        self.sync += [
            If(g3, term.eq(Mux(shift3 >= 0, T << left, T >> right))),
            g4.eq(g3), fg4.eq(fg3), lg4.eq(lg3),
        ]

        # 5: accumulate over the row's groups -------------------------------------------------------
        acc = Signal((A, True))
        anext = Signal((A, True))
        total = Signal((A, True))
        g5 = Signal()
        self.comb += anext.eq(Mux(fg4, 0, acc) + term)
        self.sync += [
            If(g4, acc.eq(anext)),
            g5.eq(g4 & lg4),
            If(g4 & lg4, total.eq(anext)),
        ]

        # 6: round to the vector format and saturate ------------------------------------------------
        s = cfg.acc_frac - cfg.vec_frac
        rounded = Signal((A, True))
        lim = (1 << (cfg.vec_bits - 1)) - 1
        self.comb += rounded.eq(rshift_round(total, s))
        self.sync += [
            self.out_valid.eq(g5),
            If(g5, self.out.eq(Mux(rounded > lim, lim, Mux(rounded < -lim, -lim, rounded)))),
        ]
