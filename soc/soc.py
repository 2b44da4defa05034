"""The ROMA SoC: a VexRiscv running the firmware from its integrated ROM, SRAM for its data and stack, a UART,
a timer with an uptime counter (frame timeouts), and the accelerator (soc/accel_core.py) for a model.

Boards give the platform, the clock and the UART; the simulation "board" is boards/sim.py."""

from litex.soc.integration.soc_core import SoCCore

from .accel_core import RomaAccel

# The firmware runs in place from ROM; its data, buffers and stack live in SRAM.
SRAM_SIZE = 0x8000
MIN_ROM_SIZE = 0x10000


def rom_size_for(n_cmds):
    """ROM for the firmware (about 24 KB) plus its built-in token program (CMD_BITS rounded to words)."""
    need = 0x8000 + n_cmds * 48
    size = MIN_ROM_SIZE
    while size < need:
        size *= 2
    return size


class RomaSoC(SoCCore):
    def __init__(self, platform, sys_clk_freq, accel_build, cfg, rom_size, rom_init=None, uart_name="serial",
                 ident="ROMA-FPGA"):
        SoCCore.__init__(self, platform, clk_freq=sys_clk_freq, ident=ident, cpu_type="vexriscv",
                         cpu_variant="standard", integrated_rom_size=rom_size,
                         integrated_rom_init=rom_init or [0], integrated_sram_size=SRAM_SIZE,
                         uart_name=uart_name, timer_uptime=True, with_ctrl=True)
        self.roma = RomaAccel(accel_build.dut, cfg)
