"""Drive the L-unit in Migen's simulator: load activations, run one matrix, collect rows."""

import numpy as np
from migen import run_simulation

from roma.gateware.gemv import GEMVUnit
from roma.gateware.lunit_sim import act_words
from roma.gateware.rom_image import bank_images
from roma.host.export import bank_layout


def run_gemv(cfg, mats, which, qa, ea, timeout=100000):
    """Build the unit for the device matrices `mats`, run matrix `which` on one token; returns (y, stats)."""
    layout = bank_layout(mats, cfg.lanes)
    table = layout[3]
    entry = table[which]
    max_cols = max(t["cols"] for t in table)
    dut = GEMVUnit(cfg, bank_images(layout, cfg), max_cols)
    words = act_words(cfg, qa, ea)
    y = np.zeros(entry["rows"], np.int64)
    stats = {}

    def tb():
        for i, w in enumerate(words):
            yield dut.act.w.adr.eq(i)
            yield dut.act.w.dat_w.eq(w)
            yield dut.act.w.we.eq(1)
            yield
        yield dut.act.w.we.eq(0)
        c0 = yield dut.cnt_busy
        yield from gemv_rows(dut, cfg, y, entry["word_offset"], entry["row_offset"], entry["rows_per_bank"],
                             entry["groups"], timeout)
        stats["busy"] = (yield dut.cnt_busy) - c0
        stats["mac"] = yield dut.cnt_mac
        stats["latency"] = dut.latency

    run_simulation(dut, tb())
    return y, stats


def gemv_rows(dut, cfg, y, word_base, row_base, rows, groups, timeout=100000):
    """Migen-simulator generator: start one GEMV on a LaneArray and collect its rows into y."""
    yield dut.word_base.eq(word_base)
    yield dut.row_base.eq(row_base)
    yield dut.rows.eq(rows)
    yield dut.groups.eq(groups)
    yield dut.start.eq(1)
    yield
    yield dut.start.eq(0)
    for _ in range(timeout):
        yield
        if (yield dut.out_valid):
            r = yield dut.out_row
            for b in range(cfg.lanes):
                y[r * cfg.lanes + b] = yield dut.out[b]
        if (yield dut.done):
            yield
            return
    raise TimeoutError("GEMV did not finish")
