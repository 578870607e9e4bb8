"""What one forward costs by how many new tokens it carries: the price of verifying a k-token draft against one decode
step, the number that decides whether token speculation can pay on a machine (docs/benchmarks.md, "Token
speculation on the real pair").

    python -m evals.bench_forward MODEL [MODEL ...] [--tokens 1,2,3,5,9,17] [--prefix 200] [--threads 1]
        [--quantize int8|fp16]

Per model: batch 1, a cached prefix of random tokens, then one forward over n new tokens, fastest of 3.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from evals.args import numbers
from reasoner.backends.sources import QUANTIZE_KINDS


def forward_seconds(
    name: str, tokens: list[int], prefix: int = 200, repeats: int = 3, quantize: str | None = None
) -> list[float]:
    """Seconds of one forward of model ``name`` (its linear layers int8 or fp16 with ``quantize``) over each count of
    new tokens after a cached ``prefix``."""
    from transformers import AutoModelForCausalLM, DynamicCache

    from reasoner.backends.sources import quantize_linear, resolve_path

    model = AutoModelForCausalLM.from_pretrained(resolve_path(name), dtype=torch.float32).eval()
    if quantize:
        model = quantize_linear(model, quantize, "cpu")
    vocab = model.config.vocab_size
    out = []
    with torch.inference_mode():
        for n in tokens:
            best = float("inf")
            for _ in range(repeats):
                cache = DynamicCache()
                model(torch.randint(100, vocab, (1, prefix)), past_key_values=cache, use_cache=True)
                new = torch.randint(100, vocab, (1, n))
                start = time.perf_counter()
                model(new, past_key_values=cache, use_cache=True)
                best = min(best, time.perf_counter() - start)
            out.append(best)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="+", help="model paths or names (reasoner models list)")
    p.add_argument("--tokens", default="1,2,3,5,9,17", help="new tokens per forward (comma-separated)")
    p.add_argument("--prefix", type=int, default=200, help="cached prefix tokens (default 200)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--quantize", choices=QUANTIZE_KINDS, default=None, help="int8 or fp16 linear layers (CPU; default float32)"
    )
    args = p.parse_args()
    try:
        tokens = [int(t) for t in numbers(args.tokens, "--tokens", "1,2,3,5,9,17")]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    print("| model | " + " | ".join(f"{n} tokens" for n in tokens) + " |")
    print("|---|" + "---|" * len(tokens))
    for name in args.models:
        secs = forward_seconds(name, tokens, args.prefix, quantize=args.quantize)
        label = f"{name} ({args.quantize})" if args.quantize else name
        print(f"| {label} | " + " | ".join(f"{s:.3f} s ({s / secs[0]:.2f}x)" for s in secs) + " |", flush=True)


if __name__ == "__main__":
    main()
