"""ROM images and everything hardware and firmware consume, byte-identical for identical input.

Layout (FORMAT_VERSION 1), all integers little-endian:
  manifest.json           config, numerics constants, geometry, matrix table, files with sha256, hashes
  rom/bank_NNN.bin        weight codes of every layer matrix for MAC lane NNN: rows r with r % lanes == NNN,
                          in matrix order, each group of 32 codes one ROM word (code j at bits j*b..j*b+b-1)
  scales/bank_NNN.bin     per row of the bank, per group: dq int16, mq int16
  rowexp/bank_NNN.bin     per row of the bank: er int8
  head/…                  the embedding / LM head in the same three-file form (its own code width)
  tables/*.bin            norm weights (int32 Q16), RoPE cos/sin (int32 Q16), exp2 and sigmoid tables (int32)
  lora/…                  adapter A/B codes (int16) and row exponents (int8), if an adapter is given
  tokenizer/              the tokenizer (transformers save_pretrained)
  golden.json             golden test vectors: prompts, tokens, per-layer checksums
"""

import hashlib
import json
import math
import shutil
from pathlib import Path

import numpy as np

from .cache import write_if_changed
from .errors import RomaError
from .golden import functions as F
from .golden import numerics as N
from .golden.weights import to_device
from .model import PROJECTIONS
from .report import rom_bits

FORMAT_VERSION = 1
MAX_LANES = 256
DEFAULT_PROMPTS = ("Once upon a time", "The capital of France is")
VECTOR_NEW_TOKENS = 8


def matrix_list(model):
    """(name, QMatrix) in ROM order: layer by layer, projections in PROJECTIONS order."""
    return [(f"layers.{i}.{p}", L.proj[p]) for i, L in enumerate(model.layers) for p in PROJECTIONS]


def row_counts(model):
    c = model.config
    return sorted({c.projection_shape(p)[0] for p in PROJECTIONS} | {c.vocab})


def default_lanes(model):
    g = math.gcd(*row_counts(model))
    return max(d for d in range(1, MAX_LANES + 1) if g % d == 0)


def check_lanes(model, lanes):
    if lanes < 1 or lanes > MAX_LANES:
        raise RomaError(f"--lanes {lanes}: must be between 1 and {MAX_LANES}")
    bad = [r for r in row_counts(model) if r % lanes]
    if bad:
        g = math.gcd(*row_counts(model))
        ok = [d for d in range(1, MAX_LANES + 1) if g % d == 0]
        raise RomaError(f"--lanes {lanes} does not divide the row counts {bad} of {model.config.name}; "
                        f"lane counts that do: {ok}")


def pack_codes(codes, bits):
    """(rows, cols) codes -> bytes: each group of 32 codes is one word, code j at bits j*bits.

    Signed codes are stored in two's complement of their width."""
    c = np.asarray(codes).astype(np.int64) & ((1 << bits) - 1)
    per_byte = 8 // bits
    c = c.reshape(-1, per_byte)
    packed = np.zeros(c.shape[0], np.uint8)
    for j in range(per_byte):
        packed |= (c[:, j] << (j * bits)).astype(np.uint8)
    return packed.tobytes()


def unpack_codes(data, rows, cols, bits, signed=False):
    per_byte = 8 // bits
    b = np.frombuffer(data, np.uint8).astype(np.int64)
    c = np.stack([(b >> (j * bits)) & ((1 << bits) - 1) for j in range(per_byte)], axis=1).reshape(rows, cols)
    if signed:
        c = np.where(c >= 1 << (bits - 1), c - (1 << bits), c)
    return c


class _Writer:
    def __init__(self, out):
        self.out = Path(out)
        self.files = {}

    def put(self, rel, data):
        if isinstance(data, np.ndarray):
            data = data.tobytes()
        if isinstance(data, str):
            data = data.encode()
        write_if_changed(self.out / rel, data)
        self.files[rel] = hashlib.sha256(data).hexdigest()


def bank_layout(mats, lanes):
    """Per-bank bytes of codes, scales and row exponents for (name, DeviceMatrix) pairs, and the matrix table.

    The one definition of the ROM layout: export writes it, the gateware build reads it back.
    """
    table, word_off, row_off = [], 0, 0
    codes = [[] for _ in range(lanes)]
    scales = [[] for _ in range(lanes)]
    exps = [[] for _ in range(lanes)]
    for name, dm in mats:
        rows, cols = dm.shape
        groups = cols // N.GROUP
        for b in range(lanes):
            sel = slice(b, rows, lanes)
            codes[b].append(pack_codes(dm.codes[sel], dm.bits))
            scales[b].append(np.stack([dm.dq[sel], dm.mq[sel]], axis=-1).astype("<i2").tobytes())
            exps[b].append(dm.er[sel].astype("i1").tobytes())
        per_bank = rows // lanes
        table.append({"name": name, "rows": rows, "cols": cols, "bits": dm.bits, "signed": dm.signed,
                      "groups": groups, "rows_per_bank": per_bank, "word_offset": word_off,
                      "row_offset": row_off})
        word_off += per_bank * groups
        row_off += per_bank
    join = lambda parts: [b"".join(p) for p in parts]  # noqa: E731
    return join(codes), join(scales), join(exps), table, word_off


def _banked(writer, prefix, mats, lanes):
    """Write codes/scales/rowexp per bank; returns the matrix table and the words per bank."""
    codes, scales, exps, table, words = bank_layout(mats, lanes)
    for b in range(lanes):
        writer.put(f"{prefix}rom/bank_{b:03d}.bin", codes[b])
        writer.put(f"{prefix}scales/bank_{b:03d}.bin", scales[b])
        writer.put(f"{prefix}rowexp/bank_{b:03d}.bin", exps[b])
    return table, words


