"""`roma fit`, `roma build`, `roma swap`, `roma load`: the accelerator on ECP5 boards (boards/)."""

import json
import shutil
import subprocess
import sys

from .errors import RomaError


def _board_args(p, model_default="tiny-260k"):
    p.add_argument("--board", required=True, help="ulx3s, colorlight-i5, colorlight-i9, orangecrab, ecpix5")
    p.add_argument("--variant", help="part size where the board comes in several (ulx3s: 85F (default), 45F, "
                                     "25F; orangecrab: 25F (default), 85F)")
    p.add_argument("--model", default=model_default, help="model name or path")
    p.add_argument("--lanes", type=int, help="MAC lanes (default: the widest that fits)")
    p.add_argument("--macs", type=int, help="MACs per lane per cycle (default: 8 for tiny models)")
    p.add_argument("--multiplier", choices=("dsp", "lut"),
                   help="the B-ROM lanes' products: on MULT18X18D, or a code's choice among broadcast multiples of "
                        "its activation in LUTs (default: fit's choice; for each lane count and vector-unit width, "
                        "widest first, dsp before lut)")
    p.add_argument("--context", type=int, help="KV cache positions (default: the longest that fits, at most 512)")


def _load_model(name):
    from .models import load_model
    return load_model(name, with_tokenizer=False)


