"""Importing HF LLaMA checkpoint directories (host/import_hf.py): round trip, bf16, shards, and the errors."""

import json
import struct
from dataclasses import replace

import numpy as np
import pytest

from roma.host.errors import RomaError
from roma.host.import_hf import load_hf_dir, save_hf_dir
from roma.host.quantize import quantize
from roma.host.tiny import (TINY_SHAPES, model_from_float_state, tiny_config, tiny_float_state, tiny_model,
                             tiny_tokenizer)

NAME = "tiny-260k"


def _matrices(model):
    yield "embed", model.embed
    if model.lm_head is not None:
        yield "lm_head", model.lm_head
    for i, layer in enumerate(model.layers):
        for p, q in layer.proj.items():
            yield f"{i}.{p}", q


def _assert_same_weights(a, b):
    ma, mb = dict(_matrices(a)), dict(_matrices(b))
    assert ma.keys() == mb.keys()
    for k in ma:
        assert ma[k].bits == mb[k].bits, k
        for f in ("codes", "d", "m"):
            assert np.array_equal(getattr(ma[k], f), getattr(mb[k], f)), (k, f)
    assert np.array_equal(a.final_norm, b.final_norm)
    for la, lb in zip(a.layers, b.layers):
        assert np.array_equal(la.attn_norm, lb.attn_norm) and np.array_equal(la.ffn_norm, lb.ffn_norm)


def _save(tmp_path, state=None, config_edit=None, shape=NAME):
    tok = tiny_tokenizer(shape)
    state = tiny_float_state(shape) if state is None else state
    save_hf_dir(state, tiny_config(shape, tok), tok, tmp_path)
    if config_edit:
        cfg = json.loads((tmp_path / "config.json").read_text())
        config_edit(cfg)
        (tmp_path / "config.json").write_text(json.dumps(cfg))
    return tmp_path


