"""The PRM pipeline (issue 17): Math-Shepherd MC labels through the step engine, a PRM trained on them, bad inputs.

The labeller runs on two scripted models (deterministic: what they write is a function of the prompt), so the
labels can be computed by hand; the trainer runs for real (torch, the toy target's body) on a small labelled set.
"""

from __future__ import annotations

import json
import random

import pytest

import prompts
from evals.prm_label import label_trajectories
from reasoner.backends.common import Backend
from reasoner.cli import main
from reasoner.core.lm import Generation, Output
from reasoner.core.stats import RoleStats
from reasoner.core.types import Problem, Tree
from reasoner.engine import StepBudget, StepEngine, StepSampling
from reasoner.toy import model_path

GOLD = "5"
POLICY_STEPS = ["2+1=3", "3+1=4", "4+2=7", "The answer is \\boxed{7}"]  # a wrong trajectory, wrong from step 3
# how many of the completer's k = 4 completions reach the gold answer after each prefix (by its last step)
GOOD_AFTER = {"2+1=3": 3, "3+1=4": 1, "4+2=7": 0}


class ScriptedLM(Backend):
    """A deterministic model on the toy tokenizer: ``policy`` writes ``POLICY_STEPS`` one per call; ``completer``
    answers at once, its ``j``-th sample right iff ``j < GOOD_AFTER[last step]``."""

    def __init__(self, name: str):
        from transformers import AutoTokenizer

        super().__init__()
        self.name = self.role = name
        self.tokenizer = AutoTokenizer.from_pretrained(model_path("target"))

    def _steps(self, ids) -> list[str]:
        text = self.decode(ids).split("<|im_start|>assistant\n", 1)[1]
        return text.split("\n\n")[:-1]

    def _gen(self, text: str, last: bool) -> Generation:
        if last:
            return Generation(text, self.encode(text) + [self.tokenizer.eos_token_id], [], "eos")
        return Generation(text, self.encode(text + "\n\n"), [], "stop", "\n\n")

    def generate(self, prompts, params):
        rows = []
        for ids in prompts:
            done = self._steps(ids)
            if self.name == "policy":
                step = POLICY_STEPS[len(done)]
                rows.append([self._gen(step, step == POLICY_STEPS[-1])] * params.n)
            else:
                good = GOOD_AFTER[done[-1]]
                answers = [GOLD if j < good else "9" for j in range(params.n)]
                rows.append([self._gen(f"The answer is \\boxed{{{a}}}", True) for a in answers])
        return Output(rows, [RoleStats() for _ in rows])


def test_labels_equal_a_hand_computed_case():
    template = prompts.load("toy")
    policy = StepEngine(ScriptedLM("policy"), template, StepSampling(), StepBudget())
    completer = StepEngine(ScriptedLM("completer"), template, StepSampling(), StepBudget())
    tree = Tree(Problem("Compute 2+1+1+2.", answer=GOLD, id="p0"))
    rows = label_trajectories(policy, completer, [tree], samples=2, k=4)
    assert len(rows) == 2
    for row in rows:
        assert row["steps"] == POLICY_STEPS
        # 3/4, 1/4 and 0/4 completions reach 5; the last step is a finished (wrong) answer: its own outcome
        assert row["soft"] == [0.75, 0.25, 0.0, 0.0]
        assert row["hard"] == [1, 1, 0, 0]
        assert row["correct"] is False


def _toy_rows(n_problems: int, seed: int) -> list[dict]:
    """Labelled rows of toy problems: the reference solution, or one with a step corrupted from some point on
    (label 1 up to the mistake, 0 after; the labels MC completions by a perfect completer would give)."""
    from reasoner.toy.problems import Difficulty, generate_problem

    rng = random.Random(seed)
    rows = []
    for i in range(n_problems):
        p = generate_problem(rng, Difficulty(2, 3, 1))
        steps = list(p.steps)
        soft = [1.0] * len(steps)
        if rng.random() < 0.5:
            j = rng.randrange(len(steps) - 1)
            steps[j] = steps[j].rsplit("=", 1)[0] + f"={int(steps[j].rsplit('=', 1)[1]) + rng.randint(1, 9)}"
            soft = [1.0] * j + [0.0] * (len(steps) - j)
        rows.append({"problem": f"t{i}", "question": p.question, "answer": str(p.answer), "steps": steps, "soft": soft})
    return rows


@pytest.mark.usefixtures("one_torch_thread")
def test_a_prm_trained_on_a_small_labelled_set_beats_chance(tmp_path):
    from evals.prm_train import train
    from verifiers.prm import PRMVerifier

    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _toy_rows(240, 0)))
    (data / "meta.json").write_text(json.dumps({"step_delimiter": "\n\n", "k": 4}))
    info = train(data, tmp_path / "prm", steps=40, batch=16, holdout=0.25, progress=False)
    held = info["heldout"]
    assert held["steps"] > 50 and held["bad_steps"] > 10
    assert held["roc_auc"] > 0.58, held  # chance is 0.5; 40 steps from the toy target reach ~0.62
    # the saved model is a `prm` verifier as recipes load it: family and step token from its config
    prm = PRMVerifier(str(tmp_path / "prm"))
    assert prm.format.family == "qwen" and prm.format.step_token == "\n\n"
    good, bad = prm.score_steps(["Compute 2+3+4."] * 2, [["2+3=5", "5+4=9"], ["2+3=7", "7+4=11"]])
    assert len(good) == len(bad) == 2 and all(0 <= s <= 1 for s in good + bad)


