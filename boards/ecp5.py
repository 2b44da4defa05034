"""What every ECP5 board file shares: the parts and their resources, a board's description, a PLL clocking, and
the ROMA SoC on a board.

A board file (ulx3s.py, colorlight.py, orangecrab.py, ecpix5.py) is a few lines: which litex-boards platform it
uses (pin lists stay in litex-boards), its part variants, its clock input and reset, its default system clock,
and its Ethernet PHY where it has one.
"""

from dataclasses import dataclass

from roma.host.errors import RomaError

# Parts ------------------------------------------------------------------------------------------------------

BRAM_BITS = 18 * 1024       # one DP16KD: 16 Kbit of data plus 2 Kbit of parity, usable at widths 9, 18 and 36


@dataclass(frozen=True)
class Part:
    """An ECP5 die's resources (Lattice ECP5 family data sheet FPGA-DS-02012, table 1.1; nextpnr-ecp5 reports the
    same totals in its utilisation summary)."""
    name: str
    luts: int               # LUT4 (TRELLIS_COMB in nextpnr)
    ffs: int                # TRELLIS_FF
    dp16kd: int             # 18 Kbit block RAMs
    mult18: int             # MULT18X18D

    @property
    def bram_bits(self):
        return self.dp16kd * BRAM_BITS


PARTS = {
    "25F": Part("LFE5U-25F", luts=24_288, ffs=24_288, dp16kd=56, mult18=28),
    "45F": Part("LFE5U-45F", luts=43_848, ffs=43_848, dp16kd=108, mult18=72),
    "85F": Part("LFE5U-85F", luts=83_640, ffs=83_640, dp16kd=208, mult18=156),
}


# Boards -----------------------------------------------------------------------------------------------------

class Board:
    """One board: subclasses set the class attributes and implement platform(), and add_ethernet() if the board
    has a PHY."""
    name = ""                   # the --board value
    title = ""
    variants = ("85F",)         # part sizes this board is sold with (keys of PARTS)
    default_variant = "85F"
    sys_clk_freq = 50e6         # default system clock
    clk = ("clk25", 25e6)       # clock input resource and its frequency
    rst = None                  # (reset resource, active_low) or None
    uart = "serial"
    ethernet = False            # has an Ethernet PHY (add_ethernet)
    rgmii = {}                  # its RGMII PHY's delays (LiteEthPHYRGMII arguments), for the first PHY
    programmer = ""             # openFPGALoader's --board name

    def variant(self, variant=None):
        v = (variant or self.default_variant).upper()
        if v not in self.variants:
            raise RomaError(f"--variant {variant}: the {self.title} comes as {', '.join(self.variants)}")
        return v

    def part(self, variant=None):
        return PARTS[self.variant(variant)]

    def platform(self, variant):
        raise NotImplementedError

    def crg(self, platform, sys_clk_freq):
        return PLLCRG(platform, sys_clk_freq, self.clk, self.rst)

    def add_ethernet(self, soc):
        if not self.ethernet:
            raise RomaError(f"the {self.title} has no Ethernet PHY")
        from liteeth.phy.ecp5rgmii import LiteEthPHYRGMII
        soc.ethphy = LiteEthPHYRGMII(clock_pads=soc.platform.request("eth_clocks", 0),
                                     pads=soc.platform.request("eth", 0), **self.rgmii)
        soc.add_ethernet(phy=soc.ethphy)


# Clocking ---------------------------------------------------------------------------------------------------

def PLLCRG(platform, sys_clk_freq, clk, rst):
    """The system clock from the board's oscillator through an ECP5 PLL, held in reset until the PLL locks."""
    from migen import ClockDomain, Signal

    from litex.gen import LiteXModule
    from litex.soc.cores.clock import ECP5PLL

    class _CRG(LiteXModule):
        def __init__(self):
            self.rst = Signal()
            self.cd_sys = ClockDomain()

            # # #

            name, freq = clk
            self.pll = pll = ECP5PLL()
            reset = self.rst
            if rst is not None:
                pad = platform.request(rst[0])
                reset = reset | (~pad if rst[1] else pad)
            self.comb += pll.reset.eq(reset)
            pll.register_clkin(platform.request(name), freq)
            pll.create_clkout(self.cd_sys, sys_clk_freq)

    return _CRG()


# The SoC on a board -----------------------------------------------------------------------------------------

def make_board_soc(board, variant, model, cfg, context, sys_clk_freq=None, with_ethernet=False, lora_size=None,
                   placeholder_seed=None):
    """The ROMA SoC for `model` on `board`: its platform, clocking and UART, the accelerator, optionally
    Ethernet. Returns (soc, accel_build). Nothing is written to disk. placeholder_seed: the B-ROMs hold
    placeholders for a model swapped in after routing (model_swap.py)."""
    from roma.gateware.accel_build import build_accelerator
    from roma.gateware.program import token_program
    from roma.soc.soc import RomaSoC, rom_size_for

    if with_ethernet and not board.ethernet:
        raise RomaError(f"the {board.title} has no Ethernet PHY")
    freq = int(sys_clk_freq or board.sys_clk_freq)
    acc = build_accelerator(model, cfg, context, lora_size=lora_size, placeholder_seed=placeholder_seed)
    n_cmds = len(token_program(acc.geo, acc.table))
    platform = board.platform(board.variant(variant))
    # a routed design for swapping serves any model of its geometry: its ident names none (the firmware does)
    what = model.config.name if placeholder_seed is None else f"{cfg.lanes}x{cfg.macs_per_lane} accelerator"
    soc = RomaSoC(platform, freq, acc, cfg, rom_size_for(n_cmds), uart_name=board.uart,
                  ident=f"ROMA-FPGA {what} on {board.title}")
    soc.crg = board.crg(platform, freq)
    if with_ethernet:
        board.add_ethernet(soc)
    return soc, acc


def make_bringup_soc(board, variant, sys_clk_freq=None, with_ethernet=False):
    """The board's SoC without the accelerator: the VexRiscv with LiteX's BIOS, its SRAM and UART (the same
    CPU, clocking and UART as the ROMA SoC). Checks a board and the toolchain in a few minutes."""
    from litex.soc.integration.soc_core import SoCCore

    from roma.soc.soc import SRAM_SIZE

    freq = int(sys_clk_freq or board.sys_clk_freq)
    platform = board.platform(board.variant(variant))
    soc = SoCCore(platform, freq, ident=f"ROMA-FPGA bring-up on {board.title}", cpu_type="vexriscv",
                  cpu_variant="standard", integrated_rom_size=0x10000, integrated_sram_size=SRAM_SIZE,
                  uart_name=board.uart, timer_uptime=True)
    soc.crg = board.crg(platform, freq)
    if with_ethernet:
        board.add_ethernet(soc)
    return soc
