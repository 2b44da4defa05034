"""The deepest paths of a synthesized ECP5 netlist (from a register, a block RAM or an input, to a register or a
block RAM), in seconds and without placement.

nextpnr states an Fmax only after a placement that takes the better part of an hour for the full SoC, and names
the critical path only after routing. This walks yosys's JSON netlist (after synth_ecp5) instead: a path starts
at a flip-flop, a block RAM's read data or a top input, runs through LUTs, carry chains, wide-function muxes,
distributed-RAM reads and the (unregistered) multipliers, and ends at a flip-flop or a block RAM's inputs. Each
cell adds a rough ECP5 -6 delay and each routed net a rough routing delay, so the figures rank paths, they do
not replace nextpnr's timing. Each path is printed with the named signals it crosses and the Verilog lines its
cells came from, which is what tells which Migen statement to pipeline.

    python -m roma.boards.logic_paths BUILD/gateware/roma_ulx3s.json [--top 12]
"""

import argparse
import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

# Rough ECP5 -6 delays in ns: the cell's own delay from an input to an output, and a routed net's.
NET = 0.8                   # one general-routing hop, plus a little per doubling of fan-out
NET_FANOUT = 0.1
LUT = 0.3
CARRY_IN = 0.4              # a CCU2C's A/B/C/D to its COUT or sums
CARRY_THROUGH = 0.05        # CIN to COUT: two bits of a carry chain
CARRY_SUM = 0.25            # CIN to a sum
WIDE_MUX = 0.25             # PFUMX / L6MUX21
MULT = 4.0                  # an unregistered MULT18X18D, input to product
BRAM_CLK_TO_OUT = 4.3       # DP16KD read data without the output register
FF_CLK_TO_Q = 0.4
SETUP = 0.1

AUTONAME = re.compile(r"_(LUT4|CCU2C|PFUMX|L6MUX21|TRELLIS_FF|TRELLIS_DPR16X4|MULT18X18D|DP16KD)_")  # yosys autoname
SEQUENTIAL = {"TRELLIS_FF", "DP16KD"}
# Ports joined by dedicated wires inside a slice or a carry chain: no general routing between them.
DEDICATED = {("CCU2C", "COUT", "CCU2C", "CIN"), ("LUT4", "Z", "PFUMX", "ALUT"), ("LUT4", "Z", "PFUMX", "BLUT"),
             ("PFUMX", "Z", "L6MUX21", "D0"), ("PFUMX", "Z", "L6MUX21", "D1"),
             ("L6MUX21", "Z", "L6MUX21", "D0"), ("L6MUX21", "Z", "L6MUX21", "D1")}
# distributed RAM's synchronous write inputs end paths like a flip-flop's
RAM_WRITE = ("DI", "WAD", "WRE")


def cell_delay(kind, src, dst):
    """The delay from input port src to output port dst of a combinational cell (None: no such arc)."""
    if kind == "LUT4":
        return LUT
    if kind == "CCU2C":
        if src == "CIN":
            return CARRY_THROUGH if dst == "COUT" else CARRY_SUM
        if src[-1] == "1" and dst == "S0":
            return None                         # the second bit's inputs do not reach the first bit's sum
        return CARRY_IN
    if kind in ("PFUMX", "L6MUX21"):
        return WIDE_MUX
    if kind == "MULT18X18D":
        return MULT if dst.startswith("P") else None
    if kind == "TRELLIS_DPR16X4":
        return LUT if src.startswith("RAD") and dst.startswith("DO") else None     # the write side is synchronous
    return None


