"""Firmware (C) for the soft CPU, and its build."""
