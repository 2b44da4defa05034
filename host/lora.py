"""PEFT-format LoRA adapters: loaded, checked against the base model, and kept as float32 A and B.

An adapter is a directory holding ``adapter_config.json`` and ``adapter_model.safetensors`` as written by
``peft``'s ``save_pretrained``. Tensors are named like
``base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`` (r x in) and ``...lora_B.weight``
(out x r); the MLP projections sit under ``.mlp.``. The adapted weight is
``W + scaling * B @ A`` with ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with ``use_rslora``).

Every problem is a RomaError in one line: a missing file, an adapter made for another base, a rank beyond the
device's capacity, a feature the device cannot run (DoRA, trained biases, extra modules), or non-finite values.
"""

import hashlib
import json
import math
import re
from pathlib import Path

import numpy as np

from .errors import RomaError
from .model import PROJECTIONS
from .safetensors_io import SafetensorsFiles

MAX_LORA_RANK = 64  # the device's LoRA capacity: rank vector buffer of 64 entries (two groups of 32)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")

_KEY = re.compile(r"^(?:base_model\.model\.)?(?:model\.)?layers\.(\d+)\.(self_attn|mlp)\.(\w+?)"
                  r"\.lora_([AB])(?:\.default)?\.weight$")



class Lora:
    """A validated adapter: float32 A (r, in) and B (out, r) per (layer, projection)."""

    def __init__(self, name, rank, alpha, scaling, layers, hash, config=None, path=None):
        self.name = name
        self.rank = rank
        self.alpha = alpha
        self.scaling = scaling
        self.layers = layers            # (layer, proj) -> (A, B)
        self.hash = hash
        self.config = config or {}
        self.path = path
        self._deltas = None

    @property
    def targets(self):
        return {p for _, p in self.layers}

    def float_deltas(self):
        """(layer, proj) -> scaling * B @ A as float32 (out, in); computed once."""
        if self._deltas is None:
            self._deltas = {k: (self.scaling * (B.astype(np.float64) @ A.astype(np.float64))).astype(np.float32)
                            for k, (A, B) in self.layers.items()}
        return self._deltas

    def __repr__(self):
        return (f"Lora({self.name!r}, rank={self.rank}, alpha={self.alpha}, targets={sorted(self.targets)}, "
                f"layers={len({i for i, _ in self.layers})})")