class Netlist:
    def __init__(self, path):
        data = json.loads(Path(path).read_text())
        self.verilog = Path(path).with_suffix(".v")      # the design's Verilog, beside its netlist
        top = next((m for m in data["modules"].values() if m.get("attributes", {}).get("top")), None)
        if top is None:
            raise ValueError(f"{path}: no top module in this netlist")
        self.cells = top["cells"]
        self.names = {}
        for name, net in top["netnames"].items():
            for b in net["bits"]:
                if isinstance(b, int) and (b not in self.names or (self.names[b][1] and not net["hide_name"])):
                    self.names[b] = (name, net["hide_name"])
        self.driver, self.sinks = {}, defaultdict(list)
        for cname, c in self.cells.items():
            for port, bits in c["connections"].items():
                d = c["port_directions"].get(port)
                for b in bits:
                    if not isinstance(b, int):
                        continue
                    if d == "output":
                        self.driver[b] = (cname, port)
                    elif d == "input":
                        self.sinks[b].append((cname, port))

    def net_delay(self, bit, sink):
        drv = self.driver.get(bit)
        if drv and (self.cells[drv[0]]["type"], drv[1], self.cells[sink[0]]["type"], sink[1]) in DEDICATED:
            return 0.0
        return NET + NET_FANOUT * math.log2(max(1, len(self.sinks[bit])))

    def arrivals(self):
        """Latest arrival time at every net bit, and the (cell, input bit) it came through."""
        arrival, via = {}, {}
        outputs = defaultdict(list)            # cell -> [(port, bit)]
        for cname, c in self.cells.items():
            for port, bits in c["connections"].items():
                if c["port_directions"].get(port) == "output":
                    outputs[cname] += [(port, b) for b in bits if isinstance(b, int)]
        pending = {}                            # combinational cell -> inputs not yet arrived
        for cname, c in self.cells.items():
            kind = c["type"]
            if kind in SEQUENTIAL:
                start = FF_CLK_TO_Q if kind == "TRELLIS_FF" else BRAM_CLK_TO_OUT
                for port, b in outputs[cname]:
                    arrival[b], via[b] = start, None
                continue
            ins = [b for p, bits in c["connections"].items() if c["port_directions"].get(p) == "input"
                   for b in bits if isinstance(b, int)]
            pending[cname] = len(ins)
        for b in self.sinks:                    # top inputs (and any other undriven bit) start at 0
            if b not in self.driver:
                arrival[b], via[b] = 0.0, None
        ready = [cname for cname, n in pending.items() if n == 0]
        # Kahn's order over combinational cells: a cell fires once every input bit has arrived (cells in a
        # combinational loop, and what they feed, never do: counted in self.unreached)
        fired = set()

        def release(bit):
            for cname, _ in self.sinks[bit]:
                if cname in pending:
                    pending[cname] -= 1
                    if pending[cname] == 0:
                        ready.append(cname)

        for b in list(arrival):
            release(b)
        while ready:
            cname = ready.pop()
            fired.add(cname)
            c = self.cells[cname]
            for oport, ob in outputs[cname]:
                best, best_via = None, None
                for iport, bits in c["connections"].items():
                    if c["port_directions"].get(iport) != "input":
                        continue
                    d = cell_delay(c["type"], iport, oport)
                    if d is None:
                        continue
                    for ib in bits:
                        if isinstance(ib, int) and ib in arrival:
                            t = arrival[ib] + self.net_delay(ib, (cname, iport)) + d
                            if best is None or t > best:
                                best, best_via = t, (cname, ib)
                if best is not None:
                    arrival[ob], via[ob] = best, best_via
                else:
                    arrival[ob], via[ob] = 0.0, None
                release(ob)
        self.unreached = len(pending) - len(fired)
        return arrival, via

    def endpoints(self, arrival):
        """(time, cell, port, bit) for every sequential input (and distributed RAM's write inputs)."""
        for cname, c in self.cells.items():
            ram = c["type"] == "TRELLIS_DPR16X4"
            if c["type"] not in SEQUENTIAL and not ram:
                continue
            for port, bits in c["connections"].items():
                if c["port_directions"].get(port) != "input" or port in ("CLK", "CLKA", "CLKB", "WCK") or \
                        (ram and not port.startswith(RAM_WRITE)):
                    continue
                for b in bits:
                    if isinstance(b, int) and b in arrival:
                        yield arrival[b] + self.net_delay(b, (cname, port)) + SETUP, cname, port, b

    def trace(self, bit, via):
        path = [bit]
        while via.get(path[-1]):
            path.append(via[path[-1]][1])
        return path[::-1]

    def describe(self, bit):
        name, hidden = self.names.get(bit, (f"net{bit}", 1))
        hidden = hidden or AUTONAME.search(name)
        drv = self.driver.get(bit)
        src = ""
        if drv:
            # (only the design's own Verilog: abc's cells also name yosys's library files)
            m = re.search(re.escape(self.verilog.name) + r":(\d+)", self.cells[drv[0]].get("attributes", {}).get("src", ""))
            src = f"v:{m.group(1)}" if m else ""
            kind = self.cells[drv[0]]["type"]
        else:
            kind = "input"
        return kind, ("" if hidden else name), src


def analyse(netlist, out_path, top=12):
    """The report into a file, from one read of the netlist: (the worst path's estimate in ns, 0 for none;
    {cell type: count} of the top module)."""
    net = Netlist(netlist)
    lines = []
    worst = report(net, top, lines.append)
    Path(out_path).write_text("\n".join(lines) + "\n")
    return worst, dict(Counter(c["type"] for c in net.cells.values()).most_common())


def report(path, top=12, out=print):
    """Print the `top` deepest paths, each from a distinct start; returns the worst one's estimate (ns).
    path: a netlist file, or a Netlist already read."""
    net = path if isinstance(path, Netlist) else Netlist(path)
    lines = net.verilog.read_text().splitlines() if net.verilog.exists() else []
    arrival, via = net.arrivals()
    ends = sorted(net.endpoints(arrival), reverse=True)
    if not ends:
        out("no register-to-register paths")
        return 0.0
    shown, seen_starts = 0, set()
    out(f"{len(ends)} endpoints; the deepest about {ends[0][0]:.1f} ns by rough delays (an ordering of paths, not "
        f"nextpnr's timing)" + (f"; {net.unreached} cells in or behind combinational loops left out"
                                if net.unreached else ""))
    for t, cname, port, bit in ends:
        path = net.trace(bit, via)
        if path[0] in seen_starts:
            continue
        seen_starts.add(path[0])
        out(f"\n{t:6.1f} ns  -> {net.cells[cname]['type']} {cname} .{port}  ({len(path)} nets)")
        steps, folded = [], 0
        for b in path:
            kind, name, src = net.describe(b)
            if steps and kind == "CCU2C" and steps[-1][0] == "CCU2C" and not name:
                folded += 1                     # a carry chain's next cells: one line, with their count
                continue
            if folded:
                steps[-1][3] += f" (+{folded} carry cells)"
                folded = 0
            text = lines[int(src[2:]) - 1].strip()[:90] if src and int(src[2:]) <= len(lines) else ""
            steps.append([kind, arrival[b], src, name or text])
        if folded:
            steps[-1][3] += f" (+{folded} carry cells)"
        for kind, t_, src, what in steps:
            out(f"    {t_:6.1f}  {kind:12s} {src:8s} {what}")
        shown += 1
        if shown >= top:
            break
    return ends[0][0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("netlist", help="yosys JSON after synth_ecp5 (the build folder's gateware/roma_<board>.json)")
    ap.add_argument("--top", type=int, default=12, help="how many paths to print, each from a distinct start")
    args = ap.parse_args(argv)
    report(args.netlist, args.top)


if __name__ == "__main__":
    main()
