"""A correction to LiteX's Verilog backend, applied when roma.gateware is imported (the SoC build and every
Verilator test then convert with the same, fixed, backend).

LiteX 2024.12 prints a signed constant as an unsigned literal (`-48'd140737488355327`, `8'd5`) while telling
the expression printer it is signed. Verilog makes any expression with an unsigned operand unsigned, so
`x < -48'd...` with a signed x compares unsigned and a saturating clamp returns its lower bound for every
positive x. Migen's own backend, which every gateware test was first validated with, prints signed constants
as signed two's-complement literals (`48'sd140737488355329`); this restores exactly that.
"""

from migen.fhdl.structure import Constant


def _generate_constant(node):
    if node.signed:
        value = node.value if node.value >= 0 else (1 << node.nbits) + node.value
        return f"{node.nbits}'sd{value}", True
    return f"{node.nbits}'d{node.value}", False


def apply():
    from litex.gen.fhdl import expression, verilog
    for module in (expression, verilog):            # each keeps its own copy of the printer
        text, _ = module._generate_constant(Constant(-1, (2, True)))
        if "'sd" not in text:                       # still the unsigned form: patch it
            module._generate_constant = _generate_constant
