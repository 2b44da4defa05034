"""The L-unit: B-ROM banks fused with MAC lanes, an activation buffer broadcast to all of them, and the
sequencer that streams one GEMV (a matrix of the export's matrix table) through them without bubbles.

Lane b holds rows r = b, b + lanes, ...; all lanes share addresses, so one sequencer drives them all:
  ROM word     = (word_base + row * groups + group) * beats + beat
  scale entry  = word_base + row * groups + group
  row exponent = row_base + row
  activation   = abase + group: one word of 32 mantissas, S and ea; the beat selects macs_per_lane of them
Results leave on `out` (one value per lane) with `out_row`, the row index within the banks.
"""

from migen import *

from roma.host.golden.numerics import GROUP

from .mac_lane import MACLane, lane_latency

READ_LATENCY = 1    # synchronous block-RAM reads
ABASE_BITS = 10     # activation-buffer word addresses (a GEMV's first group; the vector unit's first write)


def _signed(v, bits):
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class ActivationBuffer(Module):
    """Quantized GEMV input, one word per group: 32 int16 mantissas, then S (their sum), then ea."""

    def __init__(self, cfg, max_cols):
        self.layout = [("mant", GROUP * cfg.act_bits), ("gsum", cfg.group_sum_bits), ("ea", cfg.exp_bits)]
        self.mem = Memory(sum(w for _, w in self.layout), max(max_cols // GROUP, 2))
        self.r = self.mem.get_port()
        self.w = self.mem.get_port(write_capable=True)
        self.specials += self.mem, self.r, self.w


class LaneArray(Module):
    """The sequencer, the activation buffer and one MAC lane per bank of weight memories.

    lane_mems: per lane (weights, scales or None, row exponents, group exponents or None) Memories. Without
    scales dq = 1 and mq = 0 (SRAM weights); without group exponents ew = 0 (everything but the K cache).
    """

    def __init__(self, cfg, lane_mems, max_cols, wbits=None, wsigned=False):
        lanes = cfg.lanes
        assert len(lane_mems) == lanes
        M, beats = cfg.macs_per_lane, cfg.beats_per_group
        # command interface ---------------------------------------------------------------------------
        self.word_base = Signal(24)     # first group index of the matrix in every bank
        self.row_base = Signal(16)
        self.rows = Signal(16)          # rows per bank
        self.groups = Signal(12)        # groups per row (cols / 32)
        self.stride = Signal(16)        # groups between row starts in memory (0: = groups)
        self.abase = Signal(ABASE_BITS) # the activation buffer's word holding group 0
        self.start = Signal()
        self.hold = Signal()            # chaining: the activation word read now is still being written
        self.act_adr = Signal(16)
        self.busy = Signal()
        self.done = Signal()            # one-cycle pulse when the last row has left the pipeline
        # results ---------------------------------------------------------------------------------------
        self.out_valid = Signal()
        self.out_row = Signal(16)
        self.out = [Signal((cfg.vec_bits, True)) for _ in range(lanes)]
        # performance counters (cycles) -----------------------------------------------------------------
        self.cnt_busy = Signal(32)
        self.cnt_mac = Signal(32)       # cycles in which the lanes multiplied
        self.cnt_hold = Signal(32)      # cycles an issue waited for its activation word
        # a read port for the CPU while idle (the embedding rows live in the LM head's ROM): every bank reads
        # group peek_widx, beat peek_beat and row exponent peek_row; per lane the raw words come back
        self.peek_widx = Signal(24)
        self.peek_beat = Signal(8)
        self.peek_row = Signal(16)
        self.peek_codes, self.peek_scales, self.peek_rowexp = [], [], []

        # # #

        self.submodules.act = act = ActivationBuffer(cfg, max_cols)

        # sequencer: row, group, beat counters ------------------------------------------------------------
        row, grp, beat = Signal(16), Signal(12), Signal(8)
        issuing = Signal()
        widx = Signal(24)               # group index within the bank
        row_start = Signal(24)
        step = Signal(16)
        self.comb += step.eq(Mux(self.stride == 0, self.groups, self.stride))
        first_beat, last_beat = Signal(), Signal()
        first_group, last_group = Signal(), Signal()
        last_all = Signal()
        self.comb += [
            first_beat.eq(beat == 0), last_beat.eq(beat == beats - 1),
            first_group.eq(grp == 0), last_group.eq(grp == self.groups - 1),
            last_all.eq(last_beat & last_group & (row == self.rows - 1)),
        ]
        # the activation word read, abase + grp, counted in a register beside grp (the chaining's hold compares
        # it, and the issue waits on the hold)
        self.sync += [
            If(self.start & ~self.busy,
                issuing.eq(1), row.eq(0), grp.eq(0), beat.eq(0), widx.eq(self.word_base),
                row_start.eq(self.word_base), self.act_adr.eq(self.abase),
            ).Elif(issuing & ~self.hold,
                If(last_beat,
                    beat.eq(0), widx.eq(widx + 1),
                    If(last_group,
                        grp.eq(0), row.eq(row + 1), widx.eq(row_start + step), row_start.eq(row_start + step),
                        self.act_adr.eq(self.abase),
                        If(last_all, issuing.eq(0)),
                    ).Else(grp.eq(grp + 1), self.act_adr.eq(self.act_adr + 1)),
                ).Else(beat.eq(beat + 1)),
            )
        ]
        # memories read at the issue cycle; control delayed by the read latency --------------------------
        self.comb += act.r.adr.eq(self.act_adr)
        # a held cycle goes down the lanes as a bubble (they accumulate only valid beats)
        ctrl = Cat(issuing & ~self.hold, first_beat, last_beat, first_group, last_group)
        ctrl_d = Signal(len(ctrl))
        beat_d = Signal.like(beat)
        self.sync += ctrl_d.eq(ctrl), beat_d.eq(beat)
        v_d, fb_d, lb_d, fg_d, lg_d = (ctrl_d[i] for i in range(5))

        A = cfg.act_bits
        ea = Signal((cfg.exp_bits, True))
        gsum = Signal((cfg.group_sum_bits, True))
        word = act.r.dat_r
        self.comb += [gsum.eq(word[GROUP * A:GROUP * A + cfg.group_sum_bits]),
                      ea.eq(word[GROUP * A + cfg.group_sum_bits:])]
        acts = [Signal((A, True)) for _ in range(M)]
        for j, a in enumerate(acts):
            self.comb += Case(beat_d, {k: a.eq(word[(k * M + j) * A:(k * M + j + 1) * A]) for k in range(beats)})
        # deep (an FPGA's clock): what the memories read goes to the lanes a cycle later, from registers (the
        # activation word's beat, from which the LUT multipliers' candidates are made; each lane's weights)
        deep = cfg.pipeline == "deep"

        def later(*sigs):
            if not deep:
                return sigs
            regs = [Signal.like(x) for x in sigs]
            self.sync += [r.eq(x) for r, x in zip(regs, sigs)]
            return regs
        v_d, fb_d, lb_d, fg_d, lg_d, ea, gsum, *acts = later(v_d, fb_d, lb_d, fg_d, lg_d, ea, gsum, *acts)

        candidates = None
        if cfg.multiplier == "lut" and wbits is None:
            # the B-ROM analogue: every multiple of each broadcast activation, made once for all lanes
            candidates = []
            for a in acts:
                row_c = [Signal((cfg.code_bits + cfg.act_bits + 1, True)) for _ in range(1 << cfg.code_bits)]
                # shifts and adds only (a constant multiply would be mapped to a DSP): 2k = k << 1, 2k+1 = 2k + a
                self.comb += row_c[0].eq(0)
                for k in range(1, len(row_c)):
                    self.comb += row_c[k].eq(row_c[k // 2] << 1 if k % 2 == 0 else row_c[k - 1] + a)
                candidates.append(row_c)

        # (a 1-bit signal: Migen's simulator would take ~busy of a bare expression as -2, i.e. true)
        idle = Signal()
        self.comb += idle.eq(~self.busy & ~self.start)
        for b, (wmem, smem, emem, gmem) in enumerate(lane_mems):
            rp, ep = wmem.get_port(), emem.get_port()
            self.specials += rp, ep
            lane = MACLane(cfg, candidates, wbits=wbits, wsigned=wsigned, scaled=smem is not None)
            setattr(self.submodules, f"lane{b}", lane)
            codes, er = later(rp.dat_r, ep.dat_r)
            self.comb += [
                rp.adr.eq(Mux(idle, self.peek_widx * beats + self.peek_beat, widx * beats + beat)),
                ep.adr.eq(Mux(idle, self.peek_row, self.row_base + row)),
                lane.codes.eq(codes), *[l.eq(a) for l, a in zip(lane.acts, acts)],
                lane.valid.eq(v_d), lane.first_beat.eq(fb_d), lane.last_beat.eq(lb_d),
                lane.first_group.eq(fg_d), lane.last_group.eq(lg_d),
                lane.gsum.eq(gsum), lane.ea.eq(ea), lane.er.eq(er),
                self.out[b].eq(lane.out),
            ]
            self.peek_codes.append(rp.dat_r)
            self.peek_rowexp.append(ep.dat_r)
            if smem is not None:
                sp = smem.get_port()
                self.specials += sp
                sd, = later(sp.dat_r)
                self.comb += [sp.adr.eq(Mux(idle, self.peek_widx, widx)), lane.dq.eq(sd[:cfg.scale_bits]),
                              lane.mq.eq(sd[cfg.scale_bits:])]
                self.peek_scales.append(sp.dat_r)
            else:
                self.comb += [lane.dq.eq(1), lane.mq.eq(0)]
            if gmem is not None:
                gp = gmem.get_port()
                self.specials += gp
                ew, = later(gp.dat_r)
                self.comb += [gp.adr.eq(widx), lane.ew.eq(ew)]
            if b == 0:
                self.comb += self.out_valid.eq(lane.out_valid)

        # completion: count rows leaving the pipeline -------------------------------------------------------
        self.sync += [
            self.done.eq(0),
            If(self.start & ~self.busy, self.busy.eq(1), self.out_row.eq(0)),
            If(self.out_valid,
                self.out_row.eq(self.out_row + 1),
                If(self.out_row == self.rows - 1, self.busy.eq(0), self.done.eq(1)),
            ),
            If(self.busy, self.cnt_busy.eq(self.cnt_busy + 1)),
            If(v_d, self.cnt_mac.eq(self.cnt_mac + 1)),
            If(issuing & self.hold, self.cnt_hold.eq(self.cnt_hold + 1)),
        ]
        self.latency = READ_LATENCY + int(deep) + lane_latency(cfg, scaled=lane_mems[0][1] is not None)


class GEMVUnit(LaneArray):
    """The L-unit: each lane's weights in B-ROM (block RAM initialised from the export's bank image).

    code_bits/signed: the ROM's code format (default: the configuration's base-weight codes; the LM head
    of a GGUF model keeps its signed 8-bit Q8_0 codes)."""

    def __init__(self, cfg, images, max_cols, code_bits=None, signed=False):
        assert len(images) == cfg.lanes
        bits = code_bits or cfg.code_bits
        lane_mems = []
        for img in images:
            # (Migen memories need a depth of at least 2)
            rom = Memory(cfg.macs_per_lane * bits, max(len(img.codes), 2), init=img.codes or [0], name="brom_codes")
            srom = Memory(2 * cfg.scale_bits, max(len(img.scales), 2), init=img.scales or [0], name="brom_scales")
            erom = Memory(cfg.exp_bits, max(len(img.rowexp), 2), init=img.rowexp or [0], name="brom_rowexp")
            self.specials += rom, srom, erom
            lane_mems.append((rom, srom, erom, None))
        custom = bits != cfg.code_bits or signed
        LaneArray.__init__(self, cfg, lane_mems, max_cols, wbits=bits if custom else None, wsigned=signed)


class SRAMUnit(LaneArray):
    """The H-unit's lanes: 16-bit signed weights in writable SRAM banks (LoRA A/B, the KV cache), with a
    row exponent per row and an optional exponent per (row, group); one write port per bank and memory."""

    def __init__(self, cfg, groups_per_bank, rows_per_bank, max_cols, group_exp=False):
        wbits = cfg.act_bits
        lane_mems, self.w_ports, self.e_ports, self.g_ports = [], [], [], []
        for _ in range(cfg.lanes):
            wdepth, edepth, gdepth = max(groups_per_bank * cfg.beats_per_group, 2), max(rows_per_bank, 2), \
                max(groups_per_bank, 2)
            # zero-initialised: unwritten exponents must read 0, and stale weights must be finite numbers
            w = Memory(cfg.macs_per_lane * wbits, wdepth, init=[0] * wdepth)
            e = Memory(cfg.exp_bits, edepth, init=[0] * edepth)
            g = Memory(cfg.exp_bits, gdepth, init=[0] * gdepth) if group_exp else None
            self.specials += [m for m in (w, e, g) if m is not None]
            ports = [w.get_port(write_capable=True, we_granularity=wbits)] + \
                [m.get_port(write_capable=True) if m is not None else None for m in (e, g)]
            self.specials += [p for p in ports if p is not None]
            self.w_ports.append(ports[0])
            self.e_ports.append(ports[1])
            self.g_ports.append(ports[2])
            lane_mems.append((w, None, e, g))
        LaneArray.__init__(self, cfg, lane_mems, max_cols, wbits=wbits, wsigned=True)
