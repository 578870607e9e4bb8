"""``reasoner bench search``: every search at several budgets on one toy suite, side by side in one run.

Policy ``toy:draft``, verifier ``toy:target``'s likelihood or the toy PRM (the ``toy-beam`` recipe with
``search.method`` swapped), a hard toy suite. A budget ``B`` sets each search's main knob: ``n = B`` for
best-of-N, beam, DVTS, FETCH (width 4), REBASE and ETS (width B); MCTS runs ``B`` iterations (3 children per
expansion); A* collects ``max(1, B / 4)`` finished candidates within ``2 B`` expansions. CoT (greedy, one
trajectory) is the baseline.
With ``--speculation`` every run is repeated with step speculation: ``toy:target`` judges each draft step by its
own likelihood (the ``likelihood`` acceptor at 0.5, the ``toy-likelihood`` recipe's) and rewrites the steps it
rejects. (SpecReason's 0-9 judge is not used here: the toy target is a poor judge and rejects every step at 7.)

Writes ``DIR/<method>-<budget>[-spec]/`` (the eval runs), ``DIR/bench_search.json``, ``DIR/bench_search.md``
and ``DIR/bench_search.png`` (accuracy against generated tokens per problem).

With ``--fit-auto`` (Snell et al. 2024's compute-optimal search): the grid's searches (no speculation, not CoT)
run again on a calibration split (suite seed ``--fit-seed``, default ``--seed`` + 1: other problems), with a probe run
(``auto`` that only takes the vote of ``--probe`` samples) that measures each problem's agreement; ``fit_table``
picks a search per agreement bin at the average tokens of the most accurate fixed calibration run, writes
``DIR/auto_table.json`` and runs ``auto`` with it on the evaluation split (row ``auto``). CoT is not a candidate:
the bench's CoT is greedy, and auto's sampling is the recipe's. A search that continues from the probes (A*) is
calibrated by ``auto`` itself with a table sending every problem to it, since its fixed run does not predict what it
does after them. The goal check compares ``auto`` with the fixed runs at its tokens (``frontier``).
"""

from __future__ import annotations

import json
import logging
import time
from itertools import product
from pathlib import Path

from reasoner.recipe import Recipe
from search.auto import CONTINUES_PROBES

from .report import pyplot
from .runner import evaluate

log = logging.getLogger(__name__)

METHODS = ("cot", "best_of_n", "beam", "dvts", "mcts", "astar", "rebase", "ets", "fetch")
BASE_RECIPE = "toy-beam"
SPECULATION = [
    "models.target.path=toy:target",
    "step_speculation.acceptor=likelihood",
    "step_speculation.threshold=0.5",
]
# the step scorers the searches rank by: toy:target's own likelihood of each step (its least likely token; a path
# scores its worst step; the toy search recipes' verifier), or the toy PRM (a surprise head on the same body, step
# ROC-AUC 0.993 on the draft's samples; a step's score is its path's, so a path scores its last step)
VERIFIERS = {
    "likelihood": ([], "toy:target's likelihood", "target"),
    "prm": (
        [
            "models.verifier.path=toy:prm",
            "verifier.type=prm",
            "verifier.model=verifier",
            "verifier.aggregate=last",
        ],
        "toy:prm",
        "verifier",
    ),
}


def overrides(method: str, budget: int) -> list[str]:
    """The recipe overrides that run ``method`` at ``budget``."""
    out = [f"search.method={method}"]
    if method == "cot":
        return out + ["sampling.temperature=0", "search.vote=majority"]
    if method == "best_of_n":
        return out + [f"search.n={budget}"]
    if method in ("beam", "dvts", "fetch"):
        return out + [f"search.n={budget}", f"search.width={min(4, budget)}"]
    if method in ("rebase", "ets"):
        return out + [f"search.n={budget}"]
    if method == "mcts":
        return out + [f"search.n={budget}", "search.width=3"]
    if method == "astar":
        return out + [f"search.n={max(1, budget // 4)}", f"search.max_expansions={2 * budget}", "search.width=3"]
    raise ValueError(f"unknown method {method!r}: use one of {', '.join(METHODS)}")


