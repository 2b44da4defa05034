"""The pre-placement path estimate (boards/logic_paths.py) on a small hand-made netlist: arrival times add up
cell by cell, carry chains and slice-internal muxes take no routing hop, and the deepest path is traced and
named."""

import json

import pytest

from roma.boards.logic_paths import CARRY_IN, CARRY_SUM, CARRY_THROUGH, FF_CLK_TO_Q, LUT, NET, SETUP, WIDE_MUX, \
    Netlist, analyse


def _cell(kind, dirs, conns):
    return {"type": kind, "hide_name": 0, "attributes": {"src": "top.v:7.1-7.9"}, "parameters": {},
            "port_directions": dirs, "connections": conns}


def _ff(d, q):
    return _cell("TRELLIS_FF", {"CLK": "input", "DI": "input", "Q": "output"}, {"CLK": [1], "DI": [d], "Q": [q]})


def _lut(ins, z):
    return _cell("LUT4", {"A": "input", "B": "input", "C": "input", "D": "input", "Z": "output"},
                 {"A": [ins[0]], "B": [ins[1] if len(ins) > 1 else "0"], "C": ["0"], "D": ["0"], "Z": [z]})


def _ccu(a, cin, s0, cout):
    return _cell("CCU2C", {"A0": "input", "CIN": "input", "S0": "output", "COUT": "output"},
                 {"A0": [a], "CIN": [cin], "S0": [s0], "COUT": [cout]})


@pytest.fixture
def netlist(tmp_path):
    # q0 -> LUT -> LUT -> PFUMX -> ff1 (the deep path); q0 -> carry chain of two cells -> ff2; q0 -> ff3
    cells = {
        "ff0": _ff(2, 10), "lut_a": _lut([10], 11), "lut_b": _lut([11, 10], 12),
        "mux": _cell("PFUMX", {"ALUT": "input", "BLUT": "input", "C0": "input", "Z": "output"},
                     {"ALUT": [12], "BLUT": [12], "C0": [10], "Z": [13]}),
        "ff1": _ff(13, 14),
        "c0": _ccu(10, "0", 20, 21), "c1": _ccu(10, 21, 22, 23), "ff2": _ff(22, 24),
        "ff3": _ff(10, 25),
    }
    nets = {"clk": 1, "d0": 2, "q0": 10, "deep": 13, "sum": 22}
    top = {"attributes": {"top": 1}, "cells": cells,
           "netnames": {n: {"hide_name": 0, "bits": [b]} for n, b in nets.items()},
           "ports": {}}
    path = tmp_path / "top.json"
    path.write_text(json.dumps({"modules": {"top": top}}))
    (tmp_path / "top.v").write_text("\n" * 6 + "assign deep = q0 ? a : b;\n")
    return path


def test_arrivals_add_up_cell_by_cell(netlist):
    net = Netlist(netlist)
    arrival, via = net.arrivals()
    fan = net.net_delay(10, ("lut_a", "A"))                         # q0 has a fan-out of 6
    assert fan > NET
    assert arrival[11] == pytest.approx(FF_CLK_TO_Q + fan + LUT)
    assert arrival[12] == pytest.approx(arrival[11] + NET + LUT)        # the later of lut_b's two inputs
    assert arrival[13] == pytest.approx(max(arrival[12] + 0.0, FF_CLK_TO_Q + fan) + WIDE_MUX)   # LUT -> PFUMX
    # the carry chain: CIN to COUT and to the sum with no routing hop in between
    assert arrival[21] == pytest.approx(FF_CLK_TO_Q + fan + CARRY_IN)
    assert arrival[22] == pytest.approx(max(arrival[21] + CARRY_SUM, FF_CLK_TO_Q + fan + CARRY_IN))
    assert net.trace(13, via) == [10, 11, 12, 13]
    ends = sorted(net.endpoints(arrival), reverse=True)
    assert ends[0][1] == "ff1" and ends[0][0] == pytest.approx(arrival[13] + NET + SETUP)
    assert arrival[23] == pytest.approx(arrival[21] + CARRY_THROUGH)  # COUT -> CIN: no routing hop
    assert net.unreached == 0


def _write(tmp_path, cells):
    top = {"attributes": {"top": 1}, "cells": cells, "netnames": {}, "ports": {}}
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"modules": {"top": top}}))
    return path


def test_a_cell_fed_by_an_input_waits_for_its_other_inputs(tmp_path):
    # input bit 3 and a two-LUT chain from ff0 meet at lut_c: it fires only after the chain
    net = Netlist(_write(tmp_path, {"ff0": _ff(2, 10), "lut_a": _lut([10], 11), "lut_b": _lut([11], 12),
                                    "lut_c": _lut([3, 12], 13), "ff1": _ff(13, 14)}))
    arrival, via = net.arrivals()
    assert arrival[13] == pytest.approx(arrival[12] + NET + LUT)
    assert net.trace(13, via) == [10, 11, 12, 13]


def test_combinational_loops_are_counted_not_followed(tmp_path):
    net = Netlist(_write(tmp_path, {"ff0": _ff(2, 10), "lut_a": _lut([10, 12], 11), "lut_b": _lut([11], 12),
                                    "ff1": _ff(12, 14)}))
    arrival, _ = net.arrivals()
    assert net.unreached == 2 and 12 not in arrival


def test_report_names_the_deepest_path(netlist, tmp_path):
    worst, cells = analyse(netlist, tmp_path / "paths.txt", top=2)
    assert cells == {"TRELLIS_FF": 4, "LUT4": 2, "CCU2C": 2, "PFUMX": 1}
    text = (tmp_path / "paths.txt").read_text()
    net = Netlist(netlist)
    assert worst == pytest.approx(max(net.endpoints(net.arrivals()[0]))[0])
    first = text.split("\n\n")[1]
    assert "ff1 .DI" in first and "q0" in first and "deep" in first
    steps = first.splitlines()[1:]
    assert steps[-1].endswith(" deep")                         # a named net shows its name,
    assert steps[1].endswith("assign deep = q0 ? a : b;")      # an unnamed one the Verilog line its cell came from