def numerics_constants():
    names = ["GROUP", "VEC_FRAC", "VEC_BITS", "ACT_BITS", "ACT_MAX", "SCALE_BITS", "ACC_FRAC"]
    consts = {k: getattr(N, k) for k in names}
    for k in ["MANT_BITS", "TABLE_BITS", "RSQRT_FRAC", "RECIP_FRAC", "NORM_IN_BITS", "GAMMA_FRAC", "MEAN_FRAC",
              "ROPE_FRAC", "EXP_FRAC", "EXP_TABLE_BITS", "LOG2E_Q", "PROB_FRAC", "SIG_FRAC", "SIG_STEP_BITS",
              "SIG_RANGE"]:
        consts[k] = getattr(F, k)
    return consts


def export(model, lora, out, lanes=None, prompts=None, vectors=True, context=None):
    from .golden.model import golden_for
    c = model.config
    lanes = lanes or default_lanes(model)
    check_lanes(model, lanes)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RomaError(f"{out}: exists and is not a folder")
    w = _Writer(out)

    layer_table, words = _banked(w, "", [(n, to_device(q)) for n, q in matrix_list(model)], lanes)
    head_table, head_words = _banked(w, "head/", [("embed", to_device(model.embed))]
                                     + ([("lm_head", to_device(model.lm_head))] if model.lm_head else []), lanes)

    ctx = min(context or c.context, c.context)
    cos, sin = F.rope_tables(c.head_dim, ctx, c.rope_theta)
    norms = [F.gamma_q(L.attn_norm) for L in model.layers] + [F.gamma_q(L.ffn_norm) for L in model.layers]
    tables = {
        "norms": np.concatenate(norms + [F.gamma_q(model.final_norm)]),
        "rope_cos": cos, "rope_sin": sin, "exp2": F.EXP2_TABLE, "sigmoid": F.SIG_TABLE,
        "rsqrt": F.RSQRT_TABLE, "recip": F.RECIP_TABLE,
    }
    table_meta = {}
    for k, v in tables.items():
        w.put(f"tables/{k}.bin", np.ascontiguousarray(v, dtype="<i4"))
        table_meta[k] = {"dtype": "int32", "shape": list(v.shape)}

    lora_meta = None
    if lora is not None:
        from .golden.lora import DeviceLora
        dev = DeviceLora(lora)
        entries = []
        for (i, p), path in sorted(dev.paths.items()):
            for part, dm in (("A", path.A_dev), ("B", path.B_dev)):
                rel = f"lora/layers.{i}.{p}.{part}"
                w.put(rel + ".codes.bin", dm.codes.astype("<i2"))
                w.put(rel + ".rowexp.bin", dm.er.astype("i1"))
                entries.append({"layer": i, "proj": p, "part": part, "shape": list(dm.shape)})
        lora_meta = {"name": lora.name, "hash": lora.hash, "rank": lora.rank, "rank_padded": dev.rank_padded,
                     "scaling": lora.scaling, "matrices": entries}

    if model.tokenizer is not None:
        tmp = out / ".tokenizer.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.tokenizer.save_pretrained(str(tmp))
        for f in sorted(tmp.iterdir()):
            w.put(f"tokenizer/{f.name}", f.read_bytes())
        shutil.rmtree(tmp)

    if vectors:
        w.put("golden.json", json.dumps(golden_vectors(model, golden_for(model, lora, context=ctx), prompts),
                                        indent=1))

    model_hash = hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(w.files.items())
                                        if not k.startswith(("lora/", "golden.json"))).encode()).hexdigest()
    rom = rom_bits(model)
    manifest = {
        "format": "roma-export", "format_version": FORMAT_VERSION,
        "model": c.to_dict(), "model_hash": model_hash, "source": model.source,
        "numerics": numerics_constants(),
        "geometry": {"lanes": lanes, "words_per_bank": words, "head_words_per_bank": head_words,
                     "word_bits": N.GROUP * layer_table[0]["bits"], "head_word_bits": N.GROUP * head_table[0]["bits"],
                     "context": ctx, "rom_bits": rom["total"], "code_bits": rom["code"],
                     "scale_bits": rom["scale"], "macs_per_token": c.macs_per_token(0)},
        "matrices": layer_table, "head": head_table, "tables": table_meta, "lora": lora_meta,
        "files": dict(sorted(w.files.items())),
    }
    write_if_changed(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def golden_vectors(model, golden, prompts=None):
    """Greedy tokens and per-layer residual checksums of the last prompt position, for a few prompts."""
    from .generate import prompt_tokens
    from .golden.model import checksum
    from .golden.sampler import SamplingParams, sample
    out = []
    for prompt in prompts or DEFAULT_PROMPTS:
        toks = prompt_tokens(model, prompt, chat=False) if model.tokenizer is not None else [1, 2, 3]
        state = golden.new_state()
        trace = []
        hidden = golden.forward(toks, state, trace=trace)
        logits = golden.logits(hidden[-1:])[0]
        sums = [checksum(t[-1]) for t in trace]
        gen, params, rng = [], SamplingParams(), 0
        for _ in range(VECTOR_NEW_TOKENS):
            tok, rng = sample(logits, params, rng)
            gen.append(tok)
            if state.pos >= golden.context:
                break
            logits = golden.step([tok], state)
        out.append({"prompt": prompt, "tokens": toks, "layer_checksums": sums,
                    "final_checksum": checksum(hidden[-1]), "greedy": gen})
    return {"vectors": out}
