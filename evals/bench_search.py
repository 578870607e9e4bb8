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
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from reasoner.recipe import Recipe

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
# scores its worst step; the toy search recipes' verifier, step ROC-AUC 0.99 on draft steps), or the toy PRM
# (the issue's; step ROC-AUC 0.76), so the searches can be told apart from the verifier's quality
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
) -> list[dict]:
    """Run the grid (skipping runs already finished in ``out``); returns one row per run."""
    import torch

    torch.set_num_threads(1)
    out = Path(out)
    spec_modes = {"off": [False], "on": [True], "both": [False, True]}[speculation]
    grid = [(m, b, s) for s in spec_modes for m in methods for b in ((None,) if m == "cot" else budgets)]
    rows = []
    from tqdm.auto import tqdm

    for method, budget, spec in tqdm(grid, desc="bench search", unit="run", disable=not progress):
        label = f"{method}" + (f"-{budget}" if budget else "") + ("-spec" if spec else "")
        sets = (
            overrides(method, budget or 1)
            + VERIFIERS[verifier][0]
            + [f"name={label}", f"suite.difficulty={difficulty}", f"suite.seed={seed}"]
        )
        if spec:
            sets += SPECULATION
        recipe = Recipe.load(BASE_RECIPE, sets)
        start = time.perf_counter()
        summary = evaluate(recipe, out / label, limit=problems, batch_size=problems, progress=False)
        n = summary["n"]
        rows.append(
            {
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
        )
    (out / "bench_search.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "bench_search.md").write_text(table(rows, difficulty) + "\n")
    plot(rows, out / "bench_search.png")
    return rows


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


def plot(rows: list[dict], path: Path) -> None:

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    colors = {
        m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(METHODS)
    }  # one colour per method, dashed with speculation
    for spec in (False, True):
        for method in METHODS:
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
                marker="o" if method != "cot" else "*",
                markersize=10 if method == "cot" else 5,
                label=method + (" +spec" if spec else ""),
                color=colors[method],
            )
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (all roles)")
    ax.set_ylabel("accuracy")
    ax.set_title("toy suite: accuracy vs compute (budgets 4/8/16)")
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
    )
    print(table(rows, args.difficulty))
    print(f"wrote {args.out}/bench_search.md, bench_search.json and bench_search.png")
    return rows
