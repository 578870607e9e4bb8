"""``reasoner bench scale``: a toy eval of N problems on Ray with 1 replica and with 2 (one torch thread and one CPU
each), next to the same eval in this process without Ray; throughput and its ratio, with Ray's costs apart.

    reasoner bench scale --problems 200 --out runs/bench-scale     # needs ray (pip install -e '.[ray]')

One local Ray (``--cpus``, default 2) serves both Ray runs; each run is ``evaluate`` into a fresh folder, so rows go
through the one writer as in ``reasoner eval --ray``. Reported apart: Ray's start-up (``ray.init``, once), the
replicas' start (actors up and models loaded, each run), and Ray's per-problem overhead (each unit's round trip less
the time the replica spent solving it, over the problems). Throughput is over the whole ``evaluate`` call (``end to
end``), and ``steady``: the problems whose unit came back after every replica was ready, over that time (with few
problems the first replica up solves much of the suite while the second still loads its models). The CPU seconds
the replicas got while solving say how much of the machine they had: on a machine shared with other work (and
Linux's autogroup scheduling, which shares the CPUs per session, not per process) a second replica may get little
more CPU than one, and the ratio measures that, not Ray. Writes ``bench_scale.json`` and ``bench_scale.md``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from reasoner.recipe import Recipe

from .args import count
from .runner import evaluate


def add_arguments(p) -> None:
    p.add_argument("--recipe", default="toy-cot", help="the recipe (default toy-cot: greedy, one model)")
    p.add_argument(
        "--problems", type=count(1, 100_000, "each is solved three times"), default=200, help="N (default 200)"
    )
    p.add_argument("--difficulty", default="medium", help="toy difficulty (default medium)")
    p.add_argument(
        "--replicas", default="1,2", help="comma-separated replica counts, compared to the first (default 1,2)"
    )
    p.add_argument(
        "--batch-size", type=count(1, 4096, "problems per unit"), default=4, help="problems per unit (default 4)"
    )
    p.add_argument("--cpus", type=count(1, 4096, "CPUs"), default=2, help="CPUs of the local Ray (default 2)")
    p.add_argument("--no-local", action="store_true", help="skip the run without Ray")
    p.add_argument("--out", default="runs/bench-scale", help="folder for the runs and the tables")


def main(args) -> list[dict]:
    from .scale import import_ray, last_run

    ray = import_ray()
    import torch

    torch.set_num_threads(1)  # the run without Ray: one thread, as each replica has
    replicas = [count(1, 1024, "replicas")(r) for r in args.replicas.split(",") if r.strip()]
    out = Path(args.out)
    suite = [f"suite.difficulty={args.difficulty}", f"suite.size={args.problems}"]
    rows = []
    if not args.no_local:
        start = time.perf_counter()
        summary = evaluate(
            Recipe.load(args.recipe, suite), _fresh(out / "local"), batch_size=args.batch_size, progress=False
        )
        rows.append(_row("local (no Ray)", args.problems, time.perf_counter() - start, summary))
    start = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False)
    init_s = time.perf_counter() - start
    try:
        for n in replicas:
            recipe = Recipe.load(args.recipe, suite + ["scale.engine=ray", f"scale.replicas={n}", "scale.num_cpus=1"])
            last_run.clear()
            start = time.perf_counter()
            summary = evaluate(recipe, _fresh(out / f"ray-{n}"), batch_size=args.batch_size, progress=False)
            row = _row(f"Ray, {n} replica{'s' * (n > 1)}", args.problems, time.perf_counter() - start, summary)
            ready = max(last_run["started_s"])  # every replica has loaded its models
            after = sum(unit[1] for unit in last_run["finished"] if unit[0] > ready)
            row |= {
                "replicas": n,
                "unit": last_run["unit"],
                "replicas_ready_s": round(ready, 2),
                "steady_problems": after,
                "steady_s": round(last_run["solve_s"] - ready, 2),
                "steady_problems_per_s": round(after / max(last_run["solve_s"] - ready, 1e-9), 3),
                "overhead_ms_per_problem": round(1000 * last_run["overhead_s"] / args.problems, 2),
                "cpu_s": last_run["cpu_s"],  # what the replicas got of the CPUs while solving
                "problems_per_cpu_s": round(args.problems / last_run["cpu_s"], 3),
            }
            row["overhead_share"] = round(last_run["overhead_s"] / n / last_run["solve_s"], 4)
            rows.append(row)
    finally:
        ray.shutdown()
    first = next(r for r in rows if r.get("replicas") == replicas[0])
    for r in rows:
        r["ratio_end_to_end"] = round(first["end_to_end_s"] / r["end_to_end_s"], 2)
        if "steady_s" in r:
            r["ratio_steady"] = round(r["steady_problems_per_s"] / first["steady_problems_per_s"], 2)
    meta = {
        "recipe": args.recipe,
        "problems": args.problems,
        "difficulty": args.difficulty,
        "batch_size": args.batch_size,
        "ray_init_s": round(init_s, 2),
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    (out / "bench_scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (out / "bench_scale.md").write_text(table(rows, meta) + "\n")
    print(table(rows, meta))
    return rows


def _fresh(folder: Path) -> Path:
    """A run's folder, emptied: the bench measures whole runs, never a resume."""
    for name in ("results.jsonl", "summary.json"):
        (folder / name).unlink(missing_ok=True)
    return folder


def _row(name: str, n: int, seconds: float, summary: dict) -> dict:
    return {
        "run": name,
        "problems": n,
        "accuracy": summary["accuracy"],
        "end_to_end_s": round(seconds, 2),
        "problems_per_s": round(n / seconds, 3),
    }


def table(rows: list[dict], meta: dict) -> str:
    lines = [
        f"{meta['problems']} toy problems ({meta['difficulty']}), {meta['recipe']}, units of {meta['batch_size']}; "
        f"ray.init {meta['ray_init_s']} s (once); load average {', '.join(f'{x:.2f}' for x in meta['load_average'])}",
        "",
        "| run | accuracy | end to end s | problems/s | ratio | replicas ready s | steady problems/s | steady ratio "
        "| Ray overhead ms/problem (share of the solve) | CPU s the replicas got | problems per CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["run"], f"{r['accuracy']:.3f}", r["end_to_end_s"], r["problems_per_s"], f"{r['ratio_end_to_end']}x"]
        if "replicas" in r:
            cells += [
                r["replicas_ready_s"],
                f"{r['steady_problems_per_s']} ({r['steady_problems']} in {r['steady_s']} s)",
                f"{r['ratio_steady']}x",
                f"{r['overhead_ms_per_problem']} ({100 * r['overhead_share']:.1f} %)",
                r["cpu_s"],
                r["problems_per_cpu_s"],
            ]
        else:
            cells += [""] * 6
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)
