"""Good Stuff Department OrangeCrab (r0.2): LFE5U-25F or 85F in a Feather form factor, 48 MHz oscillator, UART
on the Feather TX/RX pins (an FTDI cable; USB-ACM needs a USB core the accelerator's budget does not spare).
No Ethernet. Pins: litex_boards.platforms.gsd_orangecrab."""

from .ecp5 import Board


class OrangeCrab(Board):
    name = "orangecrab"
    title = "OrangeCrab"
    variants = ("25F", "85F")
    default_variant = "25F"
    sys_clk_freq = 48e6
    clk = ("clk48", 48e6)
    rst = None              # usr_btn is the bootloader's; the PLL lock releases the reset
    programmer = "orangecrab"

    def platform(self, variant):
        from litex_boards.platforms import gsd_orangecrab
        platform = gsd_orangecrab.Platform(revision="0.2", device=variant, toolchain="trellis")
        platform.add_extension(gsd_orangecrab.feather_serial)
        return platform


BOARD = OrangeCrab()
