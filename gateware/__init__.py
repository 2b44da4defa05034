"""Migen gateware: B-ROM banks fused with MAC lanes, SRAM lanes, the vector unit and the sequencer."""

from . import litex_fixes

litex_fixes.apply()
