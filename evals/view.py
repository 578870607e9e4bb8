"""``reasoner view RUN_DIR``: a run's searches as one self-contained HTML page.

Researchers debug searches and acceptors by looking at trees, and results.jsonl read as JSON is hard to follow.
The page (``evals/static/``: template, script and styles, inlined) needs no server and no network: it opens from
disk, and a Content-Security-Policy forbids it to load anything. It lists the problems (filters, sort by cost),
shows the summary with an accuracy-vs-compute plot, and per problem the search tree and, under step speculation,
where each step's seconds went. Each problem's data is a JSON block of its own, parsed and drawn only when the
problem is opened, so a run of hundreds of wide trees opens at once.

Rows written before trees were serialized (``Solution.to_dict``'s ``tree``) get a tree rebuilt from their
candidates' paths: what the search dropped on the way is missing there, and the page says so.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .runner import read_results

STATIC = Path(__file__).parent / "static"
VIEW_FILE = "view.html"  # the default --out, in the run folder


def write_view(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the page of the run in ``run_dir`` to ``out`` (default ``RUN_DIR/view.html``); returns its path. A
    folder that is not a run, or an ``out`` that cannot be written, is a ``ValueError`` saying why."""
    folder = Path(run_dir)
    if not folder.exists():
        raise ValueError(f"run folder {run_dir} does not exist: give the --out folder of a `reasoner eval` run")
    if not folder.is_dir():
        raise ValueError(f"{run_dir} is a file, not a run folder: give the --out folder of a `reasoner eval` run")
    results = folder / "results.jsonl"
    if not results.is_file():
        raise ValueError(
            f"{run_dir} is not a run folder (no results.jsonl in it): give the --out folder of a `reasoner eval` run"
        )
    try:
        rows = list(read_results(results).values())
    except (KeyError, TypeError):
        raise ValueError(f"{results} holds lines that are not result rows (each needs an id)") from None
    except OSError as e:
        raise ValueError(f"cannot read {results} ({e.strerror or e})") from None
    summary = _read_json(folder / "summary.json")
    run = _read_json(folder / "run.json") or {}
    target = Path(out) if out else folder / VIEW_FILE
    name = (summary or {}).get("recipe") or (run.get("recipe") or {}).get("name")
    title = f"{name} · {folder.name}" if name else folder.name
    return _write(target, page(rows, summary, run.get("recipe"), title, source=str(folder)))


def write_solution_view(row: dict, out: str | Path, recipe: dict | None = None) -> Path:
    """The same page for one solved problem (``reasoner solve --html``): ``row`` is ``Solution.to_dict()``."""
    row = dict(row, id=row.get("id") or "problem")
    return _write(Path(out), page([row], None, recipe, f"{(recipe or {}).get('name', 'solve')} · one problem"))


def page(rows: list[dict], summary: dict | None, recipe: dict | None, title: str, source: str = "") -> str:
    """The HTML: the template with the styles, the script, the run's index and one data block per problem."""
    index = {
        "title": title,
        "source": source,
        "summary": summary,
        "recipe": recipe,
        "problems": [entry(r) for r in rows],
    }
    blocks = "\n".join(
        f'<script type="application/json" id="p-{i}">{_json(detail(r))}</script>' for i, r in enumerate(rows)
    )
    parts = {
        "/*STYLE*/": (STATIC / "view.css").read_text(encoding="utf-8"),
        "/*SCRIPT*/": (STATIC / "view.js").read_text(encoding="utf-8"),
        "<!--TITLE-->": _escape(title),
        "/*INDEX*/": _json(index),
        "<!--PROBLEMS-->": blocks,
    }
    # one pass, so a placeholder inside the data (a problem's text) stays as it is
    pattern = "|".join(re.escape(k) for k in parts)
    return re.sub(pattern, lambda m: parts[m.group(0)], (STATIC / "view.html").read_text(encoding="utf-8"))


