"""The LiteX SoC around the accelerator, and the single configuration source."""
