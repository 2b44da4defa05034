"""The vector unit against the golden model, bit for bit, in Verilator (one cached build for all tests):
residual add, RMSNorm (three passes), SiLU-times-up, quantization, masked softmax, the attention V input,
RoPE and argmax; and the fused forms (NORM, SILU and SM_NORM quantizing their result, ADD computing the next
RMSNorm's pre-shift), which must equal their two-op sequences."""

import numpy as np
import pytest

from roma.gateware.verilator import verilator_available
from roma.host.golden import functions as F
from roma.host.golden.numerics import quantize_act, saturate, to_vector
from vector_harness import SHAPES, VectorBench, act_word_fields

pytestmark = [pytest.mark.verilator,
              pytest.mark.skipif(not verilator_available(), reason="verilator is not on PATH")]


@pytest.fixture(params=SHAPES, ids=lambda s: f"vec{s[0]}-{s[1]}")
def bench(request):
    vec_lanes, pipeline = request.param
    return VectorBench(vec_lanes=vec_lanes, pipeline=pipeline)


def assert_act_words(bench, base, x, frac=20):
    qa, ea = quantize_act(x, frac=frac)
    for g in range(len(x) // 32):
        mant, gsum, e = act_word_fields(bench.act[base + g])
        part = qa[g * 32:(g + 1) * 32]
        assert mant == part.tolist() and gsum == part.sum() and e == ea[g], f"group {g}"


def test_add_saturates(bench):
    rng = np.random.default_rng(1)
    a = to_vector(rng.normal(size=64) * 100)
    b = to_vector(rng.normal(size=64) * 100)
    a[0], b[0] = (1 << 46), (1 << 46) + 5       # past the 48-bit range: saturates
    a[1], b[1] = -(1 << 46), -(1 << 46)
    bench.load(0, a)
    bench.load(2, b)
    bench.cmd("add", a=0, b=2, dst=4, n=2)
    y = bench.read(4, 2)
    bench.run()
    assert np.array_equal(y.value, saturate(a + b))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 22552.0, 0.0])
def test_rmsnorm(bench, scale):
    rng = np.random.default_rng(2)
    gamma = rng.uniform(0.5, 3.0, 64)
    x = to_vector(rng.normal(size=64) * scale)
    bench.load(0, x)
    bench.load_gamma(0, F.gamma_q(gamma))
    bench.cmd("rms_max", a=0, n=2)
    bench.cmd("rms_ss", a=0, n=2)
    bench.cmd("norm", a=0, dst=8, n=2, aux=0)
    y = bench.read(8, 2)
    bench.run()
    assert np.array_equal(y.value, F.rmsnorm(x[None, :], F.gamma_q(gamma), F.eps_q(1e-5))[0])


def test_silu_mul(bench):
    rng = np.random.default_rng(3)
    g = to_vector(np.concatenate([rng.normal(size=60) * 4, [20, -20, 3000, -3000]]))
    u = to_vector(np.concatenate([rng.normal(size=60) * 4, [5, 5, 3000, 7]]))
    bench.load(0, g)
    bench.load(2, u)
    bench.cmd("silu", a=0, b=2, dst=4, n=2)
    y = bench.read(4, 2)
    bench.run()
    assert np.array_equal(y.value, F.silu_mul(g, u))


def test_quant_to_activation_words(bench):
    rng = np.random.default_rng(4)
    x = to_vector(rng.normal(size=96) * 10)
    x[32:64] = to_vector(rng.normal(size=32) * 1e-4)       # a group too small to shift
    x[64] = (1 << 47) - 1                                  # the largest vector value
    bench.load(0, x)
    bench.cmd("quant", a=0, abase=5, n=3)
    bench.run()
    qa, ea = quantize_act(x)
    for g in range(3):
        mant, gsum, e = act_word_fields(bench.act[5 + g])
        assert mant == qa[g * 32:(g + 1) * 32].tolist() and gsum == qa[g * 32:(g + 1) * 32].sum() and e == ea[g]


