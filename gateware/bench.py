"""GEMV benchmark in Verilator: how busy the MAC lanes are over one large matrix (cycle counts, not time)."""

import time

import numpy as np

from roma.host.golden.gemv import PreparedMatrix, gemv_act
from roma.host.golden.numerics import quantize_act, to_vector
from roma.host.golden.weights import to_device

from .lunit_sim import gemv_verilator_script, gemv_verilator_sim
from .verilator import to_signed


def gemv_benchmark(cfg, matrices, which=0, seed=0):
    """Run matrices[which] (name, QMatrix) on the L-unit in Verilator; check it against the golden GEMV.

    Returns the counters: busy cycles, MAC-active cycles, the MAC-count floor, utilization, and the build and
    simulation times."""
    mats = [(n, to_device(q)) for n, q in matrices]
    t0 = time.perf_counter()
    sim, table = gemv_verilator_sim(cfg, mats)
    build_s = time.perf_counter() - t0
    entry = table[which]
    x = to_vector(np.random.default_rng(seed).normal(size=(1, entry["cols"])))
    qa, ea = quantize_act(x)
    t0 = time.perf_counter()
    res = sim.run(gemv_verilator_script(cfg, entry, qa[0], ea[0], timeout=10 ** 8))
    run_s = time.perf_counter() - t0
    y = np.zeros(entry["rows"], np.int64)
    for _, (row, *vals) in res.watch:
        for b, v in enumerate(vals):
            y[row * cfg.lanes + b] = to_signed(v, cfg.vec_bits)
    want = gemv_act(PreparedMatrix(mats[which][1]), qa, ea)[0]
    busy = [v for n, v in res.peek_log if n == "cnt_busy"]
    busy = busy[1] - busy[0]
    floor = entry["rows"] * entry["cols"] / cfg.peak_macs_per_cycle
    return {
        "matrix": entry["name"], "rows": entry["rows"], "cols": entry["cols"],
        "lanes": cfg.lanes, "macs_per_lane": cfg.macs_per_lane, "peak_macs_per_cycle": cfg.peak_macs_per_cycle,
        "busy_cycles": busy, "mac_cycles": res.peeks["cnt_mac"], "mac_floor_cycles": floor,
        "mac_busy_fraction": res.peeks["cnt_mac"] / busy, "cycles_over_floor": busy / floor,
        "bit_exact": bool(np.array_equal(y, want)),
        "build_s": build_s, "sim_s": run_s, "sim_cycles": res.cycles,
    }


def layer_benchmark(model, cfg, tokens=(1, 57, 300, 12), context=32, layer=0):
    """Decoder layer `layer` on the accelerator in Verilator, token after token: bit-exactness against the
    golden residual, the cycles per layer and their ratio to the MAC-count floor at the configured peak."""
    from roma.host.golden.model import GoldenModel

    from .accel_sim import AcceleratorSim
    acc = AcceleratorSim(model, cfg, context=context)
    g = GoldenModel(model, context=context)
    state = g.new_state()
    steps, want = [], []
    for p, t in enumerate(tokens):
        x = g.embed_tokens(np.array([t]))[0]
        trace = []
        g.forward([t], state, trace=trace)
        steps.append((layer, p, x))
        want.append(trace[layer][0])
    c = model.config
    rows = []
    for p, ((x, counters), w) in enumerate(zip(acc.run_layers(steps), want)):
        floor = (c.layer_macs() + 2 * c.n_heads * c.head_dim * (p + 1)) / cfg.peak_macs_per_cycle
        rows.append({"position": p, "bit_exact": bool(np.array_equal(x, w)), "cycles": counters["cnt_cycles"],
                     "mac_floor_cycles": floor, "ratio": counters["cnt_cycles"] / floor, **counters})
    return rows


def one_layer(model, vocab=512):
    """`model` cut to its first layer and the first `vocab` embedding rows: the same layer-0 computation with a
    small ROM, so a wide configuration of a large model builds in Verilator in minutes."""
    import dataclasses
    e = model.embed
    small = dataclasses.replace(e, codes=e.codes[:vocab], d=e.d[:vocab], m=e.m[:vocab])
    return dataclasses.replace(model, config=dataclasses.replace(model.config, n_layers=1, vocab=vocab),
                               layers=model.layers[:1], embed=small)
