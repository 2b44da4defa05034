"""Golden-model decode speed beside transformers float32 on one thread, in one run."""

import os
import time

import numpy as np


def bench_golden(model, lora=None, tokens=16, prompt_len=8, with_float=True):
    from .cli import _golden
    prompt = list(range(1, prompt_len + 1))
    golden = _golden(model, lora, context=prompt_len + tokens + 1)
    state = golden.new_state()
    logits = golden.step(prompt, state)
    t0 = time.perf_counter()
    for _ in range(tokens):
        logits = golden.step([int(np.argmax(logits))], state)
    golden_tps = tokens / (time.perf_counter() - t0)
    r = {"model": model.config.name, "decode_tokens": tokens, "golden_tok_s": golden_tps,
         "numpy_threads": os.environ.get("OMP_NUM_THREADS", "default")}
    if with_float:
        import torch
        from .reference import float_model
        hf = float_model(model, lora)
        with torch.no_grad():
            out = hf(torch.tensor([prompt]), use_cache=True)
            past = out.past_key_values
            nxt = out.logits[0, -1].argmax()
            t0 = time.perf_counter()
            for _ in range(tokens):
                out = hf(nxt.view(1, 1), past_key_values=past, use_cache=True)
                past = out.past_key_values
                nxt = out.logits[0, -1].argmax()
            r["float_tok_s"] = tokens / (time.perf_counter() - t0)
        r["torch_threads"] = torch.get_num_threads()
        r["golden_over_float"] = golden_tps / r["float_tok_s"]
    return r
