"""Boards: every board elaborates the ROMA SoC to Verilog and its toolchain files (no yosys); the fit planner's
mapping rules and verdicts; nextpnr's report parsed; a real bitstream (marked synth + slow)."""

import json
import re
import time

import pytest

from roma.boards import boards, get_board
from roma.boards.bitstream import parse_nextpnr, sys_clock_fmax
from roma.boards.ecp5 import PARTS, make_board_soc, make_bringup_soc
from roma.boards.fit import BRAM_BUDGET, FPGA_VEC_LANES, LUT_BUDGET, dsp_tiles, map_memory, plan
from roma.host.errors import RomaError
from roma.host.models import load_model
from roma.soc.config import AccelConfig

# (board, variant, nextpnr's device option, package)
VARIANTS = [("ulx3s", "85F", "--85k", "CABGA381"), ("ulx3s", "45F", "--45k", "CABGA381"),
            ("ulx3s", "25F", "--25k", "CABGA381"), ("colorlight-i5", "25F", "--25k", "CABGA381"),
            ("colorlight-i9", "45F", "--45k", "CABGA381"), ("orangecrab", "25F", "--25k", "CSFBGA285"),
            ("orangecrab", "85F", "--85k", "CSFBGA285"), ("ecpix5", "85F", "--um5g-85k", "CABGA554")]


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny-260k", with_tokenizer=False)


def _serial_pins(platform):
    from litex.build.generic_platform import Pins, Subsignal
    for r in platform.constraint_manager.available:
        if r[0] == "serial":
            return {s.name: c.identifiers[0] for s in r[2:] if isinstance(s, Subsignal)
                    for c in s.constraints if isinstance(c, Pins)}
    raise AssertionError("no serial resource")


def _convert(soc, out):
    from litex.soc.integration.builder import Builder
    builder = Builder(soc, output_dir=str(out), compile_software=False, compile_gateware=False)
    builder.build(run=False, build_name="top")
    gw = out / "gateware"
    return (gw / "top.v").read_text(), (gw / "top.lpf").read_text(), (gw / "build_top.sh").read_text()


def test_every_board_is_listed():
    assert set(boards()) == {"ulx3s", "colorlight-i5", "colorlight-i9", "orangecrab", "ecpix5"}
    assert {(b, v) for b, v, _, _ in VARIANTS} == {(b.name, v) for b in boards().values() for v in b.variants}
    with pytest.raises(RomaError, match="known boards"):
        get_board("arty")
    with pytest.raises(RomaError, match="85F, 45F, 25F"):
        get_board("ulx3s").variant("12F")


@pytest.mark.parametrize("name,variant,device,package", VARIANTS)
def test_board_elaborates(tiny, tmp_path, name, variant, device, package):
    """The ROMA SoC with tiny-260k on 2 lanes at a short context: Verilog, constraints and the tool script, in
    seconds, with the board's PLL, UART pins and part."""
    board = get_board(name)
    t0 = time.monotonic()
    soc, acc = make_board_soc(board, variant, tiny, AccelConfig(lanes=2, macs_per_lane=8), 32,
                              with_ethernet=board.ethernet)
    verilog, lpf, script = _convert(soc, tmp_path)
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"{name} took {elapsed:.0f} s to elaborate"
    assert "EHXPLLL" in verilog                                  # the system clock comes from the PLL
    assert re.search(r"brom_codes", verilog)                      # the B-ROM is in it
    assert "$readmemh" in verilog
    # the UART's pins are the platform's own (litex-boards' pin list, not a copy)
    platform = board.platform(variant)
    for sig, pin in _serial_pins(platform).items():
        site = pin if ":" not in pin else platform.constraint_manager.connector_manager.resolve_identifiers([pin])[0]
        assert f'LOCATE COMP "serial_{sig}" SITE "{site}";' in lpf
    # the part nextpnr places for
    assert f"{device} " in script and f"--package {package}" in script
    assert PARTS[variant].name.replace("LFE5U", "") in platform.device.replace("LFE5UM5G", "")
    if board.ethernet:
        assert re.search(r'LOCATE COMP "eth0?_rx_data\[3\]"', lpf) and re.search(r'"eth0?_tx_ctl"', lpf)
        assert "ethmac" in verilog


