"""The L-unit (B-ROM banks + MAC lanes) against the golden GEMV, bit for bit, in Migen's simulator."""

import numpy as np
import pytest

from gemv_harness import run_gemv
from roma.gateware.mac_lane import lane_latency
from roma.host.golden.gemv import PreparedMatrix, gemv_act
from roma.host.golden.numerics import quantize_act, to_vector
from roma.host.golden.weights import DeviceMatrix
from roma.soc.config import AccelConfig, ConfigError


def random_matrix(rng, rows, cols, bits=4, extreme=None, er=(-30, -18)):
    groups = cols // 32
    codes = rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint8)
    if extreme == "max":
        codes[:] = (1 << bits) - 1
    elif extreme == "min":
        codes[:] = 0
    dq = rng.integers(-32767, 32768, (rows, groups))
    mq = rng.integers(-32767, 32768, (rows, groups))
    er = rng.integers(*er, rows)
    return DeviceMatrix(codes, dq, mq, er, bits, False)


def check(cfg, rng, rows=16, cols=64, x_scale=3.0, extreme=None, x=None, er=(-30, -18)):
    mats = [("a", random_matrix(rng, rows, cols, cfg.code_bits, extreme, er)),
            ("b", random_matrix(rng, rows * 2, cols, cfg.code_bits, er=er))]
    if x is None:
        x = to_vector(rng.normal(size=(1, cols)) * x_scale)
    qa, ea = quantize_act(x)
    for which, (_, dm) in enumerate(mats):
        want = gemv_act(PreparedMatrix(dm), qa, ea)[0]
        got, stats = run_gemv(cfg, [m for m in mats], which, qa[0], ea[0])
        assert np.array_equal(got, want), (which, np.nonzero(got != want))
        beats = dm.shape[0] // cfg.lanes * (cols // 32) * cfg.beats_per_group
        # every issued cycle multiplies; the only non-MAC busy cycles are the pipeline's fill
        assert stats["busy"] <= beats + stats["latency"] + 1
    return stats


@pytest.mark.parametrize("lanes, macs, bits, mult, pipeline", [
    (4, 8, 4, "dsp", "short"), (2, 32, 4, "dsp", "short"), (4, 16, 2, "dsp", "short"), (4, 8, 4, "lut", "short"),
    (1, 4, 4, "dsp", "short"), (4, 8, 4, "lut", "deep"), (4, 8, 4, "dsp", "deep"),
])
def test_gemv_bit_exact(lanes, macs, bits, mult, pipeline):
    stats = check(AccelConfig(lanes=lanes, macs_per_lane=macs, code_bits=bits, multiplier=mult, pipeline=pipeline),
                  np.random.default_rng(lanes * 100 + macs + bits))
    # the deep pipeline's registers: after the memories (1) and the products (1), nothing else
    assert stats["latency"] == 1 + lane_latency(AccelConfig(lanes=lanes, macs_per_lane=macs)) \
        + (2 if pipeline == "deep" else 0)


@pytest.mark.parametrize("extreme", ["max", "min"])
def test_extreme_codes_and_activations(extreme):
    rng = np.random.default_rng(7)
    cfg = AccelConfig(lanes=4, macs_per_lane=8)
    x = np.zeros((1, 64), np.int64)
    x[0, :32] = (1 << 47) - 1            # largest vector value: the group shifts by 33
    x[0, 32:] = -((1 << 15) - 1)         # a group at exactly ACT_MAX, no shift
    # row exponents small enough that the golden model's accumulator bound (2**53) holds
    check(cfg, rng, extreme=extreme, x=x, er=(-46, -40))


def test_small_activations_and_zero_group():
    rng = np.random.default_rng(8)
    x = to_vector(rng.normal(size=(1, 64)) * 1e-4)
    x[0, 32:] = 0
    check(AccelConfig(lanes=4, macs_per_lane=8), rng, x=x)


def test_config_errors_name_the_parameter():
    with pytest.raises(ConfigError, match="macs_per_lane=5"):
        AccelConfig(macs_per_lane=5)
    with pytest.raises(ConfigError, match="code_bits=3"):
        AccelConfig(code_bits=3)
    with pytest.raises(ConfigError, match="multiplier="):
        AccelConfig(multiplier="analog")
    with pytest.raises(ConfigError, match="lanes=5 does not divide the 64 rows"):
        AccelConfig(lanes=5).check_rows(64, "q_proj")


def test_configuration_errors_name_the_parameter():
    """Lanes that do not divide a group, and a model over the configured ROM or SRAM, fail before elaboration."""
    from roma.gateware.accel_build import build_accelerator
    from roma.host.tiny import tiny_model
    model = tiny_model("tiny-260k")
    with pytest.raises(ConfigError, match="lanes=64: the accelerator needs lanes dividing the group size 32"):
        build_accelerator(model, AccelConfig(lanes=64))
    with pytest.raises(ConfigError, match=r"rom_bits=100,000: tiny-260k needs [\d,]+ bits of B-ROM"):
        build_accelerator(model, AccelConfig(lanes=8, rom_bits=100_000))
    with pytest.raises(ConfigError, match=r"sram_bits=1,000: the KV cache for context=64"):
        build_accelerator(model, AccelConfig(lanes=8, sram_bits=1000), context=64)
