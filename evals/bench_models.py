"""Decode speed of one model through the transformers backend: tokens per second at given batch sizes (greedy, EOS
ignored, a GSM8K-style chat prompt, one warm-up call), the load time and the process's peak memory. Why a command of
its own: the real models' speed on the machine at hand decides which recipes are worth running there. With
``--fidelity N`` it measures instead what a ``--quantize`` option costs in tokens: how often the quantized model's next
token is float32's, teacher-forced on float32's own greedy continuations of N problems of ``--data``.

    python -m evals.bench_models qwen2.5-coder-0.5b-instruct --batches 1,8 --tokens 32 [--dtype bfloat16]
        [--quantize int8|fp16] [--compile]
    python -m evals.bench_models qwen2.5-coder-0.5b-instruct --quantize int8 --fidelity 8 --tokens 96 \
        --data ../shared/data/gsm8k-dev.jsonl
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

from evals.args import count
from evals.suites import load_suite
from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.sources import QUANTIZE_KINDS
from reasoner.recipe import SuiteConfig

PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
    "did Natalia sell altogether in April and May?"
)


def measure(
    path: str, batches: list[int], tokens: int, dtype: str = "auto", quantize: str = "none", compile: bool = False
) -> dict:
    """``{"load_s", "peak_rss_gb", "tok_s": {batch: tokens per second}}`` for the model at ``path``; ``quantize``:
    the backend's option (int8 | fp16: dynamic quantization of the linear layers); ``compile``: ``torch.compile`` of the
    model's forward (dynamic shapes; the warm-up pays the compilation)."""
    import torch

    start = time.perf_counter()
    lm = load_lm(
        "transformers",
        path,
        "target",
        dtype=dtype,
        prefix_cache_tokens=0,
        max_batch_size=max(batches),
        quantize=quantize,
    )
    if compile:
        lm.model.forward = torch.compile(lm.model.forward, dynamic=True)
    load_s = time.perf_counter() - start
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
    )
    rates, first = {}, None
    for b in batches:
        # warm-up at this batch size (torch.compile specializes on it; eager kernels pick their blocking)
        lm.generate([chat + " " * i for i in range(b)], SamplingParams(temperature=0.0, max_tokens=4, ignore_eos=True))
        # distinct prompts (one more trailing space each): every row is its own sequence, as in a batch of problems
        start = time.perf_counter()
        out = lm.generate(
            [chat + " " * i for i in range(b)], SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
        )
        rates[b] = sum(len(g[0].token_ids) for g in out) / (time.perf_counter() - start)
        first = first or out[0][0].token_ids
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux
    return {"load_s": load_s, "peak_rss_gb": peak, "tok_s": rates, "first_row_tokens": first}


def fidelity(path: str, quantize: str, questions: list[str], tokens: int) -> dict:
    """How far ``quantize`` moves the model at ``path`` from float32, teacher-forced on float32's own greedy
    continuations (``tokens`` each, EOS ignored) of ``questions``: ``{"alone": (agreement, kl), "batch": (agreement,
    kl), "positions": n}``, where agreement is the share of positions whose top-1 token is float32's and kl the mean
    KL(float32 || quantized) in nats. "alone" runs each row by itself, "batch" all rows in one left-padded forward:
    int8 quantizes a forward's activations with one scale for the whole batch, so its rows depend on each other."""
    import torch

    def load(option: str):
        return load_lm("transformers", path, "target", dtype="float32", prefix_cache_tokens=0, quantize=option)

    reference = load("none")
    tok = reference.tokenizer
    chats = [
        tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        for q in questions
    ]
    prompts = [tok(c, add_special_tokens=False)["input_ids"] for c in chats]
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    rows = [p + list(g[0].token_ids[:tokens]) for p, g in zip(prompts, reference.generate(chats, params))]
    width, pad = max(map(len, rows)), tok.pad_token_id or 0
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)

    def log_probs(model, select: slice) -> torch.Tensor:  # the last `tokens` positions' next-token log-probs
        with torch.inference_mode():
            logits = model(ids[select], attention_mask=mask[select], position_ids=positions[select]).logits[
                :, width - tokens - 1 : -1
            ]
        return torch.log_softmax(logits.float(), -1)

    ref = log_probs(reference.model, slice(None))
    del reference
    model = load(quantize).model
    out = {"positions": ref.shape[0] * ref.shape[1]}
    alone = torch.cat([log_probs(model, slice(i, i + 1)) for i in range(len(rows))])
    for label, lp in (("alone", alone), ("batch", log_probs(model, slice(None)))):
        agreement = (lp.argmax(-1) == ref.argmax(-1)).float().mean().item()
        kl = (ref.exp() * (ref - lp)).sum(-1).mean().item()
        out[label] = (agreement, kl)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.bench_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model path: a registry name, a .gguf file, a folder, toy:target, ...")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per row (default 32)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (default auto)")
    parser.add_argument(
        "--quantize", default="none", choices=["none", *QUANTIZE_KINDS], help="the backend's quantize option"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    parser.add_argument(
        "--fidelity",
        type=count(1, 64, "the problems run as one batch"),
        default=None,
        metavar="N",
        help="measure --quantize's top-1 agreement and KL against float32 on N problems of --data instead of speed",
    )
    parser.add_argument("--data", default=None, help="--fidelity: a GSM8K-schema JSONL file of problems")
    args = parser.parse_args(argv)
    if args.fidelity:
        if args.quantize == "none" or not args.data or not Path(args.data).is_file():
            print(
                "error: --fidelity compares a --quantize option with float32 on problems: pass --quantize int8 (or "
                "fp16) and --data FILE, e.g. ../shared/data/gsm8k-dev.jsonl",
                file=sys.stderr,
            )
            sys.exit(2)
        try:
            problems = load_suite(SuiteConfig(name="gsm8k", data=args.data))[: args.fidelity]
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        r = fidelity(args.model, args.quantize, [p.text for p in problems], args.tokens)
        print(
            f"{args.model} {args.quantize} against float32, {len(problems)} problems, {r['positions']} positions: "
            f"top-1 agreement {r['alone'][0]:.3f} alone / {r['batch'][0]:.3f} in the batch; "
            f"KL {r['alone'][1]:.3g} / {r['batch'][1]:.3g} nats"
        )
        return
    batches = [int(b) for b in args.batches.split(",")]
    result = measure(args.model, batches, args.tokens, args.dtype, args.quantize, args.compile)
    setup = f"dtype {args.dtype}, quantize {args.quantize}" + (", compiled" if args.compile else "")
    print(f"{args.model} ({setup}): load {result['load_s']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB")
    for b, rate in result["tok_s"].items():
        print(f"  batch {b}: {rate:.1f} tok/s")


if __name__ == "__main__":
    main()
