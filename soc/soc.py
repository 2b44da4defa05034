"""The ROMA SoC: a VexRiscv running the firmware from its integrated ROM, SRAM for its data and stack, a UART,
a timer with an uptime counter (frame timeouts), and the accelerator (soc/accel_core.py) for a model.

Boards give the platform, the clock and the UART; the simulation "board" is boards/sim.py."""

from litex.soc.integration.soc_core import SoCCore

from .accel_core import RomaAccel

# The firmware runs in place from ROM; its data, buffers and stack live in SRAM.
SRAM_SIZE = 0x8000
FIRMWARE_ROM = 0x6000       # the firmware's code and constants (about 21 KB), with room to grow
ROM_STEP = 0x1000           # 4 KB: two block RAMs of 512 x 36 bits on an ECP5


def rom_size_for(n_cmds):
    """ROM for the firmware plus its built-in token program (CMD_BITS rounded to words), in ROM_STEP steps (no
    power of two needed: the bus decodes the next one up), so that a board spends no block RAM on empty ROM."""
    need = FIRMWARE_ROM + n_cmds * 48
    return -(-need // ROM_STEP) * ROM_STEP


class RomaSoC(SoCCore):
    def __init__(self, platform, sys_clk_freq, accel_build, cfg, rom_size, rom_init=None, uart_name="serial",
                 ident="ROMA-FPGA"):
        SoCCore.__init__(self, platform, clk_freq=sys_clk_freq, ident=ident, cpu_type="vexriscv",
                         cpu_variant="standard", integrated_rom_size=rom_size,
                         integrated_rom_init=rom_init or [0], integrated_sram_size=SRAM_SIZE,
                         uart_name=uart_name, timer_uptime=True, with_ctrl=True)
        self.roma = RomaAccel(accel_build.dut, cfg)

    def add_csr_bridge(self, name="csr", origin=None, register=False):
        """LiteX's CSR bridge, registered: the CSR bus's address and strobes come from registers rather than from
        the CPU's bus through the interconnect (unregistered, that path into every CSR's write enable and the
        CSR read mux was the SoC's longest at 50 MHz), for one more cycle a CSR access. (LiteX registers it only
        for SoCs with SDRAM; `register` is overruled.)"""
        super().add_csr_bridge(name=name, origin=origin, register=True)
