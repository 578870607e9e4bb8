"""The toy PRM ``toy:prm``: made by the project's own PRM pipeline, and measured on the policies' samples.

``python -m evals.toy.prm --out DIR`` rebuilds it (seeded, CPU, one thread, about 25 min): ``reasoner prm label``
writes Math-Shepherd MC labels for ``toy:draft``'s trajectories (``toy-beam``'s policy; 160 problems of 3-7
operations, suite seed 2026, 4 trajectories each, every step prefix completed 4 times by ``toy:target``), then
``reasoner prm train --head surprise`` fits ``verifiers.prm.SurpriseHead`` on ``toy:target``'s body, frozen, in the
``qwen`` format (the toy chat template; the step token ``"\n\n"``). ``training.json`` records the run and
``--measure`` its measurement.

Why a surprise head: the earlier toy PRMs fine-tuned a value head at the step token (Math-Shepherd's, in the
Skywork format, then in the policy's chat format, from exact and from MC labels) and plateaued at step ROC-AUC
0.72-0.80 on the draft's own samples: one label per step did not teach the 4-layer body to check one digit of
arithmetic. The body already knows the digit (it is the target model): its surprise at the step's tokens, carried
along the path by running minima (every step after the first mistake is wrong), is what the head reads.

``measure`` grades a PRM on fresh problems (suite seed 4321, which no training set uses) against the exact labels
(``label_steps``: a step is good while its whole path equals the reference solution), on ``toy:draft``'s and
``toy:target``'s samples apart, and on synthetic trajectories (one corrupted step, continued).
"""

from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

import torch

import prompts
from reasoner.backends import SamplingParams, load_lm
from reasoner.recipe import Recipe
from reasoner.toy import model_path
from reasoner.toy.problems import ANSWER_TEMPLATE, Difficulty, ToyProblem, apply, generate_problem
from verifiers.base import aggregate
from verifiers.implicit_prm import ImplicitPRMVerifier, trained_beta
from verifiers.math import extract_answer
from verifiers.prm import PRMVerifier

from ..prm_label import label
from ..prm_train import train
from ..suites import load_suite
from .train import corrupt_step

STEP_TOKEN = "\n\n"
_OPERATION = re.compile(r"^(\d+)([-+*])(\d+)=(-?\d+)$")
# how the shipped toy:prm is labelled (``reasoner prm label``): toy-beam's policy toy:draft, completer toy:target
LABELS = {"recipe": "toy-beam", "seed": 2026, "difficulty": "ops=3-7,digits=2", "problems": 160, "k": 4, "samples": 4}


def label_steps(problem: ToyProblem, steps: list[str]) -> list[int]:
    """1 for each step while the path still equals the reference solution, 0 from the first mistake on."""
    reference, labels, ok = problem.steps, [], True
    for i, step in enumerate(steps):
        ok = ok and i < len(reference) and step.strip() == reference[i]
        labels.append(int(ok))
    return labels


def trajectory(rng: random.Random, problem: ToyProblem) -> list[str]:
    """The reference solution, or (half the time) one with a corrupted step, continued from the wrong value."""

    steps = problem.steps
    if rng.random() < 0.5:
        return steps
    return wrong_from(rng, problem, rng.randrange(len(steps)))


def wrong_from(rng: random.Random, problem: ToyProblem, j: int) -> list[str]:
    """The reference steps before ``j``, a corrupted step ``j``, then the rest computed from its wrong value."""
    wrong = corrupt_step(rng, problem, j)
    out = problem.steps[:j] + [wrong]
    m = _OPERATION.match(wrong)
    if m is None:  # a (wrong or early) answer line ends the trajectory
        return out
    value = int(m.group(4))
    for o in problem.operations[j + 1 :]:
        nxt = apply(value, o.op, o.right)
        out.append(f"{value}{o.op}{o.right}={nxt}")
        value = nxt
    return out + [ANSWER_TEMPLATE.format(value)]


