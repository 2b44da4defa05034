"""The `roma` command: info, generate, eval, export, make-adapter, bench."""

import argparse
import json
import sys

from .errors import RomaError
from .golden.model import golden_for

EPILOG = """examples:
  roma generate "What is the capital of France?"      # SmolLM2-135M-Instruct, greedy
  roma info smollm2-135m
  roma eval smollm2-135m                               # fidelity against the float model (needs torch)
  roma export tiny-260k --lanes 32 -o out/tiny         # ROM images + manifest + golden vectors
  roma make-adapter smollm2-135m out/adapter --steps 4 # a real PEFT LoRA adapter (needs torch, peft)
"""


def _model_args(p, positional=True):
    if positional:
        p.add_argument("model", help="smollm2-135m, tiny-260k, tiny-1m, a .gguf file or a HF checkpoint folder")
    p.add_argument("--bits", type=int, default=4, choices=(4, 2),
                   help="weight code width; 2 re-quantizes with our quantizer (useless post-training: see README)")
    p.add_argument("--adapter", help="a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")


def _load(args, with_tokenizer=True):
    from .models import load_model
    model = load_model(args.model, bits=args.bits, with_tokenizer=with_tokenizer)
    lora = None
    if getattr(args, "adapter", None):
        from .lora import load_adapter
        lora = load_adapter(args.adapter, model)
    return model, lora


# info -----------------------------------------------------------------------------------------------------
def cmd_info(args):
    from .report import model_info
    model, _ = _load(args, with_tokenizer=False)
    info = model_info(model)
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for k, v in info.items():
        print(f"{k:>24}: {v}")


