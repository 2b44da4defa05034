"""The golden decoder: a LLaMA forward pass built only from numerics/functions/gemv, with a KV cache.

One call processes a block of tokens (prefill) or a single token (decode); results are identical either way,
since every operation is defined per token.
"""

from dataclasses import dataclass

import numpy as np

from ..errors import RomaError
from .functions import (attention_scores, attention_values, attn_scale_q, eps_q, gamma_q, rmsnorm, rope,
                        rope_tables, silu_mul, softmax)
from .gemv import PreparedMatrix, gemv_act
from .numerics import GROUP, VEC_FRAC, quantize_act, rshift_round, saturate
from .weights import to_device


@dataclass
class KVState:
    kq: np.ndarray   # (layers, kv_heads, context, head_dim/32, 32) int16 mantissas
    ke: np.ndarray   # (layers, kv_heads, context, head_dim/32) exponents
    vq: np.ndarray
    ve: np.ndarray
    pos: int = 0


def checksum(x):
    """Position-weighted sum of a vector's int64 values mod 2**32 (firmware computes the same)."""
    v = np.asarray(x, dtype=np.int64).astype(np.uint64) & np.uint64(0xFFFFFFFF)
    w = np.arange(1, v.shape[-1] + 1, dtype=np.uint64)
    return int(np.sum(v * w, dtype=np.uint64) & np.uint64(0xFFFFFFFF))


