"""LoRA adapters: loading and validation (host/lora.py) and the device form (host/golden/lora.py)."""

import json

import numpy as np
import pytest

from roma.host.errors import RomaError
from roma.host.golden.lora import DeviceLora, padded_rank
from roma.host.golden.model import GoldenModel
from roma.host.golden.numerics import from_vector, quantize_act, to_vector
from roma.host.lora import MAX_LORA_RANK, load_adapter
from roma.host.model import GROUP, PROJECTIONS, LayerWeights, Model, ModelConfig, QMatrix

from peft_files import key, write_adapter  # noqa: E402

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")


def _q4(rng, rows, cols):
    d = rng.uniform(0.002, 0.01, (rows, cols // GROUP)).astype(np.float32)
    return QMatrix(rng.integers(0, 16, (rows, cols), dtype=np.uint8), d, (-8 * d).astype(np.float32), 4)


def tiny(seed=0):
    """A random 2-layer model: dim 64, 2 heads of 32, 1 kv head, hidden 128, vocab 256."""
    rng = np.random.default_rng(seed)
    c = ModelConfig(name="tiny-test", dim=64, n_layers=2, n_heads=2, n_kv_heads=1, hidden=128, vocab=256,
                    context=64, rope_theta=10000.0, norm_eps=1e-5)
    layers = [LayerWeights(rng.uniform(0.8, 1.2, c.dim).astype(np.float32),
                           rng.uniform(0.8, 1.2, c.dim).astype(np.float32),
                           {p: _q4(rng, *c.projection_shape(p)) for p in PROJECTIONS})
              for _ in range(c.n_layers)]
    embed = QMatrix(rng.integers(-127, 128, (c.vocab, c.dim), dtype=np.int8),
                    rng.uniform(0.005, 0.01, (c.vocab, c.dim // GROUP)).astype(np.float32),
                    np.zeros((c.vocab, c.dim // GROUP), np.float32), 8, signed=True)
    return Model(c, embed, layers, np.ones(c.dim, np.float32), tokenizer=None).validate()


@pytest.fixture(scope="module")
def model():
    return tiny()


def test_load_and_float_deltas(tmp_path, model):
    t = write_adapter(tmp_path / "a", model, rank=8, alpha=16)
    lora = load_adapter(tmp_path / "a", model)
    assert lora.rank == 8 and lora.alpha == 16 and lora.scaling == 2.0
    assert lora.targets == {"q_proj", "v_proj"}
    assert set(lora.layers) == {(i, p) for i in range(2) for p in ("q_proj", "v_proj")}
    assert lora.name == "a" and len(lora.hash) == 64
    deltas = lora.float_deltas()
    assert deltas is lora.float_deltas()  # cached
    for (i, p), d in deltas.items():
        A, B = t[key(i, p, "A")], t[key(i, p, "B")]
        assert d.dtype == np.float32 and d.shape == model.config.projection_shape(p)
        np.testing.assert_allclose(d, 2.0 * B.astype(np.float64) @ A.astype(np.float64), rtol=1e-5, atol=1e-7)


def test_rslora_regex_targets_and_half_precision(tmp_path, model):
    write_adapter(tmp_path / "a", model, rank=4, alpha=8, targets=("gate_proj", "down_proj"), dtype=np.float16,
                  config={"use_rslora": True, "target_modules": r".*\.(gate_proj|down_proj)"})
    lora = load_adapter(tmp_path / "a", model)
    assert lora.scaling == pytest.approx(8 / 2) and lora.targets == {"gate_proj", "down_proj"}


def test_bfloat16(tmp_path, model):
    t = write_adapter(tmp_path / "a", model, rank=4, alpha=4)
    # rewrite as bf16 by hand (numpy has no bfloat16): truncate float32 to its high 16 bits
    import struct
    header, body, off = {}, b"", 0
    for name, a in sorted(t.items()):
        raw = (a.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        body += raw
        off += len(raw)
    h = json.dumps(header).encode()
    (tmp_path / "a" / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(h)) + h + body)
    lora = load_adapter(tmp_path / "a", model)
    A, _ = lora.layers[(0, "q_proj")]
    want = (t[key(0, "q_proj", "A")].view(np.uint32) & 0xFFFF0000).view(np.float32)
    np.testing.assert_array_equal(A, want)


@pytest.mark.parametrize("case, words", [
    ("missing", "adapter file not found"),
    ("shape", "adapter for another base: layer 0 q_proj lora_A has shape (8, 96), base expects (8, 64)"),
    ("rank", f"adapter rank 128 exceeds the device maximum {MAX_LORA_RANK}"),
    ("nan", "NaN or infinite values in"),
    ("target", "cannot adapt: embed_tokens"),
    ("dora", "DoRA"),
    ("bias", "bias"),
    ("peft", "peft_type"),
    ("layer", "adapter for another base"),
])
def test_errors(tmp_path, model, case, words):
    p = tmp_path / "a"
    if case == "missing":
        write_adapter(p, model)
        (p / "adapter_model.safetensors").unlink()
    elif case == "shape":
        write_adapter(p, model, shapes={"q_proj": (64, 96)})
    elif case == "rank":
        write_adapter(p, model, rank=128)
    elif case == "nan":
        write_adapter(p, model, tensors={key(1, "v_proj", "B"): np.full((32, 8), np.nan, np.float32)})
    elif case == "target":
        write_adapter(p, model, config={"target_modules": ["q_proj", "v_proj", "embed_tokens"]})
    elif case == "dora":
        write_adapter(p, model, config={"use_dora": True})
    elif case == "bias":
        write_adapter(p, model, config={"bias": "all"})
    elif case == "peft":
        write_adapter(p, model, config={"peft_type": "IA3"})
    elif case == "layer":
        write_adapter(p, model, tensors={key(5, "q_proj", "A"): np.zeros((8, 64), np.float32),
                                         key(5, "q_proj", "B"): np.zeros((64, 8), np.float32)})
    with pytest.raises(RomaError, match=None) as e:
        load_adapter(p, model)
    assert words in str(e.value)


def test_missing_directory(tmp_path, model):
    with pytest.raises(RomaError, match="adapter file not found"):
        load_adapter(tmp_path / "nope", model)


@pytest.mark.parametrize("rank", [1, 8, 33, 64])
def test_device_delta_matches_float(tmp_path, model, rank):
    write_adapter(tmp_path / "a", model, rank=rank, alpha=2 * rank, targets=PROJECTIONS, seed=rank)
    lora = load_adapter(tmp_path / "a", model)
    dev = DeviceLora(lora)
    assert dev.rank_padded == padded_rank(rank) == (32 if rank <= 32 else 64)
    assert dev.get(0, "q_proj") is not None
    rng = np.random.default_rng(rank)
    for (i, p), delta in lora.float_deltas().items():
        cols = model.config.projection_shape(p)[1]
        x = rng.standard_normal((3, cols)) * 2.0
        qa, ea = quantize_act(to_vector(x))
        xq = (qa.reshape(3, -1, GROUP) * np.ldexp(1.0, ea)[..., None]).reshape(3, cols)
        got = from_vector(dev.get(i, p)(qa, ea))
        want = xq @ delta.astype(np.float64).T
        err = np.abs(got - want).max() / np.abs(want).max()
        assert err < 1e-3, (i, p, err)


def test_device_lora_uncovered_is_none(tmp_path, model):
    write_adapter(tmp_path / "a", model, targets=("q_proj",))
    dev = DeviceLora(load_adapter(tmp_path / "a", model))
    assert dev.get(0, "v_proj") is None and dev.get(1, "q_proj") is not None


def test_golden_model_with_adapter(tmp_path, model):
    write_adapter(tmp_path / "a", model, targets=("q_proj", "v_proj", "down_proj"), b_scale=0.2)
    lora = load_adapter(tmp_path / "a", model)
    tokens = [1, 17, 42, 200]
    base = GoldenModel(model, context=16)
    with_lora = GoldenModel(model, lora=DeviceLora(lora), context=16)
    h0 = base.forward(tokens, base.new_state())
    h1 = with_lora.forward(tokens, with_lora.new_state())
    assert h0.shape == h1.shape == (4, 64)
    assert np.abs(from_vector(h1) - from_vector(h0)).max() > 1e-2
    # a zero-B adapter (peft's initial state) changes nothing, bit for bit
    write_adapter(tmp_path / "z", model, b_scale=0.0)
    zero = GoldenModel(model, lora=DeviceLora(load_adapter(tmp_path / "z", model)), context=16)
    np.testing.assert_array_equal(zero.forward(tokens, zero.new_state()), h0)


@pytest.mark.float
def test_make_adapter_trains_and_loads(tmp_path, model):
    pytest.importorskip("torch")
    pytest.importorskip("peft")
    from roma.host.make_adapter import make_adapter
    losses = make_adapter(model, tmp_path / "ad", steps=2, rank=4, chunk=32)
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert (tmp_path / "ad" / "adapter_config.json").exists()
    assert (tmp_path / "ad" / "adapter_model.safetensors").exists()
    lora = load_adapter(tmp_path / "ad", model)
    assert lora.rank == 4 and lora.scaling == 2.0 and lora.targets == {"q_proj", "v_proj"}
    assert set(lora.layers) == {(i, p) for i in range(2) for p in ("q_proj", "v_proj")}
    assert all(np.abs(B).max() > 0 for _, B in lora.layers.values())
