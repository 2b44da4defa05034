"""Radiona ULX3S: LFE5U-85F (also sold as 45F and 25F), 25 MHz oscillator, UART through the FTDI (US1) port.
No Ethernet. Pins: litex_boards.platforms.radiona_ulx3s."""

from .ecp5 import Board, PLLCRG


class ULX3S(Board):
    name = "ulx3s"
    title = "Radiona ULX3S"
    variants = ("85F", "45F", "25F")
    default_variant = "85F"
    sys_clk_freq = 50e6
    clk = ("clk25", 25e6)
    rst = ("rst", False)
    programmer = "ulx3s"

    def platform(self, variant):
        from litex_boards.platforms import radiona_ulx3s
        return radiona_ulx3s.Platform(device=f"LFE5U-{variant}", revision="2.0", toolchain="trellis")

    def crg(self, platform, sys_clk_freq):
        crg = PLLCRG(platform, sys_clk_freq, self.clk, self.rst)
        crg.comb += platform.request("wifi_gpio0").eq(1)        # keep the ESP32 from resetting the FPGA
        return crg


BOARD = ULX3S()