class GoldenModel:
    def __init__(self, model, lora=None, context=None):
        c = self.config = model.config
        self.model = model
        self.context = min(context or c.context, c.context)
        self.layers = []
        for L in model.layers:
            dev = {p: to_device(q) for p, q in L.proj.items()}
            self.layers.append(dict(
                attn_norm=gamma_q(L.attn_norm), ffn_norm=gamma_q(L.ffn_norm),
                qkv=PreparedMatrix(dev["q_proj"], dev["k_proj"], dev["v_proj"]),
                o=PreparedMatrix(dev["o_proj"]),
                gate_up=PreparedMatrix(dev["gate_proj"], dev["up_proj"]),
                down=PreparedMatrix(dev["down_proj"])))
        self.embed = to_device(model.embed)
        self.head = PreparedMatrix(to_device(model.head)) if model.lm_head is not None else None
        self.final_norm = gamma_q(model.final_norm)
        self.epsq = eps_q(c.norm_eps)
        self.cos, self.sin = rope_tables(c.head_dim, self.context, c.rope_theta)
        self.scale_q = attn_scale_q(c.head_dim)
        self.lora = lora
        self._head = None

    # the tied head is large (vocab x dim in float64): prepared on first use
    @property
    def head_matrix(self):
        if self.head is not None:
            return self.head
        if self._head is None:
            self._head = PreparedMatrix(self.embed)
        return self._head

    def new_state(self):
        c = self.config
        G = c.head_dim // GROUP
        shape = (c.n_layers, c.n_kv_heads, self.context, G)
        return KVState(np.zeros(shape + (GROUP,), np.int16), np.zeros(shape, np.int16),
                       np.zeros(shape + (GROUP,), np.int16), np.zeros(shape, np.int16))

    def embed_tokens(self, tokens):
        e = self.embed
        q = e.codes[tokens].astype(np.int64).reshape(len(tokens), -1, GROUP)
        v = (q * e.dq[tokens][:, :, None] + e.mq[tokens][:, :, None]).reshape(len(tokens), -1)
        sh = (e.er[tokens] + VEC_FRAC)[:, None]
        return saturate(np.where(sh >= 0, np.left_shift(v, np.maximum(sh, 0)), rshift_round(v, np.maximum(-sh, 0))))

    def _proj(self, i, name, pm, qa, ea, outs):
        """Base GEMV plus, when an adapter covers it, the LoRA path on the same quantized input."""
        y = gemv_act(pm, qa, ea)
        if self.lora is None:
            return y
        parts = np.split(y, np.cumsum(pm.parts)[:-1], axis=1) if len(pm.parts) > 1 else [y]
        for k, p in enumerate(outs):
            ab = self.lora.get(i, p)
            if ab is not None:
                parts[k] = saturate(parts[k] + ab(qa, ea))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    def forward(self, tokens, state, trace=None):
        """Run tokens at positions state.pos...; returns the final normed hidden states (ntok, dim).

        ``trace``, if a list, receives per layer the residual stream after the layer (ntok, dim).
        """
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64)
        n = len(tokens)
        if n == 0:
            raise RomaError("no tokens to run")
        if state.pos + n > self.context:
            raise RomaError(f"{state.pos + n} tokens exceed the KV cache of {self.context} positions")
        if tokens.min() < 0 or tokens.max() >= c.vocab:
            raise RomaError(f"token id out of range 0..{c.vocab - 1}")
        pos = np.arange(state.pos, state.pos + n)
        H, KV, hd = c.n_heads, c.n_kv_heads, c.head_dim
        G = hd // GROUP
        x = self.embed_tokens(tokens)
        for i, L in enumerate(self.layers):
            # attention block
            h = rmsnorm(x, L["attn_norm"], self.epsq)
            qa, ea = quantize_act(h)
            qkv = self._proj(i, "qkv", L["qkv"], qa, ea, ("q_proj", "k_proj", "v_proj"))
            q, k, v = np.split(qkv, [c.q_dim, c.q_dim + c.kv_dim], axis=1)
            q = rope(q, pos, self.cos, self.sin, hd)
            k = rope(k, pos, self.cos, self.sin, hd)
            kq, ke = quantize_act(k)
            vq, ve = quantize_act(v)
            state.kq[i, :, pos] = kq.reshape(n, KV, G, GROUP)
            state.ke[i, :, pos] = ke.reshape(n, KV, G)
            state.vq[i, :, pos] = vq.reshape(n, KV, G, GROUP)
            state.ve[i, :, pos] = ve.reshape(n, KV, G)
            qq, qe = quantize_act(q)
            qq = qq.reshape(n, H, G, GROUP)
            qe = qe.reshape(n, H, G)
            rep = H // KV
            att = np.empty((n, H * hd), np.int64)
            for t in range(n):
                P = pos[t] + 1
                Kq = np.repeat(state.kq[i, :, :P], rep, axis=0)
                Ke = np.repeat(state.ke[i, :, :P], rep, axis=0).astype(np.int64)
                Vq = np.repeat(state.vq[i, :, :P], rep, axis=0)
                Ve = np.repeat(state.ve[i, :, :P], rep, axis=0).astype(np.int64)
                s = attention_scores(qq[t], qe[t], Kq, Ke, self.scale_q)
                att[t] = attention_values(softmax(s), Vq, Ve).reshape(-1)
            aq, ae = quantize_act(att)
            x = saturate(x + self._proj(i, "o", L["o"], aq, ae, ("o_proj",)))
            # MLP block
            h = rmsnorm(x, L["ffn_norm"], self.epsq)
            qa, ea = quantize_act(h)
            gu = self._proj(i, "gate_up", L["gate_up"], qa, ea, ("gate_proj", "up_proj"))
            g, u = np.split(gu, 2, axis=1)
            m = silu_mul(g, u)
            mq, me = quantize_act(m)
            x = saturate(x + self._proj(i, "down", L["down"], mq, me, ("down_proj",)))
            if trace is not None:
                trace.append(x.copy())
        state.pos += n
        return rmsnorm(x, self.final_norm, self.epsq)

    def logits(self, hidden):
        """LM head on final normed hidden states -> (ntok, vocab) vector-format logits."""
        return self.head_matrix(hidden)

    def step(self, tokens, state):
        """Run tokens and return the logits of the last one."""
        h = self.forward(tokens, state)
        return self.logits(h[-1:])[0]


def golden_for(model, lora=None, context=None):
    """The golden model of a Model, with a host-side Lora (host/lora.py) converted to its device form."""
    dev = None
    if lora is not None:
        from .lora import DeviceLora
        dev = DeviceLora(lora)
    return GoldenModel(model, lora=dev, context=context)
