"""Training Arbitrage's routers (``verifiers.router``): collect draft/target step pairs with their rewards and both
routers' features, then fit one (``reasoner router collect`` / ``reasoner router train --acceptor router`` for the
draft-side router, ``--acceptor target_router`` for the one that reads the target's log-probs); see
``verifiers.router`` for the method and its deviations from the paper."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from reasoner.api import Reasoner
from reasoner.backends import load_lm
from reasoner.core.types import Node, Tree
from reasoner.engine import StepEngine
from verifiers.router import FEATURES, Router, draft_hidden, step_features, target_logprobs, vector


def collect(recipe, problems, out: str | Path, progress: bool = True, batch_size: int = 32) -> dict:
    """Run draft and target from the same prefixes of ``problems`` and write one JSON line per (prefix, step pair)."""
    if recipe.models.draft is None or recipe.models.target is None:
        raise ValueError(
            "router collect needs models.draft and models.target in the recipe (e.g. --recipe toy-arbitrage)"
        )
    reasoner = _models_only(recipe)
    template, verifier = reasoner.template, reasoner.verifier
    if verifier is None and not all(p.meta.get("steps") for p in problems):
        raise ValueError(
            "router collect needs step rewards: a suite with reference steps (toy) or a verifier (set verifier.type)"
        )
    sampling, budget = reasoner.engine.sampling, reasoner.engine.budget
    draft = StepEngine(reasoner.models["draft"], template, sampling, budget)
    target = StepEngine(reasoner.models["target"], template, sampling, budget)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_rows = positives = 0
    bar = tqdm(total=len(problems), desc="router collect", unit="problem", disable=not progress, dynamic_ncols=True)
    with out.open("w") as sink:
        for start in range(0, len(problems), batch_size):
            frontier = [Tree(p).root for p in problems[start : start + batch_size]]
            while frontier:
                drafts = [c[0] for c in draft.expand(frontier, 1)]
                targets = [c[0] for c in target.expand(frontier, 1)]
                feats = [a | b for a, b in zip(step_features(drafts), target_logprobs(drafts, target.lm, template))]
                # the draft's hidden states where its backend gives them (transformers): the draft-side router's
                hidden = (
                    draft_hidden(drafts, draft.lm, template)
                    if hasattr(draft.lm, "hidden_states")
                    else [[]] * len(drafts)
                )
                rewards = _rewards(drafts, targets, verifier)
                nxt = []
                for d, t, f, h, (rd, rt) in zip(drafts, targets, feats, hidden, rewards):
                    label = int(rt - rd > _MARGIN)
                    problem = d.tree.problem
                    row = {"problem": problem.id, "depth": d.depth, "draft": d.step.text, "target": t.step.text}
                    row |= {"reward_draft": rd, "reward_target": rt, "label": label, "features": f}
                    row["hidden"] = [round(x, 5) for x in h]
                    sink.write(json.dumps(row) + "\n")
                    n_rows, positives = n_rows + 1, positives + label
                    on_reference = verifier is not None or rt >= 1.0
                    if not t.terminal and on_reference:
                        nxt.append(t)
                frontier = nxt
            bar.update(min(batch_size, len(problems) - start))
    bar.close()
    return {"rows": n_rows, "positives": positives, "problems": len(problems), "out": str(out)}


_MARGIN = 0.1  # reward advantage that counts as "meaningfully better" (exact rewards are 0 or 1)


def _models_only(recipe):
    """The recipe's models, template and verifier, without its step speculation (whose router is being made)."""
    reasoner = Reasoner(recipe.model_copy(update={"step_speculation": None}))
    if "target" not in reasoner.models:
        spec = recipe.models.target
        reasoner.models["target"] = load_lm(
            spec.backend,
            spec.path,
            "target",
            gguf_file=spec.gguf_file,
            seed=recipe.seed,
            dtype=spec.dtype,
            device=spec.device,
            max_batch_size=spec.max_batch_size,
            **spec.backend_options(),
        )
    return reasoner


def _rewards(drafts: list[Node], targets: list[Node], verifier) -> list[tuple[float, float]]:
    if verifier is not None:
        scores = verifier.score_paths(drafts + targets)
        return [(sd[-1], st[-1]) for sd, st in zip(scores[: len(drafts)], scores[len(drafts) :])]
    out = []
    for d, t in zip(drafts, targets):
        reference = d.tree.problem.meta["steps"]
        right = reference[d.depth - 1] if d.depth - 1 < len(reference) else None
        out.append((float(d.step.text.strip() == right), float(t.step.text.strip() == right)))
    return out


# -- train -----------------------------------------------------------------------------------------------------


