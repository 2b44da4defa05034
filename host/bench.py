"""Golden-model decode speed beside transformers float32 on one thread, in one run.

The two are timed in alternating rounds (golden, float, golden, ...) and each reports its median round, so a
load that comes and goes on the machine weighs on both alike.
"""

import os
import statistics
import time

import numpy as np


def bench_golden(model, lora=None, tokens=16, prompt_len=8, with_float=True, rounds=3):
    from .golden.model import golden_for
    prompt = list(range(1, prompt_len + 1))
    golden = golden_for(model, lora, context=prompt_len + rounds * tokens + 1)
    state = golden.new_state()
    logits = golden.step(prompt, state)

    def golden_round():
        nonlocal logits
        t0 = time.perf_counter()
        for _ in range(tokens):
            logits = golden.step([int(np.argmax(logits))], state)
        return tokens / (time.perf_counter() - t0)

    timed = [golden_round]
    if with_float:
        import torch
        from .reference import float_model
        hf = float_model(model, lora)
        with torch.no_grad():
            out = hf(torch.tensor([prompt]), use_cache=True)
        cache = {"past": out.past_key_values, "next": out.logits[0, -1].argmax()}

        def float_round():
            t0 = time.perf_counter()
            with torch.no_grad():
                for _ in range(tokens):
                    o = hf(cache["next"].view(1, 1), past_key_values=cache["past"], use_cache=True)
                    cache["past"] = o.past_key_values
                    cache["next"] = o.logits[0, -1].argmax()
            return tokens / (time.perf_counter() - t0)

        timed.append(float_round)

    g_rates, f_rates = [], []
    for _ in range(rounds):
        for fn, rates in zip(timed, (g_rates, f_rates)):
            rates.append(fn())
    r = {"model": model.config.name, "decode_tokens_per_round": tokens, "rounds": rounds,
         "golden_tok_s": statistics.median(g_rates), "golden_rounds": g_rates,
         "numpy_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if f_rates:
        import torch
        r.update(float_tok_s=statistics.median(f_rates), float_rounds=f_rates, torch_threads=torch.get_num_threads(),
                 golden_over_float=r["golden_tok_s"] / statistics.median(f_rates))
    return r
