"""Synthesis-only check for ECP5 (yosys, no place-and-route) of the L-unit holding tiny-260k: the B-ROM lands
in DP16KD block RAM and the multipliers where the configuration says. The cell report is printed."""

import pytest

from roma.gateware.gemv import GEMVUnit
from roma.gateware.rom_image import bank_images
from roma.gateware.synth import synth_ecp5
from roma.host.export import bank_layout, matrix_list
from roma.host.golden.weights import to_device
from roma.host.tiny import tiny_model
from roma.soc.config import AccelConfig

pytestmark = [pytest.mark.synth, pytest.mark.slow]

DP16KD_BITS = 18 * 1024


def lunit(cfg):
    m = tiny_model("tiny-260k")
    layout = bank_layout([(n, to_device(q)) for n, q in matrix_list(m)], cfg.lanes)
    dut = GEMVUnit(cfg, bank_images(layout, cfg), max_cols=m.config.hidden)
    a = dut.act
    ios = {dut.word_base, dut.row_base, dut.rows, dut.groups, dut.start, dut.busy, dut.done, dut.out_valid,
           dut.out_row, *dut.out, a.w.adr, a.w.dat_w, a.w.we}
    code_bits = sum(len(c) * 8 for c in layout[0])
    return dut, ios, code_bits


@pytest.mark.parametrize("mult", ["dsp", "lut"])
def test_rom_in_block_ram_and_multipliers_where_configured(mult):
    cfg = AccelConfig(lanes=4, macs_per_lane=8, multiplier=mult)
    dut, ios, code_bits = lunit(cfg)
    cells = synth_ecp5(dut, ios, f"lunit_tiny_{mult}")
    print(f"\nECP5 synthesis, L-unit {cfg.lanes} lanes x {cfg.macs_per_lane} MACs ({mult}), tiny-260k ROM "
          f"({code_bits} code bits):")
    for k in sorted(cells):
        print(f"  {k:>18} {cells[k]}")
    # the B-ROM: enough block RAMs to hold every code bit (each bank at least one DP16KD)
    assert cells.get("DP16KD", 0) * DP16KD_BITS >= code_bits
    assert cells.get("DP16KD", 0) >= cfg.lanes
    code_mults = cfg.lanes * cfg.macs_per_lane
    if mult == "dsp":
        assert cells.get("MULT18X18D", 0) >= code_mults          # every code x activation product in a DSP
    else:
        assert cells.get("MULT18X18D", 0) < code_mults           # products come from the shared candidates
