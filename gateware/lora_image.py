"""An adapter's contents in the H-unit's banks, as LoraPlan lays them out: per bank, weight words (macs_per_lane
int16 each) and row exponents, at the plan's addresses. The Verilator harness and the link's adapter load both
write these."""

import numpy as np


def lora_records(plan, cfg):
    """Yields (kind, bank, address, values): kind "w" with an (n, macs_per_lane) int16 array of weight words
    from word address `address`, or "e" with n int8 row exponents from row `address`."""
    M, beats, lanes = cfg.macs_per_lane, cfg.beats_per_group, cfg.lanes
    for e in plan.entries.values():
        A, B = e["path"].A_dev, e["path"].B_dev
        a_codes = np.zeros((plan.R, A.shape[1]), np.int64)
        a_codes[:A.shape[0]] = A.codes
        a_er = np.zeros(plan.R, np.int64)
        a_er[:A.shape[0]] = A.er
        for part, codes, er in (("A", a_codes, a_er), ("B", B.codes.astype(np.int64), B.er)):
            loc = e[part]
            for b in range(lanes):
                words = codes[b::lanes].reshape(-1, M).astype(np.int16)
                yield "w", b, loc["word_base"] * beats, words
                yield "e", b, loc["row_base"], np.asarray(er[b::lanes], np.int64).astype(np.int8)
