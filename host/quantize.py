"""Our own weight quantizer: float weights -> unsigned 4- or 2-bit codes in the GGUF Q4_1 form.

Per group of GROUP (32) consecutive inputs of a row, ``w ~= d * q + m`` with ``q`` in ``0 .. 2**bits - 1``.
``d`` and ``m`` are stored as float16 values (held in float32 arrays), exactly what a GGUF Q4_1 block can
carry, so a model quantized here could be written to a GGUF file without losing anything.

Rounding of the scales is directed, not to-nearest, and that is the one deliberate choice here:
``m`` is the largest float16 <= the group minimum and ``d`` the smallest float16 >= (max - m) / (2**bits - 1).
Then ``[m, m + (2**bits - 1) * d]`` covers the whole group, and every element is reproduced to within ``d / 2``
of the *stored* ``d``. To-nearest rounding (what llama.cpp does) can leave the group minimum below ``m`` or
the maximum above the top level, by up to the float16 rounding error of ``m``, which is not bounded by ``d``.

Codes are chosen with the stored (float16-valued) ``d`` and ``m``, in float64 so the only rounding in
``(w - m) / d`` that matters is the final round-to-nearest-even of ``np.rint``. All of it is deterministic.
"""

import numpy as np

from .errors import RomaError
from .model import GROUP, QMatrix

BITS = (4, 2)

# rows per chunk: bounds the float64 temporaries to ~32 MB even for a 128k x 2048 embedding
_CHUNK_ELEMENTS = 1 << 22


def _f16_down(x):
    """The largest float16 value <= x (x float64), returned as float64."""
    h = x.astype(np.float16)  # round to nearest
    up = h.astype(np.float64) > x
    h[up] = np.nextafter(h[up], np.float16(-np.inf))
    return h.astype(np.float64)


def _f16_up(x):
    """The smallest float16 value >= x (x float64), returned as float64."""
    h = x.astype(np.float16)
    down = h.astype(np.float64) < x
    h[down] = np.nextafter(h[down], np.float16(np.inf))
    return h.astype(np.float64)


def quantize(w, bits, name="weights"):
    """Quantize a (rows, cols) float matrix along its cols in groups of 32 -> QMatrix with uint8 codes.

    ``bits`` is 4 or 2. ``name`` appears in error messages (e.g. the tensor's name in a checkpoint).
    A group whose values are all one float16 value gets d = 0 and codes 0 (m alone reproduces it).
    """
    if bits not in BITS:
        raise RomaError(f"bits must be 4 or 2, got {bits!r}")
    w = np.asarray(w)
    if w.ndim != 2:
        raise RomaError(f"{name}: expected a 2-D weight matrix, got shape {w.shape}")
    rows, cols = w.shape
    if cols % GROUP:
        raise RomaError(f"{name}: {cols} columns is not a multiple of the group size {GROUP}")
    if not np.all(np.isfinite(w)):
        raise RomaError(f"NaN or infinite weights in {name}")
    levels = (1 << bits) - 1
    groups = cols // GROUP
    codes = np.empty((rows, cols), np.uint8)
    d = np.empty((rows, groups), np.float32)
    m = np.empty((rows, groups), np.float32)
    step = max(1, _CHUNK_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        # float64 holds every float32 (and float16) value exactly, so min/max and the scale arithmetic are exact
        # up to the one division below
        x = w[r0:r0 + step].astype(np.float64).reshape(-1, groups, GROUP)
        lo, hi = x.min(axis=2), x.max(axis=2)
        with np.errstate(over="ignore"):
            mq = _f16_down(lo)
            dq = _f16_up((hi - mq) / levels)
        if not (np.all(np.isfinite(mq)) and np.all(np.isfinite(dq))):
            raise RomaError(f"{name}: weights too large for float16 group scales (|w| up to {np.abs(x).max():g})")
        safe = np.where(dq > 0, dq, 1.0)  # d == 0 only when the whole group equals mq: code 0 is exact
        q = np.rint((x - mq[:, :, None]) / safe[:, :, None])
        q = np.where(dq[:, :, None] > 0, np.clip(q, 0, levels), 0)
        codes[r0:r0 + step] = q.reshape(-1, cols).astype(np.uint8)
        d[r0:r0 + step] = dq  # float16 values: exact in float32
        m[r0:r0 + step] = mq
    return QMatrix(codes, d, m, bits=bits)
