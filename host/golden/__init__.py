"""The golden model: the exact integer definition of what the accelerator computes."""
