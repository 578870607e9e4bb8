"""``reasoner report DIR [DIR ...]``: compare finished eval runs in a markdown table and two PNG plots.

- ``accuracy_vs_compute.png``: accuracy against generated tokens per problem (all roles) and against
  wall seconds per problem, one point per run;
- ``speedup.png``: each run's speedup over the baseline run (wall time, target tokens, target forward
  passes per problem; ``evals.metrics.speedup``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .metrics import speedup


def load_run(folder: str | Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except OSError:
        raise ValueError(
            f"run {folder}: no summary.json there: give the --out folder of a finished `reasoner eval`"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"run {folder}: summary.json is not valid JSON ({e.msg})") from None
    return summary | {"dir": str(folder), "label": Path(folder).name or str(folder)}


def report(folders: list[str], out: str | Path, baseline: str | None = None) -> str:
    """Write ``report.md`` and the plots to ``out``; returns the markdown."""
    runs = [load_run(f) for f in folders]
    base = load_run(baseline) if baseline else runs[0]
    for r in runs:
        r["speedup"] = speedup(r, base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = _table(runs, base)
    (out / "report.md").write_text(markdown + "\n")
    _plots(runs, base, out)
    return markdown


def _tokens_per_problem(run: dict) -> float:
    return sum(run.get("tokens", {}).values()) / max(1, run.get("n", 0))


def _table(runs: list[dict], base: dict) -> str:
    metric_keys = sorted(
        {k for r in runs for k in r.get("metrics", {}) if k not in ("samples", "pass@1")}, key=_metric_order
    )
    roles = sorted({role for r in runs for role in r.get("tokens", {})})
    head = [
        "run",
        "recipe",
        "suite",
        "n",
        "accuracy",
        *metric_keys,
        "s/problem",
        *[f"{role} tokens/problem" for role in roles],
    ]
    head += ["target passes/problem", "speedup (wall)", "speedup (target tokens)"]
    lines = [
        f"Speedups against `{base['label']}` ({base.get('recipe')}); ratios above 1 are faster / cheaper.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in runs:
        n = max(1, r.get("n", 0))
        sp = r["speedup"]
        cells = [
            r["label"],
            str(r.get("recipe")),
            str(r.get("suite", {}).get("name")),
            str(r.get("n")),
            f"{r.get('accuracy', 0):.3f}",
        ]
        cells += [f"{r['metrics'][k]:.3f}" if k in r.get("metrics", {}) else "" for k in metric_keys]
        cells += [f"{r.get('s_per_problem', 0):.3f}"] + [
            f"{r.get('tokens', {}).get(role, 0) / n:.1f}" for role in roles
        ]
        passes = r.get("forward_passes", {}).get("target")
        cells += [f"{passes / n:.1f}" if passes else "", _ratio(sp.get("wall")), _ratio(sp.get("target_tokens"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _metric_order(key: str):
    name, _, k = key.partition("@")
    return name, int(k) if k.isdigit() else 0


def _ratio(x: float | None) -> str:
    return f"{x:.2f}x" if x else ""


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (benchmarks and reports run on machines without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plots(runs: list[dict], base: dict, out: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (x_of, label) in zip(
        axes,
        (
            (_tokens_per_problem, "generated tokens per problem (all models)"),
            (lambda r: r.get("s_per_problem", 0), "wall seconds per problem"),
        ),
    ):
        for r in runs:
            ax.scatter(x_of(r), r.get("accuracy", 0), s=40)
            ax.annotate(
                r["label"], (x_of(r), r.get("accuracy", 0)), textcoords="offset points", xytext=(4, 4), fontsize=8
            )
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
    fig.suptitle("accuracy vs compute")
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_compute.png", dpi=120)
    plt.close(fig)

    kinds = ("wall", "target_tokens", "target_forward_passes")
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(runs) + 2), 4))
    width = 0.8 / len(kinds)
    for j, kind in enumerate(kinds):
        ax.bar(
            [i + j * width for i in range(len(runs))],
            [r["speedup"].get(kind) or 0 for r in runs],
            width,
            label=kind.replace("_", " "),
        )
    ax.axhline(1.0, color="gray", lw=1, ls="--")
    ax.set_xticks([i + width for i in range(len(runs))], [r["label"] for r in runs], rotation=20, ha="right")
    ax.set_ylabel(f"speedup over {base['label']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=120)
    plt.close(fig)
