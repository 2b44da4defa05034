"""The LoRA path in device form: the exact definition of the delta the accelerator adds to a projection.

For an adapted projection with float A (r, in), B (out, r) and scaling s (lora_alpha / r, or / sqrt(r)):

    R    = ceil(r / 32) * 32                       rank padded to whole groups
    A_d  = int16_matrix(A)                         (r, in): int16 codes, one power-of-two exponent per row
    B_d  = int16_matrix([s * B | 0])               (out, R): s folded into B *before* quantization, zero columns
                                                   r..R-1
    t    = gemv_act(A_d, qa, ea)                   (ntok, r) vector format, on the *base's* quantized input
                                                   (qa, ea): the same act-format mantissas and exponents the
                                                   base GEMV of this projection consumed
    t'   = [t | 0]                                 (ntok, R) zero-padded
    u    = gemv(B_d, t') = gemv_act(B_d, quantize_act(t'))
                                                   the rank vector is re-quantized to the act format per group
                                                   of 32 before B
    y    = saturate(base + u)                      (done by GoldenModel._proj)

int16_matrix gives codes in [-SCALE_MAX, SCALE_MAX] with dq = 1, mq = 0, so the weight is code * 2**er[row];
gemv/gemv_act are the base GEMV's own integer definition (numerics.group_terms_to_vector), so the LoRA path
needs no arithmetic of its own. Zero rows or columns (padding, untrained B) contribute exactly 0.
"""

import numpy as np

from ..lora import MAX_LORA_RANK
from .gemv import PreparedMatrix, gemv, gemv_act
from .numerics import GROUP
from .weights import int16_matrix


def padded_rank(r):
    return -(-r // GROUP) * GROUP


def device_matrices(A, B, scaling):
    """(A_d, B_d) DeviceMatrix pair for one projection, per the module definition."""
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    r = A.shape[0]
    R = padded_rank(r)
    Bs = np.zeros((B.shape[0], R), np.float64)
    Bs[:, :r] = scaling * B
    return int16_matrix(A), int16_matrix(Bs)


class LoraPath:
    """One projection's LoRA delta: f(qa, ea) -> (ntok, out) int64 vector format."""

    def __init__(self, A_dev, B_dev):
        self.A_dev, self.B_dev = A_dev, B_dev
        self.rank = A_dev.shape[0]
        self.rank_padded = B_dev.shape[1]
        self.A = PreparedMatrix(A_dev)
        self.B = PreparedMatrix(B_dev)

    def rank_vector(self, qa, ea):
        t = gemv_act(self.A, qa, ea)
        if self.rank_padded != self.rank:
            t = np.concatenate([t, np.zeros((t.shape[0], self.rank_padded - self.rank), t.dtype)], axis=1)
        return t

    def __call__(self, qa, ea):
        return gemv(self.B, self.rank_vector(qa, ea))


class DeviceLora:
    """A Lora converted to the device format; GoldenModel(model, lora=DeviceLora(lora))."""

    def __init__(self, lora):
        if lora.rank > MAX_LORA_RANK:
            raise ValueError(f"rank {lora.rank} > {MAX_LORA_RANK}")
        self.lora = lora
        self.rank = lora.rank
        self.rank_padded = padded_rank(lora.rank)
        self.scaling = lora.scaling
        self.paths = {}
        for key, (A, B) in lora.layers.items():
            A_dev, B_dev = device_matrices(A, B, lora.scaling)
            self.paths[key] = LoraPath(A_dev, B_dev)

    @property
    def targets(self):
        return self.lora.targets

    def get(self, layer, proj):
        """The delta function for (layer, proj), or None when the adapter does not cover it."""
        return self.paths.get((layer, proj))
