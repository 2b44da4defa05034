"""Import a llama.cpp GGUF file: its own Q4_1 codes, its Q8_0 embedding and F32 norms, losslessly."""

import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .cache import cache_dir, file_hash, tree_hash
from .errors import RomaError
from .model import GROUP, PROJECTIONS, LayerWeights, Model, ModelConfig, QMatrix

# what the decoded model depends on besides the file: this decoder and its cache layout (a change decodes again)
_DECODER_SOURCES = ["host/import_gguf.py"]

# GGUF tensor names of one layer -> our projection names
_GGUF_PROJ = {
    "attn_q": "q_proj", "attn_k": "k_proj", "attn_v": "v_proj", "attn_output": "o_proj",
    "ffn_gate": "gate_proj", "ffn_up": "up_proj", "ffn_down": "down_proj",
}


def decode_q4_1(raw, rows, cols):
    """Q4_1 blocks (fp16 d, fp16 m, 16 bytes of nibbles: low nibble = element j, high = j + 16)."""
    blocks = np.ascontiguousarray(raw).reshape(rows, cols // GROUP, 20)
    d = blocks[:, :, 0:2].copy().view(np.float16)[:, :, 0].astype(np.float32)
    m = blocks[:, :, 2:4].copy().view(np.float16)[:, :, 0].astype(np.float32)
    nib = blocks[:, :, 4:20]
    codes = np.concatenate([nib & 0x0F, nib >> 4], axis=2).reshape(rows, cols)
    return QMatrix(codes.astype(np.uint8), d, m, bits=4)


def decode_q8_0(raw, rows, cols):
    """Q8_0 blocks (fp16 d, 32 signed bytes): w = d * q."""
    blocks = np.ascontiguousarray(raw).reshape(rows, cols // GROUP, 34)
    d = blocks[:, :, 0:2].copy().view(np.float16)[:, :, 0].astype(np.float32)
    codes = blocks[:, :, 2:34].copy().view(np.int8).reshape(rows, cols)
    return QMatrix(codes, d, np.zeros_like(d), bits=8, signed=True)


def unpermute_rope_rows(a, n_heads):
    """Undo llama.cpp's q/k row permutation so HF's rotate_half RoPE applies (works on any row-major array)."""
    rows = a.shape[0]
    return a.reshape(n_heads, rows // n_heads // 2, 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def _unpermute_q(q, n_heads):
    return QMatrix(unpermute_rope_rows(q.codes, n_heads), unpermute_rope_rows(q.d, n_heads),
                   unpermute_rope_rows(q.m, n_heads), q.bits, q.signed)


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
            raise RomaError(f"GGUF file lacks the key {key!r}")
        return default
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if f.types[0].name == "STRING" else v[0].item()


def load_gguf(path, name=None, with_tokenizer=True):
    """The model in a GGUF file. The decoded arrays are cached by the file's hash and this decoder's source:
    parsing a GGUF's metadata (SmolLM2's 49k-token vocabulary and merges among it) takes seconds at every
    start, the cached arrays a fraction of one."""
    path = Path(path)
    if not path.is_file():
        raise RomaError(f"model file not found: {path}")
    fh = file_hash(path)[:16]
    cached = cache_dir("gguf") / f"{fh}-{tree_hash(_DECODER_SOURCES)[:12]}.npz"
    model = _load_cached(cached) if cached.exists() else None
    if model is None:
        model = _decode(path)
        _save_cached(model, cached, stale=f"{fh}-*.npz")
    model.config = replace(model.config, name=name or str(path))
    model.source = str(path)
    if with_tokenizer:
        from .tokenizer import gguf_tokenizer
        model.tokenizer = gguf_tokenizer(path)
    return model.validate()


def _save_cached(model, path, stale):
    """Best effort (a cache that cannot be written costs the next start its decoding, nothing more); replaces
    the file's caches made by earlier decoders (`stale`)."""
    arrays = {"config": np.frombuffer(json.dumps(model.config.to_dict()).encode(), np.uint8),
              "final_norm": model.final_norm}
    mats = {"embed": model.embed, **({"lm_head": model.lm_head} if model.lm_head is not None else {})}
    for i, L in enumerate(model.layers):
        arrays[f"{i}.attn_norm"], arrays[f"{i}.ffn_norm"] = L.attn_norm, L.ffn_norm
        mats.update({f"{i}.{p}": q for p, q in L.proj.items()})
    for k, q in mats.items():
        arrays.update({f"{k}.codes": q.codes, f"{k}.d": q.d, f"{k}.m": q.m,
                       f"{k}.format": np.array([q.bits, int(q.signed)])})
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")     # (one per process: no clash)
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        return
    for old in path.parent.glob(stale):
        if old != path:
            old.unlink(missing_ok=True)


def _load_cached(path):
    """The model _save_cached wrote, or None if the file is damaged in any way (it is then decoded again)."""
    def mat(k):
        bits, signed = (int(v) for v in a[f"{k}.format"])
        return QMatrix(a[f"{k}.codes"], a[f"{k}.d"], a[f"{k}.m"], bits, bool(signed))
    try:
        with np.load(path) as z:
            a = {k: z[k] for k in z.files}
        d = json.loads(a["config"].tobytes())
        cfg = ModelConfig(**{**d, "eos_ids": tuple(d["eos_ids"])})
        layers = [LayerWeights(a[f"{i}.attn_norm"], a[f"{i}.ffn_norm"], {p: mat(f"{i}.{p}") for p in PROJECTIONS})
                  for i in range(cfg.n_layers)]
        return Model(cfg, mat("embed"), layers, a["final_norm"], mat("lm_head") if "lm_head.codes" in a else None)
    except Exception:       # (a truncated zip, a missing array, another layout: all mean decode again)
        return None


def _decode(path):
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except FileNotFoundError:
        raise RomaError(f"model file not found: {path}")
    except Exception as e:  # truncated or not a GGUF at all
        raise RomaError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})")
    arch = _field(reader, "general.architecture")
    if arch != "llama":
        raise RomaError(f"{path}: architecture {arch!r} is not supported (only LLaMA-family models)")
    tensors = {t.name: t for t in reader.tensors}
    n_layers = _field(reader, "llama.block_count")
    dim = _field(reader, "llama.embedding_length")
    n_heads = _field(reader, "llama.attention.head_count")
    n_kv = _field(reader, "llama.attention.head_count_kv", n_heads)
    vocab = int(tensors["token_embd.weight"].shape[-1]) if "token_embd.weight" in tensors else 0
    eos = _field(reader, "tokenizer.ggml.eos_token_id", -1)
    cfg = ModelConfig(
        name=str(path), dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv,
        hidden=_field(reader, "llama.feed_forward_length"), vocab=vocab,
        context=_field(reader, "llama.context_length"),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        norm_eps=float(f"{_field(reader, 'llama.attention.layer_norm_rms_epsilon'):.7g}"),
        bos_id=_field(reader, "tokenizer.ggml.bos_token_id", -1),
        eos_ids=(eos,) if eos >= 0 else (),
        chat="tokenizer.chat_template" in reader.fields,
    )

    def tensor(tname, rows, cols):
        t = tensors.get(tname)
        if t is None:
            raise RomaError(f"{path}: tensor {tname} is missing")
        kind = t.tensor_type.name
        if kind == "Q4_1":
            return decode_q4_1(t.data, rows, cols)
        if kind == "Q8_0":
            return decode_q8_0(t.data, rows, cols)
        raise RomaError(f"{path}: tensor {tname} is {kind}; supported: Q4_1 linear weights, Q8_0 embedding")

    def norm(tname):
        t = tensors.get(tname)
        if t is None:
            raise RomaError(f"{path}: tensor {tname} is missing")
        return np.asarray(t.data, dtype=np.float32).reshape(-1).copy()

    layers = []
    for i in range(n_layers):
        proj = {}
        for gname, pname in _GGUF_PROJ.items():
            proj[pname] = tensor(f"blk.{i}.{gname}.weight", *cfg.projection_shape(pname))
        proj["q_proj"] = _unpermute_q(proj["q_proj"], n_heads)
        proj["k_proj"] = _unpermute_q(proj["k_proj"], n_kv)
        layers.append(LayerWeights(norm(f"blk.{i}.attn_norm.weight"), norm(f"blk.{i}.ffn_norm.weight"), proj))
    embed = tensor("token_embd.weight", vocab, dim)
    lm_head = tensor("output.weight", vocab, dim) if "output.weight" in tensors else None
    return Model(cfg, embed, layers, norm("output_norm.weight"), lm_head)
