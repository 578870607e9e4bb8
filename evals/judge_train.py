"""Training Judge Decoding's judge head (``reasoner.specdec.judge``; ``reasoner judge train``).

On toy problems: the target decodes each problem greedily; the draft, teacher-forced on that solution, proposes
its own next token at every position; every proposal that differs from the target's token is a training example.
Its label: accept the token, let the target continue greedily, and check the final answer against the gold one
(1: still correct). Its feature: the target's last hidden state at the drafted token (the input of the output
embedding, exactly what verification shows the judge). A logistic regression on the standardised features is the
head; the held-out ROC-AUC (problems split) is printed and stored in the file.

Deviation from the paper (Bachmann et al., ICLR 2025): they label a hand-curated set of correct / incorrect
continuations for an 8B draft and a 405B target; here the toy world labels every mismatch automatically by the
final answer. Only the first mismatch after a target-greedy prefix is labelled (at run time a token deeper in an
accepted chain may follow earlier judge-accepted tokens).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import torch

import prompts as templates
from reasoner.backends import SamplingParams, load_lm, resolve_path
from reasoner.toy import Difficulty, generate_problems
from verifiers.math import extract_answer


def collect(
    target: str = "toy:target",
    draft: str = "toy:draft",
    problems: int = 160,
    seed: int = 0,
    difficulty: str = "medium",
    max_tokens: int = 200,
    batch_size: int = 32,
) -> list[dict]:
    """One row per mismatching draft token: ``problem``, ``position``, ``label`` (0/1), ``hidden`` (list)."""
    from transformers import AutoModelForCausalLM

    lm = load_lm("transformers", target, "target", seed=seed)
    draft_model = AutoModelForCausalLM.from_pretrained(resolve_path(draft)).eval()
    template = templates.load("toy")
    todo = generate_problems(problems, seed=seed, difficulty=Difficulty.parse(difficulty))
    greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    rows: list[dict] = []
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        heads = [lm.encode(template.prompt(lm.tokenizer, p.question)) for p in chunk]
        solutions = [out[0].token_ids for out in lm.generate(heads, greedy)]
        cases = []  # (problem index in chunk, position, sequence ending with the drafted token)
        for i, (head, sol) in enumerate(zip(heads, solutions)):
            seq = torch.tensor([head + sol])
            with torch.no_grad():
                guess = draft_model(input_ids=seq).logits[0, len(head) - 1 : -1].argmax(-1).tolist()
            cases += [(i, t, head + sol[:t] + [d]) for t, d in enumerate(guess) if d != sol[t]]
        if not cases:
            continue
        hidden = _hidden(lm, [c[2] for c in cases])
        continued = lm.generate([c[2] for c in cases], greedy)
        for (i, t, seq), h, out in zip(cases, hidden, continued):
            text = lm.decode(seq[len(heads[i]) :] + out[0].token_ids)
            label = int(extract_answer(text) == str(chunk[i].answer))
            rows.append({"problem": start + i, "position": t, "label": label, "hidden": h})
    return rows


def _hidden(lm, seqs: list[list[int]], batch: int = 64) -> list[list[float]]:
    """The target's last hidden state (its output embedding's input) at the last token of each sequence."""
    head = lm.model.get_output_embeddings()
    box: dict = {}
    handle = head.register_forward_pre_hook(lambda _, args: box.__setitem__("h", args[0]))
    out = []
    try:
        for s in range(0, len(seqs), batch):
            chunk = seqs[s : s + batch]
            width = max(map(len, chunk))
            ids = torch.tensor([[lm.pad_id] * (width - len(q)) + q for q in chunk], device=lm.device)
            mask = torch.tensor([[0] * (width - len(q)) + [1] * len(q) for q in chunk], device=lm.device)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                lm.model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1)
            out += box["h"][:, -1].float().tolist()
    finally:
        handle.remove()
    return out


def train(
    out: str | Path,
    target: str = "toy:target",
    draft: str = "toy:draft",
    problems: int = 160,
    seed: int = 0,
    difficulty: str = "medium",
    max_tokens: int = 200,
    holdout: float = 0.25,
    c: float = 0.1,
) -> dict:
    """Collect labelled mismatches, fit the judge (logistic regression, inverse regularisation ``c``), write it."""
    from sklearn.linear_model import LogisticRegression  # scikit-learn takes a second to import: only when training
    from sklearn.metrics import roc_auc_score

    if not 0 < holdout < 1:
        raise ValueError(f"--holdout must be between 0 and 1, got {holdout}")
    began = time.perf_counter()
    rows = collect(target, draft, problems, seed, difficulty, max_tokens)
    ids = sorted({r["problem"] for r in rows})
    random.Random(seed).shuffle(ids)
    held = set(ids[: max(1, int(len(ids) * holdout))])
    split = {k: [r for r in rows if (r["problem"] in held) == (k == "test")] for k in ("train", "test")}
    X = {k: np.array([r["hidden"] for r in v], dtype=np.float64) for k, v in split.items()}
    y = {k: np.array([r["label"] for r in v], dtype=int) for k, v in split.items()}
    if len(set(y["train"].tolist())) < 2:
        raise ValueError(
            f"every one of the {len(split['train'])} training mismatches has the same label: use more --problems"
        )
    mean, scale = X["train"].mean(0), X["train"].std(0)
    scale[scale == 0] = 1.0
    clf = LogisticRegression(C=c, max_iter=5000).fit((X["train"] - mean) / scale, y["train"])
    p_test = clf.predict_proba((X["test"] - mean) / scale)[:, 1] if len(X["test"]) else np.array([])
    auc = float(roc_auc_score(y["test"], p_test)) if len(set(y["test"].tolist())) == 2 else None
    info = {
        "target": target,
        "draft": draft,
        "problems": problems,
        "difficulty": difficulty,
        "seed": seed,
        "mismatches_train": len(split["train"]),
        "mismatches_test": len(split["test"]),
        "correct_train": int(y["train"].sum()),
        "correct_test": int(y["test"].sum()),
        "heldout_roc_auc": None if auc is None else round(auc, 4),
        "heldout_accepted_at_0.5": int((p_test >= 0.5).sum()),
        "heldout_precision_at_0.5": round(float(y["test"][p_test >= 0.5].mean()), 4) if (p_test >= 0.5).any() else None,
        "seconds": round(time.perf_counter() - began, 1),
    }
    weights = {
        "hidden_size": X["train"].shape[1],
        "mean": _rounded(mean),
        "scale": _rounded(scale),
        "w": _rounded(clf.coef_[0]),
        "b": float(clf.intercept_[0]),
        "info": info,
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(weights) + "\n")
    return info | {"out": str(out)}


def _rounded(xs) -> list[float]:
    return [float(f"{x:.6g}") for x in xs]
