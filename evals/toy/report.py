"""Measure the shipped toy models: ``reasoner toy report [--n 200] [--out DIR]``.

Exact-match accuracy of greedy chain of thought by difficulty (through ``Reasoner``, the path users take),
the target's accuracy as a judge of correct vs corrupted steps, parameters, size on disk, and decode speed
(tokens/s of our backend, greedy, batch 1 and batch 16), and the toy PRM's step ROC-AUC on held-out samples of
the draft and of the target (``evals.toy.prm.measure``; ``--prm-only`` for that alone). Writes ``toy_report.md``
and ``toy_report.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch

from prompts import load
from reasoner.api import Reasoner
from reasoner.backends import SamplingParams, load_lm
from reasoner.core.types import Problem
from reasoner.toy import model_path
from reasoner.toy.problems import Difficulty, generate_problem

from .prm import measure
from .train import corrupt_step

POLICIES = ("target", "draft")  # the models that write solutions (toy:prm grades them; toy:code is its own task)

GRID = [Difficulty(1, 3, 1)] + [Difficulty(k, k, 2) for k in range(1, 8)] + [Difficulty(2, 6, 2)]


def accuracy(model: str, difficulty: Difficulty, n: int, seed: int) -> float:

    reasoner = Reasoner(models={"target": {"path": f"toy:{model}"}}, seed=seed)
    rng = random.Random(seed)
    problems = [generate_problem(rng, difficulty) for _ in range(n)]
    solutions = []
    for i in range(0, n, 32):
        solutions += reasoner.solve_many([Problem(p.question, answer=str(p.answer)) for p in problems[i : i + 32]])
    return sum(bool(s.correct) for s in solutions) / n


def judge_quality(n: int, seed: int) -> dict:
    """Greedy-digit accuracy and ROC-AUC of the target's judge on correct and corrupted candidate steps, and the
    ROC-AUC of its likelihood of the same steps (the likelihood verifier's ``reduce``: weakest token, mean)."""

    lm = load_lm("transformers", "toy:target", "target")
    template = load("toy")
    rng = random.Random(seed)
    prompts, labels, prefixes, steps = [], [], [], []
    for _ in range(n):
        p = generate_problem(rng, Difficulty(2, 6, 2))
        i = rng.randrange(len(p.steps))
        good = rng.random() < 0.5
        cand = p.steps[i] if good else corrupt_step(rng, p, i)
        prompts.append(template.judge_prompt(lm.tokenizer, p.question, p.steps[:i], cand))
        prefixes.append(lm.encode(template.prompt(lm.tokenizer, p.question) + template.steps_text(p.steps[:i])))
        steps.append(lm.encode(cand + template.step_delimiter))
        labels.append(good)
    likelihood = lm.score(prefixes, steps)
    digits = [str(d) for d in range(10)]
    dists = lm.next_token_logprobs(prompts, digits)
    expected = []
    right = 0
    for d, good in zip(dists, labels):
        probs = [math.exp(d[k]) for k in digits]
        z = sum(probs)
        expected.append(sum(int(k) * p for k, p in zip(digits, probs)) / z)
        right += (max(digits, key=d.get) >= "7") == good
    return {
        "n": n,
        "greedy_accuracy": right / n,
        "roc_auc": _auc(expected, labels),
        "likelihood_roc_auc": {
            "min": _auc([min(lp) for lp in likelihood], labels),
            "mean": _auc([sum(lp) / len(lp) for lp in likelihood], labels),
        },
    }


def _auc(scores: list[float], labels: list[bool]) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def speed(model: str, batch: int, seed: int, new_tokens: int = 64) -> float:
    """Decoded tokens per second of our backend (greedy, no stop, ``new_tokens`` per row)."""

    lm = load_lm("transformers", f"toy:{model}", model)
    template = load("toy")
    rng = random.Random(seed)
    prompts = [template.prompt(lm.tokenizer, generate_problem(rng).question) for _ in range(batch)]
    params = SamplingParams(max_tokens=new_tokens, ignore_eos=True)
    lm.generate(prompts, params)  # warm-up
    start = time.perf_counter()
    lm.generate(prompts, params)
    return batch * new_tokens / (time.perf_counter() - start)


def describe(model: str) -> dict:
    path = model_path(model)
    cfg = json.loads((path / "config.json").read_text())
    from safetensors.torch import load_file

    params = sum(t.numel() for t in load_file(path / "model.safetensors").values())
    size = sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    training = json.loads((path / "training.json").read_text()) if (path / "training.json").is_file() else {}
    return {
        "architecture": cfg["architectures"][0],
        "layers": cfg["num_hidden_layers"],
        "hidden": cfg["hidden_size"],
        "params": params,
        "disk_bytes": size,
        "train_seconds": training.get("train_seconds"),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="reasoner toy report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200, help="problems per difficulty")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default=".", help="folder for toy_report.md / toy_report.json")
    parser.add_argument("--prm-n", type=int, default=100, help="problems whose draft / target samples grade the PRM")
    parser.add_argument("--prm-only", action="store_true", help="only grade the toy PRM (minutes, not an hour)")
    args = parser.parse_args(argv)
    report = {"threads": torch.get_num_threads(), "n_per_difficulty": args.n, "models": {}}
    for m in () if args.prm_only else POLICIES:
        info = describe(m)
        info["accuracy"] = {str(d): accuracy(m, d, args.n, args.seed) for d in GRID}
        info["tokens_per_s"] = {"batch_1": speed(m, 1, args.seed), "batch_16": speed(m, 16, args.seed)}
        report["models"][m] = info
        print(m, json.dumps(info))
    if not args.prm_only:
        report["judge"] = judge_quality(2 * args.n, args.seed)
    report["prm"] = describe("prm") | measure("toy:prm", n=args.prm_n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "toy_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "toy_report.md").write_text(markdown(report))
    print(markdown(report))


def prm_lines(prm: dict) -> list[str]:
    """The toy PRM's step ROC-AUC on each policy's held-out samples (exact labels), and selection accuracy."""
    lines = [
        f"toy-prm (format {prm['family']}; {prm['params'] / 1e6:.2f} M parameters, {prm['disk_bytes'] / 1e6:.1f} MB): "
        f"step ROC-AUC on held-out samples of {prm['problems']} {prm['difficulty']} problems (T 0.8, exact labels):"
    ]
    for key, name in (("draft_samples", "toy:draft"), ("target_samples", "toy:target"), ("synthetic", "synthetic")):
        r = prm[key]
        lines.append(
            f"- {name}: {r['roc_auc']:.3f} ({r['steps']} steps, {r['bad_steps']} bad; a step's index alone "
            f"{r['step_index_roc_auc']:.3f})"
        )
    sel = prm.get("selection")
    if sel:
        lines.append(
            f"- selecting among {sel['samples']} draft samples: majority {sel['majority']:.2f}, PRM best (last) "
            f"{sel['best_last']:.2f}, PRM-weighted vote {sel['weighted_last']:.2f}, oracle {sel['oracle']:.2f}"
        )
    return lines


def markdown(report: dict) -> str:
    models = report["models"]
    if not models:
        return "\n".join(prm_lines(report["prm"])) + "\n"
    names = list(models)
    lines = ["| | " + " | ".join(f"toy-{m}" for m in names) + " |", "|---|" + "---|" * len(names)]
    row = lambda label, f: lines.append(f"| {label} | " + " | ".join(f(models[m]) for m in names) + " |")  # noqa: E731
    row("architecture", lambda i: f"{i['architecture']} {i['layers']} x {i['hidden']}")
    row("parameters", lambda i: f"{i['params'] / 1e6:.2f} M")
    row("size on disk (fp16 + tokenizer)", lambda i: f"{i['disk_bytes'] / 1e6:.1f} MB")
    row("training time (CPU)", lambda i: f"{i['train_seconds'] / 60:.0f} min" if i.get("train_seconds") else "?")
    for d in models[names[0]]["accuracy"]:
        row(f"exact match, {d}", lambda i, d=d: f"{100 * i['accuracy'][d]:.1f} %")
    row("decode tokens/s, batch 1", lambda i: f"{i['tokens_per_s']['batch_1']:.0f}")
    row("decode tokens/s, batch 16", lambda i: f"{i['tokens_per_s']['batch_16']:.0f}")
    j = report["judge"]
    lines.append("")
    lines.append(
        f"toy-target as a judge ({j['n']} candidate steps, half corrupted): greedy digit >= 7 right "
        f"{100 * j['greedy_accuracy']:.1f} %, "
        f"ROC-AUC of the expected score {j['roc_auc']:.3f}; its likelihood of the same steps (the likelihood "
        f"verifier): weakest token {j['likelihood_roc_auc']['min']:.3f}, mean {j['likelihood_roc_auc']['mean']:.3f}."
    )
    lines.append(
        f"Measured with {report['threads']} torch threads, {report['n_per_difficulty']} problems per difficulty."
    )
    lines += [""] + prm_lines(report["prm"])
    return "\n".join(lines) + "\n"
