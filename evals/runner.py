"""The eval runner: solve a suite with a recipe, one JSON line per problem, then a summary.

Results are appended and flushed problem by problem, so nothing computed is lost if a run dies; a run
pointed at an ``--out`` folder that already holds results for the same recipe and suite continues where it
stopped and summarises every line.
"""
from __future__ import annotations

import json
import logging
import os
from collections import defaultdict
from pathlib import Path

from reasoner.api import Reasoner
from reasoner.recipe import Recipe

from .suites import load_suite

log = logging.getLogger(__name__)


def _read_results(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for i, line in enumerate(path.read_text().splitlines()):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    log.warning("%s line %d is incomplete (a run was interrupted while writing it); it will be redone", path, i + 1)
    return rows


def _check_same_run(out: Path, recipe: Recipe) -> None:
    saved = out / "recipe.yaml"
    if saved.is_file() and (out / "results.jsonl").is_file():
        mine = recipe.model_dump()
        theirs = Recipe.load(saved).model_dump()
        if mine != theirs:
            changed = [k for k in mine if mine[k] != theirs.get(k)]
            raise ValueError(
                f"{out} holds results of a different recipe (sections differ: {', '.join(changed)}): use another --out folder"
            )


def evaluate(recipe: Recipe, out: "str | Path | None" = None, limit: int | None = None, batch_size: int = 16, progress: bool = True) -> dict:
    """Run ``recipe`` on its suite (``recipe.suite``); returns the summary (also written to ``out``)."""
    problems = load_suite(recipe.suite)
    if limit is not None:
        problems = problems[:limit]
    out = Path(out) if out else None
    done: dict[str, dict] = {}
    if out:
        out.mkdir(parents=True, exist_ok=True)
        _check_same_run(out, recipe)
        (out / "recipe.yaml").write_text(recipe.to_yaml())
        done = {row["id"]: row for row in _read_results(out / "results.jsonl")}
    todo = [p for p in problems if p.id not in done]
    rows = [done[p.id] for p in problems if p.id in done]
    if todo:
        reasoner = Reasoner(recipe)
        sink = open(out / "results.jsonl", "a") if out else None
        bar = _progress(len(problems), len(rows), enabled=progress)
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                solutions = reasoner.solve_many(batch)
                shared = {
                    "size": len(batch),
                    "wall_s": round(reasoner.last_run.wall_s, 4),
                    "forward_passes": {k: r.forward_passes for k, r in reasoner.last_run.roles.items()},
                }
                for s in solutions:
                    row = s.to_dict() | {"batch": shared}
                    rows.append(row)
                    if sink:
                        sink.write(json.dumps(row) + "\n")
                        sink.flush()
                        os.fsync(sink.fileno())
                bar.update(len(batch))
                bar.set_postfix(accuracy=f"{sum(bool(r['correct']) for r in rows) / len(rows):.3f}")
        finally:
            bar.close()
            if sink:
                sink.close()
    summary = summarize(rows, recipe)
    if out:
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def summarize(rows: list[dict], recipe: Recipe) -> dict:
    """Accuracy and cost over result lines; wall time and forward passes are each batch's, shared evenly."""
    n = len(rows)
    correct = sum(bool(r["correct"]) for r in rows)
    tokens, prefill, forwards = defaultdict(int), defaultdict(int), defaultdict(float)
    wall = 0.0
    for r in rows:
        for role, s in r["stats"]["roles"].items():
            tokens[role] += s["generated_tokens"]
            prefill[role] += s["prefill_tokens"]
        wall += r["batch"]["wall_s"] / r["batch"]["size"]
        for role, f in r["batch"]["forward_passes"].items():
            forwards[role] += f / r["batch"]["size"]
    counters = defaultdict(float)
    for r in rows:
        for k, v in r["stats"].get("counters", {}).items():
            counters[k] += v
    return {
        "recipe": recipe.name,
        "suite": recipe.suite.model_dump(),
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else 0.0,
        "wall_s": round(wall, 3),
        "s_per_problem": round(wall / n, 4) if n else 0.0,
        "tokens": dict(sorted(tokens.items())),
        "prefill_tokens": dict(sorted(prefill.items())),
        "forward_passes": {k: round(v) for k, v in sorted(forwards.items())},
        "counters": dict(sorted(counters.items())),
    }


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="eval", unit="problem", disable=not enabled, dynamic_ncols=True)
