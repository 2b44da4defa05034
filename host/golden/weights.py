"""Device weight format: float group scales -> integer dq/mq with one power-of-two exponent per row.

    w[r, c] = (dq[r, g] * q[r, c] + mq[r, g]) * 2**er[r]

dq and mq are SCALE_BITS-bit signed integers. GGUF's fp16 scales have 11 significant bits, so within a row
whose scales span less than 2**4 the conversion is exact; elsewhere the small scales lose low bits only.
"""

from dataclasses import dataclass

import numpy as np

from .numerics import GROUP, SCALE_MAX


@dataclass
class DeviceMatrix:
    codes: np.ndarray   # (rows, cols) uint8 (unsigned codes), int8 (Q8_0) or int16 (LoRA)
    dq: np.ndarray      # (rows, groups) int64
    mq: np.ndarray      # (rows, groups) int64
    er: np.ndarray      # (rows,) int64
    bits: int
    signed: bool

    @property
    def shape(self):
        return self.codes.shape

    def dequantize(self):
        rows, cols = self.codes.shape
        q = self.codes.reshape(rows, cols // GROUP, GROUP).astype(np.float64)
        w = q * self.dq[:, :, None] + self.mq[:, :, None]
        return np.ldexp(w, self.er[:, None, None]).reshape(rows, cols)


def row_exponents(maxabs):
    """Smallest er with round(maxabs / 2**er) <= SCALE_MAX (0 for an all-zero row)."""
    maxabs = np.asarray(maxabs, dtype=np.float64)
    er = np.zeros(maxabs.shape, dtype=np.int64)
    nz = maxabs > 0
    er[nz] = np.ceil(np.log2(maxabs[nz] / SCALE_MAX)).astype(np.int64)
    # exact fix-up of log2 rounding at the boundaries
    over = nz & (np.rint(np.ldexp(maxabs, -er)) > SCALE_MAX)
    er[over] += 1
    under = nz & (np.rint(np.ldexp(maxabs, -(er - 1))) <= SCALE_MAX)
    er[under] -= 1
    return er


def to_device(q):
    """A QMatrix (float d, m) -> DeviceMatrix."""
    d = q.d.astype(np.float64)
    m = q.m.astype(np.float64)
    er = row_exponents(np.maximum(np.abs(d), np.abs(m)).max(axis=1))
    dq = np.rint(np.ldexp(d, -er[:, None])).astype(np.int64)
    mq = np.rint(np.ldexp(m, -er[:, None])).astype(np.int64)
    return DeviceMatrix(q.codes, dq, mq, er, q.bits, q.signed)


def int16_matrix(w):
    """A float matrix (rows, cols) -> signed int16 codes with a per-row exponent (LoRA A and B)."""
    w = np.asarray(w, dtype=np.float64)
    rows, cols = w.shape
    er = row_exponents(np.abs(w).max(axis=1))
    codes = np.clip(np.rint(np.ldexp(w, -er[:, None])), -SCALE_MAX, SCALE_MAX).astype(np.int16)
    groups = cols // GROUP
    return DeviceMatrix(codes, np.ones((rows, groups), np.int64), np.zeros((rows, groups), np.int64),
                        er, 16, True)
