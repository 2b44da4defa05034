"""Drive the L-unit from Python: activation-buffer words, and a GEMV run through Verilator.

Used by the tests and by the GEMV benchmark; the Migen-simulator twin lives in tests/gateware/gemv_harness.py.
"""

import numpy as np

from roma.host.export import bank_layout
from roma.host.golden.numerics import GROUP

from .gemv import GEMVUnit
from .rom_image import bank_images


def twos(v, bits):
    return int(v) & ((1 << bits) - 1)


def act_words(cfg, qa, ea):
    """One token's quantized input -> (mantissa words, side words) for the activation buffer."""
    M = cfg.macs_per_lane
    mant = [sum(twos(qa[w * M + j], cfg.act_bits) << (j * cfg.act_bits) for j in range(M))
            for w in range(len(qa) // M)]
    gs = np.asarray(qa).reshape(-1, GROUP).sum(axis=1)
    side = [twos(s, cfg.group_sum_bits) | (twos(e, cfg.exp_bits) << cfg.group_sum_bits) for s, e in zip(gs, ea)]
    return mant, side


def gemv_verilator_sim(cfg, mats, build_root=None):
    """The L-unit for the device matrices `mats`, compiled with Verilator (cached by content); (sim, table)."""
    from roma.gateware.verilator import VerilatorSim

    layout = bank_layout(mats, cfg.lanes)
    table = layout[3]
    max_cols = max(t["cols"] for t in table)
    dut = GEMVUnit(cfg, bank_images(layout, cfg), max_cols)
    a = dut.act
    ios = {"word_base": dut.word_base, "row_base": dut.row_base, "rows": dut.rows, "groups": dut.groups,
           "start": dut.start, "busy": dut.busy, "done": dut.done, "out_valid": dut.out_valid,
           "out_row": dut.out_row, "cnt_busy": dut.cnt_busy, "cnt_mac": dut.cnt_mac,
           "mant_adr": a.mant_w.adr, "mant_dat": a.mant_w.dat_w, "mant_we": a.mant_w.we,
           "side_adr": a.side_w.adr, "side_dat": a.side_w.dat_w, "side_we": a.side_w.we}
    ios.update({f"out{b}": s for b, s in enumerate(dut.out)})
    return VerilatorSim(dut, ios, "gemv_unit", build_root=build_root), table


def gemv_verilator_script(cfg, entry, qa, ea, timeout=100000):
    """The run_gemv sequence as a harness script: load activations, start, watch rows until done."""
    mant, side = act_words(cfg, qa, ea)
    lines = ["poke mant_we 1"]
    for i, w in enumerate(mant):
        lines += [f"poke mant_adr {i}", f"poke mant_dat 0x{w:x}", "step 1"]
    lines += ["poke mant_we 0", "poke side_we 1"]
    for i, w in enumerate(side):
        lines += [f"poke side_adr {i}", f"poke side_dat 0x{w:x}", "step 1"]
    lines += ["poke side_we 0",
              f"poke word_base {entry['word_offset']}", f"poke row_base {entry['row_offset']}",
              f"poke rows {entry['rows_per_bank']}", f"poke groups {entry['groups']}",
              "poke start 1", "step 1", "poke start 0",
              "peek cnt_busy",
              "watch out_valid out_row " + " ".join(f"out{b}" for b in range(cfg.lanes)),
              f"wait done {timeout}",
              "unwatch", "step 1", "peek cnt_busy", "peek cnt_mac"]
    return lines


def run_gemv_verilator(cfg, mats, which, qa, ea, timeout=100000, build_root=None):
    """run_gemv through Verilator: same inputs, same (y, stats) result; stats also has the sim's cycle count."""
    from roma.gateware.verilator import to_signed

    sim, table = gemv_verilator_sim(cfg, mats, build_root)
    entry = table[which]
    res = sim.run(gemv_verilator_script(cfg, entry, qa, ea, timeout))
    y = np.zeros(entry["rows"], np.int64)
    for _, (row, *vals) in res.watch:
        for b, v in enumerate(vals):
            y[row * cfg.lanes + b] = to_signed(v, cfg.vec_bits)
    busy = [v for n, v in res.peek_log if n == "cnt_busy"]
    stats = {"busy": busy[1] - busy[0], "mac": res.peeks["cnt_mac"], "cycles": res.cycles}
    return y, stats
