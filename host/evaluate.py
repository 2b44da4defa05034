"""Fidelity of the golden integer model against the float model (transformers), teacher-forced on a text."""

from pathlib import Path

import numpy as np

from .errors import RomaError
from .generate import encode
from .golden.numerics import from_vector
from .tokenizer import DATA

EVAL_TEXT = DATA / "eval.txt"


def log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def metrics(logits, tokens):
    """Perplexity of tokens[1:] under logits[:-1], and the argmax per position."""
    lp = log_softmax(logits[:-1])
    nll = -lp[np.arange(len(tokens) - 1), tokens[1:]]
    return float(np.exp(nll.mean())), logits[:-1].argmax(axis=-1)


def eval_tokens(model, text_file=None, max_tokens=None):
    path = Path(text_file) if text_file else EVAL_TEXT
    if not path.exists():
        raise RomaError(f"text file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    ids = encode(model, text)
    limit = min(max_tokens or len(ids), len(ids), model.config.context)
    if limit < 2:
        raise RomaError(f"{path}: fewer than 2 tokens to evaluate")
    return np.array(ids[:limit])


def golden_logits(golden, tokens, chunk=16, progress=None):
    """Teacher-forced golden logits (ntok, vocab) as floats, the forward in one block, the head in chunks."""
    state = golden.new_state()
    hidden = golden.forward(tokens, state)
    out = np.empty((len(tokens), golden.config.vocab))
    for s in range(0, len(tokens), chunk):
        out[s:s + chunk] = from_vector(golden.logits(hidden[s:s + chunk]))
        if progress:
            progress(min(chunk, len(tokens) - s))
    return out


def fidelity(model, golden, hf, tokens, progress=None):
    from .reference import float_logits
    g = golden_logits(golden, tokens, progress=progress)
    f = float_logits(hf, tokens)
    ppl_g, top_g = metrics(g, tokens)
    ppl_f, top_f = metrics(f, tokens)
    return {
        "model": model.config.name, "tokens": int(len(tokens)),
        "ppl_golden": ppl_g, "ppl_float": ppl_f, "ppl_ratio": ppl_g / ppl_f,
        "top1_agreement": float(np.mean(top_g == top_f)),
        "max_abs_logit_diff": float(np.abs(g - f).max()),
    }
