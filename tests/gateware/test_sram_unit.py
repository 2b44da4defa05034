"""The H-unit's SRAM lanes (16-bit signed weights written at run time) against the golden model: a LoRA
matrix (int16 codes, a row exponent) and attention scores over a K cache (an exponent per row and group)."""

import numpy as np
import pytest
from migen import run_simulation

from gemv_harness import act_words, gemv_rows
from roma.gateware.gemv import SRAMUnit
from roma.host.golden.functions import attention_scores
from roma.host.golden.gemv import PreparedMatrix, gemv_act
from roma.host.golden.numerics import GROUP, quantize_act, to_vector
from roma.host.golden.weights import int16_matrix
from roma.soc.config import AccelConfig


def bank_words(cfg, codes, lane):
    """Rows lane, lane + lanes, ... of int16 codes -> SRAM words (macs_per_lane codes each, low first)."""
    M = cfg.macs_per_lane
    flat = codes[lane::cfg.lanes].reshape(-1)
    return [sum((int(v) & 0xFFFF) << (16 * j) for j, v in enumerate(flat[i:i + M])) for i in range(0, len(flat), M)]


def run_sram(cfg, codes, rowexp, gexp, qa, ea):
    rows, cols = codes.shape
    groups = cols // GROUP
    per = rows // cfg.lanes
    dut = SRAMUnit(cfg, groups_per_bank=per * groups, rows_per_bank=per, max_cols=cols, group_exp=gexp is not None)
    words = act_words(cfg, qa, ea)
    y = np.zeros(rows, np.int64)

    def write(port, items):
        for i, v in enumerate(items):
            yield port.adr.eq(i)
            yield port.dat_w.eq(int(v) & ((1 << len(port.dat_w)) - 1))
            yield port.we.eq((1 << len(port.we)) - 1)
            yield
        yield port.we.eq(0)

    def tb():
        for b in range(cfg.lanes):
            yield from write(dut.w_ports[b], bank_words(cfg, codes, b))
            yield from write(dut.e_ports[b], rowexp[b::cfg.lanes])
            if gexp is not None:
                yield from write(dut.g_ports[b], gexp[b::cfg.lanes].reshape(-1))
        yield from write(dut.act.w, words)
        yield from gemv_rows(dut, cfg, y, 0, 0, per, groups)

    run_simulation(dut, tb())
    return y


@pytest.mark.parametrize("rank", [1, 64])
def test_lora_matrix(rank):
    """LoRA A (rank x in) and B (out x padded rank): int16 codes with a row exponent, dq = 1, mq = 0."""
    rng = np.random.default_rng(rank)
    cfg = AccelConfig(lanes=1 if rank == 1 else 4, macs_per_lane=8)
    A = int16_matrix(rng.normal(size=(rank, 64)) * 0.05)
    x = to_vector(rng.normal(size=(1, 64)) * 2)
    qa, ea = quantize_act(x)
    got = run_sram(cfg, A.codes.astype(np.int64), A.er, None, qa[0], ea[0])
    assert np.array_equal(got, gemv_act(PreparedMatrix(A), qa, ea)[0])


@pytest.mark.parametrize("pipeline", ["short", "deep"])
def test_attention_scores_over_k_cache(pipeline):
    """Scores q . K over 8 cached positions, head_dim 64: the exponent of each (position, group) comes from the
    cache. The unit computes the rounded dot products; the 1/sqrt(head_dim) scale follows in the vector unit.
    (Deep: the FPGA's registers after the memories and the multipliers.)"""
    rng = np.random.default_rng(5)
    cfg = AccelConfig(lanes=4, macs_per_lane=8, pipeline=pipeline)
    P, hd = 8, 64
    kq, ke = quantize_act(to_vector(rng.normal(size=(P, hd)) * 3))
    qq, qe = quantize_act(to_vector(rng.normal(size=(1, hd)) * 2))
    G = hd // GROUP
    got = run_sram(cfg, kq, np.zeros(P, np.int64), ke.reshape(P, G), qq[0], qe[0])
    full = attention_scores(qq.reshape(1, G, GROUP), qe.reshape(1, G), kq.reshape(1, P, G, GROUP),
                            ke.reshape(1, P, G), scale_q=1 << 16)[0]
    assert np.array_equal(got, full)