@pytest.mark.parametrize("count", [1, 45, 64])
def test_masked_softmax(bench, count):
    """Scaled scores -> probabilities over the first `count` positions, as the golden attention does."""
    rng = np.random.default_rng(count)
    raw = to_vector(rng.normal(size=64) * 8)
    raw[count:] = to_vector(1000.0)                    # stale cache rows past the position: must not count
    bench.load(0, raw)
    bench.cmd("sm_max", a=0, n=2, count=count)
    bench.cmd("sm_exp", a=0, dst=4, n=2, count=count)
    bench.cmd("sm_norm", a=4, dst=8, n=2)
    p = bench.read(8, 2)
    bench.run()
    scores = F.rshift_round(raw[:count] * F.attn_scale_q(32), 16)
    want = F.softmax(scores[None, :])[0]
    assert np.array_equal(p.value[:count], want) and not p.value[count:].any()


def test_avec_scales_probabilities_by_v_exponents(bench):
    rng = np.random.default_rng(6)
    p = rng.integers(0, 1 << 20, 64)
    p[40:] = 0
    ve = rng.integers(-20, 5, 64)
    bench.load(0, p)
    bench.load_ve(3, ve)
    bench.cmd("avec", a=0, abase=2, n=2, aux=3)
    bench.run()
    qa, ea = quantize_act(np.left_shift(p, ve + 20), frac=40)
    for g in range(2):
        mant, gsum, e = act_word_fields(bench.act[2 + g])
        assert mant == qa[g * 32:(g + 1) * 32].tolist() and gsum == qa[g * 32:(g + 1) * 32].sum() and e == ea[g]


def test_rope_in_place(bench):
    rng = np.random.default_rng(7)
    x = to_vector(rng.normal(size=96) * 5)            # three heads of 32
    bench.load(0, x)
    bench.cmd("rope", a=0, n=3, aux=37)
    y = bench.read(0, 3)
    bench.run()
    assert np.array_equal(y.value, F.rope(x[None, :], np.array([37]), bench.cos, bench.sin, 32)[0])


def test_argmax_first_maximum_within_count(bench):
    x = to_vector(np.arange(96) % 7)                  # maxima (6) at 6, 13, ...
    x[90] = to_vector(100.0)                          # past the count: ignored
    bench.load(0, x)
    bench.cmd("argmax", a=0, n=3, count=80)
    bench.peek("argmax")
    y = x.copy()
    y[77] = y[45] = to_vector(9.0)                    # a maximum tied across words: the first (45) wins
    bench.load(4, y)
    bench.cmd("argmax", a=4, n=3, count=80)
    bench.peek("argmax")
    z = x.copy()
    z[77] = to_vector(9.0)                            # one maximum, in the last word and a later beat
    bench.load(8, z)
    bench.cmd("argmax", a=8, n=3, count=80)
    bench.peek("argmax")
    bench.run()
    assert [v for name, v in bench.res.peek_log if name == "argmax"] == [6, 45, 77]


@pytest.mark.parametrize("vec_lanes, pipeline", SHAPES)
def test_rope_heads_of_64(vec_lanes, pipeline):
    """SmolLM2's head_dim: each head spans two words, rotated pairs (j, j + 32) across them."""
    bench = VectorBench(head_dim=64, context=64, theta=100000.0, vec_lanes=vec_lanes, pipeline=pipeline)
    rng = np.random.default_rng(8)
    x = to_vector(rng.normal(size=192) * 5)            # three heads of 64
    bench.load(0, x)
    bench.cmd("rope", a=0, n=3, aux=45)
    bench.cmd("add", a=0, b=10, dst=12, n=1)            # the next op runs right after the last write
    y = bench.read(0, 6)
    bench.run()
    assert np.array_equal(y.value, F.rope(x[None, :], np.array([45]), bench.cos, bench.sin, 64)[0])


