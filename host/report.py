"""Summaries a user reads: model size, MAC counts and what its ROM holds."""

from .golden.numerics import GROUP, SCALE_BITS
from .model import PROJECTIONS

ROW_EXP_BITS = 8   # one signed exponent per row


def rom_bits(model, bits):
    """Bits of base-model ROM at a code width: codes + dq/mq per group + one exponent per row.

    The embedding (also the tied LM head) keeps its own format (8-bit codes and a scale per group in GGUF).
    """
    c = model.config
    total = 0
    for p in PROJECTIONS:
        rows, cols = c.projection_shape(p)
        total += c.n_layers * (rows * cols * bits + rows * (cols // GROUP) * 2 * SCALE_BITS + rows * ROW_EXP_BITS)
    emb = model.embed
    per_code = emb.bits
    scales = 1 if emb.signed else 2
    heads = 1 if model.lm_head is None else 2
    total += heads * (c.vocab * c.dim * per_code + c.vocab * (c.dim // GROUP) * scales * SCALE_BITS
                      + c.vocab * ROW_EXP_BITS)
    return total


def model_info(model):
    c = model.config
    return {
        "name": c.name, "source": model.source or "generated",
        "layers": c.n_layers, "dim": c.dim, "heads": f"{c.n_heads} ({c.n_kv_heads} KV), head_dim {c.head_dim}",
        "hidden": c.hidden, "vocab": c.vocab, "context": c.context,
        "rope_theta": c.rope_theta, "norm_eps": c.norm_eps, "chat": c.chat,
        "weights": f"{model.layers[0].proj['q_proj'].bits}-bit codes, groups of {GROUP}; embedding "
                   f"{model.embed.bits}-bit{' signed' if model.embed.signed else ''}"
                   f"{', tied LM head' if model.lm_head is None else ''}",
        "parameters": c.parameter_count(),
        "MACs/token (pos 0)": c.macs_per_token(0),
        "MACs/token (pos 255)": c.macs_per_token(255),
        "ROM bits at 4-bit": rom_bits(model, 4),
        "ROM bits at 2-bit": rom_bits(model, 2),
    }
