"""The L-unit's GEMV, evaluated fast and exactly in numpy.

Per group: P = sum(q * qa) (exact in float32 for 4-bit codes: |P| <= 15 * 32767 * 32 < 2**24; float64 for
8- and 16-bit codes), then T = dq * P + mq * sum(qa), then numerics.group_terms_to_vector. Arrays are laid out
(groups, rows, tokens) so the reduction over groups runs over contiguous slabs.
"""

import numpy as np

from .numerics import GROUP, group_terms_to_vector, pow2, quantize_act


class PreparedMatrix:
    """One or more DeviceMatrix stacked by rows (same input), laid out for batched BLAS."""

    def __init__(self, *dms):
        self.parts = [dm.shape[0] for dm in dms]
        codes = np.concatenate([dm.codes for dm in dms]) if len(dms) > 1 else dms[0].codes
        rows, cols = codes.shape
        self.rows, self.cols, self.groups = rows, cols, cols // GROUP
        exact32 = all(not dm.signed and dm.bits <= 4 for dm in dms)
        self.dtype = np.float32 if exact32 else np.float64
        self.codes = np.ascontiguousarray(
            codes.reshape(rows, self.groups, GROUP).transpose(1, 0, 2).astype(self.dtype))
        dq = np.concatenate([dm.dq for dm in dms])
        mq = np.concatenate([dm.mq for dm in dms])
        self.D = np.ascontiguousarray(dq.T[:, :, None], dtype=np.float64)   # (groups, rows, 1)
        self.M = np.ascontiguousarray(mq.T[:, :, None], dtype=np.float64)
        self.has_offset = bool(np.any(mq))
        er = np.concatenate([dm.er for dm in dms])
        self.row_factor = pow2(er)[None, :, None]                           # (1, rows, 1)

    def __call__(self, x):
        y = gemv(self, x)
        if len(self.parts) == 1:
            return y
        return np.split(y, np.cumsum(self.parts)[:-1], axis=1)


def gemv(pm, x):
    """x: (ntok, cols) vector format -> (ntok, rows) vector format."""
    qa, ea = quantize_act(x)
    return gemv_act(pm, qa, ea)


def gemv_act(pm, qa, ea):
    """GEMV on already-quantized activations (so a LoRA pass can share the base's quantized input)."""
    ntok = qa.shape[0]
    a = qa.reshape(ntok, pm.groups, GROUP)
    A = np.ascontiguousarray(a.transpose(1, 2, 0), dtype=pm.dtype)     # (groups, 32, ntok)
    T = np.matmul(pm.codes, A).astype(np.float64)                         # (groups, rows, ntok)
    T *= pm.D
    if pm.has_offset:
        S = a.sum(axis=-1).T.astype(np.float64)                           # (groups, ntok)
        T += pm.M * S[:, None, :]
    factor = pm.row_factor * pow2(ea.T, 0)[:, None, :]                    # (groups, rows, ntok)
    return group_terms_to_vector(T, factor, axis=0).T