@pytest.mark.usefixtures("one_torch_thread")
def test_a_surprise_head_prm_ranks_held_out_steps_and_carries_a_mistake_down_the_path(tmp_path):
    from evals.prm_train import train
    from verifiers.prm import PRMVerifier

    data = tmp_path / "data"
    data.mkdir()
    (data / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _toy_rows(160, 0)))
    (data / "meta.json").write_text(json.dumps({"step_delimiter": "\n\n", "k": 4, "prompt": "toy"}))
    info = train(data, tmp_path / "prm", head="surprise", holdout=0.25, progress=False)
    held = info["heldout"]
    assert held["steps"] > 50 and held["bad_steps"] > 10
    assert held["roc_auc"] > 0.95, held  # the value head above, from the same body: ~0.62
    prm = PRMVerifier(str(tmp_path / "prm"))
    assert prm.surprise is not None and prm.format.family == "qwen"
    # saved as every supported transformers loads it (not transformers 5's TokenizersBackend)
    assert json.loads((tmp_path / "prm" / "tokenizer_config.json").read_text())["tokenizer_class"] == (
        "PreTrainedTokenizerFast"
    )
    good, bad = prm.score_steps(["Compute 12+35+24."] * 2, [["12+35=47", "47+24=71"], ["12+35=48", "48+24=72"]])
    # "48+24=72" is right arithmetic on a wrong value: only the path's minimum tells it is on a wrong path
    assert min(good) > 0.5 > max(bad), (good, bad)


def test_surprise_features_carry_the_paths_weakest_token():
    import torch

    from verifiers.prm import surprise_features

    ids = [7, 1, 2, 0, 3, 4, 0]  # a prompt token, then two steps each ended by the step token 0
    logits = torch.full((len(ids), 8), -30.0)
    for j in range(len(ids) - 1):
        logits[j, ids[j + 1]] = 0.0  # every next token sure ...
    logits[1, 5] = 2.0  # ... except the second token of the first step: token 5 was likelier
    first_step, second_step = surprise_features(logits, ids, 1, [3, 6])
    assert first_step[0] < -1.0 and first_step[2] == first_step[0]
    assert second_step[0] > -1e-6  # the second step itself is unsurprising ...
    assert second_step[2] == first_step[0] and second_step[3] == first_step[1]  # ... its path is not


def test_surprise_head_with_a_bad_spec_names_the_fix():
    from verifiers.prm import SurpriseHead

    with pytest.raises(ValueError, match="retrain with `reasoner prm train --head surprise`"):
        SurpriseHead({"features": ["step_min", "loudness"], "weights": [1.0, 2.0]})
    with pytest.raises(ValueError, match="one weight each"):
        SurpriseHead({"features": ["step_min"], "weights": []})


def test_surprise_head_takes_mc_labels_only_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "labels.jsonl").write_text(json.dumps(_toy_rows(2, 0)[0]) + "\n")
    code, err = _run(
        capsys, "prm", "train", "--data", str(tmp_path), "--out", str(tmp_path / "m"), "--head", "surprise",
        "--objective", "td",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 0 and "--head surprise fits the MC labels" in err
    assert not (tmp_path / "m").exists()


def _run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_train_without_data_is_one_line_exit_2(tmp_path, capsys):
    code, err = _run(capsys, "prm", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert code == 2 and err.count("\n") == 0 and "no data folder" in err and "prm label" in err


def test_train_on_an_empty_dataset_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "labels.jsonl").write_text("")
    code, err = _run(capsys, "prm", "train", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    assert code == 2 and err.count("\n") == 0 and "holds no labelled steps" in err


def test_train_on_a_malformed_row_names_the_line(tmp_path, capsys):
    (tmp_path / "labels.jsonl").write_text('{"problem": "a", "question": "q", "steps": ["x"], "soft": [2.0]}\n')
    code, err = _run(capsys, "prm", "train", "--data", str(tmp_path), "--out", str(tmp_path / "m"))
    assert code == 2 and err.count("\n") == 0 and "line 1" in err


@pytest.mark.parametrize("k", ["0", "-3", "x", "100000"])
def test_label_with_a_bad_k_is_one_line_exit_2(tmp_path, capsys, k):
    with pytest.raises(SystemExit) as e:
        main(["prm", "label", "--out", str(tmp_path / "d"), "--k", k])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--k" in err
    assert not (tmp_path / "d").exists()


def test_label_k_is_checked_in_the_library_too(tmp_path):
    from evals.prm_label import label
    from reasoner.recipe import Recipe

    with pytest.raises(ValueError, match="k \\(completions per step prefix\\)"):
        label(Recipe.load("toy-beam"), [Problem("Compute 1+1.", answer="2")], tmp_path, k=0)
