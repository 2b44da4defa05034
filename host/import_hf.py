"""Import a Hugging Face LLaMA-family checkpoint directory (config.json, *.safetensors, tokenizer files).

The float weights are quantized here with our own quantizer (host/quantize.py) into the same form a GGUF
Q4_1 file holds: every projection and the token embedding (and an untied lm_head) at the same ``bits``.
config.json is read as plain JSON rather than through transformers.AutoConfig, which is slow to import and
would accept architectures we cannot run. Also ``save_hf_dir``, which writes such a directory from float
weights (for the tiny test models, and so the float reference can load what the tests build).
"""

import json
from pathlib import Path

import numpy as np

from .errors import RomaError
from .model import GROUP, PROJECTIONS, LayerWeights, Model, ModelConfig
from .quantize import quantize
from .safetensors_io import SafetensorsFiles

# our projection names -> the HF module holding them
_HF_MODULE = {
    "q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
    "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp",
}


def hf_projection_name(layer, proj):
    return f"model.layers.{layer}.{_HF_MODULE[proj]}.{proj}.weight"


def _read_json(p, path):
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError) as e:
        raise RomaError(f"{path}: cannot read {Path(p).name} ({type(e).__name__}: {e})")


def _rope_theta(config, path):
    """rope_theta from the old top-level key or transformers 5's rope_parameters; only plain RoPE is supported."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    for p in (params, scaling):
        kind = p.get("rope_type", p.get("type", "default"))
        if kind != "default":
            raise RomaError(f"{path}: rope scaling {kind!r} is not supported (only plain RoPE)")
    return float(config.get("rope_theta", params.get("rope_theta", 10000.0)))


def _has_chat_template(path):
    """Whether the directory ships a chat template, without loading the tokenizer."""
    tc = path / "tokenizer_config.json"
    if tc.exists() and _read_json(tc, path).get("chat_template"):
        return True
    return (path / "chat_template.jinja").exists() or (path / "chat_template.json").exists()


def read_hf_config(path, name=None):
    """config.json of an HF LLaMA checkpoint directory -> ModelConfig (chat from the shipped template)."""
    return _read_config(Path(path), name)[0]


def _read_config(path, name):
    """-> (ModelConfig, the raw config.json dict)."""
    if not path.is_dir():
        raise RomaError(f"model directory not found: {path}")
    if not (path / "config.json").exists():
        raise RomaError(f"{path}: no config.json (not a Hugging Face model directory)")
    config = _read_json(path / "config.json", path)
    arch = config.get("model_type")
    if arch != "llama":
        raise RomaError(f"{path}: architecture {arch!r} is not supported (only LLaMA-family models)")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        raise RomaError(f"{path}: activation {act!r} is not supported (only SiLU)")
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise RomaError(f"{path}: projection biases are not supported")
    try:
        dim = int(config["hidden_size"])
        n_heads = int(config["num_attention_heads"])
        eos = config.get("eos_token_id")
        bos = config.get("bos_token_id")
        cfg = ModelConfig(
            name=name or str(path), dim=dim, n_layers=int(config["num_hidden_layers"]), n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            hidden=int(config["intermediate_size"]), vocab=int(config["vocab_size"]),
            context=int(config.get("max_position_embeddings", 2048)),
            rope_theta=_rope_theta(config, path),
            norm_eps=float(config.get("rms_norm_eps", 1e-6)),  # LlamaConfig's default
            head_dim=int(config.get("head_dim") or dim // n_heads),
            bos_id=int(bos) if bos is not None else -1,
            eos_ids=tuple(int(e) for e in (eos if isinstance(eos, list) else [eos] if eos is not None else [])),
            chat=_has_chat_template(path))
        return cfg, config
    except KeyError as e:
        raise RomaError(f"{path}: config.json lacks {e.args[0]!r}")


def load_hf_tokenizer(path):
    """The directory's tokenizer through transformers, offline.

    AutoTokenizer first loads the model config through AutoConfig, which imports torch (~5 s here) only to
    pick the tokenizer class. When tokenizer_config.json already names the generic tokenizers-library class
    (what save_pretrained writes for a plain tokenizers.Tokenizer, e.g. our tiny models) and tokenizer.json is
    present, AutoTokenizer ends up with that same class, so it is loaded directly. Everything else (LLaMA,
    SmolLM2... checkpoints naming a model-specific class) goes through AutoTokenizer.
    """
    from .tokenizer import _quiet_transformers

    path = Path(path)
    transformers = _quiet_transformers()  # sets HF_HUB_OFFLINE: a local directory must never reach the network
    try:
        tc = path / "tokenizer_config.json"
        cls = _read_json(tc, path).get("tokenizer_class") if tc.exists() else None
        if cls in ("TokenizersBackend", "PreTrainedTokenizerFast") and (path / "tokenizer.json").exists():
            return transformers.PreTrainedTokenizerFast.from_pretrained(str(path))
        return transformers.AutoTokenizer.from_pretrained(str(path))
    except Exception as e:  # missing or malformed tokenizer files
        raise RomaError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {e})".splitlines()[0])


def load_hf_dir(path, bits=4, name=None, with_tokenizer=True):
    """An HF LLaMA checkpoint directory -> Model, its float weights quantized to ``bits`` (4 or 2)."""
    if bits not in (4, 2):  # before the slow part
        raise RomaError(f"bits must be 4 or 2, got {bits!r}")
    path = Path(path)
    cfg, raw_config = _read_config(path, name)
    if cfg.head_dim % GROUP or cfg.dim % GROUP or cfg.hidden % GROUP:  # fail before reading any weights
        raise RomaError(f"{cfg.name}: dim {cfg.dim}, head_dim {cfg.head_dim} and hidden {cfg.hidden} "
                        f"must be multiples of the group size {GROUP}")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise RomaError(f"{path}: no *.safetensors weight files")
    st = SafetensorsFiles(files, what="weights")

    def tensor(tname, shape):
        if tname not in st:
            raise RomaError(f"{path}: tensor {tname} is missing")
        if st.shape(tname) != shape:
            raise RomaError(f"{path}: tensor {tname} has shape {st.shape(tname)}, expected {shape}")
        return st.get(tname)

    def linear(tname, shape):
        return quantize(tensor(tname, shape), bits, name=tname)

    layers = []
    for i in range(cfg.n_layers):
        proj = {p: linear(hf_projection_name(i, p), cfg.projection_shape(p)) for p in PROJECTIONS}
        layers.append(LayerWeights(
            tensor(f"model.layers.{i}.input_layernorm.weight", (cfg.dim,)).copy(),
            tensor(f"model.layers.{i}.post_attention_layernorm.weight", (cfg.dim,)).copy(), proj))
    embed = linear("model.embed_tokens.weight", (cfg.vocab, cfg.dim))
    tied = raw_config.get("tie_word_embeddings", False) or "lm_head.weight" not in st
    lm_head = None if tied else linear("lm_head.weight", (cfg.vocab, cfg.dim))
    model = Model(cfg, embed, layers, tensor("model.norm.weight", (cfg.dim,)).copy(), lm_head, source=str(path))
    model.extra["bits"] = bits
    if with_tokenizer:
        from dataclasses import replace

        model.tokenizer = load_hf_tokenizer(path)
        model.config = replace(cfg, chat=bool(getattr(model.tokenizer, "chat_template", None)))
    return model.validate()


def hf_config_dict(cfg, tied):
    """A ModelConfig -> config.json contents in transformers 5's LlamaConfig form."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": cfg.dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.n_kv_heads, "head_dim": cfg.head_dim,
        "intermediate_size": cfg.hidden, "vocab_size": cfg.vocab, "max_position_embeddings": cfg.context,
        "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": bool(tied), "attention_bias": False, "mlp_bias": False,
        "bos_token_id": cfg.bos_id if cfg.bos_id >= 0 else None,
        "eos_token_id": (list(cfg.eos_ids) if len(cfg.eos_ids) > 1 else cfg.eos_ids[0]) if cfg.eos_ids else None,
        "dtype": "float32",
    }


def save_hf_dir(model_float_state, cfg, tokenizer, path):
    """Write float weights (HF tensor names -> arrays) as an HF LLaMA directory loadable by load_hf_dir and
    by transformers. The head is tied when the state has no lm_head.weight. Returns the directory."""
    from safetensors.numpy import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in model_float_state.items()}
    tied = "lm_head.weight" not in state
    (path / "config.json").write_text(json.dumps(hf_config_dict(cfg, tied), indent=2) + "\n")
    # transformers refuses safetensors files without format metadata
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        tokenizer.save_pretrained(str(path))
    return path
