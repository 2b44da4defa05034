"""The `roma` command: info, generate, eval, export, make-adapter, bench; fit, build, swap, load (board_cli.py)."""

import argparse
import json
import sys

from .errors import RomaError
from .golden.model import golden_for

EPILOG = """examples:
  roma generate "What is the capital of France?"      # SmolLM2-135M-Instruct on the simulated SoC, greedy
  roma generate --target golden "Tell me a joke"      # the integer golden model in Python (no build)
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
    from .generate import prompt_tokens, stream_text
    from .golden.sampler import SamplingParams
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.seed)
    if args.max_new_tokens < 1:
        raise RomaError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    model, lora = _load(args)
    tokens = prompt_tokens(model, args.prompt, chat=False if args.raw else None)
    context = _target_context(args, model)
    if len(tokens) >= context:
        raise RomaError(f"prompt of {len(tokens)} tokens does not fit the context of {context} tokens")
    stop = set(model.config.eos_ids) | set(args.stop or [])
    target = _target(args, model, lora, min(context, len(tokens) + args.max_new_tokens))
    try:
        stats = stream_text(model.tokenizer, target.generate(tokens, args.max_new_tokens, params, stop),
                            lambda s: (sys.stdout.write(s), sys.stdout.flush()))
    finally:
        if hasattr(target, "close"):
            target.close()
    sys.stdout.write("\n")
    n = stats["tokens"]
    if not args.quiet:
        rate = (n - 1) / max(stats["elapsed"] - stats["first"], 1e-9) if n > 1 else 0.0
        print(f"[{target.name}] {len(tokens)} prompt tokens, {n} new tokens, first after {stats['first']:.2f} s, "
              f"{rate:.2f} tok/s after", file=sys.stderr)
        done = getattr(target, "done", None)
        if done is not None and done.n_new:
            print(f"[{target.name}] accelerator cycles: prefill {done.prefill_cycles:,}, decode "
                  f"{done.decode_cycles:,} ({done.decode_cycles // max(done.n_new - 1, 1):,} per token)",
                  file=sys.stderr)


SIM_CONTEXT = 512      # KV cache positions a simulator build gets unless --context says otherwise


def _sim_context(args, model):
    """The KV cache positions of a simulator build: --context, else the model's, at most SIM_CONTEXT."""
    return args.context or min(model.config.context, SIM_CONTEXT)


def _target_context(args, model):
    """The KV cache positions a prompt is checked against: the simulator's build, else --context or the
    model's (a board's own limit is checked by its firmware)."""
    return _sim_context(args, model) if args.target == "sim" else args.context or model.config.context


def _accel_config(args, model):
    from roma.soc.config import AccelConfig, default_config
    cfg = default_config(model.config)
    return AccelConfig(lanes=args.lanes or cfg.lanes, macs_per_lane=args.macs or cfg.macs_per_lane,
                       code_bits=getattr(args, "bits", 4), lora_rank=cfg.lora_rank)


def _target(args, model, lora, context):
    from .generate import GoldenTarget
    if args.target == "golden":
        return GoldenTarget(golden_for(model, lora, context))
    target = _device_target(args, model)
    if lora is not None:
        from .golden.lora import DeviceLora
        try:
            target.load_adapter(model, DeviceLora(lora))
        except BaseException:
            target.close()
            raise
    return target


def _device_target(args, model):
    if args.target == "sim":
        from roma.soc.config import large_model

        from .targets import SimTarget
        if large_model(model.config):
            # measured for SmolLM2-135M on 32 x 32 MACs: 152k accelerator cycles a wall second on a 2-core
            # machine (roma bench), a forward pass is 118k cycles (146k with the LM head)
            print(f"roma: note: {model.config.name} on the simulated SoC takes about 1 s of wall time per "
                  f"position, prompt included (the Verilator model runs some 150k cycles/s)", file=sys.stderr)
        ctx = _sim_context(args, model)
        return SimTarget(model, _accel_config(args, model), context=ctx, progress=not args.quiet)
    from .targets import DeviceTarget
    return DeviceTarget(args.target, model)


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


# sim ------------------------------------------------------------------------------------------------------
def cmd_sim(args):
    """Build (or find cached) the simulated SoC for a model and serve it until interrupted."""
    import time

    from roma.boards.sim import SimRunner, build_sim
    model, _ = _load(args, with_tokenizer=False)
    cfg = _accel_config(args, model)
    context = _sim_context(args, model)
    t0 = time.monotonic()
    build = build_sim(model, cfg, context=context)
    print(f"built in {time.monotonic() - t0:.0f} s: {build.gateware}")
    if args.build_only:
        return
    with SimRunner(build, port=args.port) as sim:
        print(f"{model.config.name} on {cfg.lanes} lanes x {cfg.macs_per_lane} MACs, context {context}: "
              f"serving {sim.url} (Ctrl-C stops it)", flush=True)
        print(f"  roma generate --model {args.model} --target {sim.url} \"What is the capital of France?\"",
              flush=True)
        while sim.proc.poll() is None:
            time.sleep(0.5)
        raise RomaError(f"the simulator exited with {sim.proc.returncode}")