def _select(problems: list[ToyProblem], texts: list[list[str]], scores: list[list[list[float]]]) -> dict:
    """Accuracy of majority vote, the PRM's best sample (aggregate last / min), PRM-weighted vote, the oracle."""

    right = {k: 0 for k in ("majority", "best_last", "best_min", "weighted_last", "weighted_min", "oracle")}
    for p, ts, ss in zip(problems, texts, scores):
        answers = [extract_answer(t) for t in ts]
        truth = str(p.answer)
        right["oracle"] += truth in answers

        def vote(weights: list[float], answers: list = answers) -> str | None:
            totals: dict[str, float] = {}
            for a, w in zip(answers, weights):
                if a is not None:
                    totals[a] = totals.get(a, 0.0) + w
            return max(totals, key=totals.get) if totals else None  # max keeps the first of equal totals

        right["majority"] += vote([1.0] * len(ts)) == truth
        for how in ("last", "min"):
            agg = [aggregate(s, how) for s in ss]
            right[f"best_{how}"] += answers[max(range(len(ts)), key=agg.__getitem__)] == truth
            right[f"weighted_{how}"] += vote(agg) == truth
    return {k: round(v / len(problems), 4) for k, v in right.items()}


def policy_samples(policy: str, problems: list[ToyProblem], samples: int, seed: int, temperature: float = 0.8):
    """Whole solutions of ``toy:<policy>`` (``samples`` per problem at ``temperature``), split at the step token."""
    lm = load_lm("transformers", f"toy:{policy}", policy, seed=seed)
    template = prompts.load("toy")
    questions = [template.prompt(lm.tokenizer, p.question) for p in problems]
    gens = lm.generate(questions, SamplingParams(n=samples, temperature=temperature, max_tokens=160))
    return lm, questions, [(p, g.text.split(STEP_TOKEN)) for p, gs in zip(problems, gens) for g in gs]


def write_samples(out: Path, n: int, seed: int, difficulty: str, samples: int = 4) -> int:
    """``samples`` ``toy:draft`` solutions (T 0.8) of ``n`` problems (generator seed ``seed``) as ``reasoner prm
    label`` rows, each step labelled exactly (``label_steps``) and each trajectory's outcome from its answer: data
    for ``reasoner prm train`` that needs no completions (the implicit PRM trains on the outcomes alone)."""
    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse(difficulty)) for _ in range(n)]
    _, _, pairs = policy_samples("draft", problems, samples, seed)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "labels.jsonl").open("w") as sink:
        for p, steps in pairs:
            labels = label_steps(p, steps)
            answer = extract_answer(STEP_TOKEN.join(steps))
            row = {"problem": p.question, "question": p.question, "answer": str(p.answer), "steps": steps,
                   "soft": [float(x) for x in labels], "hard": labels, "correct": answer == str(p.answer)}  # fmt: skip
            sink.write(json.dumps(row) + "\n")
    meta = {"prompt": "toy", "step_delimiter": STEP_TOKEN, "policy": "toy:draft", "samples": samples}
    (out / "meta.json").write_text(json.dumps(meta) + "\n")
    return len(pairs)


def step_auc(prm: PRMVerifier, pairs) -> dict:
    """Step ROC-AUC of ``prm`` against the exact labels (``label_steps``), and of a step's index alone."""
    from sklearn.metrics import roc_auc_score

    scores = prm.score_steps([p.question for p, _ in pairs], [s for _, s in pairs])
    labels = [lab for p, s in pairs for lab in label_steps(p, s)]
    flat = [x for row in scores for x in row]
    # the bar to clear: scoring a step by its index alone (later steps are more often bad)
    position = [-k for _, s in pairs for k in range(len(s))]
    return {
        "trajectories": len(pairs),
        "steps": len(labels),
        "bad_steps": labels.count(0),
        "roc_auc": round(float(roc_auc_score(labels, flat)), 4),
        "step_index_roc_auc": round(float(roc_auc_score(labels, position)), 4),
    }


def implicit_prm(path: str, reference: str, beta: float | None = None) -> ImplicitPRMVerifier:
    """An implicit PRM verifier on ``path`` (pi_theta) over ``reference`` (pi_ref), the toy chat format."""
    return ImplicitPRMVerifier(
        load_lm("transformers", path, "verifier"),
        load_lm("transformers", reference, "reference"),
        prompts.load("toy"),
        beta or trained_beta(path),
    )


