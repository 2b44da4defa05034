"""The Verilator build of the simulated SoC, from what LiteX's builder wrote (sim.v, the memory init files,
sim_init.cpp, sim_header.h, variables.mak, build_sim.sh): LiteX's own recipe (its sim core Makefile) with two
changes that decide how usable a large model is in simulation.

  memory images  LiteX initializes every memory with `$readmemh` from a text file. Verilator parses those a
                 character at a time (about 8 MB/s): SmolLM2's ROM images are 230 MB of hex, half a minute at
                 every start. Here each image becomes a binary file in Verilator's own in-memory layout (a
                 little-endian host's: elements of 1, 2, 4 or 8 bytes, wider ones as 32-bit words, least
                 significant first), its `$readmemh` is dropped from sim.v, and a generated loader
                 (roma_meminit.cpp) writes the files straight into the model's arrays after its construction
                 (each array checked at compile time to exist with its size): a fraction of a
                 second (99 MB for SmolLM2). All-zero images (the adapter banks, empty RAMs) need no file. The
                 CPU's ROM keeps its `$readmemh`: a run swaps in the firmware there (boards/sim.py SimRunner).
                 The arrays are not marked /*verilator public*/: Verilator would then evaluate every read of
                 them at each eval, both clock edges (its input-combinational region), which cost SmolLM2's
                 model a fifth of its speed (24.1k -> 30.6k cycles/s without).
  no tracing     LiteX always verilates with --trace (and opens sim.vcd at every start, though nothing is
                 dumped unless asked). Without it the compiled model is a third the size and simulates a little
                 faster (5-10% on tiny-260k). boards/sim_veril.cpp is LiteX's veril.cpp with the tracer made optional and the loader
                 called.
"""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

from roma.host.errors import RomaError

HERE = Path(__file__).resolve().parent
VERIL_CPP = HERE / "sim_veril.cpp"
LOADER = "roma_meminit.cpp"
MANIFEST = "meminit.json"

_MEM = re.compile(r'reg (?:\[(\d+):0\] )?(\w+)\[0:(\d+)\];\ninitial begin\n\t\$readmemh\("([^"]+)", (\w+)\);\nend\n')


