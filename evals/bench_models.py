"""Decode speed of one model through the transformers backend: tokens per second at given batch sizes (greedy, EOS
ignored, a GSM8K-style chat prompt, one warm-up call), the load time and the process's peak memory. Why a command of
its own: the real models' speed on the machine at hand decides which recipes are worth running there.

    python -m evals.bench_models qwen2.5-coder-0.5b-instruct --batches 1,8 --tokens 32 [--dtype bfloat16]
        [--quantize int8] [--compile]
"""

from __future__ import annotations

import argparse
import resource
import time

from reasoner.backends import SamplingParams, load_lm

PROMPT = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips "
    "did Natalia sell altogether in April and May?"
)


def measure(
    path: str, batches: list[int], tokens: int, dtype: str = "auto", quantize: str = "none", compile: bool = False
) -> dict:
    """``{"load_s", "peak_rss_gb", "tok_s": {batch: tokens per second}}`` for the model at ``path``; ``quantize``:
    the backend's option (int8: dynamic quantization of the linear layers); ``compile``: ``torch.compile`` of the
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.bench_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a model path: a registry name, a .gguf file, a folder, toy:target, ...")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes (default 1,8)")
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per row (default 32)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (default auto)")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"], help="the backend's quantize option")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's forward")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    result = measure(args.model, batches, args.tokens, args.dtype, args.quantize, args.compile)
    setup = f"dtype {args.dtype}, quantize {args.quantize}" + (", compiled" if args.compile else "")
    print(f"{args.model} ({setup}): load {result['load_s']:.1f} s, peak RSS {result['peak_rss_gb']:.2f} GB")
    for b, rate in result["tok_s"].items():
        print(f"  batch {b}: {rate:.1f} tok/s")


if __name__ == "__main__":
    main()
