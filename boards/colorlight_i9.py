"""Colorlight i9 (v7.2): the i5's module with an LFE5U-45F; same clocking, UART and RGMII PHYs.
Pins: litex_boards.platforms.colorlight_i5 (board="i9")."""

from .colorlight_i5 import ColorlightI5


class ColorlightI9(ColorlightI5):
    name = "colorlight-i9"
    title = "Colorlight i9"
    module = "i9"
    revision = "7.2"
    variants = ("45F",)
    default_variant = "45F"
    programmer = "colorlight-i9"


BOARD = ColorlightI9()
