"""The one internal model representation every importer produces and every consumer reads.

Base weights are unsigned low-bit codes with a scale and an offset per group of 32 inputs:
``w[r, c] = d[r, g] * q[r, c] + m[r, g]`` with ``g = c // 32`` (GGUF Q4_1, and our own 4/2-bit quantizer).
The embedding may instead be signed 8-bit codes with a scale only (GGUF Q8_0). Norm weights stay float32.
"""

from dataclasses import dataclass, field

import numpy as np

from .errors import RomaError

GROUP = 32  # inputs per quantization group, for weights and activations alike

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ModelConfig:
    name: str
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    hidden: int
    vocab: int
    context: int
    rope_theta: float
    norm_eps: float
    head_dim: int = 0
    bos_id: int = -1
    eos_ids: tuple = ()
    chat: bool = False

    def __post_init__(self):
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.dim // self.n_heads)

    @property
    def q_dim(self):
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self):
        return self.n_kv_heads * self.head_dim

    def projection_shape(self, proj):
        """(rows, cols) of a projection: rows are outputs, cols the inputs the groups run along."""
        return {
            "q_proj": (self.q_dim, self.dim), "k_proj": (self.kv_dim, self.dim),
            "v_proj": (self.kv_dim, self.dim), "o_proj": (self.dim, self.q_dim),
            "gate_proj": (self.hidden, self.dim), "up_proj": (self.hidden, self.dim),
            "down_proj": (self.dim, self.hidden),
        }[proj]

    def layer_macs(self):
        return sum(r * c for r, c in map(self.projection_shape, PROJECTIONS))

    def macs_per_token(self, position=0):
        """Multiply-accumulates of one decode step at a given position (attention grows with it)."""
        attn = 2 * self.n_heads * self.head_dim * (position + 1)
        return self.n_layers * (self.layer_macs() + attn) + self.vocab * self.dim

    def parameter_count(self):
        norms = (2 * self.n_layers + 1) * self.dim
        return self.n_layers * self.layer_macs() + self.vocab * self.dim + norms

    def to_dict(self):
        d = dict(self.__dict__)
        d["eos_ids"] = list(self.eos_ids)
        return d


@dataclass
class QMatrix:
    """A quantized weight matrix: codes (rows, cols) uint8/int8, d and m (rows, cols // GROUP) float32."""
    codes: np.ndarray
    d: np.ndarray
    m: np.ndarray
    bits: int
    signed: bool = False

    @property
    def shape(self):
        return self.codes.shape

    def dequantize(self):
        rows, cols = self.codes.shape
        q = self.codes.reshape(rows, cols // GROUP, GROUP).astype(np.float32)
        w = q * self.d[:, :, None] + self.m[:, :, None]
        return w.reshape(rows, cols)


@dataclass
class LayerWeights:
    attn_norm: np.ndarray
    ffn_norm: np.ndarray
    proj: dict  # name -> QMatrix


@dataclass
class Model:
    config: ModelConfig
    embed: QMatrix           # (vocab, dim); also the LM head when tied
    layers: list
    final_norm: np.ndarray
    lm_head: QMatrix = None  # None: tied to embed
    tokenizer: object = None  # a transformers PreTrainedTokenizerFast
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def head(self):
        return self.lm_head if self.lm_head is not None else self.embed

    def content_hash(self):
        """sha256 over the configuration and every weight array: what a build made from this model depends on."""
        import hashlib
        import json
        h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True, default=str).encode())
        mats = [self.embed] + [L.proj[p] for L in self.layers for p in PROJECTIONS] + \
            ([self.lm_head] if self.lm_head is not None else [])
        for m in mats:
            for a in (m.codes, m.d, m.m):
                h.update(np.ascontiguousarray(a).tobytes())
        for a in [L.attn_norm for L in self.layers] + [L.ffn_norm for L in self.layers] + [self.final_norm]:
            h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()

    def validate(self):
        """Shapes, group alignment and finite values: a clear error before anything consumes the model."""
        c = self.config
        if c.head_dim % GROUP or c.dim % GROUP or c.hidden % GROUP:
            raise RomaError(f"{c.name}: dim {c.dim}, head_dim {c.head_dim} and hidden {c.hidden} "
                            f"must be multiples of the group size {GROUP}")
        if c.n_heads % c.n_kv_heads:
            raise RomaError(f"{c.name}: n_heads {c.n_heads} is not a multiple of n_kv_heads {c.n_kv_heads}")
        if len(self.layers) != c.n_layers:
            raise RomaError(f"{c.name}: {len(self.layers)} layers found, config says {c.n_layers}")
        _check_q(self.embed, (c.vocab, c.dim), "token embedding")
        if self.lm_head is not None:
            _check_q(self.lm_head, (c.vocab, c.dim), "lm_head")
        _check_f(self.final_norm, (c.dim,), "final norm")
        for i, layer in enumerate(self.layers):
            _check_f(layer.attn_norm, (c.dim,), f"layer {i} attn_norm")
            _check_f(layer.ffn_norm, (c.dim,), f"layer {i} ffn_norm")
            for p in PROJECTIONS:
                if p not in layer.proj:
                    raise RomaError(f"layer {i}: missing {p}")
                _check_q(layer.proj[p], c.projection_shape(p), f"layer {i} {p}")
        return self


def _check_f(a, shape, what):
    if a.shape != shape:
        raise RomaError(f"{what}: shape {a.shape}, expected {shape}")
    if not np.all(np.isfinite(a)):
        raise RomaError(f"{what}: contains NaN or infinite values")


def _check_q(q, shape, what):
    if q.codes.shape != shape:
        raise RomaError(f"{what}: shape {q.codes.shape}, expected {shape}")
    if not (np.all(np.isfinite(q.d)) and np.all(np.isfinite(q.m))):
        raise RomaError(f"{what}: contains NaN or infinite scales")
