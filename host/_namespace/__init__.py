"""ROMA-FPGA: a ROM-based LLM accelerator on open FPGAs.

Sub-packages map onto the repository's top-level folders: ``roma.host`` (host/), ``roma.gateware``
(gateware/), ``roma.soc`` (soc/), ``roma.firmware`` (firmware/), ``roma.boards`` (boards/).
"""

__version__ = "0.1.0"
