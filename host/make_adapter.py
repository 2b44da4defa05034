"""Train a small, real PEFT LoRA adapter on a base Model, for tests and demos.

    python -m roma.host.make_adapter MODEL OUT_DIR [--steps N] [--rank R] [--targets q_proj,v_proj]

The float model is transformers' LlamaForCausalLM on the base's dequantized weights (reference.float_model),
wrapped with peft and trained for a few AdamW steps on the shipped corpus; the result is saved with
save_pretrained (adapter_config.json + adapter_model.safetensors), i.e. exactly what peft users produce.
Needs torch and peft (the ``float`` extra).
"""

import argparse
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from .errors import RomaError

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


def _tokens(model, text):
    tok = model.tokenizer
    if tok is not None:
        ids = tok(text, add_special_tokens=False)["input_ids"]
    else:  # a tokenizer-less (test) model: bytes, folded into its vocabulary
        ids = [b % model.config.vocab for b in text.encode("utf-8")]
    return np.asarray(ids, dtype=np.int64)


def _batches(ids, chunk, batch):
    chunk = max(2, min(chunk, len(ids) // batch))
    n = len(ids) // chunk
    if n < 1:
        raise RomaError(f"training text too short: {len(ids)} tokens")
    rows = ids[:n * chunk].reshape(n, chunk)
    while True:
        for i in range(0, n - batch + 1 if n >= batch else 1, batch):
            yield rows[i:i + batch]


def make_adapter(model, out_dir, steps=4, rank=8, targets=("q_proj", "v_proj"), seed=0, text=None, lr=1e-2,
                 chunk=128, batch=2, log=None):
    """Train a rank-``rank`` LoRA on ``model`` for ``steps`` AdamW steps and save it (PEFT format) to out_dir.

    Returns the list of training losses. lora_alpha = 2 * rank, so the scaling is 2.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from .reference import _torch, float_model
    torch = _torch()
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise RomaError("making an adapter needs peft: pip install -e '.[float]'")

    torch.manual_seed(seed)
    hf = float_model(model)
    cfg = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), lora_dropout=0.0,
                     init_lora_weights=True, bias="none")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return _train(model, hf, cfg, out_dir, steps, text, lr, chunk, batch, log, torch, get_peft_model)


def _train(model, hf, cfg, out_dir, steps, text, lr, chunk, batch, log, torch, get_peft_model):
    pm = get_peft_model(hf, cfg)
    pm.peft_config["default"].base_model_name_or_path = model.config.name
    if text is None:
        text = CORPUS.read_text(encoding="utf-8")
    ids = _tokens(model, text)
    chunk = min(chunk, model.config.context)
    data = _batches(ids, chunk, batch)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
    pm.train()
    losses = []
    for step in range(steps):
        x = torch.from_numpy(next(data))
        out = pm(input_ids=x, labels=x)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        if log:
            log(f"step {step + 1}/{steps}: loss {losses[-1]:.4f}")
    pm.eval()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pm.save_pretrained(str(out_dir), safe_serialization=True, save_embedding_layers=False)
    return losses


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m roma.host.make_adapter",
                                 description="Train a small PEFT LoRA adapter on a base model.")
    ap.add_argument("model", help="model name or path (as accepted by roma)")
    ap.add_argument("out_dir")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q_proj,v_proj", help="comma-separated projection names")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--text", help="a text file to train on (default: the shipped corpus)")
    args = ap.parse_args(argv)
    try:
        from .lora import MAX_LORA_RANK
        from .model import PROJECTIONS
        from .models import load_model
        targets = tuple(t.strip() for t in args.targets.split(",") if t.strip())
        bad = [t for t in targets if t not in PROJECTIONS]
        if bad:
            raise RomaError(f"unknown target {', '.join(bad)}: use some of {', '.join(PROJECTIONS)}")
        if not 1 <= args.rank <= MAX_LORA_RANK:
            raise RomaError(f"--rank {args.rank}: must be 1..{MAX_LORA_RANK} (the device maximum)")
        text = Path(args.text).read_text(encoding="utf-8") if args.text else None
        model = load_model(args.model)
        make_adapter(model, args.out_dir, steps=args.steps, rank=args.rank, targets=targets, seed=args.seed,
                     text=text, lr=args.lr, log=lambda s: print(s, file=sys.stderr))
    except (RomaError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(args.out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
