"""Automatic process labels for training a PRM: ``reasoner prm label`` (Math-Shepherd's Monte Carlo estimation).

Math-Shepherd (Wang et al. 2024, "Math-Shepherd: Verify and Reinforce LLMs Step-by-step without Human
Annotations"): the policy writes trajectories; from each step prefix a completer model writes ``k`` completions
to the end; the step's soft label is the fraction of completions whose final answer equals the gold answer, its
hard label whether any does. As in the paper, a prefix that is already a finished answer is not completed: its
label is whether its own answer is right (all ``k`` completions would be itself).

Everything runs through the project's step engines: the recipe's ``Reasoner`` builds the policy's engine (the
one its searches use) and, for the completer, a ``StepEngine`` on that model, so the completions of every
prefix of a batch of problems share each batched model call. The dataset is one JSON line per trajectory in
``DIR/labels.jsonl`` with ``DIR/meta.json`` (policy, completer, ``k``); a re-run continues after the last
problem written.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from reasoner.api import Reasoner
from reasoner.backends import load_lm
from reasoner.core.types import Node, Tree
from reasoner.engine import StepEngine
from verifiers.math import extract_answer, is_equivalent

LABELS, META = "labels.jsonl", "meta.json"
MAX_K = 256


def check_k(k: int, samples: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= MAX_K:
        raise ValueError(f"prm label: k (completions per step prefix) must be an integer in 1..{MAX_K}, got {k!r}")
    if not isinstance(samples, int) or isinstance(samples, bool) or not 1 <= samples <= MAX_K:
        raise ValueError(f"prm label: samples (trajectories per problem) must be in 1..{MAX_K}, got {samples!r}")


def rollout(engine: StepEngine, nodes: list[Node], k: int) -> list[list[Node]]:
    """``k`` trajectories from each node to a terminal step (one batched engine call per step for all of them)."""
    if not nodes:
        return []
    leaves = engine.expand(nodes, k)
    live = [(i, j) for i, row in enumerate(leaves) for j, n in enumerate(row) if not n.terminal]
    while live:
        children = engine.expand([leaves[i][j] for i, j in live], 1)
        for (i, j), (child,) in zip(live, children):
            leaves[i][j] = child
        live = [(i, j) for i, j in live if not leaves[i][j].terminal]
    return leaves


def is_right(node: Node, delimiter: str) -> bool:
    answer = extract_answer(node.text(delimiter))
    gold = node.tree.problem.answer
    return answer is not None and gold is not None and bool(is_equivalent(answer, gold))


def label_trajectories(
    policy: StepEngine, completer: StepEngine, trees: list[Tree], samples: int, k: int
) -> list[dict]:
    """``samples`` policy trajectories per tree, every step labelled by ``k`` completions of its prefix."""
    delimiter = policy.template.step_delimiter
    trajectories = [t for row in rollout(policy, [tree.root for tree in trees], samples) for t in row]
    prefixes = [n for t in trajectories for n in t.path()]
    open_prefixes = [n for n in prefixes if not n.terminal]
    completions = dict(zip(open_prefixes, rollout(completer, open_prefixes, k)))
    rows = []
    for t in trajectories:
        soft = []
        for node in t.path():
            if node.terminal:  # a finished answer: its own outcome, k times
                soft.append(float(is_right(node, delimiter)))
            else:
                soft.append(sum(is_right(c, delimiter) for c in completions[node]) / k)
        problem = t.tree.problem
        rows.append(
            {
                "problem": problem.id,
                "question": problem.text,
                "answer": problem.answer,
                "steps": t.steps(),
                "soft": soft,
                "hard": [int(s > 0) for s in soft],
                "correct": is_right(t, delimiter),
            }
        )
    return rows


def _completer(reasoner: Reasoner, recipe, role: str):
    if role in reasoner.scheduler.wrapped:
        return reasoner.scheduler.wrapped[role]
    spec = getattr(recipe.models, role, None)
    if spec is None:
        raise ValueError(f"prm label: the recipe has no models.{role} to complete with (set it, or pick --completer)")
    return load_lm(
        spec.backend,
        spec.path,
        role,
        gguf_file=spec.gguf_file,
        seed=recipe.seed,
        dtype=spec.dtype,
        device=spec.device,
        max_batch_size=spec.max_batch_size,
        **spec.backend_options(),
    )


def label(
    recipe,
    problems,
    out: str | Path,
    k: int = 4,
    samples: int = 4,
    completer: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Write MC process labels for ``problems`` to ``out/labels.jsonl`` (continuing a run already there)."""
    check_k(k, samples)
    problems = list(problems)
    if not problems:
        raise ValueError("prm label: no problems to label (is --limit 0 or the suite empty?)")
    if any(p.answer is None for p in problems):
        raise ValueError("prm label needs a suite with gold answers (toy, math500, gsm8k, aime24/25, amc23)")
    for i, p in enumerate(problems):
        p.id = p.id or f"problem-{i}"
    role = completer or ("target" if recipe.models.target is not None else recipe.search.policy)
    recipe = recipe.model_copy(update={"step_speculation": None})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = getattr(recipe.models, role, None)
    meta = {
        "method": "Math-Shepherd MC estimation (Wang et al. 2024)",
        "recipe": recipe.name,
        "policy": getattr(recipe.models, recipe.search.policy).path,
        "completer": spec.path if spec else role,
        "k": k,
        "samples": samples,
        "temperature": recipe.sampling.temperature,
        "prompt": recipe.prompt,
        "step_delimiter": None,
    }
    done = _done(out, meta)
    todo = [p for p in problems if p.id not in done]
    n_rows = 0
    bar = tqdm(total=len(problems), initial=len(problems) - len(todo), desc="prm label", unit="problem",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    if todo:
        reasoner = Reasoner(recipe)
        try:
            policy = reasoner.engine
            meta["step_delimiter"] = policy.template.step_delimiter
            (out / META).write_text(json.dumps(meta, indent=2) + "\n")
            engine = StepEngine(_completer(reasoner, recipe, role), policy.template, policy.sampling, policy.budget)
            with (out / LABELS).open("a") as sink:
                for start in range(0, len(todo), batch_size):
                    chunk = todo[start : start + batch_size]
                    for row in label_trajectories(policy, engine, [Tree(p) for p in chunk], samples, k):
                        sink.write(json.dumps(row | {"completer": meta["completer"], "k": k}) + "\n")
                        n_rows += 1
                    sink.flush()
                    bar.update(len(chunk))
        finally:
            reasoner.close()
    bar.close()
    return {"rows": n_rows, "problems": len(todo), "skipped": len(problems) - len(todo), "out": str(out / LABELS)}


def _done(out: Path, meta: dict) -> set:
    """Problem ids already labelled in ``out`` by the same policy, completer and k (else a clear error)."""
    path = out / LABELS
    if not path.is_file():
        return set()
    old = json.loads((out / META).read_text()) if (out / META).is_file() else {}
    for key in ("policy", "completer", "k", "samples"):
        if key in old and old[key] != meta[key]:
            raise ValueError(
                f"prm label: {out} holds labels with {key}={old[key]!r}, not {meta[key]!r}: use another --out"
            )
    rows: dict = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
            rows.setdefault(row["problem"], []).append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by an interrupted run: its problem is labelled again
    whole = {p: lines for p, lines in rows.items() if len(lines) == meta["samples"]}
    # keep only whole problems, so the labels a re-run appends are not duplicated
    path.write_text("".join(line + "\n" for lines in whole.values() for line in lines))
    return set(whole)
