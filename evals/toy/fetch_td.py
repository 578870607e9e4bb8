"""FETCH's verifier variance on the toy world: does a TD(lambda)-trained value verifier score equivalent steps alike?

``python -m evals.toy.fetch_td --out DIR`` writes a ``prm label``-style dataset of a slipping policy's
trajectories, trains the value verifier on it twice with one seed and one budget (``reasoner prm train``'s
``train``): on Math-Shepherd MC labels from one completion per prefix (``objective="mc"``, the labels' noise is
the point), and by TD(lambda) (``objective="td"``), then prints for each the held-out step ROC-AUC and the
*sibling spread*: the variance of its scores across sibling paraphrases, the same step written with the spacing
the toy tokenizer allows (``17+25=42``, ``17 + 25 = 42``, ...), the near-identical siblings FETCH's state
merging clusters together.

The policy writes the reference solution but slips at each step with probability ``slip`` (a corrupted step,
continued from the wrong value to an answer line, as ``evals.toy.prm.trajectory``); every operation step is
written in a random spacing. A prefix's MC label is whether one simulated completion reaches the answer (it
does while the policy does not slip again), so right prefixes get 0/1 draws: the noise FETCH's TD(lambda)
training averages away.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
from pathlib import Path

from reasoner.toy.problems import Difficulty, ToyProblem, generate_problem

from .prm import wrong_from
from .train import corrupt_step

SPACINGS = ("{l}{op}{r}={v}", "{l} {op} {r} = {v}", "{l}{op}{r} = {v}", "{l} {op} {r}={v}")
DIFFICULTY = Difficulty(2, 4, 2)
_OPERATION = re.compile(r"^(\d+)([-+*])(\d+)=(-?\d+)$")


def paraphrase(step: str, spacing: int) -> str:
    """``step`` in one of the ``SPACINGS`` (an answer line is kept as it is)."""
    m = _OPERATION.match(step)
    if m is None:
        return step
    return SPACINGS[spacing].format(l=m.group(1), op=m.group(2), r=m.group(3), v=m.group(4))


def slipping_trajectory(rng: random.Random, problem: ToyProblem, slip: float) -> tuple[list[str], int | None]:
    """The policy's steps (unspaced) and the index of its first wrong step (``None``: right to the end)."""
    first = next((j for j in range(len(problem.operations) + 1) if rng.random() < slip), None)
    return (problem.steps, None) if first is None else (wrong_from(rng, problem, first), first)


def problems(n: int, seed: int) -> dict[str, ToyProblem]:
    rng = random.Random(seed)
    return {f"toy-{seed}-{i}": generate_problem(rng, DIFFICULTY) for i in range(n)}


def rows(problems: dict[str, ToyProblem], samples: int, seed: int, slip: float = 0.2) -> list[dict]:
    """``samples`` trajectories per problem as ``prm label`` rows (``soft``: one-completion MC labels)."""
    rng = random.Random(seed)
    out = []
    for pid, p in problems.items():
        for _ in range(samples):
            steps, first = slipping_trajectory(rng, p, slip)
            n = len(steps)
            soft = []
            for t in range(n):
                if first is not None and t >= first:
                    soft.append(0.0)
                elif t == n - 1:  # the finished answer: its own outcome
                    soft.append(1.0)
                else:  # one completion from a right prefix: right unless the policy slips in the n - 1 - t steps left
                    soft.append(float(rng.random() < (1 - slip) ** (n - 1 - t)))
            out.append(
                {
                    "problem": pid,
                    "question": p.question,
                    "answer": str(p.answer),
                    "steps": [paraphrase(s, rng.randrange(len(SPACINGS))) for s in steps],
                    "soft": soft,
                    "correct": first is None,
                }
            )
    return out


def write(out: Path, data: list[dict]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data))
    (out / "meta.json").write_text(json.dumps({"step_delimiter": "\n\n", "k": 1, "samples": None}))
    return out


def sibling_groups(problems: list[ToyProblem], seed: int) -> list[tuple[str, list[str], list[str]]]:
    """(question, prefix, siblings): after a right prefix, one step (right, or a corrupted one) in every spacing."""
    rng = random.Random(seed)
    groups = []
    for p in problems:
        for t in range(len(p.operations)):
            prefix = p.steps[:t]
            for step in (p.steps[t], corrupt_step(rng, p, t)):
                groups.append((p.question, prefix, [paraphrase(step, s) for s in range(len(SPACINGS))]))
    return groups


def sibling_spread(prm, groups) -> dict:
    """The mean variance of a verifier's scores within a group of sibling paraphrases, that variance as a share
    of all the groups' score variance (so that squeezing every score toward one value does not count), and the
    step ROC-AUC of right against corrupted siblings (exact labels)."""
    from sklearn.metrics import roc_auc_score

    paths = [prefix + [s] for _, prefix, siblings in groups for s in siblings]
    questions = [q for q, _, siblings in groups for _ in siblings]
    last = [row[-1] for row in prm.score_steps(questions, paths)]
    k = len(SPACINGS)
    within = statistics.fmean(statistics.pvariance(last[i : i + k]) for i in range(0, len(last), k))
    right = [int(i // k % 2 == 0) for i in range(len(last))]  # groups alternate: the right step, a corrupted one
    return {"within": within, "share": within / statistics.pvariance(last), "auc": roc_auc_score(right, last)}


def compare(out: Path, n_problems: int = 160, samples: int = 4, steps: int = 60, seed: int = 0, lam: float = 0.8,
            td_iterations: int = 2, base: str = "toy:target", heldout_problems: int = 12,
            groups: tuple[str, ...] = ("train", "heldout")) -> dict:  # fmt: skip
    """Train the MC and the TD(lambda) verifier on one dataset; their held-out AUC and sibling spread."""
    from evals.prm_train import split, train
    from reasoner.toy import generate_problems
    from verifiers.prm import PRMVerifier

    seen = problems(n_problems, seed)
    data = rows(seen, samples, seed)
    write(out / "data", data)
    trained = sorted({r["problem"] for r in split(data, 0.2, seed)[0]})[:heldout_problems]
    sets = {
        "train": lambda: [seen[p] for p in trained],  # states of the problems the verifier learnt on
        "heldout": lambda: generate_problems(heldout_problems, seed=seed + 1000, difficulty=DIFFICULTY),
    }
    groups = {k: sibling_groups(sets[k](), seed) for k in groups}
    result = {}
    for objective in ("mc", "td"):
        train(out / "data", out / objective, base=base, steps=steps, batch=16, holdout=0.2, seed=seed,
              objective=objective, lam=lam, td_iterations=td_iterations, progress=False)  # fmt: skip
        prm = PRMVerifier(str(out / objective))
        result[objective] = {k: {m: round(v, 5) for m, v in sibling_spread(prm, g).items()} for k, g in groups.items()}
    return result


def main(argv=None) -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--problems", type=int, default=160)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lam", type=float, default=0.8)
    ap.add_argument("--td-iterations", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=1, help="repeat over N seeds")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--base", default="toy:target", help="the verifier's backbone (default toy:target)")
    ap.add_argument("--samples", type=int, default=4, help="trajectories per problem")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        r = compare(args.out / f"seed{seed}", args.problems, args.samples, args.steps, seed, args.lam,
                    args.td_iterations, args.base)  # fmt: skip
        print(json.dumps({"seed": seed, **r}))


if __name__ == "__main__":
    main()
