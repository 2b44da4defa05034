"""Writing PEFT-format adapter folders without torch, for tests."""

import json

import numpy as np
from safetensors.numpy import save_file

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def key(i, p, ab):
    kind = "self_attn" if p in ATTN else "mlp"
    return f"base_model.model.model.layers.{i}.{kind}.{p}.lora_{ab}.weight"


def write_adapter(path, model, rank=8, alpha=16, targets=("q_proj", "v_proj"), seed=1, b_scale=0.05,
                  dtype=np.float32, shapes=None, config=None, tensors=None):
    rng = np.random.default_rng(seed)
    t = {}
    for i in range(model.config.n_layers):
        for p in targets:
            rows, cols = (shapes or {}).get(p, model.config.projection_shape(p))
            t[key(i, p, "A")] = (rng.standard_normal((rank, cols)) / np.sqrt(cols)).astype(dtype)
            t[key(i, p, "B")] = (rng.standard_normal((rows, rank)) * b_scale).astype(dtype)
    t.update(tensors or {})
    path.mkdir(parents=True, exist_ok=True)
    save_file(t, str(path / "adapter_model.safetensors"))
    conf = {"peft_type": "LORA", "r": rank, "lora_alpha": alpha, "target_modules": list(targets),
            "bias": "none", "use_dora": False, "use_rslora": False, "fan_in_fan_out": False,
            "lora_dropout": 0.0, "task_type": "CAUSAL_LM"}
    conf.update(config or {})
    (path / "adapter_config.json").write_text(json.dumps(conf))
    return t
