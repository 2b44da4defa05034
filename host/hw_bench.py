"""Hardware benchmark: a generation on the simulated SoC, measured by the accelerator's own counters.

Reports per token the accelerator cycles of prefill and decode, the utilization against the MAC-count floor
of the configured array (ModelConfig.macs_per_token / peak MACs per cycle), the busy cycles of each unit, the
simulated cycles per wall second, and the decode tok/s the same cycle counts give at a chosen clock. Writes
JSON and a PNG chart."""

import json
import time
from pathlib import Path

from .golden.sampler import SamplingParams


def hw_bench(model, cfg, context, prompt_len=8, new_tokens=16, clock_hz=50e6, progress=True):
    from .targets import SimTarget

    c = model.config
    prompt = [max(c.bos_id, 1)] + [(7 * i + 3) % c.vocab for i in range(1, prompt_len)]
    target = SimTarget(model, cfg, context=context, progress=progress)
    try:
        t0 = time.monotonic()
        events = list(target.device.generate(prompt, new_tokens, SamplingParams()))
        wall = time.monotonic() - t0
        done = target.device.last_done
    finally:
        target.close()
    peak = cfg.peak_macs_per_cycle
    decode = events[1:]
    per_token = [{"pos": e.pos, "cycles": e.cycles, "floor": c.macs_per_token(e.pos - 1) / peak} for e in events]
    dec_cycles = sum(e.cycles for e in decode)
    dec_floor = sum(c.macs_per_token(e.pos - 1) / peak for e in decode)
    total = done.prefill_cycles + done.decode_cycles
    r = {
        "model": c.name, "lanes": cfg.lanes, "macs_per_lane": cfg.macs_per_lane, "peak_macs_per_cycle": peak,
        "context": context, "prompt_tokens": len(prompt), "new_tokens": len(events),
        "prefill_cycles_per_token": done.prefill_cycles / len(prompt),
        "decode_cycles_per_token": dec_cycles / max(len(decode), 1),
        "decode_floor_per_token": dec_floor / max(len(decode), 1),
        "decode_vs_floor": dec_cycles / dec_floor if dec_floor else None,
        "unit_busy_fraction": {u: done.counters[f"{u.lower()}_busy"] / total for u in ("L", "H", "D", "V", "KV")},
        "l_mac_fraction": done.counters["l_mac"] / total,
        # cycles a unit started early waited for its input (chaining), and a command waited to issue
        "hold_fraction": {u: done.counters[f"{u.lower()}_hold"] / total for u in ("L", "H", "V")},
        "stall_fraction": {u: done.counters[f"{u.lower()}_stall"] / total for u in ("L", "H", "D", "V")},
        "counters": done.counters,
        "sim_cycles_per_wall_second": total / wall,
        "wall_seconds": wall,
        "clock_hz": clock_hz,
        "projected_decode_tok_s": clock_hz * max(len(decode), 1) / dec_cycles if dec_cycles else None,
        "per_token": per_token,
    }
    return r


def write_report(r, json_path=None, png_path=None):
    if json_path:
        Path(json_path).write_text(json.dumps(r, indent=2))
    if png_path:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        pos = [t["pos"] for t in r["per_token"]]
        a.plot(pos, [t["cycles"] for t in r["per_token"]], "o-", label="measured")
        a.plot(pos, [t["floor"] for t in r["per_token"]], "--", label="MAC-count floor")
        a.set_xlabel("position")
        a.set_ylabel("accelerator cycles per token")
        a.set_title(f"{r['model']}: {r['lanes']} lanes x {r['macs_per_lane']} MACs")
        a.legend()
        units = r["unit_busy_fraction"]
        b.bar(list(units), [100 * v for v in units.values()])
        b.axhline(100 * r["l_mac_fraction"], color="k", ls=":", label="L-unit MAC cycles")
        b.set_ylabel("% of accelerator cycles busy")
        b.set_title(f"decode {r['decode_vs_floor']:.2f}x the floor; "
                    f"{r['projected_decode_tok_s']:.0f} tok/s at {r['clock_hz'] / 1e6:.0f} MHz")
        b.legend()
        fig.tight_layout()
        fig.savefig(png_path, dpi=100)
        plt.close(fig)
