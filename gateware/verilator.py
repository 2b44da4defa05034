"""Run a Migen module under Verilator, driven by a line script instead of per-cycle Python round trips.

    sim = VerilatorSim(dut, [dut.a, dut.b, dut.out], "adder")      # or ios={"a": dut.a, ...} to name ports
    res = sim.run(["poke a 5", "poke b -3", "step 1", f"peek {sim.name_of(dut.out)}"])
    res.peeks["out"], res.signed("out")

The module is converted with migen.fhdl.verilog.convert (clock domains become sys_clk / sys_rst ports), and
compiled with a generic C++ harness (verilator_harness.cpp) plus a generated port table (sim_signals.h). The
build lives in a folder named by a content hash of everything that goes into it (Verilog, memory init files,
harness, port table, Verilator version, flags), under roma.host.cache.cache_dir("verilator", hash) or
build_root/hash, so an identical design reuses its binary. The binary runs with cwd = the build folder, where
Migen's $readmemh init files are written.

Script commands (one per line; see verilator_harness.cpp): poke SIG VALUE, step N, wait SIG MAXCYCLES,
peek SIG, watch VALID SIG..., unwatch, cycles, reset N, and # comments. Values are decimal (negative ones are
two's-complemented to the port width) or 0x hex, of any width. Outputs are unsigned hex; use to_signed().
"""

import fcntl
import functools
import hashlib
import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from migen import ClockDomain, Memory, Module, Signal
from migen.fhdl.structure import _Fragment
from litex.gen.fhdl.verilog import convert     # the converter LiteX builds the SoC with

from roma.host.cache import cache_dir

HARNESS = Path(__file__).with_name("verilator_harness.cpp")
FORMAT = 1      # bump when the build recipe changes in a way the hashed inputs do not show
PREFIX = "Vdut"
BINARY = "sim"