@pytest.mark.parametrize("name", ["ulx3s", "colorlight-i5", "ecpix5"])
def test_bringup_soc_elaborates(tmp_path, name):
    board = get_board(name)
    soc = make_bringup_soc(board, None)
    verilog, lpf, _ = _convert(soc, tmp_path)
    assert "EHXPLLL" in verilog and "serial_tx" in lpf
    assert soc.clk_freq == int(board.sys_clk_freq)


def test_ethernet_only_where_there_is_a_phy(tiny):
    with pytest.raises(RomaError, match="no Ethernet"):
        make_board_soc(get_board("ulx3s"), None, tiny, AccelConfig(lanes=2, macs_per_lane=8), 32, with_ethernet=True)


# Fit planning -----------------------------------------------------------------------------------------------

def test_part_figures():
    """Lattice's table: LUT4, 18 Kbit EBR, 18x18 multipliers of the LFE5U-25F/45F/85F."""
    assert [(p.luts, p.dp16kd, p.mult18) for p in (PARTS["25F"], PARTS["45F"], PARTS["85F"])] == \
        [(24_288, 56, 28), (43_848, 108, 72), (83_640, 208, 156)]
    assert PARTS["85F"].bram_bits == 208 * 18 * 1024


def test_memory_mapping_rules():
    # a 512 x 32 ROM is one PDPW16KD (512 x 36)
    m = map_memory(32, 512, 1, 0, rom=True)
    assert (m.kind, m.blocks) == ("bram", 1)
    # a 3840 x 32 ROM: 8 deep x 1 wide in the 512 x 36 shape (or 4 x 2 at 1024 x 18)
    assert map_memory(32, 3840, 1, 0, rom=True).blocks == 8
    # 32 KB of 32-bit SRAM: 16 blocks
    assert map_memory(32, 8192, 1, 1, rom=False).blocks == 16
    # two read ports and a write port: two copies, each a read and a write port, so the 512 x 36 shape too
    assert map_memory(32, 1024, 2, 1, rom=False).blocks == 2 * map_memory(32, 1024, 1, 1, rom=False).blocks
    assert map_memory(384, 304, 2, 1, rom=False).blocks == 2 * 11
    # a ROM read by two ports: one copy of two read ports, no 36-bit shape
    assert map_memory(36, 512, 2, 0, rom=True).blocks == 2
    # a small ROM is soft logic (1/16 per bit is cheaper than a block), a small RAM LUT RAM
    assert map_memory(8, 64, 1, 0, rom=True).kind == "logic"
    m = map_memory(8, 32, 1, 1, rom=False)
    assert (m.kind, m.lutram) == ("lutram", 2 * 2)
    # a table read by 64 ports at once (the vector unit's sigmoid, twice per element): soft logic, per port
    m = map_memory(17, 2049, 64, 0, rom=True)
    assert (m.kind, m.luts) == ("logic", -(-17 * 2049 // 12) * 64)
    # two write ports fit no block RAM port pair: flip-flops
    m = map_memory(1536, 100, 3, 2, rom=False)
    assert (m.kind, m.blocks, m.ffs) == ("logic", 0, 153_600)


def test_dsp_tiles():
    assert dsp_tiles(4, 16) == 1 and dsp_tiles(18, 18) == 1
    assert dsp_tiles(16, 25) == 2 and dsp_tiles(48, 48) == 9 and dsp_tiles(104, 48) == 18


def test_fit_tiny_on_85f(tiny):
    """Its bits fit the 85F up to context 256, its cells at 2 lanes and context 32 (64 is over the block RAM
    budget: it did not route): B-ROM lanes multiplying on MULT18X18D (no broadcast multiples to route) and a
    1-lane vector unit (a 2-lane one is over the logic budget: it did not route timing-driven), the vector
    memory in block RAM (one write port), the SRAM lanes without a scale stage and the B-ROM lanes' scale stage
    on one multiplier each. 4 lanes fit the part's block RAM but not the multipliers (dsp) nor the logic budget
    (lut); 8 lanes need more block RAM than the part has at any context (their ROMs' and the vector memory's
    shapes)."""
    r = plan(tiny, "85F")
    assert r.rom_bits == 1_422_336
    assert r.fits, r.reason
    n = r.chosen
    assert (n.lanes, n.vec_lanes, n.multiplier, r.context) == (2, 1, "dsp", 32)
    assert n.dp16kd_total <= r.part_dp16kd and n.mult18_total <= r.part_mult18 and n.ram_ffs == 0
    assert n.mult18["L-unit (B-ROM, MAC lanes)"] == 2 * (8 + 2)    # a product per MAC; two tiles per scale stage
    assert n.mult18["H-unit (KV cache, LoRA)"] == 2 * 8     # a 16 x 16 product per MAC, no scale stage
    assert f"{n.dp16kd_total} of 208 DP16KD (the budget: 197)" in r.reason and "context 32" in r.reason
    # context 64: the same shape over the block RAM budget (its build left router2 near 5,000 overused wires)
    r64 = plan(tiny, "85F", context=64, lanes=2)
    at64 = [t for t in r64.tried if (t.vec_lanes, t.multiplier) == (1, "dsp")]
    assert n.dp16kd_total <= BRAM_BUDGET * r.part_dp16kd // 100 < at64[0].dp16kd_total <= r.part_dp16kd
    assert not r64.fits and "over 197 (95% of the part's 208" in r64.reason
    # the closest shape (what --force builds) is the one over the fewest limits: that one, not LUT multipliers
    # over both budgets
    assert (r64.chosen.multiplier, r64.chosen.vec_lanes) == ("dsp", 1) and "LUT4s of logic" not in r64.reason
    assert 30_000 < n.luts_total <= LUT_BUDGET * r.part_luts // 100 and n.logic_luts["vector unit"] == 2_000 + 1 * 10_000
    # with LUT multipliers asked for: their multiples and choices take 2 lanes over the budget; one lane's scale
    # stage takes 2 MULT18X18D in the L-unit
    r = plan(tiny, "85F", multiplier="lut")
    assert r.fits and (r.chosen.lanes, r.chosen.multiplier) == (1, "lut")
    assert r.chosen.mult18["L-unit (B-ROM, MAC lanes)"] == 1 * 2
    # 4 lanes: with LUT multipliers the multipliers fit, but not the LUT4s that route (yosys mapped the deep
    # 4 x 8 design to 50,854 LUT4 + 6,234 CCU2C, 76% of the part; the short one was placed in 67,986
    # TRELLIS_COMB, 81%, and did not route); so no shorter context is tried
    r = plan(tiny, "85F", lanes=4)
    assert not r.fits and "LUT4s of logic, over 37,638 (45% of the 83,640" in r.reason
    # 8 lanes do not fit: said with the numbers (their first synthesis, with the earlier quantizer, needed 188%)
    r = plan(tiny, "85F", lanes=8)
    assert not r.fits and "DP16KD of 208" in r.reason and "8 lanes" in r.reason and "LUT4s of logic" in r.reason
    assert "roma generate --model tiny-260k --target sim" in r.reason


@pytest.mark.parametrize("variant,ratio", [("45F", 1.1), ("25F", 2.2)])
def test_fit_tiny_refused_by_bits(tiny, variant, ratio):
    r = plan(tiny, variant)
    assert not r.fits and r.chosen is None and r.context == 32
    assert f"= {ratio}x the" in r.reason and f"{PARTS[variant].dp16kd} DP16KD" in r.reason


def test_fit_cli(capsys):
    from roma.host.cli import main
    assert main(["fit", "--board", "orangecrab", "--model", "tiny-260k"]) == 1
    out = capsys.readouterr().out
    assert "LFE5U-25F" in out and "does not fit" in out and "1.42 Mbit" in out
    assert main(["fit", "--board", "colorlight-i9", "--model", "tiny-260k", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["part"] == "LFE5U-45F" and d["fits"] is False and d["part_dp16kd"] == 108
    assert main(["fit", "--board", "ulx3s", "--model", "tiny-260k", "--multiplier", "lut", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["chosen"]["lanes"], d["chosen"]["multiplier"]) == (1, "lut")


def test_build_refuses_before_any_tool(capsys, monkeypatch):
    """`roma build` runs the fit first: a design that does not fit never reaches yosys."""
    import roma.boards.bitstream as bs
    from roma.host.cli import main
    monkeypatch.setattr(bs, "build_bitstream", lambda *a, **k: pytest.fail("the build started"))
    assert main(["build", "--board", "ulx3s", "--model", "tiny-260k", "--lanes", "8"]) == 1
    err = capsys.readouterr().err
    assert "DP16KD of 208" in err and "--force" in err


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["85F", "45F", "25F"])
def test_fit_smollm2_refused(variant):
    m = load_model("smollm2-135m", with_tokenizer=False)
    r = plan(m, variant)
    assert not r.fits and r.chosen is None
    assert r.rom_bits > 700e6 and r.rom_bits > 100 * r.part_bram_bits
    assert "no lane count changes that" in r.reason
    assert "roma generate --model smollm2-135m --target sim" in r.reason


# Reports ----------------------------------------------------------------------------------------------------

NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t          TRELLIS_IO:     8/    365     2%
Info: \t              DP16KD:    43/    208    20%
Info: \t          MULT18X18D:     4/    156     2%
Info: \t          TRELLIS_FF:  2112/  83640     2%
Info: \t        TRELLIS_COMB:  4977/  83640     5%
Info: Max frequency for clock '$glbnet$crg_clkout': 58.10 MHz (PASS at 50.00 MHz)
Info: Max frequency for clock '$glbnet$crg_clkout': 64.71 MHz (PASS at 50.00 MHz)
"""


def test_parse_nextpnr_log():
    util, fmax = parse_nextpnr(NEXTPNR_LOG)
    assert util["DP16KD"] == (43, 208) and util["TRELLIS_COMB"] == (4977, 83640)
    assert util["MULT18X18D"] == (4, 156)
    assert sys_clock_fmax(fmax) == ("$glbnet$crg_clkout", (64.71, 50.0))    # the last figure: after routing


def test_parse_nextpnr_report(tmp_path):
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"utilization": {"DP16KD": {"used": 12, "available": 56}},
                             "fmax": {"$glbnet$crg_clkout": {"achieved": 71.2, "constraint": 50.0}}}))
    util, fmax = parse_nextpnr("", p)
    assert util == {"DP16KD": (12, 56)} and fmax == {"$glbnet$crg_clkout": (71.2, 50.0)}


# Bitstreams (minutes) ---------------------------------------------------------------------------------------

@pytest.mark.synth
@pytest.mark.slow
@pytest.mark.parametrize("name", ["ulx3s", "colorlight-i5"])
def test_bringup_bitstream(name):
    """The board's SoC through yosys, nextpnr-ecp5 and ecppack (YoWASP from PyPI when no native tools): a
    bitstream, timing met at the board's clock, the figures reported."""
    from roma.boards.bitstream import build_bitstream
    board = get_board(name)
    b = build_bitstream(board, None, None, None, progress=False)
    r = b.report
    assert b.bitstream.exists() and b.bitstream.stat().st_size > 100_000
    assert r["timing_met"] and r["fmax_mhz"] >= board.sys_clk_freq / 1e6
    u = r["utilization"]
    assert 0 < u["DP16KD"]["used"] <= u["DP16KD"]["available"] == board.part().dp16kd
    assert u["TRELLIS_COMB"]["available"] == board.part().luts
    print(json.dumps({k: r[k] for k in ("board", "part", "fmax_mhz", "utilization", "seconds")}, indent=1))


@pytest.mark.synth
@pytest.mark.slow
def test_synth_only_reports_cells_and_paths(capsys):
    """`roma build --synth-only`: elaboration and yosys only, the netlist's cells and its deepest paths (a
    bring-up SoC, about a minute of yosys), and no bitstream."""
    from roma.host.cli import main
    assert main(["build", "--board", "colorlight-i5", "--bringup", "--synth-only", "--quiet"]) == 0
    out = capsys.readouterr().out
    luts, dp16kd = re.search(r"about ([\d,]+) LUT4 of 24,288.*DP16KD (\d+) of 56", out).groups()
    assert 1_000 < int(luts.replace(",", "")) < 24_288 and 0 < int(dp16kd) <= 56
    paths = re.search(r"deepest path about ([\d.]+) ns .*: (\S+logic_paths.txt)", out)
    assert 2 < float(paths.group(1)) < 40
    with open(paths.group(2)) as f:
        assert "ns  -> " in f.read()


def test_synth_only_command_reports_without_a_bitstream(tmp_path, monkeypatch, capsys):
    """`roma build --synth-only` prints the synthesis report it is given (no bitstream, no nextpnr), and reports
    an unreadable netlist without failing."""
    import roma.boards.bitstream as bs
    from roma.host.cli import main
    calls = []

    def fake(board, model, cfg, context, variant, freq, ethernet, seed, progress, synth_only):
        calls.append(synth_only)
        cells = {"LUT4": 1000, "CCU2C": 50, "TRELLIS_FF": 900, "DP16KD": 3, "MULT18X18D": 4} if len(calls) == 1 else None
        return bs.BoardBuild(tmp_path, None, {"model": None, "title": board.title, "part": "LFE5U-25F", "cells": cells,
                                              "logic_path_ns": 12.5 if cells else None,
                                              "logic_paths": "/x/logic_paths.txt" if cells else None}, False)
    monkeypatch.setattr(bs, "build_routed", fake)
    assert main(["build", "--board", "colorlight-i5", "--bringup", "--synth-only", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "about 1,100 LUT4 of 24,288" in out and "DP16KD 3 of 56" in out and "MULT18X18D 4 of 28" in out
    assert "deepest path about 12.5 ns" in out and calls == [True]
    assert main(["build", "--board", "colorlight-i5", "--bringup", "--synth-only", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "could not be read" in out and "deepest path" not in out
    assert not list(tmp_path.iterdir())


def test_load_command(monkeypatch, capsys):
    """`roma load` programs with openFPGALoader's board name, or says how to get the tool."""
    import roma.host.board_cli as bc
    from roma.host.cli import main
    calls = []
    monkeypatch.setattr(bc.shutil, "which", lambda exe: None)
    assert main(["load", "--board", "ulx3s", "x.bit"]) == 1
    assert "openFPGALoader not found" in capsys.readouterr().err
    monkeypatch.setattr(bc.shutil, "which", lambda exe: "/usr/bin/openFPGALoader")
    monkeypatch.setattr(bc.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["load", "--board", "colorlight-i9", "--flash", "x.bit"]) == 0
    assert calls == [["/usr/bin/openFPGALoader", "-b", "colorlight-i9", "-f", "x.bit"]]


def test_build_report_projects_tok_s(tmp_path, monkeypatch, capsys):
    """The build's report: nextpnr's figures, and decode tok/s = Fmax / the cycles per token measured in the
    Verilator run of the same configuration (cached: measured once)."""
    import roma.boards.bitstream as bs
    import roma.boards.fit as fit
    import roma.host.hw_bench as hb
    from roma.boards.fit import FitReport, Need
    from roma.host.cli import main
    monkeypatch.setenv("ROMA_CACHE", str(tmp_path / "cache"))
    chosen = Need(lanes=8, macs_per_lane=8, multiplier="dsp", vec_lanes=4)
    monkeypatch.setattr(fit, "plan", lambda model, variant, **k: FitReport(
        model.config.name, "LFE5U-85F", 128, 1, 1, 1, 1, 208, 156, 83640, 83640, True, "fits", chosen))
    report = {"board": "ulx3s", "title": "Radiona ULX3S", "variant": "85F", "part": "LFE5U-85F",
              "model": "tiny-260k", "lanes": 8, "macs_per_lane": 8, "context": 128, "sys_clk_hz": 50e6,
              "fmax_mhz": 60.0, "timing_met": True, "seconds": {"yosys": 1.0},
              "utilization": {"DP16KD": {"used": 150, "available": 208}}, "bitstream": "x.bit"}
    folder = tmp_path / "build"
    folder.mkdir()
    seen = []
    monkeypatch.setattr(bs, "build_bitstream", lambda board, model, cfg, context, **k: (
        seen.append((cfg.lanes, cfg.macs_per_lane, context)), bs.BoardBuild(folder, folder / "x.bit", report, False))[1])
    benches = []
    monkeypatch.setattr(hb, "hw_bench", lambda model, cfg, context, **k: benches.append(context) or
                        {"decode_cycles_per_token": 6000.0})
    out = tmp_path / "r.json"
    for _ in range(2):
        assert main(["build", "--board", "ulx3s", "--json", str(out)]) == 0
    assert seen == [(8, 8, 128)] * 2 and benches == [128]           # the second build reads the cached count
    r = json.loads(out.read_text())
    assert r["projected_decode_tok_s"] == pytest.approx(60e6 / 6000) and r["decode_tok_s_at_clk"] == 50e6 / 6000
    text = capsys.readouterr().out
    assert "10,000 tok/s at Fmax" in text and "8,333 at 50 MHz" in text
    assert re.search(r"DP16KD\s+150\s+208\s+72\.1", text)
    assert "--sys-clk-mhz" not in text


def test_report_when_timing_is_not_met():
    """A build short of its clock says so, and how to ask for a lower one."""
    from roma.host.board_cli import format_report
    r = {"model": "tiny-260k", "lanes": 2, "macs_per_lane": 8, "context": 32, "title": "Radiona ULX3S",
         "part": "LFE5U-85F", "utilization": {}, "fmax_mhz": 33.77, "sys_clk_hz": 50e6, "timing_met": False,
         "seconds": {}, "bitstream": "x.bit"}
    text = format_report(r)
    assert "timing NOT met" in text and "do not load it at 50 MHz: its paths allow 33.8 MHz" in text
    assert "--sys-clk-mhz asks for a lower clock" in text


def test_progress_status_and_failing_step(tmp_path):
    from roma.boards.bitstream import _status, run_step
    assert _status("4.13.4. Executing OPT_REDUCE pass (consolidate).") == "OPT_REDUCE pass (consolidate)"
    assert _status("Info: Running router2...") == "Running router2..."
    assert _status("Info:      1000 |   2000 ") is None and _status("random text") is None
    assert run_step("ok", ["true"], tmp_path, tmp_path / "ok.log", progress=False) >= 0
    with pytest.raises(RomaError, match=r"(?s)fails failed \(log: .*fails\.log\):\nboom"):
        run_step("fails", ["sh", "-c", "echo boom; exit 3"], tmp_path, tmp_path / "fails.log", progress=False)