def _elem_bytes(width):
    """Bytes per element of a Verilator array: CData/SData/IData/QData, or VlWide<words> past 64 bits."""
    for b in (1, 2, 4, 8):
        if width <= 8 * b:
            return b
    return 4 * -(-width // 32)


def hex_image(path, width, depth):
    """A $readmemh file (one value a line, no addresses or comments: what LiteX writes) as the bytes of the
    Verilator array it initializes: `depth` elements, each little-endian in _elem_bytes(width) bytes, values
    cut to `width` bits as Verilator's $readmemh cuts them; lines past the file are zero. None if all zero."""
    nb = _elem_bytes(width)
    lines = Path(path).read_bytes().split()
    if len(lines) > depth:
        raise RomaError(f"{path}: {len(lines)} values for a memory of {depth}")
    out = np.zeros((depth, nb), np.uint8)
    digits = {len(x) for x in lines}
    if len(digits) == 1 and 2 * nb >= max(digits):
        d = digits.pop()
        text = b"".join(lines) if d % 2 == 0 else b"".join(b"0" + x for x in lines)  # whole bytes for fromhex
        d += d % 2
        raw = np.frombuffer(bytes.fromhex(text.decode()), np.uint8).reshape(len(lines), d // 2)
        out[:len(lines), :d // 2] = raw[:, ::-1]        # the text has the most significant byte first
    else:
        for i, x in enumerate(lines):
            out[i] = np.frombuffer((int(x, 16) & ((1 << width) - 1)).to_bytes(nb, "little"), np.uint8)
    mask = np.zeros(nb, np.uint8)
    mask[:width // 8] = 0xFF
    if width % 8:
        mask[width // 8] = (1 << (width % 8)) - 1
    out &= mask
    return out.tobytes() if out.any() else None


def preload_memories(gw, keep):
    """Turns each memory LiteX initializes from a file, except those in `keep`, into a preloaded one: writes
    <init file>.bin next to it (none if all zero), deletes the text file and drops its $readmemh from sim.v.
    Writes and returns the manifest (what the loader loads)."""
    gw = Path(gw)
    v = (gw / "sim.v").read_text()
    mems = []

    def sub(m):
        hi, name, last, fname, target = m.groups()
        if fname in keep or name != target:
            return m.group(0)
        width, depth = int(hi or 0) + 1, int(last) + 1
        data = hex_image(gw / fname, width, depth)
        binary = None
        if data is not None:
            binary = Path(fname).with_suffix(".bin").name
            (gw / binary).write_bytes(data)
        (gw / fname).unlink()
        mems.append({"name": name, "width": width, "depth": depth, "bytes": _elem_bytes(width) * depth,
                     "file": binary, "from": fname})
        return f"reg {'[%s:0] ' % hi if hi else ''}{name}[0:{last}];\n"

    v = _MEM.sub(sub, v)
    left = re.findall(r'\$readmemh\("([^"]+)"', v)
    if sorted(left) != sorted(keep):
        raise RomaError(f"sim.v: $readmemh calls not understood: {sorted(set(left) - set(keep))}")
    (gw / "sim.v").write_text(v)
    (gw / MANIFEST).write_text(json.dumps(mems, indent=1))
    return mems


def loader_source(mems, header):
    """roma_meminit.cpp for the manifest, given the verilated module's header (obj_dir/Vsim_sim.h): each memory
    by the name Verilator gave its array, its size checked at compile time and against its file at run time."""
    out = ['// generated by boards/sim_build.py: the preloaded memories (boards/sim_build.py explains)',
           '#include <cstdio>', '#include <cstdlib>', '#include <cstring>',
           '#include "Vsim.h"', '#include "Vsim__Syms.h"', '#include "Vsim___024root.h"', '',
           'static void load(void *dst, size_t size, const char *file, const char *name)', '{',
           '    if (!file) {', '        memset(dst, 0, size);', '        return;', '    }',
           '    FILE *f = fopen(file, "rb");',
           '    if (!f) {',
           '        fprintf(stderr, "roma: cannot open %s (the image of memory %s)\\n", file, name);',
           '        exit(1);', '    }',
           '    size_t got = fread(dst, 1, size, f);', '    int more = fgetc(f);', '    fclose(f);',
           '    if (got != size || more != EOF) {',
           '        fprintf(stderr, "roma: %s does not hold the %zu bytes of memory %s\\n", file, size, name);',
           '        exit(1);', '    }', '}', '',
           'extern "C" void roma_sim_load_memories(void *vsim)', '{',
           '    Vsim_sim &m = ((Vsim *)vsim)->rootp->vlSymsp->TOP__sim;']
    for mem in mems:
        found = re.findall(rf'VlUnpacked<[^;]*> ((?:__PVT__)?{mem["name"]});', header)
        if len(found) != 1:
            raise RomaError(f"the verilated model has no single array for memory {mem['name']}: {found}")
        member = f'm.{found[0]}'
        f = f'"{mem["file"]}"' if mem["file"] else "nullptr"
        out.append(f'    static_assert(sizeof({member}) == {mem["bytes"]}, "layout of {mem["name"]}");')
        out.append(f'    load(&{member}, sizeof({member}), {f}, "{mem["name"]}");')
    out.append('}')
    return "\n".join(out) + "\n"


def _run(cmd, cwd, log, env):
    log.write(("$ " + " ".join(map(str, cmd)) + "\n").encode())
    log.flush()
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        raise RomaError(f"{Path(str(cmd[0])).name} failed in {cwd}")


def verilate(gw, log_path, jobs=None, opt_fast="-O2", threads=1):
    """Compiles obj_dir/Vsim in gw (the builder's gateware folder) as LiteX's sim core Makefile does, with the
    two changes above; the memories must have been preloaded (preload_memories) already. threads > 1: a
    multithreaded model (Verilator --threads)."""
    import litex
    core = Path(litex.__file__).resolve().parent / "build" / "sim" / "core"
    gw = Path(gw)
    m = re.search(r'CC_SRCS="([^"]*)"', (gw / "build_sim.sh").read_text())
    if not m:
        raise RomaError(f"cannot find the Verilog sources in {gw / 'build_sim.sh'}")
    sources = m.group(1).split()            # --cc FILE ...
    mems = json.loads((gw / MANIFEST).read_text())
    obj = gw / "obj_dir"
    # as LiteX: C++ the model runs each cycle gets OPT_FAST, the rest (construction, settling) is left at -O0
    cxxflags = f"-Wall -O0 -I{core} -I{gw}"
    ldflags = "-lpthread -Wl,--no-as-needed -ljson-c -lz -lm -lstdc++ -Wl,--no-as-needed -ldl -levent"
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    shutil.rmtree(obj, ignore_errors=True)
    obj.mkdir()
    (gw / "modules").mkdir(exist_ok=True)
    (gw / LOADER).write_text("// written after verilating\n")
    with open(log_path, "wb") as log:
        try:
            # only the modules sim_config.js loads (LiteX builds all, the Ethernet ones against tapcfg)
            used = sorted({m["module"] for m in json.loads((gw / "sim_config.js").read_text()) if "module" in m})
            _run(["make", "-C", "modules", "-f", core / "modules" / "Makefile", *used], gw, log, env)
            objs = []
            for c in sorted(core.glob("*.c")):
                _run(["gcc", "-c", "-Wall", "-O2", f"-I{core}", "-o", obj / (c.stem + ".o"), c], gw, log, env)
                objs.append(c.stem + ".o")
            _run(["verilator", "-Wno-fatal", "-O3", *(["--threads", str(threads)] if threads > 1 else []),
                  *sources, "--top-module", "sim", "--exe", "-DPRINTF_COND=0",
                  "sim_init.cpp", VERIL_CPP, LOADER, *objs, "-CFLAGS", cxxflags, "-LDFLAGS", ldflags,
                  "--unroll-count", "256", "--output-split", "5000", "--output-split-cfuncs", "500",
                  "-Wno-BLKANDNBLK", "-Wno-WIDTH", "-Wno-COMBDLY", "-Wno-CASEINCOMPLETE", "--relative-includes"],
                 gw, log, env)
            (gw / LOADER).write_text(loader_source(mems, (obj / "Vsim_sim.h").read_text()))
            _run(["make", f"-j{jobs or os.cpu_count() or 1}", "-C", obj, "-f", "Vsim.mk", "Vsim",
                  f"OPT_FAST={opt_fast}"], gw, log, env)
        except RomaError as e:
            log.flush()
            tail = Path(log_path).read_text(errors="replace").splitlines()[-25:]
            raise RomaError(f"{e} (log: {log_path}):\n" + "\n".join(tail)) from None
    if not (obj / "Vsim").exists():
        raise RomaError(f"the Verilator build made no obj_dir/Vsim (log: {log_path})")