# generate -------------------------------------------------------------------------------------------------
def cmd_generate(args):
    from .generate import GoldenTarget, prompt_tokens, stream_text
    from .golden.sampler import SamplingParams
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    if args.max_new_tokens < 1:
        raise RomaError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    model, lora = _load(args)
    tokens = prompt_tokens(model, args.prompt, chat=False if args.raw else None)
    context = args.context or model.config.context
    if len(tokens) >= context:
        raise RomaError(f"prompt of {len(tokens)} tokens does not fit the context of {context} tokens")
    if args.target != "golden":
        raise RomaError(f"--target {args.target}: only 'golden' exists so far (the simulator comes with the SoC)")
    target = GoldenTarget(golden_for(model, lora, min(context, len(tokens) + args.max_new_tokens)))
    stop = set(model.config.eos_ids) | set(args.stop or [])
    stats = stream_text(model.tokenizer, target.generate(tokens, args.max_new_tokens, params, stop),
                        lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    sys.stdout.write("\n")
    n = stats["tokens"]
    if not args.quiet:
        rate = (n - 1) / max(stats["elapsed"] - stats["first"], 1e-9) if n > 1 else 0.0
        print(f"[{target.name}] {len(tokens)} prompt tokens, {n} new tokens, first after {stats['first']:.2f} s, "
              f"{rate:.2f} tok/s after", file=sys.stderr)


# eval -----------------------------------------------------------------------------------------------------
def cmd_eval(args):
    from tqdm import tqdm
    from .evaluate import eval_tokens, fidelity
    from .reference import float_model
    model, lora = _load(args)
    tokens = eval_tokens(model, args.text, args.max_tokens)
    golden = golden_for(model, lora, context=len(tokens))
    print(f"{model.config.name}: {len(tokens)} tokens, building the float reference...", file=sys.stderr)
    reference = model
    if args.bits != 4 and args.float_reference == "original":
        from .models import load_model
        reference = load_model(args.model, bits=4)
    hf = float_model(reference, lora)
    with tqdm(total=len(tokens), desc="golden LM head", unit="tok", disable=args.quiet) as bar:
        r = fidelity(model, golden, hf, tokens, progress=bar.update)
    r["bits"] = args.bits
    r["adapter"] = args.adapter
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
    print(f"perplexity  golden {r['ppl_golden']:.4f}  float {r['ppl_float']:.4f}  "
          f"ratio {r['ppl_ratio']:.5f} ({(r['ppl_ratio'] - 1) * 100:+.3f}%)")
    print(f"top-1 next-token agreement {r['top1_agreement'] * 100:.2f}% over {r['tokens'] - 1} positions")
    print(f"largest logit difference {r['max_abs_logit_diff']:.4f}")


# export ---------------------------------------------------------------------------------------------------
def cmd_export(args):
    from .export import export
    model, lora = _load(args)
    manifest = export(model, lora, args.output, lanes=args.lanes, prompts=args.prompt or None,
                      vectors=not args.no_vectors)
    print(f"wrote {args.output}: {manifest['geometry']['lanes']} lanes, "
          f"{manifest['geometry']['rom_bits']} ROM bits, {len(manifest['files'])} files")


# make-adapter ---------------------------------------------------------------------------------------------
def cmd_make_adapter(args):
    from .make_adapter import make_adapter
    model, _ = _load(args)
    make_adapter(model, args.output, steps=args.steps, rank=args.rank, seed=args.seed)
    print(f"wrote {args.output}")


# bench ----------------------------------------------------------------------------------------------------
def cmd_bench(args):
    from .bench import bench_golden
    model, lora = _load(args)
    r = bench_golden(model, lora, tokens=args.tokens, with_float=not args.no_float)
    print(json.dumps(r, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


def build_parser():
    ap = argparse.ArgumentParser(
        prog="roma", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="ROMA-FPGA: a quantized LLM in block-RAM ROM fused with MAC lanes. Import models, "
                    "run the bit-exact golden model, export ROM images, generate tokens.")
    sub = ap.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="config, parameter and MAC counts, ROM bits of a model")
    _model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("generate", help="generate tokens from a prompt, streamed as they are produced",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("prompt", nargs="?", default="What is the capital of France?",
                   help="the user message (chat models get their chat template)")
    p.add_argument("--model", default="smollm2-135m", help="model name or path")
    _model_args(p, positional=False)
    p.add_argument("--target", default="golden", help="where to run: golden (the integer model in Python)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="stop after this many generated tokens")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=40, help="sample among the k most likely tokens (1..256)")
    p.add_argument("--top-p", type=float, default=1.0, help="then keep the smallest set reaching this mass")
    p.add_argument("--seed", type=int, default=0x2545F491, help="xorshift32 seed for sampling")
    p.add_argument("--stop", type=int, action="append", help="extra stop token id (repeatable)")
    p.add_argument("--raw", action="store_true", help="no chat template, even for chat models")
    p.add_argument("--context", type=int, help="KV cache positions; default: the model's context")
    p.add_argument("--quiet", action="store_true", help="no timing line on stderr")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("eval", help="perplexity and top-1 agreement of the golden model vs the float model")
    _model_args(p)
    p.add_argument("--text", help="a UTF-8 text file (default: the shipped held-out text)")
    p.add_argument("--max-tokens", type=int, help="evaluate at most this many tokens")
    p.add_argument("--float-reference", choices=("same", "original"), default="same",
                   help="with --bits 2: compare with the float model of the 2-bit weights, or of the original")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="ROM images per bank, scale tables, tables, tokenizer, golden vectors")
    _model_args(p)
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--lanes", type=int, help="MAC lanes = ROM banks (default: the largest that divides every row count, up to 256)")
    p.add_argument("--prompt", action="append", help="prompt for the golden test vectors (repeatable)")
    p.add_argument("--no-vectors", action="store_true", help="skip the golden test vectors")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("make-adapter", help="train a small real PEFT LoRA adapter on the shipped text (torch, peft)")
    _model_args(p)
    p.add_argument("output", help="output folder")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_adapter)

    p = sub.add_parser("bench", help="decode speed of the golden model beside transformers float32, 1 thread")
    _model_args(p)
    p.add_argument("--tokens", type=int, default=16, help="decode steps to time")
    p.add_argument("--no-float", action="store_true", help="skip the transformers side")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(func=cmd_bench)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except RomaError as e:
        print(f"roma: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roma: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