# make-adapter ---------------------------------------------------------------------------------------------
def cmd_make_adapter(args):
    from .make_adapter import make_adapter
    model, _ = _load(args)
    make_adapter(model, args.output, steps=args.steps, rank=args.rank, seed=args.seed)
    print(f"wrote {args.output}")


# bench ----------------------------------------------------------------------------------------------------
def cmd_bench(args):
    if args.target == "sim":
        return _bench_sim(args)
    from .bench import bench_golden
    model, lora = _load(args)
    r = bench_golden(model, lora, tokens=args.tokens, with_float=not args.no_float)
    print(json.dumps(r, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


def _bench_sim(args):
    from .hw_bench import hw_bench, write_report
    model, _ = _load(args, with_tokenizer=False)
    cfg = _accel_config(args, model)
    context = _sim_context(args, model)
    r = hw_bench(model, cfg, context, new_tokens=args.tokens, clock_hz=args.clock_mhz * 1e6)
    png = args.png or f"bench-{model.config.name}.png"
    write_report(r, args.json, png)
    print(f"{r['model']} on {r['lanes']} lanes x {r['macs_per_lane']} MACs ({r['peak_macs_per_cycle']} MACs/cycle)")
    print(f"  prefill {r['prefill_cycles_per_token']:,.0f} cycles/token; decode "
          f"{r['decode_cycles_per_token']:,.0f} cycles/token = {r['decode_vs_floor']:.3f}x the MAC-count floor "
          f"({r['decode_floor_per_token']:,.0f})")
    print("  busy: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in r["unit_busy_fraction"].items()) +
          f"; L-unit multiplying {100 * r['l_mac_fraction']:.1f}% of cycles")
    print(f"  simulated {r['sim_cycles_per_wall_second']:,.0f} cycles per wall second; at "
          f"{args.clock_mhz:g} MHz: {r['projected_decode_tok_s']:,.0f} tok/s decode")
    print(f"  chart: {png}" + (f", JSON: {args.json}" if args.json else ""))


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
    p.add_argument("--target", default="sim",
                   help="where to run: golden (the integer model in Python), sim (the SoC in Verilator, built "
                        "and cached on first use), or a device URL (/dev/ttyUSB1, socket://host:port)")
    p.add_argument("--lanes", type=int, help="sim: MAC lanes (default: 8 for tiny models, 32 for SmolLM2)")
    p.add_argument("--macs", type=int, help="sim: MACs per lane per cycle (default: 8 tiny, 32 SmolLM2)")
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

    p = sub.add_parser("sim", help="build the SoC for a model in Verilator (cached) and serve it on a TCP port",
                       description="Builds the ROMA SoC (VexRiscv, UART, the accelerator with the model's weights in "
                                   "its B-ROM) as a Verilator model, cached by content hash, then runs it with the "
                                   "UART on a local TCP port until interrupted.")
    _model_args(p, positional=False)
    p.add_argument("--model", default="tiny-260k", help="model name or path")
    p.add_argument("--lanes", type=int, help="MAC lanes (default: 8 for tiny models, 32 for SmolLM2)")
    p.add_argument("--macs", type=int, help="MACs per lane per cycle (default: 8 tiny, 32 SmolLM2)")
    p.add_argument("--context", type=int, help=f"KV cache positions (default: the model's, at most {SIM_CONTEXT})")
    p.add_argument("--port", type=int, help="TCP port for the UART (default: a free one)")
    p.add_argument("--build-only", action="store_true", help="build (or check the cache) and exit")
    p.set_defaults(func=cmd_sim)

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
    p.add_argument("--target", choices=("golden", "sim"), default="golden",
                   help="golden: tok/s of the Python model beside transformers; sim: the simulated SoC's cycle "
                        "counters per token against the MAC-count floor, with a chart")
    p.add_argument("--lanes", type=int, help="sim: MAC lanes")
    p.add_argument("--macs", type=int, help="sim: MACs per lane per cycle")
    p.add_argument("--context", type=int, help=f"sim: KV cache positions (default: at most {SIM_CONTEXT})")
    p.add_argument("--clock-mhz", type=float, default=50.0, help="sim: clock for the projected tok/s")
    p.add_argument("--png", help="sim: chart file (default bench-MODEL.png)")
    p.set_defaults(func=cmd_bench)

    from .board_cli import register
    register(sub)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except RomaError as e:
        print(f"roma: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("roma: interrupted", file=sys.stderr)
        return 130
    return rc or 0


if __name__ == "__main__":
    sys.exit(main())
