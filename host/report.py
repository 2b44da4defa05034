"""Summaries a user reads: model size, MAC counts and what its ROM holds."""

from .golden.numerics import GROUP, SCALE_BITS
from .model import PROJECTIONS

ROW_EXP_BITS = 8   # one signed exponent per row


def rom_bits(model, bits=None):
    """Bits of base-model ROM as the export lays it out and the B-ROM banks hold it: per matrix its codes, an
    int16 dq and mq per group of 32 and an 8-bit exponent per row. bits: the layers' code width (default:
    the model's own); the embedding / LM head keeps its format. Returns {"code", "scale", "total"}."""
    c = model.config
    bits = bits or model.layers[0].proj["q_proj"].bits
    mats = [(c.n_layers * rows, cols, bits) for rows, cols in map(c.projection_shape, PROJECTIONS)]
    mats += [(c.vocab, c.dim, q.bits) for q in (model.embed, model.lm_head) if q is not None]
    code = sum(rows * cols * b for rows, cols, b in mats)
    scale = sum(rows * ((cols // GROUP) * 2 * SCALE_BITS + ROW_EXP_BITS) for rows, cols, _ in mats)
    return {"code": code, "scale": scale, "total": code + scale}


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
        "ROM bits at 4-bit": rom_bits(model, 4)["total"],
        "ROM bits at 2-bit": rom_bits(model, 2)["total"],
    }