def measure(
    path: str = "toy:prm",
    n: int = 100,
    samples: int = 4,
    difficulty: str = "hard",
    seed: int = 4321,
    select_samples: int = 8,
    reference: str | None = None,
    beta: float | None = None,
) -> dict:
    """Step-level ROC-AUC of the PRM on real ``toy:draft`` samples (T = 0.8) of ``n`` problems, labelled from
    the exact answers, on ``toy:target``'s samples of the same problems (T = 0.8, reported apart: the target
    errs less, and differently) and on synthetic trajectories (reference solutions with one corrupted step);
    then what a search user sees: on the same problems, ``select_samples`` more draft samples each, the
    accuracy of majority vote, of the PRM's best sample, of the PRM-weighted vote and of the oracle. The seed
    (4321) is one no training set uses (``reasoner prm label`` for the shipped PRM: suite seed 2026). With
    ``reference``, ``path`` is an implicit PRM (``verifiers.implicit_prm``) against that reference model, its beta
    the one it was trained with unless ``beta`` is given (an untrained pair such as toy:target over toy:draft
    needs it)."""
    if reference:
        prm = implicit_prm(path, reference, beta)
    else:  # family and step token: the model's config (toy:prm's older format: skywork, "\n\n")
        prm = PRMVerifier(path)
    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse(difficulty)) for _ in range(n)]
    draft, questions, real = policy_samples("draft", problems, samples, seed)
    _, _, target = policy_samples("target", problems, samples, seed)
    synthetic = [(p, trajectory(rng, p)) for p in problems]
    if reference:
        family = f"implicit over {reference}, beta {prm.beta:g}"
    else:
        family = prm.format.family + (", surprise head" if prm.surprise is not None else "")
    result: dict = {"path": path, "difficulty": difficulty, "problems": n, "family": family}
    for name, pairs in (("draft_samples", real), ("target_samples", target), ("synthetic", synthetic)):
        result[name] = step_auc(prm, pairs)
    if select_samples:  # drawn after the AUC samples, so those stay what they were
        gens = draft.generate(questions, SamplingParams(n=select_samples, temperature=0.8, max_tokens=160))
        texts = [[g.text for g in gs] for gs in gens]
        flat_scores = prm.score_steps(
            [p.question for p, ts in zip(problems, texts) for _ in ts],
            [t.split(STEP_TOKEN) for ts in texts for t in ts],
        )
        scores = [flat_scores[i * select_samples : (i + 1) * select_samples] for i in range(n)]
        result["selection"] = {"samples": select_samples, "temperature": 0.8, **_select(problems, texts, scores)}
    return result


def build(out: Path, labels: Path, progress: bool = True) -> dict:
    """The shipped toy PRM: MC labels (``LABELS``) into ``labels`` (a re-run continues them), then a surprise
    head on ``toy:target`` trained on them into ``out``."""
    recipe = Recipe.load(LABELS["recipe"], [f"suite.seed={LABELS['seed']}", f"suite.difficulty={LABELS['difficulty']}"])
    problems = load_suite(recipe.suite)[: LABELS["problems"]]
    label(recipe, problems, labels, k=LABELS["k"], samples=LABELS["samples"], batch_size=16, progress=progress)
    return train(labels, out, base="toy:target", family="qwen", head="surprise")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m evals.toy.prm", description="Rebuild (seeded) and measure the toy PRM."
    )
    parser.add_argument("--out", default=str(model_path("prm")), help="the PRM folder (default: the shipped one)")
    parser.add_argument(
        "--labels",
        default="runs/toy-prm-labels",
        help="folder for the MC labels (default runs/toy-prm-labels; a re-run continues them)",
    )
    parser.add_argument("--measure-only", action="store_true", help="only measure the PRM at --out")
    parser.add_argument("--n", type=int, default=100, help="problems for the measurement")
    parser.add_argument(
        "--implicit-reference",
        help="measure --out as an implicit PRM over this reference model (`prm train --objective implicit`)",
    )
    parser.add_argument("--beta", type=float, help="the implicit PRM's beta (default: the one it was trained with)")
    parser.add_argument(
        "--write-samples",
        metavar="DIR",
        help="only write 4 toy:draft samples of --n problems (--seed, --difficulty), exactly labelled, as "
        "`reasoner prm label` data in DIR",
    )
    parser.add_argument("--seed", type=int, default=0, help="--write-samples: the problems' generator seed")
    parser.add_argument("--difficulty", default="hard", help="--write-samples: the problems' difficulty")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.write_samples:
        rows = write_samples(Path(args.write_samples), args.n, args.seed, args.difficulty)
        print(f"wrote {rows} trajectories to {args.write_samples}")
        return
    if not args.measure_only:
        build(Path(args.out), Path(args.labels))
    result = measure(args.out, n=args.n, reference=args.implicit_reference, beta=args.beta)
    print(json.dumps(result, indent=2))
    meta_path = Path(args.out) / "training.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["measured"] = result
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
