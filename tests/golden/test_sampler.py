"""sampler.py: greedy argmax, xorshift32, and temperature / top-k / top-p sampling against a pure-Python
re-statement of the module's integer definition."""

import math

import numpy as np
import pytest

from roma.host.errors import RomaError
from roma.host.golden.functions import LOG2E_Q, exp_neg
from roma.host.golden.numerics import VEC_MAX, to_vector
from roma.host.golden.sampler import DEFAULT_SEED, MAX_TOP_K, SamplingParams, sample, xorshift32

M32 = 1 << 32


def xorshift32_oracle(x):
    """Marsaglia's xorshift32 (13, 17, 5), written with arithmetic instead of masks."""
    x ^= (x * 8192) % M32
    x ^= x // 131072
    x ^= (x * 32) % M32
    return x


def sample_oracle(logits, temperature, top_k, top_p, state):
    """The docstring's definition, one candidate at a time with Python ints."""
    l = [int(v) for v in logits]
    temp_q = round(temperature * 256)
    if temp_q == 0:
        return max(range(len(l)), key=lambda i: (l[i], -i)), state
    cands = sorted(range(len(l)), key=lambda i: (-l[i], i))[:min(top_k, len(l))]
    w = [int(exp_neg(np.array([-(((l[cands[0]] - l[c]) << 8) // temp_q)]))[0]) for c in cands]
    need = (sum(w) * round(top_p * 65536)) >> 16
    run, keep = 0, len(cands)
    for i, wi in enumerate(w):
        run += wi
        if run >= need:
            keep = i + 1
            break
    state = xorshift32_oracle(state)
    u = (state * sum(w[:keep])) >> 32
    run = 0
    for i in range(keep):
        run += w[i]
        if run > u:
            return cands[i], state
    raise AssertionError("no candidate selected")


def test_greedy_first_argmax():
    p = SamplingParams()                       # temperature 0
    assert p.temp_q == 0
    assert sample(np.array([3, 7, 7, 1, 7]), p, 123) == (1, 123)      # ties -> lowest index, state untouched
    assert sample(np.array([-5, -5, -5]), p, 9)[0] == 0
    assert sample(np.array([0, 0, 0, VEC_MAX]), p, 9)[0] == 3
    rng = np.random.default_rng(0)
    for _ in range(50):
        l = rng.integers(-4, 4, 30)
        tok, st = sample(l, p, 77)
        assert tok == int(np.flatnonzero(l == l.max())[0]) and st == 77
    # a temperature below half a step of temp_q (1/512) is greedy too
    assert SamplingParams(temperature=0.001).temp_q == 0
    assert sample(np.array([1, 5, 5]), SamplingParams(temperature=0.001), 5) == (1, 5)


def test_xorshift32_known_sequence():
    x, seq = 1, []
    for _ in range(5):
        x = xorshift32(x)
        seq.append(x)
    assert seq == [270369, 67634689, 2647435461, 307599695, 2398689233]   # Marsaglia's, from state 1
    x = DEFAULT_SEED
    for _ in range(1000):
        y = xorshift32(x)
        assert y == xorshift32_oracle(x) and 0 < y < M32
        x = y


def test_rng_state_from_seed():
    assert SamplingParams(seed=0).rng_state() == DEFAULT_SEED           # 0 would be a fixed point
    assert SamplingParams(seed=M32).rng_state() == DEFAULT_SEED
    assert SamplingParams(seed=M32 + 5).rng_state() == 5
    assert SamplingParams(seed=12345).rng_state() == 12345
    assert xorshift32(0) == 0                                           # why the seed 0 is replaced


CASES = [(0.7, 40, 1.0), (1.0, 5, 0.9), (1.5, 256, 0.5), (0.3, 3, 1.0), (2.0, 1, 1.0), (1.0, 10, 1e-3),
         (100.0, 20, 1.0), (0.05, 40, 0.95)]


@pytest.mark.parametrize("temperature,top_k,top_p", CASES)
def test_sample_matches_oracle(temperature, top_k, top_p):
    rng = np.random.default_rng(int(temperature * 100) + top_k)
    params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, seed=99)
    state = params.rng_state()
    for trial in range(60):
        n = int(rng.integers(1, 300))
        l = to_vector(rng.standard_normal(n) * rng.choice([0.1, 1, 5]))
        if trial % 5 == 0:
            l[rng.integers(n, size=n // 2)] = l.max()          # ties
        got = sample(l, params, state)
        want = sample_oracle(l, temperature, top_k, top_p, state)
        assert got == want, (trial, n)
        state = got[1]


def test_sampling_is_deterministic_for_a_seed():
    rng = np.random.default_rng(1)
    logits = [to_vector(rng.standard_normal(100) * 2) for _ in range(50)]

    def run(seed):
        p = SamplingParams(temperature=1.0, top_k=40, top_p=0.95, seed=seed)
        st, toks = p.rng_state(), []
        for l in logits:
            t, st = sample(l, p, st)
            toks.append(t)
        return toks

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_top_k_never_escapes():
    rng = np.random.default_rng(2)
    l = to_vector(rng.standard_normal(200) * 0.3)         # flat: every candidate has real weight
    order = sorted(range(200), key=lambda i: (-l[i], i))
    for k in (1, 2, 5, 17):
        p = SamplingParams(temperature=2.0, top_k=k, seed=k)
        st, seen = p.rng_state(), set()
        for _ in range(600):
            t, st = sample(l, p, st)
            seen.add(t)
        assert seen <= set(order[:k])
        assert len(seen) == k                             # and all of them do occur
    # ties at the k boundary: the lower index is the candidate
    l = np.array([5, 3, 3, 3, 0])
    p = SamplingParams(temperature=1.0, top_k=2, seed=3)
    st, seen = p.rng_state(), set()
    for _ in range(300):
        t, st = sample(to_vector(l), p, st)
        seen.add(t)
    assert seen == {0, 1}


def test_small_top_p_returns_argmax():
    rng = np.random.default_rng(3)
    for top_p in (1e-6, 1e-3, 0.01):
        p = SamplingParams(temperature=1.0, top_k=40, top_p=top_p, seed=11)
        st = p.rng_state()
        for _ in range(100):
            l = to_vector(rng.standard_normal(64))
            t, st = sample(l, p, st)
            assert t == int(np.argmax(l))


def test_temperature_distribution_follows_softmax():
    """8,000 draws per temperature: frequencies within 0.025 (about 4.5 sigma) of softmax(l / T)."""
    lr = np.array([2.0, 1.5, 1.0, 0.0, -1.0, -3.0])
    l = to_vector(lr)
    for T in (0.8, 1.0, 2.5):
        p = SamplingParams(temperature=T, top_k=MAX_TOP_K, top_p=1.0, seed=2024)
        st = p.rng_state()
        counts = np.zeros(len(l))
        for _ in range(8000):
            t, st = sample(l, p, st)
            counts[t] += 1
        ref = np.exp(lr / T) / np.exp(lr / T).sum()
        assert np.abs(counts / 8000 - ref).max() < 0.025, (T, counts / 8000, ref)
        assert counts[-1] > 0 or ref[-1] < 1e-3
    # colder is peakier: at T = 0.1 the argmax takes > 99%
    p = SamplingParams(temperature=0.1, top_k=40, seed=5)
    st, hits = p.rng_state(), 0
    for _ in range(2000):
        t, st = sample(l, p, st)
        hits += t == 0
    assert hits > 0.99 * 2000


@pytest.mark.parametrize("kw,word", [
    (dict(temperature=-0.1), "temperature"), (dict(temperature=100.5), "temperature"),
    (dict(temperature=float("nan")), "temperature"),
    (dict(temperature=1.0, top_k=0), "top-k"), (dict(temperature=1.0, top_k=MAX_TOP_K + 1), "top-k"),
    (dict(top_p=0.0), "top-p"), (dict(top_p=1.01), "top-p"), (dict(top_p=-0.5), "top-p"),
])
def test_invalid_parameters_raise(kw, word):
    with pytest.raises(RomaError, match=word):
        SamplingParams(**kw)


def test_valid_parameter_limits():
    assert SamplingParams(temperature=0, top_k=0).temp_q == 0          # top_k unused when greedy
    p = SamplingParams(temperature=100, top_k=MAX_TOP_K, top_p=1.0)
    assert (p.temp_q, p.top_p_q) == (25600, 65536)
    p = SamplingParams(temperature=1e-9, top_k=1, top_p=1e-9)
    assert (p.temp_q, p.top_p_q) == (0, 0)
    assert SamplingParams(temperature=0.7, top_p=0.9).temp_q == round(0.7 * 256) == 179


def test_sampler_never_picks_a_hopeless_token():
    D = -(-M32 * M32 // LOG2E_Q)
    l = np.array([VEC_MAX, VEC_MAX - D])
    assert l[1] >= -VEC_MAX and D / (1 << 20) > 1e8 and math.isfinite(D)
    p = SamplingParams(temperature=1.0, top_k=2, seed=1)
    st, toks = p.rng_state(), []
    for _ in range(20):
        t, st = sample(l, p, st)
        toks.append(t)
    assert toks == [0] * 20
