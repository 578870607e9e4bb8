"""The implicit PRM (Yuan et al. 2024): process rewards from a model trained on outcome labels only.

The verifier's arithmetic runs on two scripted models (what each assigns to a token is fixed, so the scores can be
computed by hand); the trainer runs for real (torch, the toy draft) on a small set of toy trajectories labelled by
their final answers only, and the model it writes is loaded by a recipe.
"""

from __future__ import annotations

import json
import math
import random

import pytest
from conftest import run_main

import prompts
from reasoner.backends.common import Backend
from reasoner.core.lm import Output
from reasoner.core.stats import RoleStats
from reasoner.toy import model_path
from verifiers.implicit_prm import ImplicitPRMVerifier, q_values

PENALISED = "7"  # the scripted policy finds this token 3 nats less likely than the reference does


class ScriptedLM(Backend):
    """Every token has log-probability -1, except ``penalise`` (if given), which has -4."""

    def __init__(self, name: str, penalise: str | None = None):
        from transformers import AutoTokenizer

        super().__init__()
        self.name = self.role = name
        self.tokenizer = AutoTokenizer.from_pretrained(model_path("target"))
        self.penalised = self.encode(penalise) if penalise else []

    def score(self, prompts, continuations):
        rows = [[-4.0 if t in self.penalised else -1.0 for t in self.encode(c)] for c in continuations]
        return Output(rows, [RoleStats() for _ in rows])


def test_q_is_the_running_sum_of_beta_times_the_log_ratio():
    assert q_values([[-1.0, -1.0], [-4.0]], [[-1.0, -2.0], [-1.0]], beta=0.5) == [0.5, -1.0]


def test_a_step_the_model_learnt_to_dislike_lowers_its_value_and_the_path_after_it():
    template = prompts.load("toy")
    steps = ["1+2=3", "3+4=" + PENALISED, "The answer is \\boxed{x}"]
    policy, reference = ScriptedLM("policy", PENALISED), ScriptedLM("reference")
    value = ImplicitPRMVerifier(policy, reference, template, beta=0.5)
    step = ImplicitPRMVerifier(policy, reference, template, beta=0.5, reward="step")
    low = 1 / (1 + math.exp(1.5))  # sigmoid(0.5 * (-4 - -1))
    # q_t: 0 before the disliked token, -1.5 from its step on (the path is spoilt); the step reward: only its step
    assert value.score_steps(["Compute 1+2+4."], [steps]) == [[0.5, pytest.approx(low), pytest.approx(low)]]
    assert step.score_steps(["Compute 1+2+4."], [steps]) == [[0.5, pytest.approx(low), 0.5]]
    # a model equal to its reference says nothing: every score is sigmoid(0)
    same = ImplicitPRMVerifier(reference, reference, template, beta=0.5)
    assert same.score_steps(["Compute 1+2+4."], [steps]) == [[0.5, 0.5, 0.5]]


def _outcome_rows(n_problems: int, seed: int) -> list[dict]:
    """Toy trajectories: the reference solution, or one with a corrupted step continued from its wrong value (the
    mistakes a policy makes). Only ``correct`` (the final answer's outcome) trains; the exact step labels in
    ``soft`` (right while the path equals the reference) only score the result."""
    from evals.toy.prm import label_steps, trajectory
    from reasoner.toy.problems import Difficulty, generate_problem

    rng = random.Random(seed)
    rows = []
    for i in range(n_problems):
        p = generate_problem(rng, Difficulty(2, 3, 1))
        steps = trajectory(rng, p)
        labels = label_steps(p, steps)
        rows.append({"problem": f"t{i}", "question": p.question, "answer": str(p.answer), "steps": steps,
                     "soft": [float(x) for x in labels], "correct": all(labels)})  # fmt: skip
    return rows


@pytest.mark.usefixtures("one_torch_thread")
def test_training_on_outcomes_alone_gives_step_scores_a_recipe_loads(tmp_path):
    from evals.prm_train import train
    from reasoner import Reasoner
    from verifiers.implicit_prm import ImplicitPRMVerifier

    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _outcome_rows(240, 0)))
    (data / "meta.json").write_text(json.dumps({"step_delimiter": "\n\n", "prompt": "toy"}))
    info = train(data, tmp_path / "iprm", base="toy:draft", objective="implicit", beta=0.5, steps=40, batch=16,
                 holdout=0.25, progress=False)  # fmt: skip
    held = info["heldout"]
    assert held["steps"] > 50 and held["bad_steps"] > 10
    # before training pi_theta = pi_ref: every q_t is 0 (ROC-AUC 0.5); outcome labels alone teach the steps
    assert held["roc_auc"] > 0.55, held  # measured 0.58 (40 steps); untrained exactly 0.5, labels flipped below
    recipe = {
        "name": "t",
        "models": {"draft": {"path": "toy:draft"}, "verifier": {"path": str(tmp_path / "iprm")}},
        "search": {"method": "best_of_n", "n": 2, "policy": "draft"},
        "verifier": {"type": "implicit_prm", "model": "verifier", "reference": "draft"},
        "prompt": "toy",
    }
    reasoner = Reasoner(recipe)
    try:
        verifier = reasoner.verifier
        assert isinstance(verifier, ImplicitPRMVerifier) and verifier.beta == 0.5  # beta from the model's config
        good, bad = verifier.score_steps(["Compute 2+3+4."] * 2, [["2+3=5", "5+4=9"], ["2+3=7", "7+4=11"]])
        assert all(0 <= s <= 1 for s in good + bad)
    finally:
        reasoner.close()


def _err(capsys, *argv) -> tuple[int, str]:
    return run_main(list(argv)), capsys.readouterr().err.strip()


def test_a_bad_beta_is_one_line_exit_2(tmp_path, capsys):
    rows = [{"problem": p, "question": "q", "steps": ["1+1=2"], "soft": [1.0]} for p in ("a", "b")]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, err = _err(capsys, "prm", "train", "--data", str(tmp_path), "--out", str(tmp_path / "m"),
                     "--objective", "implicit", "--beta", "0")  # fmt: skip
    assert code == 2 and err.count("\n") == 0 and "--beta must be a positive number" in err, err
    assert not (tmp_path / "m").exists()


def test_a_recipe_without_the_reference_model_says_which_to_set():
    from reasoner.recipe import Recipe

    with pytest.raises(ValueError, match="verifier.reference=draft but models.draft is not set"):
        Recipe.load(
            {
                "name": "t",
                "models": {"target": {"path": "toy:target"}, "verifier": {"path": "toy:target"}},
                "verifier": {"type": "implicit_prm", "model": "verifier", "reference": "draft"},
            }
        )