def entry(row: dict) -> dict:
    """What the problem list needs of a row: who it is, whether it is right, what it cost."""
    stats = row.get("stats") or {}
    roles = stats.get("roles") or {}
    counters = stats.get("counters") or {}
    batch = row.get("batch") or {}
    total = counters.get("steps_total") or 0
    tree = tree_of(row)
    return {
        "id": str(row.get("id")),
        "problem": row.get("problem"),
        "reference": row.get("reference"),
        "answer": row.get("answer"),
        "correct": row.get("correct"),
        "error": row.get("error"),
        "tokens": sum(r.get("generated_tokens", 0) for r in roles.values()),
        "role_tokens": {k: r.get("generated_tokens", 0) for k, r in roles.items()},
        "prefill": sum(r.get("prefill_tokens", 0) for r in roles.values()),
        "seconds": round(sum(n.get("seconds") or 0 for n in tree["nodes"]), 4),  # its steps' share of the calls
        "batch_s": round(batch["wall_s"] / batch["size"], 4) if batch.get("size") else None,
        "accept": round(counters.get("steps_accepted", 0) / total, 4) if total else None,
        "spec_steps": int(total),
        "nodes": len(tree["nodes"]),
        "samples": len(row.get("candidates") or []),
    }


def detail(row: dict) -> dict:
    """What the problem's page needs: its tree, its candidates (without their steps: the tree holds them), its
    costs and counters."""
    tree = tree_of(row)
    leaves = tree["candidates"]
    candidates = [
        {k: v for k, v in c.items() if k != "steps"} | {"leaf": leaves[i] if i < len(leaves) else None}
        for i, c in enumerate(row.get("candidates") or [])
    ]
    keep = ("text", "reason", "program", "tests", "n_samples", "n_correct", "maj_correct", "weighted_correct")
    return {"tree": tree, "candidates": candidates, "stats": row.get("stats"), "batch": row.get("batch")} | {
        k: row[k] for k in keep if k in row
    }


def tree_of(row: dict) -> dict:
    """The row's search tree: the serialized one, or one rebuilt from the candidates' paths (``rebuilt``)."""
    if isinstance(row.get("tree"), dict) and isinstance(row["tree"].get("nodes"), list):
        tree = row["tree"]
        return {
            "nodes": tree["nodes"],
            "chosen": tree.get("chosen"),
            "candidates": list(tree.get("candidates") or []),
        }
    nodes: list[dict] = []
    at: dict[tuple, int] = {}

    def walk(steps: list[dict]) -> int | None:
        parent = None
        for step in steps:
            key = (parent, step.get("text"), step.get("source"))
            if key not in at:
                at[key] = len(nodes)
                nodes.append({"parent": parent, **step, "terminal": False})
            parent = at[key]
        if parent is not None:
            nodes[parent]["terminal"] = True
        return parent

    leaves = [walk(c.get("steps") or []) for c in row.get("candidates") or []]
    chosen = walk(row.get("steps") or []) if row.get("steps") else None
    return {"nodes": nodes, "chosen": chosen, "candidates": leaves, "rebuilt": True}


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _json(data) -> str:
    """JSON that is safe inside a <script> block: no ``</script>``, no ``<!--``."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).replace("<", "\\u003c")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def check_out(target: str | Path, flag: str = "--out") -> Path:
    """``target`` as a file the page can be written to, or a ``ValueError`` saying why not: ``reasoner solve --html``
    checks it before it solves anything."""
    target = Path(target)
    if target.is_dir():
        raise ValueError(f"{flag} {target} is a folder: give the HTML file to write, e.g. {target / VIEW_FILE}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot write {flag} {target} ({e.strerror or e}): give a file you can write to") from None
    return target


def _write(target: Path, html: str) -> Path:
    check_out(target)
    try:
        target.write_text(html, encoding="utf-8")
    except OSError as e:
        raise ValueError(f"cannot write --out {target} ({e.strerror or e}): give a file you can write to") from None
    return target