@pytest.mark.parametrize("scale", [1e-3, 22552.0])
def test_add_leaves_the_next_norms_pre_shift(bench, scale):
    """ADD computes e from its (saturated) result exactly as RMS_MAX would from the stored vector."""
    rng = np.random.default_rng(11)
    a, b = to_vector(rng.normal(size=64) * scale), to_vector(rng.normal(size=64) * scale)
    bench.load(0, a)
    bench.load(2, b)
    bench.cmd("add", a=0, b=2, dst=4, n=2)
    bench.peek("e")
    bench.cmd("rms_max", a=4, n=2)
    bench.peek("e")
    bench.run()
    x = saturate(a + b)
    want = max(0, int(np.abs(x).max()).bit_length() - F.NORM_IN_BITS)
    es = [v for k, v in bench.res.peek_log if k == "e"]
    assert es == [want, want]


def test_add_right_after_an_op_without_the_tail(bench):
    """ADD started in the cycle the op before it is done (as the sequencer may): that op wrote without the
    quantizer tail (SILU without qout), whose last beats must not pass for ADD's own in the tail's max. Before
    it, QUANT leaves a large word max in the tail."""
    rng = np.random.default_rng(13)
    big = to_vector(rng.normal(size=32) * 20000)
    g, u = to_vector(rng.normal(size=32) * 4), to_vector(rng.normal(size=32) * 4)
    a, b = to_vector(rng.normal(size=32) * 1e-3), to_vector(rng.normal(size=32) * 1e-3)
    for addr, v in ((0, big), (1, g), (2, u), (4, a), (5, b)):
        bench.load(addr, v)
    bench.cmd("quant", a=0, n=1, abase=0)
    bench.cmd("silu", a=1, b=2, dst=3, n=1, next_at_done=True)
    bench.cmd("add", a=4, b=5, dst=6, n=1)
    bench.peek("e")
    y = bench.read(6, 1)
    bench.run()
    x = saturate(a + b)
    assert np.array_equal(y.value, x)
    want = max(0, int(np.abs(x).max()).bit_length() - F.NORM_IN_BITS)
    assert [v for k, v in bench.res.peek_log if k == "e"] == [want]


def test_fused_norm_silu_and_probabilities_quantize_like_their_pairs(bench):
    rng = np.random.default_rng(12)
    gamma = rng.uniform(0.5, 3.0, 64)
    x = to_vector(rng.normal(size=64) * 7)
    g, u = to_vector(rng.normal(size=64) * 4), to_vector(rng.normal(size=64) * 4)
    e_raw = rng.integers(0, 1 << 20, 64)
    ve = rng.integers(-20, 5, 64)
    bench.load(0, x)
    bench.load(2, g)
    bench.load(4, u)
    bench.load(6, e_raw)
    bench.load_gamma(0, F.gamma_q(gamma))
    bench.load_ve(3, ve)
    bench.cmd("rms_max", a=0, n=2)
    bench.cmd("rms_ss", a=0, n=2)
    bench.cmd("norm", a=0, dst=8, n=2, aux=0, qout=1, abase=0)
    bench.cmd("silu", a=2, b=4, dst=10, n=2, qout=1, abase=2)
    bench.cmd("sm_max", a=6, n=2, count=64)        # sets nothing SM_NORM uses; SM_EXP sets Rz
    bench.cmd("sm_exp", a=6, dst=12, n=2, count=50)
    bench.cmd("sm_norm", a=12, dst=14, n=2, aux=3, qout=1, abase=4)
    hn, mm, p = bench.read(8, 2), bench.read(10, 2), bench.read(14, 2)
    bench.run()
    assert np.array_equal(hn.value, F.rmsnorm(x[None, :], F.gamma_q(gamma), F.eps_q(1e-5))[0])
    assert np.array_equal(mm.value, F.silu_mul(g, u))
    assert_act_words(bench, 0, hn.value)
    assert_act_words(bench, 2, mm.value)
    assert p.value[:50].any() and not p.value[50:].any()
    assert_act_words(bench, 4, np.left_shift(p.value, ve + 20), frac=40)
