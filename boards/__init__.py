"""Boards: one thin file per FPGA board, plus the Verilator simulation board."""
