"""LambdaConcept ECPIX-5: LFE5UM5G-85F, 100 MHz oscillator, UART through the FT2232 (second port), an RGMII
Ethernet PHY. Pins: litex_boards.platforms.lambdaconcept_ecpix5."""

from .ecp5 import Board


class ECPIX5(Board):
    name = "ecpix5"
    title = "LambdaConcept ECPIX-5"
    variants = ("85F",)
    default_variant = "85F"
    sys_clk_freq = 50e6
    clk = ("clk100", 100e6)
    rst = ("rst_n", True)
    ethernet = True
    rgmii = dict(rx_delay=0e-9)
    programmer = "ecpix5"

    def platform(self, variant):
        from litex_boards.platforms import lambdaconcept_ecpix5
        return lambdaconcept_ecpix5.Platform(device=variant, toolchain="trellis")


BOARD = ECPIX5()