def _adapter_files(path):
    path = Path(path)
    if path.is_file() and path.name in (CONFIG_FILE, WEIGHTS_FILE):
        path = path.parent
    if not path.exists():
        raise RomaError(f"adapter file not found: {path}")
    if not path.is_dir():
        raise RomaError(f"{path}: not an adapter (expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
    cfg, wts = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg.is_file():
        raise RomaError(f"adapter file not found: {cfg}")
    if not wts.is_file():
        if (path / "adapter_model.bin").is_file():
            raise RomaError(f"adapter file not found: {wts} (only safetensors adapters are supported, "
                            f"not adapter_model.bin: re-save with save_pretrained(safe_serialization=True))")
        raise RomaError(f"adapter file not found: {wts}")
    return path, cfg, wts


def _read_config(cfg):
    try:
        conf = json.loads(cfg.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RomaError(f"{cfg}: not readable as JSON ({e})")
    if not isinstance(conf, dict):
        raise RomaError(f"{cfg}: not a JSON object")
    return conf


def read_safetensors(path):
    """name -> float32 array for F32/F16/BF16/F64 tensors (see safetensors_io)."""
    return SafetensorsFiles([path], what="LoRA weights").read_all()


def _targets(conf, where):
    """The projection names the config's target_modules selects (a list of names or a regex string)."""
    tm = conf.get("target_modules")
    if tm is None:
        raise RomaError(f"{where}: no target_modules")
    if isinstance(tm, str):
        if tm == "all-linear":
            return set(PROJECTIONS)
        try:
            rx = re.compile(tm)
        except re.error as e:
            raise RomaError(f"{where}: target_modules {tm!r} is not a valid regular expression ({e})")
        found = set()
        for p in PROJECTIONS:
            kind = "self_attn" if p in ATTN else "mlp"
            full = f"model.layers.0.{kind}.{p}"
            if rx.fullmatch(p) or rx.fullmatch(full) or rx.fullmatch(f"base_model.model.{full}"):
                found.add(p)
        if not found:
            raise RomaError(f"{where}: target_modules {tm!r} matches none of the adaptable projections "
                            f"({', '.join(PROJECTIONS)})")
        return found
    if not isinstance(tm, (list, tuple)) or not all(isinstance(t, str) for t in tm):
        raise RomaError(f"{where}: target_modules must be a list of module names or a regex string")
    found, unknown = set(), []
    for t in tm:
        last = t.rsplit(".", 1)[-1]
        if last in PROJECTIONS:
            found.add(last)
        else:
            unknown.append(t)
    if unknown:
        raise RomaError(f"adapter targets modules the device cannot adapt: {', '.join(unknown)} "
                        f"(supported: {', '.join(PROJECTIONS)})")
    if not found:
        raise RomaError(f"{where}: target_modules is empty")
    return found


def _check_config(conf, where):
    peft_type = conf.get("peft_type")
    if str(peft_type).upper() != "LORA":
        raise RomaError(f"{where}: peft_type {peft_type!r} is not supported (only LORA adapters)")
    if conf.get("use_dora"):
        raise RomaError("DoRA adapters (use_dora) are not supported: the device adds a plain LoRA delta")
    bias = conf.get("bias", "none")
    if bias not in (None, "none"):
        raise RomaError(f"adapter bias {bias!r} is not supported: the device's projections have no bias "
                        f"(train with bias='none')")
    if conf.get("lora_bias"):
        raise RomaError("adapters with a lora_B bias (lora_bias) are not supported")
    if conf.get("modules_to_save"):
        raise RomaError(f"adapter saves whole modules ({', '.join(map(str, conf['modules_to_save']))}): "
                        f"not supported, the device's base weights are fixed")
    for k in ("rank_pattern", "alpha_pattern"):
        if conf.get(k):
            raise RomaError(f"{where}: per-module {k} is not supported (one rank and alpha for all modules)")
    for k, what in (("target_parameters", "LoRA on raw parameters (target_parameters)"),
                    ("alora_invocation_tokens", "activated LoRA (alora_invocation_tokens)"),
                    ("use_qalora", "QALoRA (use_qalora)"),
                    ("trainable_token_indices", "trainable tokens (trainable_token_indices)")):
        if conf.get(k):
            raise RomaError(f"{what} adapters are not supported: the device adds a plain LoRA delta")
    if conf.get("layer_replication"):
        raise RomaError(f"{where}: layer_replication is not supported")
    r = conf.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise RomaError(f"{where}: rank r must be a positive integer, got {r!r}")
    if r > MAX_LORA_RANK:
        raise RomaError(f"adapter rank {r} exceeds the device maximum {MAX_LORA_RANK}")
    alpha = conf.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or not math.isfinite(alpha):
        raise RomaError(f"{where}: lora_alpha must be a number, got {alpha!r}")
    return r, float(alpha)


def load_adapter(path, model):
    """Read a PEFT LoRA adapter directory and validate it against the base Model; returns a Lora."""
    path, cfg, wts = _adapter_files(path)
    conf = _read_config(cfg)
    r, alpha = _check_config(conf, cfg)
    allowed = _targets(conf, cfg)
    scaling = alpha / math.sqrt(r) if conf.get("use_rslora") else alpha / r
    # fan_in_fan_out only concerns Conv1D bases (GPT-2); for Linear layers peft itself resets it to False,
    # and the saved A (r, in) and B (out, r) are the same either way.

    tensors = read_safetensors(wts)
    c = model.config
    parts = {}
    for name, a in tensors.items():
        m = _KEY.match(name)
        if not m:
            raise RomaError(f"adapter tensor {name} is not a LoRA weight of a projection the device can adapt")
        layer, kind, proj, ab = int(m.group(1)), m.group(2), m.group(3), m.group(4)
        if proj not in PROJECTIONS or kind != ("self_attn" if proj in ATTN else "mlp"):
            raise RomaError(f"adapter targets modules the device cannot adapt: {kind}.{proj} "
                            f"(supported: {', '.join(PROJECTIONS)})")
        if proj not in allowed:
            raise RomaError(f"adapter tensor {name}: {proj} is not in the config's target_modules")
        if layer >= c.n_layers:
            raise RomaError(f"adapter for another base: it adapts layer {layer}, base {c.name} has "
                            f"{c.n_layers} layers")
        rows, cols = c.projection_shape(proj)
        want = (r, cols) if ab == "A" else (rows, r)
        if a.shape != want:
            if a.ndim == 2 and (a.shape[0] if ab == "A" else a.shape[1]) > MAX_LORA_RANK:
                raise RomaError(f"adapter rank {a.shape[0] if ab == 'A' else a.shape[1]} exceeds the device "
                                f"maximum {MAX_LORA_RANK}")
            raise RomaError(f"adapter for another base: layer {layer} {proj} lora_{ab} has shape "
                            f"{tuple(a.shape)}, base expects {want}")
        if not np.all(np.isfinite(a)):
            raise RomaError(f"NaN or infinite values in adapter tensor {name}")
        if (layer, proj, ab) in parts:
            raise RomaError(f"adapter has two lora_{ab} tensors for layer {layer} {proj}")
        parts[(layer, proj, ab)] = np.ascontiguousarray(a, dtype=np.float32)

    if not parts:
        raise RomaError(f"{wts}: the adapter holds no LoRA weights")
    layers = {}
    for (layer, proj, ab) in sorted(parts):
        other = "B" if ab == "A" else "A"
        if (layer, proj, other) not in parts:
            raise RomaError(f"adapter incomplete: layer {layer} {proj} has lora_{ab} but no lora_{other}")
        layers[(layer, proj)] = (parts[(layer, proj, "A")], parts[(layer, proj, "B")])

    h = hashlib.sha256()
    h.update(cfg.read_bytes())
    h.update(wts.read_bytes())
    name = path.resolve().name
    return Lora(name, r, alpha, scaling, layers, h.hexdigest(), conf, path)
