"""The Verilator "board": the ROMA SoC for a model, its ROM images baked in, the UART on a TCP port.

build_sim() makes (or finds in the cache) two things, each keyed by a hash of what it is made from:
  gateware   the SoC's Verilog, its memory images and the compiled Verilator model (obj_dir/Vsim; the recipe
             and why the memories are binary images loaded at construction: boards/sim_build.py);
             key: the model's weights, the accelerator configuration, the context, every gateware/soc source,
             the build recipe, the LiteX and Verilator versions
  firmware   firmware.bin, compiled against that SoC's generated headers; key: firmware sources + headers
A run (SimRunner) gets a folder of its own holding links to the gateware's memory images, the firmware as the
ROM's init file and a sim_config.js naming its TCP port, so one compiled model serves any firmware and port.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from roma.host.cache import cache_dir, tree_hash
from roma.host.errors import RomaError

from .sim_platform import SYS_CLK_FREQ, make_soc

FORMAT = 2                  # bump when the recipe changes in a way the hashed inputs do not show
HW_SOURCES = ["gateware", "soc", "boards/sim_platform.py", "boards/sim_build.py", "boards/sim_veril.cpp",
              "host/golden", "host/export.py", "host/model.py"]


def tool_versions():
    import litex
    from roma.gateware.verilator import verilator_version
    return {"litex": getattr(litex, "__version__", "2024.12"), "verilator": verilator_version()}


def require_tools():
    missing = [t for t in ("verilator", "riscv64-unknown-elf-gcc", "make") if shutil.which(t) is None]
    if missing:
        raise RomaError(f"the simulator needs {', '.join(missing)} on PATH: run `bash .ci/setup` "
                        f"(apt packages verilator and gcc-riscv64-unknown-elf)")


@dataclass
class SimBuild:
    gateware: Path          # the builder's output folder (gateware/, software/, csr.json)
    firmware: Path          # firmware.bin
    rom_init: str           # the ROM's init file name in gateware/
    info: dict              # what was built: model, configuration, sizes


class _Progress:
    """A one-line elapsed-time display for steps that print nothing useful while they run."""

    def __init__(self, label, enabled=True):
        self.label, self.quiet, self._stop = label, not enabled, threading.Event()
        self.enabled = enabled and sys.stderr.isatty()

    def __enter__(self):
        self.t0 = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        elif not self.quiet:
            print(f"roma: {self.label} ...", file=sys.stderr, flush=True)
        return self

    def _tick(self):
        spin = "|/-\\"
        k = 0
        while not self._stop.wait(0.5):
            print(f"\r{spin[k % 4]} {self.label} {time.monotonic() - self.t0:5.0f} s", end="", file=sys.stderr,
                  flush=True)
            k += 1

    def __exit__(self, *exc):
        self._stop.set()
        if self.enabled:
            self._thread.join()
        if self.quiet and exc[0] is None:
            return
        print(f"\r{'ok' if exc[0] is None else 'failed':>2} {self.label} {time.monotonic() - self.t0:5.0f} s",
              file=sys.stderr, flush=True)


class _Quiet:
    """Sends this process's stdout/stderr (LiteX's log lines, the make runs it starts) to a log file."""

    def __init__(self, log, append=False):
        self.log, self.mode = log, "a" if append else "w"

    def __enter__(self):
        import logging
        sys.stdout.flush()
        sys.stderr.flush()
        self.f = open(self.log, self.mode)
        self.saved = [os.dup(1), os.dup(2)]
        os.dup2(self.f.fileno(), 1)
        os.dup2(self.f.fileno(), 2)
        self.level = logging.root.level
        logging.root.setLevel(logging.WARNING)

    def __exit__(self, *exc):
        import logging
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.f.close()
        logging.root.setLevel(self.level)


def _run(cmd, cwd, log, env=None):
    with open(log, "w") as f:
        r = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode:
        tail = Path(log).read_text(errors="replace").splitlines()[-25:]
        raise RomaError(f"{' '.join(map(str, cmd))} failed (log: {log}):\n" + "\n".join(tail))


def sim_key(model, cfg, context=None, lora_size=None):
    """The content hash a simulator build (and what is measured on it) is cached by."""
    src = json.dumps({"format": FORMAT, "model": model.content_hash(), "cfg": repr(cfg), "context": context,
                      "lora": lora_size, "sources": tree_hash(HW_SOURCES), "tools": tool_versions()}, sort_keys=True)
    return hashlib.sha256(src.encode()).hexdigest()[:24]


def build_sim(model, cfg, context=None, lora_size=None, progress=True):
    """The cached gateware and firmware for `model` on an accelerator `cfg`; builds what is missing."""
    require_tools()
    from roma.firmware.build import build_firmware

    threads = sim_threads(model)
    gw = cache_dir("soc-sim", f"{model.config.name}-{sim_key(model, cfg, context, lora_size)}"
                   + (f"-t{threads}" if threads > 1 else ""))
    done = gw / "gateware" / "obj_dir" / "Vsim"
    if not done.exists():
        _build_gateware(model, cfg, context, lora_size, gw, progress, threads)
    info = json.loads((gw / "build.json").read_text())
    fw = build_firmware(gw, model, cfg, context, progress=progress)
    return SimBuild(gw, fw, info["rom_init"], info)


def sim_threads(model):
    """Verilator threads for a model's simulator: one. Two once paid for SmolLM2 (35.9k -> 55.2k cycles/s at
    32 x 32 MACs), but with the idle units' clocks gated (gateware/accelerator.py gate_clocks) a cycle holds too
    little work for the threads' synchronisation: 40.2-42.9k cycles/s on two threads, 46.4-46.9k on one
    (`roma bench smollm2-135m --target sim --tokens 2`, the same build verilated both ways, one 2-core
    machine). The builds keep the choice (cache folder suffix -tN, build.json)."""
    return 1


def _build_gateware(model, cfg, context, lora_size, gw, progress, threads=1):
    from litex.build.sim.config import SimConfig
    from litex.soc.integration.builder import Builder

    with _Progress(f"elaborating the SoC for {model.config.name} ({cfg.lanes} lanes x {cfg.macs_per_lane} MACs)",
                   progress):
        with _Quiet(gw / "litex.log"):
            soc, acc = make_soc(model, cfg, context, lora_size)
        sim_config = SimConfig()
        sim_config.add_clocker("sys_clk", freq_hz=SYS_CLK_FREQ)
        sim_config.add_module("serial2tcp", "serial", args={"port": 0})
        builder = Builder(soc, output_dir=str(gw), compile_gateware=False, compile_software=True,
                          csr_json=str(gw / "csr.json"))
        # the libraries the firmware links (picolibc, compiler-rt, libbase) are compiled here as well
        cwd = os.getcwd()
        try:
            with _Quiet(gw / "litex.log", append=True):
                builder.build(sim_config=sim_config, run=False, build_name="sim")
        except Exception as e:
            raise RomaError(f"the SoC build failed ({e}); its log: {gw / 'litex.log'}") from e
        finally:
            os.chdir(cwd)
    from .sim_build import preload_memories, verilate
    rom_init = _rom_init_name(gw / "gateware" / "sim.v")
    with _Progress("converting the memory images", progress):
        mems = preload_memories(gw / "gateware", keep={rom_init})
    with _Progress("compiling the Verilator model (a few minutes the first time)", progress):
        verilate(gw / "gateware", gw / "verilator.log", threads=threads)
    info = {"model": model.config.name, "lanes": cfg.lanes, "macs_per_lane": cfg.macs_per_lane,
            "context": acc.geo.context, "rom_init": rom_init, "lora_groups": acc.lora_groups,
            "lora_rows": acc.lora_rows, "rom_words": soc.integrated_rom_size // 4,
            "cmds_preloaded": len(acc.dut.cmds.init), "multiplier": cfg.multiplier, "vec_lanes": cfg.vec_lanes,
            "pipeline": cfg.pipeline,
            "threads": threads,
            "image_bytes": sum(m["bytes"] for m in mems if m["file"])}
    (gw / "build.json").write_text(json.dumps(info, indent=1))


def _rom_init_name(verilog):
    """The init file LiteX wrote for the CPU's ROM (its memory is named after the `rom` region)."""
    import re
    names = re.findall(r'\$readmemh\("([^"]+)", rom\);', Path(verilog).read_text())
    if len(names) != 1:
        raise RomaError(f"cannot tell the ROM's init file in {verilog}: {names}")
    return names[0]


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SimRunner:
    """One running simulation of a SimBuild: Vsim in a run folder of its own, the UART on a local TCP port.

        with SimRunner(build) as sim:
            link = Link(sim.url)
    """

    def __init__(self, build, port=None, trace=False):
        self.build, self.port, self.trace = build, port or _free_port(), trace
        self.proc = None

    @property
    def url(self):
        return f"socket://127.0.0.1:{self.port}"

    def start(self, timeout=60):
        import tempfile

        from litex.soc.integration.soc_core import get_mem_data

        gw = self.build.gateware / "gateware"
        self.dir = Path(tempfile.mkdtemp(prefix="roma-sim-", dir=cache_dir("runs")))
        for f in gw.iterdir():
            if (f.suffix in (".init", ".bin") and f.name != self.build.rom_init) or f.name == "modules":
                (self.dir / f.name).symlink_to(f)
        depth = int(self.build.info["rom_words"])
        words = get_mem_data(str(self.build.firmware), data_width=32, endianness="little")
        if len(words) > depth:
            raise RomaError(f"firmware of {4 * len(words)} bytes does not fit the {4 * depth}-byte ROM")
        (self.dir / self.build.rom_init).write_text("".join(f"{w:08x}\n" for w in words + [0] * (depth - len(words))))
        cfg = json.loads((gw / "sim_config.js").read_text())
        for m in cfg:
            if m.get("module") == "serial2tcp":
                m["args"]["port"] = str(self.port)
        (self.dir / "sim_config.js").write_text(json.dumps(cfg, indent=1))
        self.log = open(self.dir / "sim.log", "w")
        self.proc = subprocess.Popen([str(gw / "obj_dir" / "Vsim")], cwd=self.dir, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise RomaError(f"the simulator exited with {self.proc.returncode}: "
                            f"{(self.dir / 'sim.log').read_text(errors='replace')[-2000:]}")
        return self        # its TCP bridge listens within a second: the link client retries its connect

    def gone(self):
        """None while the simulator runs; once it has exited, what it said last (for the link's errors)."""
        if self.proc is None or self.proc.poll() is None:
            return None
        self.log.flush()
        tail = (self.dir / "sim.log").read_text(errors="replace")[-1500:].strip()
        return f"the simulator exited with {self.proc.returncode}" + (f": {tail}" if tail else "")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if getattr(self, "log", None):
            self.log.close()
        if getattr(self, "dir", None):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
