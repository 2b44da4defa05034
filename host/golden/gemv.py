"""The L-unit's GEMV, evaluated fast and exactly in numpy.

Per group: P = sum(q * qa) (exact in float32 for 4-bit codes: |P| <= 15 * 32767 * 32 < 2**24; float64 for
8- and 16-bit codes), then T = dq * P + mq * sum(qa), then numerics.group_terms_to_vector. Arrays are laid out
(groups, rows, tokens) so the reduction over groups runs over contiguous slabs.
"""

import numpy as np

from .numerics import ACT_MAX, GROUP, accumulator_to_vector, pow2, quantize_act


class PreparedMatrix:
    """One or more DeviceMatrix stacked by rows (same input), laid out for batched BLAS."""

    def __init__(self, *dms):
        self.parts = [dm.shape[0] for dm in dms]
        codes = np.concatenate([dm.codes for dm in dms]) if len(dms) > 1 else dms[0].codes
        rows, cols = codes.shape
        self.rows, self.cols, self.groups = rows, cols, cols // GROUP
        # float32 sums are exact below 2**24: 4-bit codes x 16-bit activations x 32 stay below; signed 8-bit
        # codes do too when the activation is split into its high and low bytes; 16-bit codes need float64.
        if all(not dm.signed and dm.bits <= 4 for dm in dms):
            self.dtype, self.split = np.float32, False
        elif all(dm.bits <= 8 for dm in dms):
            self.dtype, self.split = np.float32, True
        else:
            self.dtype, self.split = np.float64, False
        self.codes = np.ascontiguousarray(
            codes.reshape(rows, self.groups, GROUP).transpose(1, 0, 2).astype(self.dtype))
        dq = np.concatenate([dm.dq for dm in dms])
        mq = np.concatenate([dm.mq for dm in dms])
        er = np.concatenate([dm.er for dm in dms])
        # dq and mq pre-multiplied by the row's power of two: (dq*P + mq*S) * 2**k is then one multiply-add,
        # still exact because scaling by a power of two is exact in float64.
        row_factor = pow2(er)[:, None]
        self.D = np.ascontiguousarray((dq * 1.0 * row_factor).T[:, :, None])   # (groups, rows, 1)
        self.M = np.ascontiguousarray((mq * 1.0 * row_factor).T[:, :, None])
        self.has_offset = bool(np.any(mq))
        # largest |term| before the activation exponent: bounds the accumulator for the exactness check
        pmax = float(np.abs(codes).max()) * ACT_MAX * GROUP
        self.term_bound = float((np.abs(self.D) * pmax + np.abs(self.M) * ACT_MAX * GROUP).max()) * self.groups

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
    if pm.split:
        lo = np.bitwise_and(a, 0xFF).transpose(1, 2, 0)
        hi = np.right_shift(a, 8).transpose(1, 2, 0)
        Phl = np.matmul(pm.codes, np.concatenate([hi, lo], axis=2).astype(np.float32)).astype(np.float64)
        P = Phl[:, :, :ntok] * 256.0 + Phl[:, :, ntok:]                    # exact in float64
        T = np.multiply(P, pm.D)
    else:
        T = np.multiply(np.matmul(pm.codes, A), pm.D, dtype=np.float64)   # (groups, rows, ntok)
    if pm.has_offset:
        S = a.sum(axis=-1).T.astype(np.float64)                           # (groups, ntok)
        T += pm.M * S[:, None, :]
    col = pow2(ea.T, 0)[:, None, :]                                       # (groups, 1, ntok)
    T *= col
    # exactness: the cheap worst-case bound usually suffices; otherwise check the actual terms
    if pm.term_bound * col.max() >= 2.0 ** 53 and np.abs(T).max() * pm.groups >= 2.0 ** 53:
        raise OverflowError("accumulator exceeds 2**53: the float64 evaluation would not be exact")
    np.floor(T, out=T)
    return accumulator_to_vector(T.sum(axis=0)).T
