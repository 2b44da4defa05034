"""The vector unit against the golden model, bit for bit, in Migen's simulator: residual add, RMSNorm (three
passes), SiLU-times-up and quantization to the activation format."""

import numpy as np
import pytest
from migen import run_simulation

from roma.gateware.vector_unit import GAMMA_BITS, OPS, VectorUnit
from roma.host.golden import functions as F
from roma.host.golden.numerics import GROUP, VEC_BITS, quantize_act, saturate, to_vector
from roma.soc.config import AccelConfig

CFG = AccelConfig(lanes=4, macs_per_lane=8)


def pack(vals, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (bits * j) for j, v in enumerate(vals))


def unpack(word, bits=VEC_BITS, n=GROUP, signed=True):
    out = []
    for j in range(n):
        v = (word >> (bits * j)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if signed and v >> (bits - 1) else v)
    return out


class Bench:
    def __init__(self, dim=64, eps=1e-5, gamma=None, vm_words=32):
        self.dim = dim
        gq = F.gamma_q(gamma if gamma is not None else np.ones(dim))
        gwords = [pack(gq[i:i + GROUP], GAMMA_BITS) for i in range(0, dim, GROUP)]
        self.dut = VectorUnit(CFG, vm_words, dim, F.eps_q(eps), gwords)
        self.act = {}

    def load(self, addr, vec):
        for i in range(0, len(vec), GROUP):
            yield self.dut.vm_w.adr.eq(addr + i // GROUP)
            yield self.dut.vm_w.dat_w.eq(pack(vec[i:i + GROUP], VEC_BITS))
            yield self.dut.vm_w.we.eq(1)
            yield
        yield self.dut.vm_w.we.eq(0)

    def read(self, addr, n):
        out = []
        for i in range(n):
            yield self.dut.vm_r.adr.eq(addr + i)
            yield
            yield
            out += unpack((yield self.dut.vm_r.dat_r))
        return np.array(out, dtype=np.int64)

    def cmd(self, op, a=0, b=0, dst=0, n=1, aux=0):
        d = self.dut
        for sig, v in ((d.op, OPS[op]), (d.a, a), (d.b, b), (d.dst, dst), (d.n, n), (d.aux, aux)):
            yield sig.eq(v)
        yield d.start.eq(1)
        yield
        yield d.start.eq(0)
        for _ in range(200):
            if (yield d.act_we):
                self.act[(yield d.act_adr)] = (yield d.act_dat)
            yield
            if (yield d.done):
                return
        raise TimeoutError(op)

    def run(self, gen):
        run_simulation(self.dut, gen)


def test_add_saturates():
    rng = np.random.default_rng(1)
    a = to_vector(rng.normal(size=64) * 100)
    b = to_vector(rng.normal(size=64) * 100)
    a[0], b[0] = (1 << 46), (1 << 46) + 5       # past the 48-bit range: saturates
    a[1], b[1] = -(1 << 46), -(1 << 46)
    bench, got = Bench(), {}

    def tb():
        yield from bench.load(0, a)
        yield from bench.load(2, b)
        yield from bench.cmd("add", a=0, b=2, dst=4, n=2)
        got["y"] = yield from bench.read(4, 2)
    bench.run(tb())
    assert np.array_equal(got["y"], saturate(a + b))


@pytest.mark.parametrize("scale", [1e-3, 1.0, 22552.0])
def test_rmsnorm(scale):
    rng = np.random.default_rng(2)
    dim = 64
    gamma = rng.uniform(0.5, 3.0, dim)
    x = to_vector(rng.normal(size=dim) * scale)
    bench, got = Bench(dim, gamma=gamma), {}

    def tb():
        yield from bench.load(0, x)
        yield from bench.cmd("rms_max", a=0, n=2)
        yield from bench.cmd("rms_ss", a=0, n=2)
        yield from bench.cmd("norm", a=0, dst=8, n=2, aux=0)
        got["y"] = yield from bench.read(8, 2)
    bench.run(tb())
    want = F.rmsnorm(x[None, :], F.gamma_q(gamma), F.eps_q(1e-5))[0]
    assert np.array_equal(got["y"], want)


def test_rmsnorm_of_zero_vector():
    bench, got = Bench(), {}

    def tb():
        yield from bench.load(0, np.zeros(64, np.int64))
        for op in ("rms_max", "rms_ss"):
            yield from bench.cmd(op, a=0, n=2)
        yield from bench.cmd("norm", a=0, dst=8, n=2)
        got["y"] = yield from bench.read(8, 2)
    bench.run(tb())
    assert not got["y"].any()


def test_silu_mul():
    rng = np.random.default_rng(3)
    g = to_vector(np.concatenate([rng.normal(size=60) * 4, [20, -20, 3000, -3000]]))
    u = to_vector(np.concatenate([rng.normal(size=60) * 4, [5, 5, 3000, 7]]))
    bench, got = Bench(), {}

    def tb():
        yield from bench.load(0, g)
        yield from bench.load(2, u)
        yield from bench.cmd("silu", a=0, b=2, dst=4, n=2)
        got["y"] = yield from bench.read(4, 2)
    bench.run(tb())
    assert np.array_equal(got["y"], F.silu_mul(g, u))


def test_quant_to_activation_words():
    rng = np.random.default_rng(4)
    x = to_vector(rng.normal(size=96) * 10)
    x[32:64] = to_vector(rng.normal(size=32) * 1e-4)       # a group too small to shift
    x[64] = (1 << 47) - 1                                  # the largest vector value
    bench = Bench()

    def tb():
        yield from bench.load(0, x)
        yield from bench.cmd("quant", a=0, dst=5, n=3)
    bench.run(tb())
    qa, ea = quantize_act(x)
    A = 16
    for g in range(3):
        w = bench.act[5 + g]
        assert unpack(w, A, GROUP) == qa[g * 32:(g + 1) * 32].tolist()
        gsum = unpack(w >> (GROUP * A), CFG.group_sum_bits, 1)[0]
        e = unpack(w >> (GROUP * A + CFG.group_sum_bits), CFG.exp_bits, 1)[0]
        assert gsum == qa[g * 32:(g + 1) * 32].sum() and e == ea[g]
