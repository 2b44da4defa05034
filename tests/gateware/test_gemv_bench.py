"""A SmolLM2-geometry GEMV on the wide L-unit in Verilator: bit-exact, and the MAC lanes busy in >= 95% of
the cycles (cycle counts from the hardware counters; nothing here is timed)."""

import pytest

from roma.gateware.bench import gemv_benchmark
from roma.gateware.gemv import READ_LATENCY
from roma.gateware.mac_lane import lane_latency
from roma.gateware.verilator import verilator_available
from roma.soc.config import AccelConfig

pytestmark = [pytest.mark.verilator, pytest.mark.slow,
              pytest.mark.skipif(not verilator_available(), reason="verilator is not on PATH")]


@pytest.fixture(scope="module")
def layer0():
    from roma.host.models import load_model
    m = load_model("smollm2-135m", with_tokenizer=False)
    return [(f"layers.0.{p}", m.layers[0].proj[p]) for p in ("gate_proj", "down_proj")]


@pytest.mark.parametrize("which", [0, 1])
def test_smollm2_gemv_bit_exact_and_busy(layer0, which):
    cfg = AccelConfig(lanes=64, macs_per_lane=32)
    r = gemv_benchmark(cfg, layer0, which)
    print(r)
    assert r["bit_exact"]
    assert r["mac_cycles"] == r["mac_floor_cycles"]                       # every issued cycle is a full MAC cycle
    assert r["busy_cycles"] - r["mac_cycles"] == READ_LATENCY + lane_latency(cfg)   # no bubbles: only the fill
    assert r["mac_busy_fraction"] >= 0.95