# fit --------------------------------------------------------------------------------------------------------
def format_fit(r, board):
    mb = 1e6
    lines = [f"{r.model} on {board.title} ({r.part}), context {r.context}",
             f"  {'':34}{'needs':>14}{'the part has':>16}",
             f"  {'B-ROM (codes, scales, row exps)':34}{r.rom_bits / mb:>10.2f} Mbit",
             f"  {f'KV cache (context {r.context})':34}{r.kv_bits / mb:>10.2f} Mbit",
             f"  {'SoC (CPU, firmware ROM, SRAM)':34}{r.soc_bits / mb:>10.2f} Mbit",
             f"  {'block RAM, in bits':34}{(r.rom_bits + r.kv_bits + r.soc_bits) / mb:>10.2f} Mbit"
             f"{r.part_bram_bits / mb:>11.2f} Mbit"]
    n = r.chosen
    if n is not None:
        lines.append(f"  at {n.lanes} lanes x {n.macs_per_lane} MACs ({n.multiplier} multipliers), a "
                     f"{n.vec_lanes}-lane vector unit, as yosys would map it (estimate):")
        lines.append(f"  {'DP16KD (18 Kbit)':34}{n.dp16kd_total:>14,}{r.part_dp16kd:>16,}")
        for k, v in sorted(n.dp16kd.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:32}{v:>14,}")
        lines.append(f"  {'MULT18X18D':34}{n.mult18_total:>14,}{r.part_mult18:>16,}")
        for k, v in sorted(n.mult18.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:32}{v:>14,}")
        lines.append(f"  {'LUT4 (logic and soft ROMs)':34}{n.luts_total:>14,}{r.part_luts:>16,}")
        for k, v in sorted(n.logic_luts.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {k:32}{v:>14,}")
        if n.rom_luts:
            lines.append(f"    {'ROMs in soft logic':32}{n.rom_luts:>14,}")
        lines.append(f"  {'LUT RAM (TRELLIS_DPR16X4)':34}{n.lutram:>14,}")
        if n.ram_ffs:
            lines.append(f"  {'FFs of RAMs in soft logic':34}{n.ram_ffs:>14,}{r.part_ffs:>16,}")
    lines.append(("fits: " if r.fits else "does not fit: ") + r.reason)
    return "\n".join(lines)


def cmd_fit(args):
    from roma.boards import get_board
    from roma.boards.fit import plan
    board = get_board(args.board)
    variant = board.variant(args.variant)
    model = _load_model(args.model)
    r = plan(model, variant, context=args.context, lanes=args.lanes, macs_per_lane=args.macs,
             multiplier=args.multiplier)
    if args.json:
        print(json.dumps(dict(r.to_json(), board=board.name, variant=variant), indent=1))
    else:
        print(format_fit(r, board))
    if not r.fits:
        return 1
    return 0


# build ------------------------------------------------------------------------------------------------------
def cycles_per_token(model, cfg, context, progress=True):
    """Decode cycles per token of this configuration, measured by the accelerator's counters in the Verilator
    run of the same SoC (cached by the simulator build's key)."""
    from roma.boards.sim import sim_key
    from .cache import cache_dir
    from .hw_bench import hw_bench
    path = cache_dir("bench") / f"{model.config.name}-{sim_key(model, cfg, context)}.json"
    if not path.exists():
        r = hw_bench(model, cfg, context, progress=progress)
        path.write_text(json.dumps(r, indent=1))
    return json.loads(path.read_text())["decode_cycles_per_token"]


def format_report(r):
    u = r["utilization"]
    rows = [("LUT4", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"), ("DP16KD", "DP16KD"), ("MULT18X18D", "MULT18X18D")]
    what = (f"{r['model']} ({r['lanes']} lanes x {r['macs_per_lane']} MACs, context {r['context']})" if r["model"]
            else "bring-up SoC (CPU, BIOS, UART)")
    lines = [f"{what} on {r['title']} ({r['part']})", f"  {'cell':12}{'used':>9}{'of':>9}{'%':>6}"]
    for label, cell in rows:
        if cell in u:
            used, avail = u[cell]["used"], u[cell]["available"]
            lines.append(f"  {label:12}{used:>9,}{avail:>9,}{100 * used / avail:>6.1f}")
    lines.append(f"  Fmax {r['fmax_mhz']:.1f} MHz at a {r['sys_clk_hz'] / 1e6:g} MHz target: timing "
                 f"{'met' if r['timing_met'] else 'NOT met'}")
    if not r["timing_met"]:
        # a new place and route at a lower clock lands near this Fmax, not on it (and, without timing-driven
        # passes, may not route: the 85F accelerator asked for 30 MHz stalled where the 50 MHz one routed)
        lines.append(f"  (do not load it at {r['sys_clk_hz'] / 1e6:g} MHz: its paths allow {r['fmax_mhz']:.1f} MHz "
                     f"at most; --sys-clk-mhz asks for a lower clock, with a new place and route)")
    if r.get("decode_cycles_per_token"):
        lines.append(f"  decode {r['decode_cycles_per_token']:,.0f} cycles/token (Verilator, same configuration) -> "
                     f"{r['projected_decode_tok_s']:,.0f} tok/s at Fmax, {r['decode_tok_s_at_clk']:,.0f} at "
                     f"{r['sys_clk_hz'] / 1e6:g} MHz")
    lines.append("  " + ", ".join(f"{k} {v:.0f} s" for k, v in r["seconds"].items()))
    if r.get("swap"):
        lines.append("  the model swapped into the routed design: " +
                     ", ".join(f"{k} {v:.1f} s" for k, v in r["swap"]["seconds"].items()))
    lines.append(f"  bitstream: {r['bitstream']}")
    return "\n".join(lines)


def _accel_config(args, board, variant, model):
    """(AccelConfig, context) for `roma build` and `roma swap`: the lanes and context `roma fit` chooses unless
    given. Refuses a configuration that does not fit unless --force."""
    from roma.boards.fit import FPGA_VEC_LANES, FPGA_PIPELINE, plan
    from roma.soc.config import AccelConfig, default_config
    fit = plan(model, variant, context=args.context, lanes=args.lanes, macs_per_lane=args.macs,
               multiplier=args.multiplier)
    if not fit.fits and not args.force and not getattr(args, "synth_only", False):
        raise RomaError(f"{fit.reason}\n(`roma fit --board {board.name} --model {args.model}` shows the numbers; "
                        f"--force builds anyway, --synth-only synthesizes it, --bringup builds the board's SoC "
                        f"without the accelerator)")
    n = fit.chosen
    if n is None and not args.lanes:
        raise RomaError("no configuration fits: give --lanes (and --macs) with --force")
    if n is None:       # refused on bits alone: nothing was elaborated, take the smallest shapes
        return AccelConfig(lanes=args.lanes, macs_per_lane=args.macs or default_config(model.config).macs_per_lane,
                           multiplier=args.multiplier or "lut", vec_lanes=FPGA_VEC_LANES[-1],
                           pipeline=FPGA_PIPELINE), \
            fit.context
    cfg = AccelConfig(lanes=args.lanes or n.lanes, macs_per_lane=args.macs or n.macs_per_lane,
                      multiplier=n.multiplier, vec_lanes=n.vec_lanes, pipeline=FPGA_PIPELINE)
    return cfg, fit.context


def cmd_build(args):
    from roma.boards import get_board
    from roma.boards.bitstream import build_bitstream
    board = get_board(args.board)
    variant = board.variant(args.variant)
    freq = args.sys_clk_mhz * 1e6 if args.sys_clk_mhz else None
    if args.ethernet and not board.ethernet:
        raise RomaError(f"--ethernet: the {board.title} has no Ethernet PHY")
    model = cfg = context = None
    if not args.bringup:
        model = _load_model(args.model)
        cfg, context = _accel_config(args, board, variant, model)
    if args.synth_only:
        return _synth_only(board, model, cfg, context, variant, freq, args)
    b = build_bitstream(board, model, cfg, context, variant=variant, sys_clk_freq=freq, with_ethernet=args.ethernet,
                        seed=args.seed, progress=not args.quiet)
    r = dict(b.report)
    if model is not None and not args.no_sim:
        cpt = cycles_per_token(model, cfg, context, progress=not args.quiet)
        r.update(decode_cycles_per_token=cpt, projected_decode_tok_s=r["fmax_mhz"] * 1e6 / cpt,
                 decode_tok_s_at_clk=r["sys_clk_hz"] / cpt)
        (b.folder / "report.json").write_text(json.dumps(r, indent=1))
    print(format_report(r) + ("\n  (cached build)" if b.cached else ""))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0 if r["timing_met"] else 2


def _synth_only(board, model, cfg, context, variant, freq, args):
    """Elaboration and yosys only: the netlist's cells and its deepest paths, minutes before a placement."""
    from roma.boards.bitstream import build_routed
    b = build_routed(board, model, cfg, context, variant, freq, args.ethernet, args.seed, progress=not args.quiet,
                     synth_only=True)
    r = b.report
    part = board.part(variant)
    cells = r["cells"] or {}
    luts = cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0)
    print(f"{r['model'] or 'bring-up SoC'} on {r['title']} ({r['part']}), synthesis only:")
    print(f"  LUT4 {cells.get('LUT4', 0):,} + CCU2C {cells.get('CCU2C', 0):,} (about {luts:,} LUT4 of {part.luts:,}), "
          f"FF {cells.get('TRELLIS_FF', 0):,}, DP16KD {cells.get('DP16KD', 0)} of {part.dp16kd}, "
          f"MULT18X18D {cells.get('MULT18X18D', 0)} of {part.mult18}" if r["cells"] else
          "  (the netlist could not be read: see the build's yosys.log)")
    if r["logic_path_ns"]:
        print(f"  deepest path about {r['logic_path_ns']:.1f} ns by rough delays (not nextpnr's timing): "
              f"{r['logic_paths']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


# swap -------------------------------------------------------------------------------------------------------
def cmd_swap(args):
    """A model into the routed design of its geometry (built by `roma build` for any model of that geometry),
    with the proof: every ROM word read back from the new bitstream equals the model's export and firmware."""
    import time

    from roma.boards import get_board
    from roma.boards.bitstream import cached_routed
    from roma.boards.model_swap import swap_model, verify_bitstream
    board = get_board(args.board)
    variant = board.variant(args.variant)
    freq = args.sys_clk_mhz * 1e6 if args.sys_clk_mhz else None
    model = _load_model(args.model)
    cfg, context = _accel_config(args, board, variant, model)
    routed = cached_routed(board, model, cfg, context, variant, freq, args.ethernet, args.seed)
    if routed is None:
        raise RomaError(f"no routed design of this geometry ({cfg.lanes} lanes x {cfg.macs_per_lane} MACs, context "
                        f"{context}, {model.config.name}'s configuration and norm weights) on {board.title} "
                        f"{variant}: `roma build` it once (any model of the geometry), then swap")
    t0 = time.monotonic()
    b = swap_model(routed, model, cfg, context, progress=not args.quiet)
    total = time.monotonic() - t0
    r = b.report
    s, routed_s = r["swap"]["seconds"], routed.report["seconds"]
    print(f"{model.config.name} swapped into {routed.folder.name}: {r['swap']['roms']} ROMs, "
          f"{r['swap']['words']:,} words")
    print("  swap " + ", ".join(f"{k} {v:.1f} s" for k, v in s.items()) +
          (" (cached)" if b.cached else f"; {total:.1f} s in all") + "; the build it replaces: " +
          ", ".join(f"{k} {v:.0f} s" for k, v in routed_s.items()))
    rc = 0
    if not args.no_verify:
        bad, dt = verify_bitstream(b, model, cfg)
        print(f"  check ({dt:.1f} s, ecpunpack of the bitstream): " +
              ("every ROM word equals the export and firmware" if not bad else "MISMATCH: " + "; ".join(bad)))
        rc = 1 if bad else 0
    print(f"  bitstream: {b.bitstream}")
    return rc


# load -------------------------------------------------------------------------------------------------------
def cmd_load(args):
    from roma.boards import get_board
    board = get_board(args.board)
    exe = shutil.which("openFPGALoader")
    if exe is None:
        raise RomaError("openFPGALoader not found: apt-get install openfpgaloader (Debian 12 has it)")
    cmd = [exe, "-b", board.programmer] + (["-f"] if args.flash else []) + [args.bitstream]
    print(" ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd)


def register(sub):
    """Adds fit, build, swap and load to the `roma` command's subparsers."""
    p = sub.add_parser("fit", help="what a model needs on an ECP5 board against what its part has (no build)")
    _board_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("build", help="the bitstream for a board (yosys, nextpnr-ecp5, ecppack; cached)",
                       description="Checks the fit, elaborates the SoC, compiles the firmware into its ROM and runs "
                                   "yosys, nextpnr-ecp5 and ecppack (native ones on PATH, else YoWASP's from PyPI). "
                                   "Prints utilization, Fmax and the projected decode tok/s. Exit status 2 when "
                                   "timing is not met.")
    _board_args(p)
    p.add_argument("--sys-clk-mhz", type=float, help="system clock (default: the board's, 50 MHz on most)")
    p.add_argument("--ethernet", action="store_true", help="add the board's Ethernet PHY and MAC")
    p.add_argument("--bringup", action="store_true", help="the board's SoC without the accelerator (BIOS)")
    p.add_argument("--force", action="store_true", help="build even when `roma fit` says it will not fit")
    p.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    p.add_argument("--no-sim", action="store_true", help="skip the Verilator run that measures cycles per token")
    p.add_argument("--synth-only", action="store_true",
                   help="stop after yosys: cell counts and the deepest logic paths (logic_paths.txt), no bitstream")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("swap", help="another model (same geometry) into a routed design: ROM contents rewritten, "
                                    "no synthesis (seconds)",
                       description="Finds the cached routed design `roma build` made for this geometry (placeholder "
                                   "ROMs), writes the model's B-ROM words and firmware into its block RAM, runs "
                                   "ecppack, then unpacks the new bitstream and checks every ROM word.")
    _board_args(p)
    p.add_argument("--sys-clk-mhz", type=float, help="as given to roma build")
    p.add_argument("--ethernet", action="store_true", help="as given to roma build")
    p.add_argument("--seed", type=int, default=1, help="as given to roma build")
    p.add_argument("--force", action="store_true", help="as given to roma build")
    p.add_argument("--no-verify", action="store_true", help="skip reading the bitstream back (ecpunpack)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_swap)

    p = sub.add_parser("load", help="program a board with openFPGALoader")
    p.add_argument("--board", required=True)
    p.add_argument("bitstream", help="a .bit file (roma build prints its path)")
    p.add_argument("--flash", action="store_true", help="write the SPI flash instead of the SRAM")
    p.set_defaults(func=cmd_load)
