"""``reasoner calibrate``: choose a step-speculation acceptor's threshold for a model pair on a development split.

An acceptor's scores mean different things for different pairs: SpecReason's judge scored every Qwen2.5-Coder
0.5B draft step between 5.96 and 6.89 where the toy judge spreads over 0-9 (issue 16), and a likelihood threshold
depends on how peaked the target is. So a threshold is measured, not copied: the sweep runs the recipe's target
alone (the baseline), its draft alone (the ceiling) and the recipe at each threshold on the same development
problems, side by side in one run (the runs of ``reasoner bench steps``), and picks the fastest threshold whose
accuracy is within ``--max-loss`` points of the baseline. Several acceptor recipes of one pair share one baseline
and ceiling (``-r`` repeated); a stopped sweep resumes (each run is an eval folder). Calibrate on problems you will
not report on.

    reasoner calibrate -r qwen-coder-likelihood -r qwen-coder-specreason --data dev.jsonl --limit 24 --batch-size 8
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from reasoner.recipe import Recipe

from . import bench_steps
from .args import count, finite, numbers

# thresholds tried when --thresholds is not given: each acceptor's scale (judge 0-9; prm / likelihood [0, 1];
# routers: escalate at or above, so a higher threshold accepts more)
GRIDS = {
    "judge": [4.0, 5.0, 6.0, 6.5, 7.0],
    "likelihood": [0.02, 0.05, 0.1, 0.3, 0.5],  # real models put a few unlikely tokens in most steps
    "prm": [0.3, 0.5, 0.7, 0.9],
    "router": [0.3, 0.5, 0.7, 0.9],
    "target_router": [0.3, 0.5, 0.7, 0.9],
}


def configs(recipes: dict[str, Recipe], grids: dict[str, list[float]]) -> list[tuple]:
    """The sweep's runs: baseline (the first recipe's target alone), ceiling (its draft alone), then each recipe at
    each of its thresholds (the sweep's --set overrides go to every run, before these)."""
    first = next(iter(recipes))
    alone = ["step_speculation=null"]
    named = len(recipes) > 1
    return [
        ("target CoT", first, [*alone, "search.policy=target"]),
        ("draft CoT", first, [*alone, "search.policy=draft"]),
        *[
            (
                (f"{Path(source).stem}: " if named else "") + f"{recipe.step_speculation.acceptor} >= {t:g}",
                source,
                [f"step_speculation.threshold={t}"],
            )
            for source, recipe in recipes.items()
            for t in grids[source]
        ],
    ]


def choose(rows: list[dict], max_loss: float, recipe: str | None = None) -> dict | None:
    """The fastest threshold row (of ``recipe``, when given) whose accuracy is at most ``max_loss`` points below the
    baseline's (None: none is)."""
    base = rows[0]
    fit = [
        r
        for r in rows[2:]
        if (recipe is None or r["recipe"] == recipe) and 100 * (base["accuracy"] - r["accuracy"]) <= max_loss + 1e-9
    ]
    return max(fit, key=lambda r: r["speedup_vs_target"]) if fit else None


def calibrate(
    sources: list[str],
    out: Path,
    data: str | None = None,
    thresholds: list[list[float]] | None = None,
    max_loss: float = 2.0,
    limit: int = 24,
    batch_size: int = 8,
    overrides: list[str] | None = None,
    threads: int = 1,
    model_workers: str = "process",
    progress: bool = True,
) -> dict:
    """Sweep each recipe's acceptor threshold against one shared baseline and ceiling (the recipes must name the
    same models); writes ``calibrate.json`` and the sweep's bench.md/json/png in ``out``."""
    overrides = list(overrides or [])
    if thresholds and len(thresholds) != len(sources):
        raise ValueError(
            f"--thresholds given {len(thresholds)} times for {len(sources)} recipes: once per recipe, or not at all"
        )
    recipes = {source: Recipe.load(source, overrides) for source in sources}  # bad recipes fail before anything runs
    for source, recipe in recipes.items():
        if recipe.step_speculation is None:
            raise ValueError(f"recipe {source!r} has no step_speculation: calibrate a recipe with an acceptor")
    models = {source: recipe.models.model_dump(mode="json") for source, recipe in recipes.items()}
    if len({json.dumps(m, sort_keys=True) for m in models.values()}) > 1:
        raise ValueError(f"recipes {', '.join(sources)} name different models: calibrate one pair per sweep")
    grids = {
        source: sorted(thresholds[i] if thresholds else GRIDS[recipe.step_speculation.acceptor])
        for i, (source, recipe) in enumerate(recipes.items())
    }
    rows = bench_steps.run(
        out,
        limit=limit,
        batch_size=batch_size,
        progress=progress,
        model_workers=model_workers,
        threads=threads,
        pair="toy" if data is None else Path(sources[0]).stem,
        data=data,
        configs=configs(recipes, grids),
        overrides=overrides,
    )
    chosen = {}
    for source in sources:
        best = choose(rows, max_loss, source)
        keep = ("threshold", "accuracy", "speedup_vs_target", "accepted_fraction")
        chosen[source] = None if best is None else {k: best[k] for k in keep}
    result = {
        "recipes": {source: recipes[source].step_speculation.acceptor for source in sources},
        "data": data,
        "problems": rows[0]["n"],
        "batch_size": batch_size,
        "max_loss_points": max_loss,
        "baseline_accuracy": rows[0]["accuracy"],
        "chosen": chosen,
        "rows": rows,
    }
    (out / "calibrate.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def write_recipe(source: str, overrides: list[str], threshold: float, path: Path, note: str) -> None:
    """The recipe with its calibrated threshold, as a new YAML file (an existing file is never overwritten)."""
    data = Recipe.load(source, [*overrides, f"step_speculation.threshold={threshold}"]).model_dump(
        mode="json", exclude_unset=True
    )
    with path.open("x") as f:  # "x": fails if the file exists
        f.write(f"# {note}\n")
        yaml.safe_dump(data, f, sort_keys=False)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recipe",
        "-r",
        action="append",
        required=True,
        help="a recipe with step_speculation (path or name in recipes/); repeat it to calibrate several acceptors of "
        "one pair against one shared baseline",
    )
    p.add_argument(
        "--data", default=None, help="a local JSONL file of development problems (default: the recipe's suite)"
    )
    p.add_argument(
        "--thresholds",
        action="append",
        default=[],
        help="comma-separated thresholds to try, once per --recipe in the same order (default per acceptor: "
        + "; ".join(f"{a} {g}" for a, g in GRIDS.items())
        + ")",
    )
    p.add_argument("--max-loss", type=finite, default=2.0, help="accuracy points the choice may lose (default 2)")
    p.add_argument(
        "--limit",
        type=count(1, 100_000, "every problem runs every threshold"),
        default=24,
        help="problems (default 24)",
    )
    p.add_argument("--batch-size", type=count(1, 4096, "each problem is a thread"), default=8, help="default 8")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="recipe override")
    p.add_argument(
        "--threads", type=count(1, 1024, "torch threads"), default=1, help="torch threads per model (default 1)"
    )
    p.add_argument("--out", default=None, help="folder for the sweep (default runs/calibrate-RECIPE)")
    p.add_argument(
        "--write", default=None, help="also write the recipe with the chosen threshold to this new YAML file"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args) -> int:
    thresholds = [numbers(text, "--thresholds", "0.1,0.3,0.5") for text in args.thresholds]
    if args.max_loss < 0:
        raise ValueError(f"--max-loss {args.max_loss}: the accuracy loss allowed is >= 0 points")
    write = Path(args.write) if args.write else None
    if write is not None and len(args.recipe) > 1:
        raise ValueError("--write takes one --recipe: calibrate the recipe to write on its own")
    if write is not None and write.exists():
        raise ValueError(f"--write {write}: the file exists; name a new file")
    out = Path(args.out or f"runs/calibrate-{Path(args.recipe[0]).stem}")
    result = calibrate(
        args.recipe,
        out,
        args.data,
        thresholds or None,
        args.max_loss,
        args.limit,
        args.batch_size,
        args.overrides,
        args.threads,
        progress=not args.no_progress,
    )
    print((out / "bench.md").read_text())
    base = f"{100 * result['baseline_accuracy']:.1f} %"
    for source, chosen in result["chosen"].items():
        if chosen is None:
            print(f"{source}: no threshold stayed within {args.max_loss:g} points of the target's accuracy ({base})")
        else:
            print(
                f"{source}: step_speculation.threshold={chosen['threshold']:g} ({chosen['speedup_vs_target']:.2f}x "
                f"the target alone, accuracy {100 * chosen['accuracy']:.1f} % vs {base}, {result['problems']} problems)"
            )
    print(f"wrote {out}/calibrate.json")
    chosen = result["chosen"][args.recipe[0]]
    if write is not None and chosen is not None:
        note = (
            f"calibrated by reasoner calibrate on {result['problems']} problems of {args.data or 'the recipe suite'}: "
            f"{chosen['speedup_vs_target']:.2f}x, accuracy {100 * chosen['accuracy']:.1f} % (target alone {base})"
        )
        write_recipe(args.recipe[0], args.overrides, chosen["threshold"], write, note)
        print(f"wrote {write}")
    return 0 if all(result["chosen"].values()) else 1
