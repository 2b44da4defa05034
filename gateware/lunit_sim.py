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
    """One token's quantized input -> activation-buffer words, one per group: mantissas, S, ea."""
    A = cfg.act_bits
    words = []
    for g, e in enumerate(ea):
        m = [int(v) for v in qa[g * GROUP:(g + 1) * GROUP]]
        w = sum(twos(v, A) << (j * A) for j, v in enumerate(m))
        w |= twos(sum(m), cfg.group_sum_bits) << (GROUP * A)
        w |= twos(e, cfg.exp_bits) << (GROUP * A + cfg.group_sum_bits)
        words.append(w)
    return words


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
           "act_adr": a.w.adr, "act_dat": a.w.dat_w, "act_we": a.w.we}
    ios.update({f"out{b}": s for b, s in enumerate(dut.out)})
    return VerilatorSim(dut, ios, "gemv_unit", build_root=build_root), table


def gemv_verilator_script(cfg, entry, qa, ea, timeout=100000):
    """The run_gemv sequence as a harness script: load activations, start, watch rows until done."""
    lines = ["poke act_we 1"]
    for i, w in enumerate(act_words(cfg, qa, ea)):
        lines += [f"poke act_adr {i}", f"poke act_dat 0x{w:x}", "step 1"]
    lines += ["poke act_we 0",
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