def train(
    data: str | Path,
    out: str | Path,
    acceptor: str = "router",
    hidden_units: int = 0,
    holdout: float = 0.25,
    seed: int = 0,
) -> dict:
    """Fit a router for ``acceptor`` (``router``: draft-side features, the draft's hidden state included;
    ``target_router``: with the target's log-probs, no hidden state) on ``collect``'s rows, problems split train /
    held out; a logistic regression, or an MLP with one hidden layer of ``hidden_units``; report the held-out ROC-AUC;
    save it as JSON."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn takes a second to import: only when training
    from sklearn.metrics import roc_auc_score
    from sklearn.neural_network import MLPClassifier

    if acceptor not in FEATURES:
        raise ValueError(f"unknown router acceptor {acceptor!r}: use {' or '.join(FEATURES)}")
    rows = _read_rows(Path(data), acceptor)
    hidden_size = len(rows[0]["hidden"]) if acceptor == "router" else 0
    if acceptor == "router" and not hidden_size:
        raise ValueError(
            f"{data} holds no draft hidden states (the draft's backend gives none): collect with a transformers draft, "
            "or train --acceptor target_router"
        )
    shape = {"acceptor": acceptor, "features": list(FEATURES[acceptor]), "hidden_size": hidden_size}
    problems = sorted({r["problem"] for r in rows})
    random.Random(seed).shuffle(problems)
    held = set(problems[: max(1, int(len(problems) * holdout))])
    split = {"train": [r for r in rows if r["problem"] not in held], "test": [r for r in rows if r["problem"] in held]}
    X = {
        k: np.array([vector(shape, r["features"], r["hidden"][:hidden_size]) for r in v]).reshape(
            -1, len(FEATURES[acceptor]) + hidden_size
        )
        for k, v in split.items()
    }
    y = {k: np.array([r["label"] for r in v], dtype=int) for k, v in split.items()}
    if len(set(y["train"].tolist())) < 2:
        raise ValueError(f"{data}: every training row has the same label; collect more problems")
    mean, scale = X["train"].mean(0), X["train"].std(0)
    scale[scale == 0] = 1.0
    Z = (X["train"] - mean) / scale
    if hidden_units:
        mlp = MLPClassifier((hidden_units,), solver="lbfgs", alpha=1e-2, max_iter=2000, random_state=seed)
        clf = mlp.fit(Z, y["train"])
        layers = [{"w": w.T.tolist(), "b": b.tolist()} for w, b in zip(clf.coefs_, clf.intercepts_)]
    else:
        clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(Z, y["train"])
        layers = [{"w": clf.coef_.tolist(), "b": clf.intercept_.tolist()}]
    weights = shape | {
        "mean": _rounded(mean.tolist()),
        "scale": _rounded(scale.tolist()),
        "layers": [{"w": [_rounded(col) for col in layer["w"]], "b": _rounded(layer["b"])} for layer in layers],
    }
    router = Router(weights, None, None)
    p_test = [router.probability(x) for x in X["test"]]
    auc = float(roc_auc_score(y["test"], p_test)) if len(set(y["test"].tolist())) == 2 else None
    weights["info"] = {
        "rows_train": len(split["train"]),
        "rows_test": len(split["test"]),
        "positives_train": int(y["train"].sum()),
        "positives_test": int(y["test"].sum()),
        "head": f"MLP, {hidden_units} hidden units" if hidden_units else "logistic regression",
        "heldout_roc_auc": None if auc is None else round(auc, 4),
        "data": str(data),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(weights, indent=1) + "\n")
    return weights["info"] | {"out": str(out)}


def _rounded(xs: list[float]) -> list[float]:
    return [float(f"{x:.6g}") for x in xs]  # 6 significant digits: the file stays small, the AUC unchanged


def _read_rows(path: Path, acceptor: str) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except OSError as e:
        raise ValueError(
            f"cannot read router data {path}: {e.strerror}; write it with `reasoner router collect`"
        ) from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row["features"] = {f: float(row["features"][f]) for f in FEATURES[acceptor]}
            row["hidden"] = [float(x) for x in row["hidden"]] if acceptor == "router" else []
            row["label"], row["problem"] = int(row["label"]), row["problem"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"{path} line {i} is not a router row ({type(e).__name__}: {e}); write it with `reasoner router "
                "collect`"
            ) from None
        rows.append(row)
    if not rows:
        raise ValueError(f"{path} holds no rows; write it with `reasoner router collect`")
    if len({len(r["hidden"]) for r in rows}) > 1:
        raise ValueError(f"{path} mixes drafts of different hidden sizes; collect it again from one recipe")
    return rows
