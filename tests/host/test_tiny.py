"""Tiny seeded random LLaMA models (host/tiny.py): shapes, determinism, weight statistics, golden model run."""

import time

import numpy as np
import pytest

from roma.host.errors import RomaError
from roma.host.golden.model import GoldenModel
from roma.host.golden.numerics import VEC_FRAC
from roma.host.model import GROUP, PROJECTIONS
from roma.host.tiny import TINY_SHAPES, tiny_config, tiny_float_state, tiny_model


def test_shapes_fit_the_group_size():
    m = tiny_model("tiny-260k")
    c = m.config
    assert (c.dim, c.n_layers, c.n_heads, c.n_kv_heads, c.hidden, c.vocab, c.context) == (64, 5, 2, 1, 192, 512, 512)
    assert c.head_dim == 32 and c.head_dim % GROUP == 0 and c.hidden % GROUP == 0
    assert (c.rope_theta, c.norm_eps, c.chat) == (10000.0, 1e-5, False)
    assert m.tokenizer.convert_ids_to_tokens([c.bos_id, *c.eos_ids]) == ["<s>", "</s>"]
    assert len(m.tokenizer) == c.vocab and m.lm_head is None
    c1 = tiny_config("tiny-1m")
    assert (c1.dim, c1.n_layers, c1.n_heads, c1.n_kv_heads, c1.head_dim, c1.hidden, c1.context) == \
        (128, 4, 4, 2, 32, 384, 256)


def test_fast_and_deterministic():
    tiny_model("tiny-1m")  # pays for importing transformers once
    t = time.perf_counter()
    a = tiny_model("tiny-1m", seed=5)
    assert time.perf_counter() - t < 1.0
    b = tiny_model("tiny-1m", seed=5)
    c = tiny_model("tiny-1m", seed=6)
    qa, qb, qc = (x.layers[2].proj["down_proj"] for x in (a, b, c))
    assert np.array_equal(qa.codes, qb.codes) and np.array_equal(qa.d, qb.d) and np.array_equal(qa.m, qb.m)
    assert not np.array_equal(qa.codes, qc.codes)
    assert np.array_equal(a.embed.codes, b.embed.codes)


@pytest.mark.parametrize("bits", [4, 2])
def test_quantized_within_half_step_of_float(bits):
    state = tiny_float_state("tiny-260k", seed=3)
    m = tiny_model("tiny-260k", seed=3, bits=bits)
    pairs = [(state["model.embed_tokens.weight"], m.embed),
             (state["model.layers.4.self_attn.o_proj.weight"], m.layers[4].proj["o_proj"])]
    for w, q in pairs:
        assert q.bits == bits and q.codes.max() == (1 << bits) - 1
        err = np.abs(q.dequantize().astype(np.float64) - w).reshape(w.shape[0], -1, GROUP)
        assert np.all(err <= q.d[:, :, None] / 2 * (1 + 1e-6))
    assert np.array_equal(m.final_norm, state["model.norm.weight"])


def test_weight_statistics():
    state = tiny_float_state("tiny-1m", seed=0)
    cfg = tiny_config("tiny-1m")
    assert all(v.dtype == np.float32 for v in state.values())
    assert abs(state["model.embed_tokens.weight"].std() - 1.0) < 0.02
    for p in PROJECTIONS:
        w = state[f"model.layers.0.{'mlp' if p in ('gate_proj', 'up_proj', 'down_proj') else 'self_attn'}.{p}.weight"]
        assert w.shape == cfg.projection_shape(p)
        assert abs(w.std() * np.sqrt(w.shape[1]) - 1.0) < 0.05, p   # std 1/sqrt(fan_in)
    n = state["model.layers.1.input_layernorm.weight"]
    assert abs(n.mean() - 1.0) < 0.05 and 0.05 < n.std() < 0.15
    assert len(state) == 1 + cfg.n_layers * 9 + 1   # embed, per layer 7 linears + 2 norms, final norm (tied head)


def test_golden_model_runs():
    m = tiny_model("tiny-260k")
    g = GoldenModel(m)
    st = g.new_state()
    logits = g.step([1, 2, 3], st)
    assert logits.shape == (512,) and st.pos == 3
    x = logits / 2.0 ** VEC_FRAC
    assert np.all(np.isfinite(x)) and x.std() > 1.0   # not all-zero / degenerate
    assert g.step([4], st).shape == (512,) and st.pos == 4


def test_golden_embedding_matches_dequantized():
    m = tiny_model("tiny-260k")
    g = GoldenModel(m)
    tokens = np.array([1, 7, 300])
    got = g.embed_tokens(tokens) / 2.0 ** VEC_FRAC
    assert np.allclose(got, m.embed.dequantize()[tokens], atol=2.0 ** -VEC_FRAC)


def test_unknown_and_incomplete_shapes():
    with pytest.raises(RomaError, match="unknown tiny model 'tiny-9b'"):
        tiny_model("tiny-9b")
    with pytest.raises(RomaError, match="lacks hidden"):
        tiny_config({k: v for k, v in TINY_SHAPES["tiny-1m"].items() if k != "hidden"})
    with pytest.raises(RomaError, match="multiples of the group size"):
        tiny_float_state(dict(TINY_SHAPES["tiny-260k"], n_heads=8, n_kv_heads=4))   # stories260K's head_dim 8
