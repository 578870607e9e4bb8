"""``reasoner bench steps``: step-level speculation against the target alone, side by side in one run.

Every configuration solves the same toy problems (default: 200 at the default difficulty, where the draft alone is
wrong about a third of the time) through the eval runner, one after the other in this process, after a warm-up.
``--pair qwen-coder --data FILE`` runs the real pair's recipes (Qwen2.5-Coder-0.5B drafting for -1.5B, issue 16)
on a local JSONL file of GSM8K-style problems instead.
For each: accuracy, wall time, target-generated tokens, the fraction of steps accepted from the draft, the
wall-clock speedup and the reduction of target-generated tokens against target-only chain of thought, and the
fraction of the ceiling reached (speedup / draft CoT's speedup: what speculation accepting every step would give),
and the target's prefill tokens per step (what judging costs the target: 0 for an acceptor that decides from the
draft's side on the steps it accepts, Arbitrage's draft-side router; the target's log-probs of every step for the
likelihood acceptor and the target-feature router).
Every configuration, the baselines included, goes through the same scheduler with the same model workers
(``--model-workers``) and torch threads (``--threads``). Where the time went: each model's busy seconds (its
worker computing) and forward passes. Writes ``bench.json`` (one row per configuration), ``bench.md`` and
``bench.png`` (accuracy vs speedup). ``--repeats N`` runs the configurations round-robin N times and reports each
one's median run (on a shared machine one run's wall time is at the mercy of its neighbours). ``--only LABEL``
keeps the named configurations; ``--ab OVERRIDE`` also runs each configuration with that recipe override (labelled
``label [override]``, right after it in each round), an A/B of a setting measured side by side.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import torch

from reasoner.backends.sources import QUANTIZE_KINDS
from reasoner.recipe import Recipe

from .args import check_pair_data, count
from .report import pyplot
from .runner import evaluate, read_results

# (label, recipe, overrides); thresholds: judge on the 0-9 scale, prm / likelihood on [0, 1], routers P(escalate)
CONFIGS = [
    ("target CoT", "toy-cot", []),
    ("draft CoT", "toy-cot-draft", []),
    *[(f"SpecReason judge >= {t}", "toy-specreason", [f"step_speculation.threshold={t}"]) for t in (3, 5, 7)],
    *[(f"RSD prm >= {t}", "toy-rsd", [f"step_speculation.threshold={t}"]) for t in (0.5, 0.7, 0.9)],
    *[(f"Arbitrage router >= {t}", "toy-arbitrage", [f"step_speculation.threshold={t}"]) for t in (0.3, 0.5, 0.7)],
    *[(f"target router >= {t}", "toy-target-router", [f"step_speculation.threshold={t}"]) for t in (0.3, 0.5, 0.7)],
    *[(f"likelihood >= {t}", "toy-likelihood", [f"step_speculation.threshold={t}"]) for t in (0.3, 0.5, 0.7, 0.9)],
]
# the real pair (issue 16): Qwen2.5-Coder-0.5B drafts for -1.5B; each acceptor at its recipe's threshold (set from
# `reasoner calibrate` on other problems; the judge found none within 2 points)
QWEN_CODER = [
    ("target CoT", "qwen-coder-cot", []),
    ("draft CoT", "qwen-coder-draft-cot", []),
    ("SpecReason judge (recipe threshold)", "qwen-coder-specreason", []),
    ("likelihood (recipe threshold)", "qwen-coder-likelihood", []),
]
PAIRS = {"toy": CONFIGS, "qwen-coder": QWEN_CODER}
QUICK = {
    "target CoT",
    "draft CoT",
    "SpecReason judge >= 7",
    "RSD prm >= 0.7",
    "Arbitrage router >= 0.5",
    "target router >= 0.5",
    "likelihood >= 0.5",
}


def run(
    out: Path,
    limit: int = 200,
    seed: int = 1234,
    difficulty: str = "medium",
    batch_size: int = 32,
    quick: bool = False,
    progress: bool = True,
    model_workers: str = "process",
    threads: int = 1,
    repeats: int = 1,
    lookahead_steps: int | None = None,
    window: bool = False,
    pair: str = "toy",
    data: str | None = None,
    configs: list[tuple[str, str, list[str]]] | None = None,
    quantize: str | None = None,
    overrides: list[str] | None = None,
    only: list[str] | None = None,
    ab: list[str] | None = None,
) -> list[dict]:
    """Run ``configs`` (default: the ``pair``'s; the first is the baseline, one labelled "draft CoT" the ceiling)
    on the same problems: the JSONL file ``data`` when given, else the toy suite (``seed``, ``difficulty``);
    ``quantize`` (int8 | fp16) applies to every model of every configuration, the baselines' included, and so do
    ``overrides`` (recipe overrides, before each configuration's own; bench.md lists them); ``only``: the labels to
    run; ``ab``: overrides each configuration also runs with."""
    common = list(overrides or [])
    if configs is None and pair not in PAIRS:
        raise ValueError(f"unknown pair {pair!r}: choose one of {', '.join(PAIRS)}")
    check_pair_data(pair, data)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    if data:
        suite = [f"suite.data={Path(data).resolve()}"]
    else:
        suite = [f"suite.seed={seed}", f"suite.difficulty={difficulty}", f"suite.size={max(limit, 1)}"]
    suite.append(f"scheduler.model_workers={model_workers}")
    if lookahead_steps is not None:
        suite.append(f"scheduler.lookahead_steps={lookahead_steps}")
    if configs is None:
        configs = [c for c in PAIRS[pair] if not quick or pair != "toy" or c[0] in QUICK]
    if only:
        unknown = set(only) - {label for label, _, _ in configs}
        if unknown:
            raise ValueError(f"--only: no configuration {sorted(unknown)}; choose from {[c[0] for c in configs]}")
        configs = [c for c in configs if c[0] in only]
    if ab:
        configs = [
            (f"{label} [{o}]", name, [*own, o]) if o else (label, name, own)
            for label, name, own in configs
            for o in ["", *ab]
        ]
    if pair == "toy" and not data:
        evaluate(
            Recipe.load("toy-cot", suite), None, limit=min(limit, batch_size), batch_size=batch_size, progress=False
        )  # warm-up
    runs: dict[str, list[dict]] = {label: [] for label, _, _ in configs}
    for k in range(repeats):
        for label, recipe_name, own in configs:
            folder = out / "runs" / re.sub(r"[^\w.-]+", "_", label.replace(">=", "ge")).strip("_")
            if repeats > 1:
                folder = folder / f"run{k + 1}"
            if progress:
                print(f"== {label}" + (f" (run {k + 1} of {repeats})" if repeats > 1 else ""), flush=True)
            recipe = Recipe.load(recipe_name, suite + common + own)
            if quantize:
                roles = [r for r in ("draft", "target") if getattr(recipe.models, r) is not None]
                quantized = [f"models.{r}.quantize={quantize}" for r in roles]
                recipe = Recipe.load(recipe_name, suite + common + own + quantized)
            s = evaluate(recipe, folder, limit=limit, batch_size=batch_size, progress=progress, window=window)
            runs[label].append(_row(label, recipe_name, recipe, s, _steps(folder)))
    rows = []
    for done in runs.values():
        walls = sorted(r["wall_s"] for r in done)
        median = next(r for r in done if r["wall_s"] == walls[len(walls) // 2])
        rows.append(dict(median, wall_s_runs=[r["wall_s"] for r in done]) if repeats > 1 else median)

    base = rows[0]
    for r in rows:
        r["speedup_vs_target"] = round(base["wall_s"] / r["wall_s"], 3) if r["wall_s"] else None
    ceiling = next((r["speedup_vs_target"] for r in rows if r["method"] == "draft CoT"), None)
    for r in rows:
        r["fraction_of_ceiling"] = round(r["speedup_vs_target"] / ceiling, 3) if ceiling and r["wall_s"] else None
        r["target_token_reduction"] = (
            round(base["target_tokens"] / r["target_tokens"], 2) if r["target_tokens"] else None
        )
        r["accuracy_delta_points"] = round(100 * (r["accuracy"] - base["accuracy"]), 1)
    meta = {
        "pair": pair,
        "data": data,
        "problems": min(limit, rows[0]["n"]) if rows else limit,
        "seed": seed,
        "difficulty": difficulty,
        "batch_size": batch_size,
        "window": window,
        "model_workers": model_workers,
        "threads": threads,
        "repeats": repeats,
        "lookahead_steps": lookahead_steps,
        "quantize": quantize,
        "overrides": common,
    }
    (out / "bench.json").write_text(json.dumps({"setup": meta, "rows": rows}, indent=2) + "\n")
    (out / "bench.md").write_text(table(rows, meta))
    plot(rows, out / "bench.png", pair)
    return rows


def _steps(folder: Path) -> int:
    """Steps written in a run: those of every candidate of every problem (step speculation's ``steps_total``)."""
    rows = read_results(folder / "results.jsonl").values()
    return sum(len(c["steps"]) for r in rows for c in r.get("candidates", []))


def _row(label: str, recipe_name: str, recipe: Recipe, s: dict, steps: int) -> dict:
    counters = s["counters"]
    spec = recipe.step_speculation
    return {
        "method": label,
        "recipe": recipe_name,
        "acceptor": spec.acceptor if spec else None,
        "threshold": (spec.threshold if spec else None),
        "n": s["n"],
        "accuracy": round(s["accuracy"], 4),
        "wall_s": s["wall_s"],
        "target_tokens": s["tokens"].get("target", 0),
        "draft_tokens": s["tokens"].get("draft", 0),
        "target_prefill_tokens": s["prefill_tokens"].get("target", 0),
        "steps": steps,
        "target_prefill_per_step": round(s["prefill_tokens"].get("target", 0) / steps, 2) if steps else None,
        "steps_accepted": int(counters.get("steps_accepted", 0)),
        "steps_total": int(counters.get("steps_total", 0)),
        "accepted_fraction": round(counters.get("steps_accepted", 0) / counters["steps_total"], 4)
        if counters.get("steps_total")
        else None,
        "busy_s": {role: round(b, 2) for role, b in s.get("busy_s", {}).items()},
        "forward_passes": s["forward_passes"],
        "score_forwards_saved": s.get("score_forwards_saved", 0),
    }


def table(rows: list[dict], meta: dict) -> str:
    head = (
        "| method | accuracy | Δ pts | wall s | speedup | of ceiling | target tokens | fewer target tokens "
        "| steps accepted | target prefill / step | busy s (target / draft) |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        acc = "" if r["accepted_fraction"] is None else f"{100 * r['accepted_fraction']:.0f} %"
        fewer = "∞" if r["target_token_reduction"] is None else f"{r['target_token_reduction']:.1f}x"
        busy = " / ".join(f"{r.get('busy_s', {}).get(role, 0):.1f}" for role in ("target", "draft"))
        ceiling = "" if r["fraction_of_ceiling"] is None else f"{r['fraction_of_ceiling']:.2f}"  # no draft CoT run
        lines.append(
            f"| {r['method']} | {100 * r['accuracy']:.1f} % | {r['accuracy_delta_points']:+.1f} | {r['wall_s']:.1f} | "
            f"{r['speedup_vs_target']:.2f}x | {ceiling} | {r['target_tokens']} | {fewer} | "
            f"{acc} | {r.get('target_prefill_per_step', '')} | {busy} |"
        )
    problems = (
        f"toy problems (difficulty {meta['difficulty']}, seed {meta['seed']})"
        if not meta.get("data")
        else f"problems of {Path(meta['data']).name} ({meta['pair']})"
    )
    note = (
        f"\n{meta['problems']} {problems}, "
        f"{'a window' if meta.get('window') else 'batches'} of {meta['batch_size']}, greedy, model workers: "
        f"{meta['model_workers']}, {meta['threads']} torch thread(s) per model; speedup and token reduction "
        "against target CoT, measured in one run; of ceiling = speedup / draft CoT's speedup; "
        "busy = seconds each model's worker computed; target prefill / step = the target's prompt tokens run (not "
        "served by its prefix cache) over every step written"
        + (f"; each row the median of {meta['repeats']} runs, round-robin" if meta.get("repeats", 1) > 1 else "")
        + (f"; lookahead steps {meta['lookahead_steps']}" if meta.get("lookahead_steps") is not None else "")
        + (f"; every model's linear layers {meta['quantize']}" if meta.get("quantize") else "")
        + (f"; in every row: {', '.join(meta['overrides'])}" if meta.get("overrides") else "")
        + ".\n"
    )
    return head + "\n".join(lines) + "\n" + note


def plot(rows: list[dict], path: Path, pair: str = "toy") -> None:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    families: dict[str, list[dict]] = {}
    for r in rows:
        families.setdefault(r["acceptor"] or r["method"], []).append(r)
    for name, rs in families.items():
        rs = sorted(rs, key=lambda r: r["speedup_vs_target"])
        ax.plot(
            [r["speedup_vs_target"] for r in rs],
            [100 * r["accuracy"] for r in rs],
            "o-" if len(rs) > 1 else "s",
            label=name,
        )
    ax.set_xlabel("wall-clock speedup vs target CoT")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Step-level speculation on the toy world" if pair == "toy" else f"Step-level speculation: {pair}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder for bench.json, bench.md, bench.png and the runs")
    p.add_argument(
        "--limit",
        type=count(1, 100_000, "each problem runs every configuration"),
        default=200,
        help="problems (default 200)",
    )
    p.add_argument(
        "--seed", type=count(0, 2**63 - 1, "64-bit seeds"), default=1234, help="toy suite seed (default 1234)"
    )
    p.add_argument("--difficulty", default="medium", help="toy difficulty preset or spec (default medium)")
    p.add_argument(
        "--batch-size",
        type=count(1, 4096, "each problem is a thread"),
        default=32,
        help="problems solved together (default 32)",
    )
    p.add_argument("--quick", action="store_true", help="toy: one threshold per acceptor")
    p.add_argument(
        "--model-workers",
        choices=["auto", "thread", "process"],
        default="process",
        help="where each model's worker runs, the same for every configuration (default process)",
    )
    p.add_argument(
        "--threads", type=count(1, 1024, "torch threads"), default=1, help="torch threads per model (default 1)"
    )
    p.add_argument(
        "--repeats",
        type=count(1, 100, "each repeat runs every configuration"),
        default=1,
        help="runs of each configuration, round-robin; the median is kept",
    )
    p.add_argument(
        "--lookahead-steps",
        type=count(0, 16, "scheduler.lookahead_steps"),
        default=None,
        help="scheduler.lookahead_steps for every configuration (0: off)",
    )
    p.add_argument(
        "--window",
        action="store_true",
        help="keep --batch-size problems in flight (a sliding window) instead of batches, in every configuration",
    )
    p.add_argument(
        "--pair",
        choices=list(PAIRS),
        default="toy",
        help="toy: the toy world's suite; qwen-coder: the real Qwen2.5-Coder pair's recipes on --data (default toy)",
    )
    p.add_argument("--data", default=None, help="a local JSONL file of problems (required for a real pair)")
    p.add_argument(
        "--quantize",
        choices=QUANTIZE_KINDS,
        default=None,
        help="int8 or fp16 linear layers for every model of every configuration (CPU; default: as the recipes say)",
    )
    p.add_argument(
        "--only", action="append", default=None, metavar="LABEL", help="run only this configuration (repeatable)"
    )
    p.add_argument(
        "--ab",
        action="append",
        default=None,
        metavar="OVERRIDE",
        help="also run each configuration with this recipe override, e.g. scheduler.mix_scores=false (repeatable)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args) -> None:
    out = Path(args.out)
    run(
        out,
        args.limit,
        args.seed,
        args.difficulty,
        args.batch_size,
        args.quick,
        not args.no_progress,
        args.model_workers,
        args.threads,
        args.repeats,
        args.lookahead_steps,
        args.window,
        args.pair,
        args.data,
        quantize=args.quantize,
        only=args.only,
        ab=args.ab,
    )
    print((out / "bench.md").read_text())
    print(f"wrote {args.out}/bench.json, bench.md, bench.png")
