"""Token sampling, reproducible by firmware: greedy argmax, or temperature / top-k / top-p with xorshift32.

Integer definition (logits in the vector format):
- greedy (temperature 0): the first index of the maximum.
- otherwise: candidates = the top_k indices by (logit descending, index ascending);
  d_i = -(((max - l_i) << 8) // temp_q)  with temp_q = round(temperature * 256)  (operands non-negative, so
  C and Python agree); w_i = exp_neg(d_i) (Q16); keep the shortest prefix whose sum reaches
  (total * top_p_q) >> 16 with top_p_q = round(top_p * 65536); r = xorshift32(state);
  u = (r * kept_total) >> 32; the token is the first candidate whose running sum exceeds u.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import RomaError
from .functions import exp_neg

MAX_TOP_K = 256
TEMP_FRAC = 8
TOP_P_FRAC = 16
DEFAULT_SEED = 0x2545F491


@dataclass
class SamplingParams:
    temperature: float = 0.0
    top_k: int = 40
    top_p: float = 1.0
    seed: int = DEFAULT_SEED

    def __post_init__(self):
        if not 0 <= self.temperature <= 100:
            raise RomaError(f"--temperature {self.temperature}: must be between 0 and 100")
        if self.temperature and not 1 <= self.top_k <= MAX_TOP_K:
            raise RomaError(f"--top-k {self.top_k}: must be between 1 and {MAX_TOP_K}")
        if not 0 < self.top_p <= 1:
            raise RomaError(f"--top-p {self.top_p}: must be in (0, 1]")

    @property
    def temp_q(self):
        return int(round(self.temperature * (1 << TEMP_FRAC)))

    @property
    def top_p_q(self):
        return int(round(self.top_p * (1 << TOP_P_FRAC)))

    def rng_state(self):
        s = self.seed & 0xFFFFFFFF
        return s if s else DEFAULT_SEED


def xorshift32(state):
    x = state
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def sample(logits, params, state):
    """Returns (token, new_rng_state)."""
    logits = np.asarray(logits, dtype=np.int64)
    if params.temp_q == 0:
        return int(np.argmax(logits)), state
    k = min(params.top_k, len(logits))
    idx = np.lexsort((np.arange(len(logits)), -logits))[:k]
    l = logits[idx]
    d = -(((l[0] - l) << TEMP_FRAC) // params.temp_q)
    w = exp_neg(d)
    cum = np.cumsum(w)
    need = (int(cum[-1]) * params.top_p_q) >> TOP_P_FRAC
    keep = int(np.searchsorted(cum, need, side="left")) + 1
    keep = min(max(keep, 1), k)
    total = int(cum[keep - 1])
    state = xorshift32(state)
    u = (state * total) >> 32
    j = int(np.searchsorted(cum[:keep], u, side="right"))
    return int(idx[j]), state


