"""Colorlight i5 (v7.0): LFE5U-25F on a SODIMM module, 25 MHz oscillator, UART on the extension board's
header, two RGMII Ethernet PHYs (the first is used). Pins: litex_boards.platforms.colorlight_i5."""

from .ecp5 import Board


class ColorlightI5(Board):
    name = "colorlight-i5"
    title = "Colorlight i5"
    module = "i5"
    revision = "7.0"
    variants = ("25F",)
    default_variant = "25F"
    sys_clk_freq = 50e6
    clk = ("clk25", 25e6)
    rst = ("cpu_reset_n", True)
    ethernet = True
    rgmii = dict(tx_delay=0)
    programmer = "colorlight-i5"

    def platform(self, variant):
        from litex_boards.platforms import colorlight_i5
        return colorlight_i5.Platform(board=self.module, revision=self.revision, toolchain="trellis")


BOARD = ColorlightI5()
