"""Token generation on a target (the golden model now; the simulated or real accelerator later), streamed."""

import time

from .errors import RomaError
from .golden.sampler import sample


def encode(model, text):
    """Plain tokenization with the model's BOS in front (once) when it has one."""
    ids = model.tokenizer(text)["input_ids"]
    bos = model.config.bos_id
    if bos >= 0 and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return list(ids)


def prompt_tokens(model, prompt, chat=None):
    """Tokenize a prompt, through the chat template for chat models (unless chat=False)."""
    tok = model.tokenizer
    if tok is None:
        raise RomaError(f"{model.config.name}: no tokenizer")
    use_chat = model.config.chat if chat is None else chat
    if use_chat and getattr(tok, "chat_template", None):
        ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                      tokenize=True)
        if not isinstance(ids, list):
            ids = ids["input_ids"]
    else:
        ids = encode(model, prompt)
    return list(ids)


class GoldenTarget:
    """Runs the golden integer model in this process."""
    name = "golden"

    def __init__(self, golden):
        self.golden = golden

    def generate(self, tokens, max_new_tokens, params, stop_ids):
        g = self.golden
        if len(tokens) + max_new_tokens > g.context:
            if len(tokens) >= g.context:
                raise RomaError(f"prompt of {len(tokens)} tokens does not fit the context of {g.context} tokens")
            max_new_tokens = g.context - len(tokens)
        state = g.new_state()
        rng = params.rng_state()
        logits = g.step(tokens, state)
        for _ in range(max_new_tokens):
            tok, rng = sample(logits, params, rng)
            yield tok
            if tok in stop_ids or state.pos >= g.context:
                return
            logits = g.step([tok], state)


def stream_text(tokenizer, token_iter, write, skip_special=True):
    """Decode incrementally: write only the new, complete text after each token (UTF-8 safe)."""
    out, shown = [], ""
    stats = {"tokens": 0, "first": None, "start": time.perf_counter()}
    for t in token_iter:
        if stats["first"] is None:
            stats["first"] = time.perf_counter() - stats["start"]
        out.append(t)
        stats["tokens"] += 1
        text = tokenizer.decode(out, skip_special_tokens=skip_special)
        if text.endswith("\ufffd"):
            continue  # an incomplete UTF-8 sequence: wait for its next byte
        write(text[len(shown):])
        shown = text
    stats["elapsed"] = time.perf_counter() - stats["start"]
    stats["ids"] = out
    stats["text"] = shown
    return stats