def run(
    out: str | Path,
    problems: int = 16,
    difficulty: str = "hard",
    budgets=(4, 8, 16),
    methods=METHODS,
    speculation: str = "off",
    seed: int = 1234,
    progress: bool = True,
    verifier: str = "likelihood",
    fit_auto: bool = False,
    fit_seed: int | None = None,
    probe: int = 4,
    bins=(0.5, 0.75, 1.0),
) -> list[dict]:
    """Run the grid (skipping runs already finished in ``out``); returns one row per run. ``fit_auto``: then fit
    ``auto``'s table on a calibration split (suite seed ``fit_seed``) and add auto's row on this split."""
    import torch

    torch.set_num_threads(1)
    out = Path(out)
    spec_modes = {"off": [False], "on": [True], "both": [False, True]}[speculation]
    grid = [(m, b, s) for s in spec_modes for m in methods for b in ((None,) if m == "cot" else budgets)]
    rows = []
    from tqdm.auto import tqdm

    for method, budget, spec in tqdm(grid, desc="bench search", unit="run", disable=not progress):
        label = f"{method}" + (f"-{budget}" if budget else "") + ("-spec" if spec else "")
        sets = overrides(method, budget or 1) + (SPECULATION if spec else [])
        rows.append(run_one(out, label, method, budget, spec, sets, problems, difficulty, seed, verifier))
    if fit_auto:
        rows.append(auto_row(out, rows, problems, difficulty, seed, fit_seed, verifier, probe, bins))
    (out / "bench_search.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "bench_search.md").write_text(table(rows, difficulty) + "\n")
    plot(rows, out / "bench_search.png")
    return rows


def run_one(out, label, method, budget, spec, sets, problems, difficulty, seed, verifier) -> dict:
    """One run of the grid (``sets``: its search overrides) on the suite with ``seed``; its row."""
    sets = sets + VERIFIERS[verifier][0] + [f"name={label}", f"suite.difficulty={difficulty}", f"suite.seed={seed}"]
    recipe = Recipe.load(BASE_RECIPE, sets)
    start = time.perf_counter()
    summary = evaluate(recipe, Path(out) / label, limit=problems, batch_size=problems, progress=False)
    n = summary["n"]
    return {
        "run": label,
        "method": method,
        "budget": budget,
        "speculation": spec,
        "n": n,
        "accuracy": round(summary["accuracy"], 4),
        "tokens_per_problem": round(sum(summary["tokens"].values()) / n, 1),
        "target_tokens_per_problem": round(summary["tokens"].get("target", 0) / n, 1),
        "verifier": VERIFIERS[verifier][1],
        "verifier_prefill_per_problem": round(summary["prefill_tokens"].get(VERIFIERS[verifier][2], 0) / n, 1),
        "s_per_problem": summary["s_per_problem"],
        "kv_tokens_peak": summary.get("kv_tokens_peak"),
        "kv_tokens_mean": summary.get("kv_tokens_mean"),
        "bench_wall_s": round(time.perf_counter() - start, 1),
    }


def auto_row(out, rows, problems, difficulty, seed, fit_seed, verifier, probe, bins) -> dict:
    """Fit auto's table on the calibration split (the grid's runs again, on suite seed ``fit_seed``; a calibration
    problem whose text is also in this split is left out of the fit), write ``DIR/auto_table.json``, and run auto
    with it here; its row."""
    out = Path(out)
    fit_seed = seed + 1 if fit_seed is None else fit_seed
    if fit_seed == seed:
        raise ValueError(f"--fit-seed {fit_seed} is the evaluation split's --seed: fit on other problems")
    evaluation = {r["problem"] for r in _per_problem(out / rows[0]["run"]).values()}
    calibration = out / "calibration"
    probe_sets = ["search.method=auto", f"search.probe={probe}", f"search.table={_probe_table(out, probe)}"]
    probed = run_one(calibration, "probe", "auto", probe, False, probe_sets, problems, difficulty, fit_seed, verifier)
    results = {"probe": _per_problem(calibration / "probe")}
    budgets = {r["run"]: (r["method"], r["budget"]) for r in rows if r["method"] != "cot" and not r["speculation"]}
    if not budgets:
        raise ValueError("--fit-auto picks among the searches run: give --methods more than cot")
    fixed, probed_runs = {}, {"probe"}
    for label, (method, budget) in budgets.items():
        fixed[label] = run_one(
            calibration,
            label,
            method,
            budget,
            False,
            overrides(method, budget),
            problems,
            difficulty,
            fit_seed,
            verifier,
        )
        costed = label  # the run whose per-problem results cost this strategy under auto
        if method in CONTINUES_PROBES:  # what it does after the probes: auto with a table sending every problem to it
            table = _one_row_table(calibration, label, probe, _section(method, budget))
            sets = ["search.method=auto", f"search.probe={probe}", f"search.table={table}"]
            costed = f"auto-{label}"
            run_one(calibration, costed, "auto", budget, False, sets, problems, difficulty, fit_seed, verifier)
            probed_runs.add(label)
        results[label] = _per_problem(calibration / costed)
    agreement = {i: r["agreement"] for i, r in results["probe"].items() if r["problem"] not in evaluation}
    costs = auto_costs(results, agreement, probed_runs)
    best = max(fixed.values(), key=lambda r: (r["accuracy"], -r["tokens_per_problem"]))
    picked = fit_table(agreement, costs, bins, best["tokens_per_problem"])
    sections = {"probe": {"method": "best_of_n", "n": probe}} | {
        label: _section(method, budget) for label, (method, budget) in budgets.items()
    }
    doc = {
        "probe": probe,
        "table": [{"max_agreement": b["max_agreement"], "search": sections[b["strategy"]]} for b in picked],
        "fit": {
            "rule": fit_table.__doc__.split("\n\n")[0],
            "calibration_suite_seed": fit_seed,
            "problems": len(agreement),
            "left_out_as_in_the_evaluation_split": len(results["probe"]) - len(agreement),
            "budget_tokens_per_problem": best["tokens_per_problem"],
            "budget_from": best["run"],
            "probe_tokens_per_problem": probed["tokens_per_problem"],
            "bins": picked,
        },
    }
    path = out / "auto_table.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    sets = ["search.method=auto", f"search.probe={probe}", f"search.table={path}"]
    return run_one(out, "auto", "auto", None, False, sets, problems, difficulty, seed, verifier)


def _probe_table(out: Path, probe: int) -> Path:
    """A table that only probes: every problem takes the probes' vote (best-of-``probe`` reusing them)."""
    return _one_row_table(Path(out) / "calibration", "probe", probe, {"method": "best_of_n", "n": probe})


def _one_row_table(folder: Path, label: str, probe: int, section: dict) -> Path:
    """An ``auto`` table that sends every problem to ``section``: ``folder/<label>_table.json``."""
    path = folder / f"{label}_table.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"probe": probe, "table": [{"max_agreement": 1.0, "search": section}]}) + "\n")
    return path


def _section(method: str, budget: int) -> dict:
    """The search section ``overrides(method, budget)`` sets (for a table row)."""
    out = {}
    for item in overrides(method, budget):
        key, value = item.split("=", 1)
        if key.startswith("search."):
            out[key.removeprefix("search.")] = int(value) if value.isdigit() else value
    return out


def _per_problem(folder: Path) -> dict[str, dict]:
    """Per problem id of a finished run: its text, correct, generated tokens (all roles), auto's agreement."""
    out = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        stats = r.get("stats") or {}
        tokens = sum(s["generated_tokens"] for s in stats.get("roles", {}).values())
        out[r["id"]] = {
            "problem": r.get("problem"),
            "correct": bool(r["correct"]),
            "tokens": tokens,
            "agreement": stats.get("counters", {}).get("auto_agreement"),
        }
    return out


def auto_costs(
    results: dict[str, dict[str, dict]], agreement: dict, probed: frozenset[str] | set[str] = frozenset({"probe"})
) -> dict[str, dict[str, tuple[bool, float]]]:
    """Per strategy, per problem: (correct, tokens auto would spend running it). The probes' tokens are added, except
    that best-of-N reuses them (it costs the larger of the two); the ``probed`` runs (``probe``, the probes' own
    vote, and runs of auto itself, e.g. A* continuing from the probes) counted them already."""
    probe = results["probe"]
    out = {}
    for label, per in results.items():
        reuse = label in probed or label.startswith("best_of_n")
        out[label] = {
            i: (r["correct"], max(r["tokens"], probe[i]["tokens"]) if reuse else r["tokens"] + probe[i]["tokens"])
            for i, r in per.items()
            if i in agreement and i in probe
        }
    return out


def fit_table(agreement: dict, costs: dict[str, dict[str, tuple[bool, float]]], bins, budget: float) -> list[dict]:
    """Per agreement bin, the strategy: of every assignment of one strategy to each bin, the one solving the most
    calibration problems whose mean tokens per problem (probes included) do not exceed ``budget``; ties to fewer
    tokens; with none within budget, the cheapest assignment.

    Snell et al. 2024 pick per difficulty bin the best strategy at a given compute budget; this picks jointly so
    that the average over problems, not each bin, meets the budget (the bench's equal-average-tokens comparison).
    A bin no calibration problem fell in gets the cheapest strategy."""
    labels = sorted(costs)
    members: list[list[str]] = [[] for _ in bins]
    for i, a in agreement.items():
        members[next(b for b, top in enumerate(bins) if a <= top + 1e-9)].append(i)
    if len(labels) ** len(bins) > 1_000_000:
        raise ValueError(f"{len(labels)} strategies over {len(bins)} bins is too many assignments: use fewer bins")

    def cell(label, b):  # (problems solved, tokens) of ``label`` on bin ``b``
        got = [costs[label][i] for i in members[b] if i in costs[label]]
        return sum(c for c, _ in got), sum(t for _, t in got)

    cells = {(label, b): cell(label, b) for label in labels for b in range(len(bins))}
    cheapest = min(labels, key=lambda lab: sum(t for _, t in costs[lab].values()))
    n = max(1, sum(len(m) for m in members))
    best, best_key = None, None
    for choice in product(labels, repeat=len(bins)):
        choice = tuple(c if members[b] else cheapest for b, c in enumerate(choice))
        solved = sum(cells[c, b][0] for b, c in enumerate(choice))
        tokens = sum(cells[c, b][1] for b, c in enumerate(choice))
        key = (tokens / n <= budget + 1e-9, solved if tokens / n <= budget + 1e-9 else 0, -tokens)
        if best_key is None or key > best_key:
            best, best_key = choice, key
    return [
        {
            "max_agreement": top,
            "strategy": best[b],
            "problems": len(members[b]),
            "solved": cells[best[b], b][0],
            "tokens_per_problem": round(cells[best[b], b][1] / max(1, len(members[b])), 1),
        }
        for b, top in enumerate(bins)
    ]


def table(rows: list[dict], difficulty: str) -> str:
    n = rows[0]["n"] if rows else 0
    head = (
        "| run | accuracy ± s.e. | tokens / problem | target tokens / problem | verifier prefill / problem "
        "| s / problem | KV peak | KV mean |"
    )
    verifier = rows[0].get("verifier", "toy:prm") if rows else "toy:prm"
    lines = [
        f"Toy suite, difficulty {difficulty}, {n} problems; policy toy:draft, verifier {verifier}.",
        "",
        head,
        "|---" * 8 + "|",
    ]
    for r in rows:
        kv = [f"{r[k]:.0f}" if r[k] is not None else "-" for k in ("kv_tokens_peak", "kv_tokens_mean")]
        lines.append(
            f"| {r['run']} | {r['accuracy']:.3f} ± {stderr(r):.3f} | {r['tokens_per_problem']:.0f} | "
            f"{r['target_tokens_per_problem']:.0f} | "
            f"{r['verifier_prefill_per_problem']:.0f} | {r['s_per_problem']:.2f} | {kv[0]} | {kv[1]} |"
        )
    return "\n".join(lines + [""] + goals(rows))


def stderr(row: dict) -> float:
    """Binomial standard error of a run's accuracy."""
    p = row["accuracy"]
    return (p * (1 - p) / max(1, row["n"])) ** 0.5


def goals(rows: list[dict]) -> list[str]:
    """The issue's goals, checked against this run's rows: ETS keeps >= 1.8x less KV than REBASE at equal accuracy,
    FETCH writes >= 2x fewer tokens than beam at equal accuracy, every search beats CoT at each budget."""
    at = {(r["method"], r["budget"], r["speculation"]): r for r in rows}
    out = ["Goals (computed from the rows above; 'equal accuracy' = within one standard error):", ""]
    for a, b, what, key, need in (
        ("ets", "rebase", "less retained KV (peak) than REBASE", "kv_tokens_peak", 1.8),
        ("fetch", "beam", "fewer generated tokens than beam", "tokens_per_problem", 2.0),
    ):
        for (m, budget, spec), r in sorted(at.items(), key=lambda kv: (kv[0][2], kv[0][1] or 0)):
            other = at.get((b, budget, spec))
            if m != a or other is None or not r.get(key) or not other.get(key):
                continue
            ratio = other[key] / r[key]
            equal = abs(r["accuracy"] - other["accuracy"]) <= max(stderr(r), stderr(other))
            ok = ratio >= need and (equal or r["accuracy"] > other["accuracy"])
            out.append(
                f"- {r['run']}: {ratio:.2f}x {what} (goal {need}x), accuracy {r['accuracy']:.3f} vs "
                f"{other['accuracy']:.3f}: {'met' if ok else 'not met'}"
            )
    auto = at.get(("auto", None, False))
    fixed = [r for (m, _, s), r in at.items() if not s and m != "auto"]
    if auto is not None and fixed:
        rival, how = frontier(fixed, auto["tokens_per_problem"])
        top = max(fixed, key=lambda r: r["accuracy"])
        out.append(
            f"- auto: {auto['accuracy']:.3f} at {auto['tokens_per_problem']:.0f} tokens/problem vs the fixed runs at "
            f"equal tokens, {rival:.3f} ({how}): {'met' if auto['accuracy'] >= rival else 'not met'} (goal: auto >= "
            f"it); the most accurate fixed run: {top['run']} {top['accuracy']:.3f} at {top['tokens_per_problem']:.0f}"
        )
    for spec in (False, True):
        cot = at.get(("cot", None, spec))
        if cot is None:
            continue
        runs = [r for (m, _, s), r in at.items() if s == spec and m != "cot"]
        beaten = [r["run"] for r in runs if r["accuracy"] > cot["accuracy"]]
        out.append(
            f"- {len(beaten)} of {len(runs)} search runs{' with speculation' if spec else ''} beat {cot['run']} "
            f"({cot['accuracy']:.3f}): " + (", ".join(beaten) or "none")
        )
    return out


def frontier(rows: list[dict], tokens: float) -> tuple[float, str]:
    """The best accuracy the fixed runs reach at ``tokens`` generated tokens per problem on average, and how: one run
    at or below them, or two mixed (each problem run by one of them, in the proportion that spends ``tokens``: the
    line between their points), so a strategy between two budgets is compared with what both together buy."""
    best = (0.0, "no fixed run within these tokens")
    for r in rows:
        if r["tokens_per_problem"] <= tokens:
            best = max(best, (r["accuracy"], f"{r['run']} at {r['tokens_per_problem']:.0f}"))
        for q in rows:
            lo, hi = r["tokens_per_problem"], q["tokens_per_problem"]
            if lo < tokens < hi:
                mixed = r["accuracy"] + (q["accuracy"] - r["accuracy"]) * (tokens - lo) / (hi - lo)
                best = max(best, (mixed, f"{r['run']} and {q['run']} mixed"))
    return best


def plot(rows: list[dict], path: Path) -> None:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(METHODS)} | {
        "auto": "black"
    }  # one colour per method, dashed with speculation
    for spec in (False, True):
        for method in (*METHODS, "auto"):
            pts = sorted(
                (r["tokens_per_problem"], r["accuracy"])
                for r in rows
                if r["method"] == method and r["speculation"] == spec
            )
            if not pts:
                continue
            style = "--" if spec else "-"
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                style,
                marker={"cot": "*", "auto": "D"}.get(method, "o"),
                markersize=5 if method not in ("cot", "auto") else 10,
                label=method + (" +spec" if spec else ""),
                color=colors[method],
            )
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (all roles)")
    ax.set_ylabel("accuracy")
    budgets = "/".join(str(b) for b in sorted({r["budget"] for r in rows if r["budget"] and r["method"] != "auto"}))
    ax.set_title(f"toy suite: accuracy vs compute (budgets {budgets})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args) -> list[dict]:
    budgets = tuple(int(b) for b in str(args.budgets).split(","))
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r} in --methods: use {', '.join(METHODS)}")
    bins = tuple(float(b) for b in str(args.auto_bins).split(","))
    if any(b <= a for a, b in zip(bins, bins[1:])) or bins[-1] != 1.0:
        raise ValueError(f"--auto-bins {args.auto_bins} must rise and end at 1, e.g. 0.5,0.75,1")
    if args.fit_auto and args.fit_seed == args.seed:
        raise ValueError(f"--fit-seed {args.fit_seed} is --seed: calibrate on other problems (default --seed + 1)")
    rows = run(
        args.out,
        args.problems,
        args.difficulty,
        budgets,
        methods,
        args.speculation,
        args.seed,
        progress=not args.no_progress,
        verifier=args.verifier,
        fit_auto=args.fit_auto,
        fit_seed=args.fit_seed,
        probe=args.probe,
        bins=bins,
    )
    print(table(rows, args.difficulty))
    print(f"wrote {args.out}/bench_search.md, bench_search.json and bench_search.png")
    return rows
