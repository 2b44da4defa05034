"""The float reference: transformers' LlamaForCausalLM on the same (dequantized) weights, in float32.

Needs torch (the ``float`` extra). The weights equal what transformers loads from the GGUF itself, since
Q4_1/Q8_0 dequantization is exact in float32 and the q/k rows are unpermuted on import.
"""

import os

import numpy as np

from .errors import RomaError
from .model import PROJECTIONS


def _torch():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
    except ImportError:
        raise RomaError("the float reference needs torch: pip install -e '.[float]'")
    torch.set_num_threads(1)  # measured: 2 threads on a busy 2-core machine are 20x slower
    return torch


def hf_config(cfg):
    from transformers import LlamaConfig
    return LlamaConfig(
        vocab_size=cfg.vocab, hidden_size=cfg.dim, intermediate_size=cfg.hidden,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.context, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        tie_word_embeddings=True, attention_bias=False, mlp_bias=False, hidden_act="silu",
        bos_token_id=cfg.bos_id if cfg.bos_id >= 0 else None,
        eos_token_id=list(cfg.eos_ids) or None)


def state_dict(model, lora=None):
    """transformers parameter names -> float32 arrays; an adapter's delta is merged when given."""
    sd = {"model.embed_tokens.weight": model.embed.dequantize(), "model.norm.weight": model.final_norm}
    if model.lm_head is not None:
        sd["lm_head.weight"] = model.lm_head.dequantize()
    else:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    for i, layer in enumerate(model.layers):
        pre = f"model.layers.{i}."
        sd[pre + "input_layernorm.weight"] = layer.attn_norm
        sd[pre + "post_attention_layernorm.weight"] = layer.ffn_norm
        for p in PROJECTIONS:
            kind = "self_attn" if p in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
            w = layer.proj[p].dequantize()
            if lora is not None and (i, p) in lora.float_deltas():
                w = w + lora.float_deltas()[(i, p)]
            sd[pre + f"{kind}.{p}.weight"] = w
    return sd


def float_model(model, lora=None):
    """The float model; with an adapter, PEFT's own LoRA model on top of it (the adapter read by peft from its
    folder), or, without peft, the adapter's delta merged into the weights."""
    torch = _torch()
    from transformers import LlamaForCausalLM
    use_peft = lora is not None and lora.path is not None and _has_peft()
    hf = LlamaForCausalLM(hf_config(model.config))
    sd = {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32))
          for k, v in state_dict(model, None if use_peft else lora).items()}
    hf.load_state_dict(sd, strict=False)
    hf.tie_weights()
    if use_peft:
        from peft import PeftModel
        hf = PeftModel.from_pretrained(hf, str(lora.path))
    return hf.eval()


def _has_peft():
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def float_logits(hf, tokens):
    """Teacher-forced logits (len(tokens), vocab) as float64."""
    torch = _torch()
    with torch.no_grad():
        out = hf(torch.tensor([list(tokens)]))
    return out.logits[0].double().numpy()
