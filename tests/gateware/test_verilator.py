"""The Verilator runner (roma.gateware.verilator): wide and signed ports, the build cache, and the L-unit
bit for bit against the golden GEMV."""

import time

import numpy as np
import pytest
from migen import If, Memory, Module, Signal

from roma.gateware.verilator import RunResult, VerilatorSim, to_signed, verilator_available

needs_verilator = pytest.mark.skipif(not verilator_available(), reason="verilator is not on PATH")

W_INC, W_ACC = 100, 130
ROM = [1, 2, 0x7F, -6]          # a negative init word: the runner masks it for $readmemh


class WideAcc(Module):
    """A 130-bit accumulator adding a poked 100-bit value (unsigned and signed), a signed adder, a ROM."""

    def __init__(self):
        self.inc = Signal(W_INC)
        self.sinc = Signal((W_INC, True))
        self.acc = Signal(W_ACC)
        self.sacc = Signal((W_ACC, True))
        self.en = Signal()
        self.a = Signal((12, True))
        self.b = Signal((12, True))
        self.s = Signal((13, True))
        self.sync += If(self.en, self.acc.eq(self.acc + self.inc), self.sacc.eq(self.sacc + self.sinc))
        self.comb += self.s.eq(self.a + self.b)
        rom = Memory(8, len(ROM), init=ROM)
        port = rom.get_port()
        self.specials += rom, port
        self.adr, self.dat = port.adr, port.dat_r

    def ios(self):
        return [self.inc, self.sinc, self.acc, self.sacc, self.en, self.a, self.b, self.s, self.adr, self.dat]


def wide_sim():
    m = WideAcc()
    return VerilatorSim(m, m.ios(), "wide_acc"), m


@needs_verilator
def test_wide_and_signed_ports(tmp_path):
    sim, m = wide_sim()
    assert sim.ports["acc"].width == W_ACC and sim.ports["sacc"].signed and sim.clocks == ["sys_clk"]
    assert sim.name_of(m.dat) == "dat_r"
    big = (1 << W_INC) - 12345                 # hex, all 100 bits
    dec = 987654321098765432109876543210        # decimal beyond 64 bits
    neg = -(1 << 90) - 7                        # negative decimal into a signed 100-bit port
    script = [
        f"poke inc 0x{big:x}", f"poke sinc {neg}", "poke en 1", "step 3", "poke en 0", "step 2",
        "peek acc", "peek sacc",
        f"poke inc {dec}", f"poke sinc {-neg}", "poke en 1",
        "watch en acc sacc", "step 2", "unwatch", "poke en 0",
        "poke a -2048", "poke b -1", "peek s",           # combinational: settles without a clock edge
        "poke adr 3", "step 1", "peek dat_r", "cycles",
        "reset 2", "peek acc",
    ]
    res = sim.run(script)
    assert isinstance(res, RunResult)
    mask = (1 << W_ACC) - 1
    assert res.peek_log[0] == ("acc", 3 * big)
    assert to_signed(res.peek_log[1][1], W_ACC) == 3 * neg
    acc, sacc = 3 * big, 3 * neg
    want = []
    for c in (6, 7):
        acc, sacc = (acc + dec) & mask, sacc - neg
        want.append((c, [acc, sacc & mask]))
    assert res.watch == want
    assert res.signed("s") == -2049 and res.peeks["s"] == (-2049) & 0x1FFF
    assert res.peeks["dat_r"] == 0xFA and to_signed(res.peeks["dat_r"], 8) == -6
    assert res.peeks["acc"] == 0                   # sys_rst clears the register
    assert "#cycles 8" in res.stdout and res.cycles == 10

    # the same through a script file
    f = tmp_path / "s.txt"
    f.write_text("# comment\n\npoke inc 0x5\npoke en 1\nstep 4\npeek acc\n")
    assert sim.run_script_file(f).peeks["acc"] == 20


@needs_verilator
@pytest.mark.parametrize("script, msg", [
    (["peek nosuch"], "unknown signal 'nosuch'"),
    (["poke acc 1"], "cannot poke output acc"),
    ([f"poke inc 0x1{'0' * 25}"], "does not fit 100-bit inc"),  # 2**100 in a 100-bit port
    (["poke a 2048", "poke a -2049"], "does not fit"),         # fine unsigned up to 4095, but not -2049
    (["poke en 0", "wait s 5"], "still 0 after 5 cycles"),
    (["jump 3"], "unknown command 'jump'"),
])
def test_harness_errors(script, msg):
    sim, _ = wide_sim()
    with pytest.raises(RuntimeError, match=msg):
        sim.run(script)


@needs_verilator
def test_build_is_cached():
    first, _ = wide_sim()
    t0 = time.monotonic()
    second, _ = wide_sim()          # a fresh module instance with identical content
    elapsed = time.monotonic() - t0
    assert second.build_dir == first.build_dir and not second.compiled
    assert elapsed < 2, f"second construction took {elapsed:.2f} s"
    assert second.run(["poke inc 9", "poke en 1", "step 2", "peek acc"]).peeks["acc"] == 18


@pytest.mark.verilator
@needs_verilator
@pytest.mark.parametrize("lanes, macs, bits, mult", [(4, 8, 4, "dsp")])
def test_gemv_bit_exact_verilator(lanes, macs, bits, mult):
    from roma.gateware.lunit_sim import run_gemv_verilator
    from test_gemv import random_matrix

    from roma.gateware.mac_lane import lane_latency
    from roma.host.golden.gemv import PreparedMatrix, gemv_act
    from roma.host.golden.numerics import quantize_act, to_vector
    from roma.soc.config import AccelConfig

    # the random case of test_gemv.check() for the same parameters
    cfg = AccelConfig(lanes=lanes, macs_per_lane=macs, code_bits=bits, multiplier=mult)
    rng = np.random.default_rng(lanes * 100 + macs + bits)
    rows, cols = 16, 64
    mats = [("a", random_matrix(rng, rows, cols, cfg.code_bits)),
            ("b", random_matrix(rng, rows * 2, cols, cfg.code_bits))]
    qa, ea = quantize_act(to_vector(rng.normal(size=(1, cols)) * 3.0))
    for which, (_, dm) in enumerate(mats):
        want = gemv_act(PreparedMatrix(dm), qa, ea)[0]
        got, stats = run_gemv_verilator(cfg, mats, which, qa[0], ea[0])
        assert np.array_equal(got, want), (which, np.nonzero(got != want))
        beats = dm.shape[0] // cfg.lanes * (cols // 32) * cfg.beats_per_group
        assert stats["mac"] == beats
        assert stats["busy"] <= beats + lane_latency(cfg) + 2
