"""Tiny seeded random LLaMA models: the whole pipeline (import, golden model, ROMs, device) without a download.

The weights are random but scaled so the network does something non-degenerate: linears ~ N(0, 1/fan_in)
keep activations at unit scale through every layer (HF's N(0, 0.02) init would shrink them towards zero,
where the golden model's fixed-point steps see mostly rounding), norms ~ 1 + 0.1 N(0, 1), and the embedding
~ N(0, 1) so the tied head gives logits of a few units rather than all near zero.

Shapes, and why they differ from the models they are named after:

* ``tiny-260k`` follows llama2.c's stories260K (dim 64, 5 layers, vocab 512, context 512), but stories260K
  has hidden 172 and 8 heads of 8. Weights and activations are quantized in groups of 32 inputs, and the
  golden model scales activations per 32-element group *inside a head* (so a head must be whole groups):
  groups of 32 need hidden 192 (172 rounded up to a multiple of 32) and head_dim 32, i.e. 2 heads and 1 KV head.
* ``tiny-1m``: dim 128, 4 layers, 4 heads of 32 with 2 KV heads, hidden 384, vocab 512, context 256.
"""

import numpy as np

from .errors import RomaError
from .model import GROUP, PROJECTIONS, LayerWeights, Model, ModelConfig
from .quantize import quantize

TINY_SHAPES = {
    # stories260K has hidden 172 and n_heads 8 (head_dim 8); groups of 32 need hidden 192 and head_dim 32
    "tiny-260k": dict(dim=64, n_layers=5, n_heads=2, n_kv_heads=1, hidden=192, vocab=512, context=512),
    "tiny-1m": dict(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, hidden=384, vocab=512, context=256),
}

_SHAPE_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "hidden", "vocab", "context")


def _shape(name_or_shape):
    """-> (name, shape dict). A dict may add "name" and "tied" (default True: one matrix for embed and head)."""
    if isinstance(name_or_shape, str):
        if name_or_shape not in TINY_SHAPES:
            raise RomaError(f"unknown tiny model {name_or_shape!r}; known: {', '.join(TINY_SHAPES)}")
        return name_or_shape, dict(TINY_SHAPES[name_or_shape])
    shape = dict(name_or_shape)
    missing = [k for k in _SHAPE_KEYS if k not in shape]
    if missing:
        raise RomaError(f"tiny model shape lacks {', '.join(missing)}")
    return shape.pop("name", "tiny"), shape


def tiny_config(name_or_shape, tokenizer=None):
    """The ModelConfig of a tiny model; bos/eos ids from the tokenizer (train_bpe's <s>, </s>) if given."""
    name, shape = _shape(name_or_shape)
    shape.pop("tied", None)
    bos = tokenizer.bos_token_id if tokenizer is not None else -1
    eos = (tokenizer.eos_token_id,) if tokenizer is not None else ()
    return ModelConfig(name=name, **{k: shape[k] for k in _SHAPE_KEYS}, rope_theta=10000.0, norm_eps=1e-5,
                       bos_id=bos, eos_ids=eos, chat=False)


def tiny_float_state(name_or_shape, seed=0):
    """Random float32 weights under their HF LLaMA tensor names, drawn in a fixed order from default_rng(seed)."""
    from .import_hf import hf_projection_name

    _, shape = _shape(name_or_shape)
    cfg = tiny_config(name_or_shape)
    if cfg.dim % GROUP or cfg.head_dim % GROUP or cfg.hidden % GROUP:
        raise RomaError(f"{cfg.name}: dim {cfg.dim}, head_dim {cfg.head_dim} and hidden {cfg.hidden} "
                        f"must be multiples of the group size {GROUP}")
    rng = np.random.default_rng(seed)

    def normal(shape_, std):
        return (rng.standard_normal(shape_) * std).astype(np.float32)

    def norm():
        return (1.0 + 0.1 * rng.standard_normal(cfg.dim)).astype(np.float32)

    state = {"model.embed_tokens.weight": normal((cfg.vocab, cfg.dim), 1.0)}
    for i in range(cfg.n_layers):
        state[f"model.layers.{i}.input_layernorm.weight"] = norm()
        state[f"model.layers.{i}.post_attention_layernorm.weight"] = norm()
        for p in PROJECTIONS:
            rows, cols = cfg.projection_shape(p)
            state[hf_projection_name(i, p)] = normal((rows, cols), 1.0 / np.sqrt(cols))  # std 1/sqrt(fan_in)
    state["model.norm.weight"] = norm()
    if not shape.get("tied", True):
        state["lm_head.weight"] = normal((cfg.vocab, cfg.dim), 1.0 / np.sqrt(cfg.dim))
    return state


def tiny_tokenizer(name_or_shape):
    """train_bpe at the model's vocab size (the first call pays for importing transformers, ~1-2 s)."""
    from .tokenizer import train_bpe

    return train_bpe(_shape(name_or_shape)[1]["vocab"])


def model_from_float_state(state, cfg, bits=4, tokenizer=None, source=""):
    """HF-named float weights -> Model, quantized exactly as load_hf_dir quantizes the same tensors."""
    from .import_hf import hf_projection_name

    layers = []
    for i in range(cfg.n_layers):
        proj = {p: quantize(state[hf_projection_name(i, p)], bits, name=hf_projection_name(i, p))
                for p in PROJECTIONS}
        layers.append(LayerWeights(state[f"model.layers.{i}.input_layernorm.weight"],
                                   state[f"model.layers.{i}.post_attention_layernorm.weight"], proj))
    embed = quantize(state["model.embed_tokens.weight"], bits, name="model.embed_tokens.weight")
    head = state.get("lm_head.weight")
    lm_head = quantize(head, bits, name="lm_head.weight") if head is not None else None
    model = Model(cfg, embed, layers, state["model.norm.weight"], lm_head, tokenizer=tokenizer, source=source)
    model.extra["bits"] = bits
    return model.validate()


def tiny_model(name_or_shape, seed=0, bits=4):
    """A tiny random LLaMA Model (a TINY_SHAPES name or a shape dict), quantized to ``bits``, with a BPE tokenizer."""
    tok = tiny_tokenizer(name_or_shape)
    cfg = tiny_config(name_or_shape, tok)
    state = tiny_float_state(name_or_shape, seed)
    return model_from_float_state(state, cfg, bits, tok, source=f"tiny:{cfg.name}:seed={seed}")


def save_tiny(name_or_shape, path, seed=0):
    """Write a tiny model's float weights, config and tokenizer as an HF directory (see import_hf.save_hf_dir)."""
    from .import_hf import save_hf_dir

    tok = tiny_tokenizer(name_or_shape)
    return save_hf_dir(tiny_float_state(name_or_shape, seed), tiny_config(name_or_shape, tok), tok, path)