_CXX_KEYWORDS = frozenset("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t class
compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield decltype
default delete do double dynamic_cast else enum explicit export extern false float for friend goto if inline
int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private protected public register
reinterpret_cast requires return short signed sizeof static static_assert static_cast struct switch template
this thread_local throw true try typedef typeid typename union unsigned using virtual void volatile wchar_t
while xor xor_eq
""".split())


def to_signed(v, width):
    """Two's-complement reading of a `width`-bit unsigned value."""
    v &= (1 << width) - 1
    return v - (1 << width) if v >> (width - 1) else v


def verilator_available():
    return shutil.which("verilator") is not None


@functools.lru_cache(maxsize=None)
def verilator_version():
    if not verilator_available():
        raise RuntimeError("verilator is not on PATH")
    return subprocess.run(["verilator", "--version"], capture_output=True, text=True, check=True).stdout.strip()


@dataclass(frozen=True)
class Port:
    name: str
    width: int
    signed: bool
    input: bool


class VerilatorError(RuntimeError):
    """The harness stopped with an error (message from its stderr); .stdout holds what it printed before."""

    def __init__(self, msg, stdout=""):
        super().__init__(msg)
        self.stdout = stdout


@dataclass
class RunResult:
    peeks: dict                                    # name -> last peeked value (unsigned)
    watch: list                                    # (cycle, [unsigned values]) per watched valid cycle
    cycles: int                                    # cycle count at the end of the script
    stdout: str
    peek_log: list = field(default_factory=list)   # (name, value) for every peek, in order
    ports: dict = field(default_factory=dict, repr=False)

    def signed(self, name):
        """The last peek of `name` read as two's complement of the port width."""
        return to_signed(self.peeks[name], self.ports[name].width)


def _flatten(ios):
    if isinstance(ios, dict):
        out = {}
        for k, v in ios.items():
            if not isinstance(v, Signal):
                raise TypeError(f"ios[{k!r}] is not a Signal")
            out[v] = k
        return out
    out = {}
    stack = list(ios)[::-1]
    while stack:
        s = stack.pop()
        if isinstance(s, (list, tuple, set, frozenset)):
            stack.extend(list(s)[::-1])
        elif isinstance(s, Signal):
            out[s] = None
        else:
            raise TypeError(f"ios: {s!r} is not a Signal")
    return out


_PORT_RE = re.compile(r"^\s*(input|output|inout)\s+(?:(?:reg|wire)\s+)?(signed\s+)?(?:\[(\d+):(\d+)\]\s+)?(\w+)\s*,?\s*$")


def _parse_ports(verilog, name):
    m = re.search(r"^module\s+" + re.escape(name) + r"\s*\((.*?)^\);", verilog, re.S | re.M)
    if not m:
        raise RuntimeError(f"cannot find the port list of module {name} in the converted Verilog")
    ports = {}
    for line in m.group(1).splitlines():
        if not line.strip():
            continue
        pm = _PORT_RE.match(line)
        if not pm:
            raise RuntimeError(f"cannot parse port declaration {line.strip()!r}")
        d, sgn, msb, lsb, pname = pm.groups()
        if d == "inout":
            raise RuntimeError(f"port {pname}: inout ports (tristates) are not supported by the Verilator runner")
        width = int(msb) - int(lsb) + 1 if msb is not None else 1
        ports[pname] = Port(pname, width, bool(sgn), d == "input")
    return ports


def _storage(width):
    return 1 if width <= 8 else 2 if width <= 16 else 4 if width <= 32 else 8 if width <= 64 else 0


def _signal_table(ports, clocks, resets):
    lines = [
        "// generated by roma.gateware.verilator: the design's ports",
        f"#define MAX_WIDTH {max([64] + [p.width for p in ports.values()])}",
        f"static void sim_signals({PREFIX}* t, std::vector<Sig>& s, std::vector<CData*>& clk, "
        "std::vector<CData*>& rst) {",
    ]
    for p in ports.values():
        b = _storage(p.width)
        ptr = f"t->{p.name}.data()" if b == 0 else f"&t->{p.name}"
        lines.append(f'    s.push_back(Sig{{"{p.name}", {p.width}, {"true" if p.input else "false"}, {b}, '
                     f"(void*){ptr}}});")
    lines += [f"    clk.push_back(&t->{c});" for c in clocks]
    lines += [f"    rst.push_back(&t->{r});" for r in resets]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _masked_inits(specials):
    """Memories whose init holds negative values: Migen would print '-1' into the $readmemh file."""
    fix = []
    for sp in specials:
        if isinstance(sp, Memory) and sp.init is not None and any(v < 0 for v in sp.init):
            fix.append((sp, sp.init))
    return fix


class VerilatorSim:
    """A Migen module compiled with Verilator; run scripts against fresh instances of it.

    ios: Signals to expose (nested lists allowed), or a dict {port name: Signal} to choose the names.
    Clock domains become ports (sys_clk, sys_rst for the default domain); `step` toggles every clock input.
    """

    def __init__(self, module, ios, name, build_root=None, opt="-O2", trace=False):
        if not verilator_available():
            raise RuntimeError("verilator is not on PATH")
        self.name, self.opt, self.trace = name, opt, trace
        sigs = _flatten(ios)
        for s, n in sigs.items():
            if n is not None:
                s.name_override = n
        if isinstance(module, Module):
            if getattr(module, "get_fragment_called", False):
                raise ValueError("the module was already elaborated (get_fragment / convert / run_simulation): "
                                 "pass a fresh instance")
            frag = module.get_fragment()
        else:
            frag = module
        if not isinstance(frag, _Fragment):
            raise TypeError("module must be a migen Module or _Fragment")
        io_set = set(sigs)
        # LiteX's converter (unlike Migen's) wants every clock domain declared: add the ones used but not made
        from migen.fhdl.tools import list_clock_domains
        have = {cd.name for cd in frag.clock_domains}
        for name_ in sorted(list_clock_domains(frag) - have):
            frag.clock_domains.append(ClockDomain(name_))
        for cd in frag.clock_domains:           # domains the module defines itself: expose clk and rst too
            io_set.add(cd.clk)
            if cd.rst is not None:
                io_set.add(cd.rst)
        fixes = _masked_inits(frag.specials)
        try:
            for mem, init in fixes:
                mem.init = [v & ((1 << mem.width) - 1) for v in init]
            # as the SoC build converts (SimPlatform: regular_comb=False), so tests see what the SoC runs
            conv = convert(frag, ios=io_set, name=name, regular_comb=False)
        finally:
            for mem, init in fixes:
                mem.init = init
        ns = conv.ns
        # LiteX stamps the conversion time into its banner: drop it, or no two builds would hash alike
        self.verilog = re.sub(r"(?m)^// (Date +:|.*Generated by LiteX on) .*$", "// (conversion time removed)",
                              conv.main_source)
        self.data_files = dict(conv.data_files)
        self.ports = _parse_ports(self.verilog, name)
        self._names = {}
        for s, want in sigs.items():
            got = ns.get_name(s)
            if want is not None and got != want:
                raise ValueError(f"port name {want!r} is taken; Migen named it {got!r}")
            self._names[s] = got
        bad = [p for p in self.ports if p in _CXX_KEYWORDS or p.startswith("__")]
        if bad:
            raise ValueError(f"port names {bad} are C++ keywords or reserved; name them with ios={{name: signal}}")
        if name in self.ports:
            raise ValueError(f"port {name!r} has the module's name, which Verilator rejects; rename one of them")
        self.clocks, self.resets = [], []
        for cd in ns.clock_domains:
            c = ns.get_name(cd.clk)
            if c in self.ports and self.ports[c].input and self.ports[c].width == 1:
                self.clocks.append(c)
            if cd.rst is not None:
                r = ns.get_name(cd.rst)
                if r in self.ports and self.ports[r].input and self.ports[r].width == 1:
                    self.resets.append(r)
        self.table = _signal_table(self.ports, self.clocks, self.resets)
        self.harness = HARNESS.read_text()
        self.flags = ["--cc", "--exe", "--build", "-O3", "-Wno-fatal", "--x-assign", "fast", "--x-initial", "fast",
                      "-MAKEFLAGS", f"OPT_FAST={opt} -j 2"] + (["--trace"] if trace else [])

        h = hashlib.sha256()
        for part in (str(FORMAT), verilator_version(), json.dumps(self.flags), name, self.verilog, self.table,
                     self.harness, *(f"{k}\0{v}" for k, v in sorted(self.data_files.items()))):
            h.update(part.encode())
            h.update(b"\0\1\0")
        self.hash = h.hexdigest()[:24]
        if build_root is None:
            self.build_dir = cache_dir("verilator", self.hash)
        else:
            self.build_dir = Path(build_root) / self.hash
            self.build_dir.mkdir(parents=True, exist_ok=True)
        self.binary = self.build_dir / "obj_dir" / BINARY
        self.compiled = False           # True if this construction ran Verilator
        self.compile_seconds = 0.0
        self._build()

    # build ------------------------------------------------------------------------------------------------
    def _build(self):
        d = self.build_dir
        stamp = d / "build.json"
        with open(d / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if stamp.exists() and self.binary.exists():
                return
            (d / f"{self.name}.v").write_text(self.verilog)
            for fn, content in self.data_files.items():
                (d / fn).write_text(content)
            (d / "harness.cpp").write_text(self.harness)
            (d / "sim_signals.h").write_text(self.table)
            cmd = ["verilator", *self.flags, "--top-module", self.name, "--prefix", PREFIX, "--Mdir", "obj_dir",
                   "-o", BINARY, f"{self.name}.v", "harness.cpp"]
            t0 = time.monotonic()
            p = subprocess.run(cmd, cwd=d, capture_output=True, text=True)
            self.compile_seconds = time.monotonic() - t0
            (d / "build.log").write_text(" ".join(cmd) + "\n\n" + p.stdout + "\n" + p.stderr)
            if p.returncode or not self.binary.exists():
                tail = "\n".join((p.stdout + "\n" + p.stderr).strip().splitlines()[-30:])
                raise RuntimeError(f"verilator build failed in {d} (see build.log):\n{tail}")
            stamp.write_text(json.dumps({"compile_seconds": round(self.compile_seconds, 2), "command": cmd,
                                         "verilator": verilator_version()}, indent=1))
            self.compiled = True

    # running ----------------------------------------------------------------------------------------------
    def name_of(self, signal):
        """The port name of an exposed Signal (what scripts refer to)."""
        return self._names[signal]

    __getitem__ = name_of

    def run(self, script_lines, timeout=None, vcd=None):
        """Run a script (iterable of lines, or one string) on a fresh instance; returns a RunResult."""
        text = script_lines if isinstance(script_lines, str) else "\n".join(script_lines)
        return self._exec([], text.encode(), timeout, vcd)

    def run_script_file(self, path, timeout=None, vcd=None):
        return self._exec([str(Path(path).resolve())], None, timeout, vcd)

    def _exec(self, args, stdin, timeout, vcd):
        if vcd is not None:
            if not self.trace:
                raise ValueError("vcd output needs VerilatorSim(..., trace=True)")
            args = ["--vcd", str(Path(vcd).resolve())] + args
        p = subprocess.run([str(self.binary), *args], input=stdin if stdin is not None else b"",
                           cwd=self.build_dir, capture_output=True, timeout=timeout)
        out = p.stdout.decode()
        if p.returncode:
            err = p.stderr.decode().strip() or f"harness exited with status {p.returncode}"
            raise VerilatorError(err, out)
        return self._parse(out)

    def _parse(self, out):
        peeks, log, watch, cycles = {}, [], [], 0
        for line in out.splitlines():
            if not line:
                continue
            if line[0] == "@":
                parts = line[1:].split()
                watch.append((int(parts[0]), [int(x, 16) for x in parts[1:]]))
            elif line.startswith("#cycles "):
                cycles = int(line[8:])
            else:
                n, v = line.split()
                v = int(v, 16)
                peeks[n] = v
                log.append((n, v))
        return RunResult(peeks, watch, cycles, out, log, self.ports)
