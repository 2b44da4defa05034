"""Migen gateware: B-ROM banks fused with MAC lanes, LoRA/KV SRAM units, vector unit, sequencer."""