def _write_safetensors(path, tensors):
    """An independent minimal safetensors writer (bf16 given as raw uint16 bit patterns)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, arr) in tensors.items():
        raw = np.ascontiguousarray(arr).astype("<u2" if dtype == "BF16" else "<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


@pytest.mark.parametrize("bits", [4, 2])
def test_round_trip_equals_tiny_model(tmp_path, bits):
    m = tiny_model(NAME, bits=bits)
    loaded = load_hf_dir(_save(tmp_path), bits=bits)
    assert replace(loaded.config, name=m.config.name) == m.config
    assert loaded.lm_head is None and loaded.embed.bits == bits
    _assert_same_weights(m, loaded)
    text = "Once upon a time"
    assert loaded.tokenizer.encode(text) == m.tokenizer.encode(text)


def test_untied_head_and_tie_flag(tmp_path):
    shape = dict(TINY_SHAPES[NAME], name="untied", tied=False)
    state = tiny_float_state(shape, seed=1)
    d = _save(tmp_path, state, shape=shape)
    m = load_hf_dir(d, with_tokenizer=False)
    assert m.lm_head is not None
    assert np.array_equal(m.lm_head.codes, quantize(state["lm_head.weight"], 4).codes)
    assert not np.array_equal(m.lm_head.codes, m.embed.codes)
    # tie_word_embeddings wins over a stored lm_head, as in transformers
    cfg = json.loads((d / "config.json").read_text())
    cfg["tie_word_embeddings"] = True
    (d / "config.json").write_text(json.dumps(cfg))
    assert load_hf_dir(d, with_tokenizer=False).lm_head is None


def test_bf16_weights(tmp_path):
    state = tiny_float_state(NAME, seed=2)
    bits16 = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in state.items()}
    bf16_as_f32 = {k: (b.astype(np.uint32) << 16).view(np.float32) for k, b in bits16.items()}
    assert bits16["model.norm.weight"].dtype == np.uint16
    _save(tmp_path, state)
    (tmp_path / "model.safetensors").unlink()
    _write_safetensors(tmp_path / "model.safetensors", {k: ("BF16", b) for k, b in bits16.items()})
    m = load_hf_dir(tmp_path, with_tokenizer=False)
    assert np.array_equal(m.final_norm, bf16_as_f32["model.norm.weight"])  # bf16 read exactly
    ref = model_from_float_state(bf16_as_f32, m.config)
    _assert_same_weights(ref, m)


def test_bf16_known_values(tmp_path):
    from roma.host.safetensors_io import SafetensorsFiles

    vals = np.array([[1.0, -2.5, 0.0, 3.140625], [65280.0, -1e-3, 2.0 ** -130, -0.0]], np.float32)
    bits16 = (vals.view(np.uint32) >> 16).astype(np.uint16)
    f = tmp_path / "x.safetensors"
    _write_safetensors(f, {"a": ("F32", np.ones((1, 2), np.float32)), "x": ("BF16", bits16)})
    got = SafetensorsFiles([f]).get("x")
    assert got.dtype == np.float32 and got.shape == (2, 4)
    expected = (bits16.astype(np.uint32) << 16).view(np.float32)
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    assert got[0].tolist() == [1.0, -2.5, 0.0, 3.140625]


def test_sharded_checkpoint(tmp_path):
    state = tiny_float_state(NAME)
    whole = load_hf_dir(_save(tmp_path / "whole", state), with_tokenizer=False)
    from safetensors.numpy import save_file

    d = _save(tmp_path / "sharded", state)
    (d / "model.safetensors").unlink()
    names = sorted(state)
    save_file({k: state[k] for k in names[::2]}, str(d / "model-00001-of-00002.safetensors"))
    save_file({k: state[k] for k in names[1::2]}, str(d / "model-00002-of-00002.safetensors"))
    _assert_same_weights(whole, load_hf_dir(d, with_tokenizer=False))


def test_config_fields(tmp_path):
    def edit(c):
        del c["rope_parameters"]
        c["rope_theta"] = 500000.0
        c["eos_token_id"] = [2, 7]
        c["rms_norm_eps"] = 1e-6

    cfg = load_hf_dir(_save(tmp_path, config_edit=edit), with_tokenizer=False, name="x").config
    assert (cfg.name, cfg.rope_theta, cfg.eos_ids, cfg.norm_eps, cfg.bos_id) == ("x", 500000.0, (2, 7), 1e-6, 1)
    assert cfg.head_dim == 32 and cfg.chat is False


def test_chat_template_detected(tmp_path):
    d = _save(tmp_path)
    tc = json.loads((d / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (d / "tokenizer_config.json").write_text(json.dumps(tc))
    assert load_hf_dir(d, with_tokenizer=False).config.chat is True
    assert load_hf_dir(d).config.chat is True


def test_unsupported_architecture(tmp_path):
    d = _save(tmp_path, config_edit=lambda c: c.update(model_type="mistral"))
    with pytest.raises(RomaError) as e:
        load_hf_dir(d)
    assert str(e.value) == f"{d}: architecture 'mistral' is not supported (only LLaMA-family models)"


def test_rope_scaling_rejected(tmp_path):
    d = _save(tmp_path, config_edit=lambda c: c.update(rope_parameters={"rope_type": "llama3", "factor": 8.0}))
    with pytest.raises(RomaError, match="rope scaling 'llama3' is not supported"):
        load_hf_dir(d)
    d2 = _save(tmp_path / "b", config_edit=lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}))
    with pytest.raises(RomaError, match="rope scaling 'linear' is not supported"):
        load_hf_dir(d2)


def test_missing_tensor(tmp_path):
    state = tiny_float_state(NAME)
    del state["model.layers.3.mlp.up_proj.weight"]
    with pytest.raises(RomaError, match=r"tensor model\.layers\.3\.mlp\.up_proj\.weight is missing"):
        load_hf_dir(_save(tmp_path, state))


def test_nan_weights(tmp_path):
    state = tiny_float_state(NAME)
    state["model.layers.0.self_attn.k_proj.weight"][5, 7] = np.nan
    with pytest.raises(RomaError, match=r"^NaN or infinite weights in model\.layers\.0\.self_attn\.k_proj\.weight$"):
        load_hf_dir(_save(tmp_path, state))


def test_wrong_shape(tmp_path):
    state = tiny_float_state(NAME)
    state["model.layers.1.mlp.down_proj.weight"] = np.zeros((64, 160), np.float32)
    with pytest.raises(RomaError, match=r"down_proj\.weight has shape \(64, 160\), expected \(64, 192\)"):
        load_hf_dir(_save(tmp_path, state))


def test_missing_directory_config_and_weights(tmp_path):
    with pytest.raises(RomaError, match="model directory not found"):
        load_hf_dir(tmp_path / "nope")
    with pytest.raises(RomaError, match="no config.json"):
        load_hf_dir(tmp_path)
    d = _save(tmp_path / "m")
    (d / "model.safetensors").unlink()
    with pytest.raises(RomaError, match=r"no \*\.safetensors weight files"):
        load_hf_dir(d)
    (d / "model.safetensors").write_bytes(b"\x01")
    with pytest.raises(RomaError, match="not a readable safetensors file"):
        load_hf_dir(d)


def test_bad_bits(tmp_path):
    with pytest.raises(RomaError, match="bits must be 4 or 2, got 3"):
        load_hf_dir(tmp_path, bits=3)
