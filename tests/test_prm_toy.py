"""The shipped toy PRM (graded against exact labels: its quality as a regression check), the LLM-judge verifier on
toy:target, and verifier ensembles."""

import math
import random

import pytest

import prompts
from evals.toy.prm import label_steps, trajectory
from reasoner.backends import load_lm
from reasoner.core.types import Problem, Step, Tree
from reasoner.toy import generate_problems
from reasoner.toy.problems import STEP_DELIMITER
from verifiers.ensemble import EnsembleVerifier
from verifiers.judge import DIGITS, JudgeVerifier, digit_distribution
from verifiers.prm import PRMVerifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # two threads on the shared 2-core CPU: 10x slower


def test_step_labels_come_from_the_exact_answers():
    p = generate_problems(1, seed=3, difficulty="ops=3,digits=2")[0]
    assert label_steps(p, p.steps) == [1] * len(p.steps)
    wrong = list(p.steps)
    wrong[1] = "1+1=3"
    assert label_steps(p, wrong) == [1, 0, 0, 0]  # every step after the first mistake is bad
    assert label_steps(p, p.steps[:2]) == [1, 1]
    rng = random.Random(0)
    for _ in range(20):  # corrupted trajectories are continued from the wrong value, to an answer line
        steps = trajectory(rng, p)
        assert steps[-1].startswith("The answer is")


PRM = "toy:prm"
# step ROC-AUC floors, a little under the shipped surprise-head model's (1.0 synthetic, 1.0 draft on these sets) and
# the 0.95; the value-head toy PRM it replaced (0.68 / 0.73 here) fails both


@pytest.fixture(scope="module")
def prm():
    return PRMVerifier(PRM)


def _auc(prm, pairs):
    from sklearn.metrics import roc_auc_score

    scores = prm.score_steps([p.question for p, _ in pairs], [s for _, s in pairs])
    labels = [lab for p, s in pairs for lab in label_steps(p, s)]
    return roc_auc_score(labels, [x for row in scores for x in row])


def test_toy_prm_ranks_correct_steps_above_wrong_ones(prm):
    rng = random.Random(7)
    pairs = [(p, trajectory(rng, p)) for p in generate_problems(60, seed=7, difficulty="hard")]
    assert _auc(prm, pairs) > 0.97


def test_toy_prm_separates_the_drafts_own_right_and_wrong_steps(prm):
    """What search needs: real toy:draft samples (T = 0.8), whose mistakes are the draft's, not synthetic ones."""
    from reasoner.backends import SamplingParams

    problems = generate_problems(30, seed=11, difficulty="hard")
    draft = load_lm("transformers", "toy:draft", "draft", seed=11)
    template = prompts.load("toy")
    gens = draft.generate(
        [template.prompt(draft.tokenizer, p.question) for p in problems],
        SamplingParams(n=4, temperature=0.8, max_tokens=160),
    )
    pairs = [(p, g.text.split(STEP_DELIMITER)) for p, gs in zip(problems, gens) for g in gs]
    assert sum(0 in label_steps(p, s) for p, s in pairs) > 20  # enough wrong samples to measure
    assert _auc(prm, pairs) > 0.95


def test_selection_metrics_count_votes_best_and_oracle():
    from evals.toy.prm import _select

    p = generate_problems(1, seed=1, difficulty="ops=2,digits=1")[0]
    right, wrong = f"\\boxed{{{p.answer}}}", f"\\boxed{{{p.answer + 1}}}"
    # two wrong samples outvote the right one; the PRM scores the right one's last step highest, its first lowest
    got = _select([p], [[wrong, wrong, right]], [[[0.9, 0.6], [0.9, 0.5], [0.4, 0.95]]])
    assert got == {
        "majority": 0.0,
        "best_last": 1.0,
        "best_min": 0.0,
        "weighted_last": 0.0,
        "weighted_min": 0.0,
        "oracle": 1.0,
    }


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target")


def path(texts):
    tree = Tree(Problem("Compute (17+25)*3."))
    node = tree.root
    for t in texts:
        node = node.add_child(Step(t), False)
    return node


def test_judge_reads_the_digit_after_the_judge_prompt(target):
    template = prompts.load("toy")
    node = path(["17+25=42", "42*3=126"])
    [dist] = digit_distribution(target, template, [node])
    prompt = template.judge_prompt(target.tokenizer, node.tree.problem.text, ["17+25=42"], "42*3=126")
    lps = target.next_token_logprobs([prompt], DIGITS)[0]
    expected = [math.exp(lps[d]) / sum(math.exp(v) for v in lps.values()) for d in DIGITS]
    assert dist == pytest.approx(expected)
    judge = JudgeVerifier(target, template)
    scores = judge.score_paths([node])[0]
    assert scores[1] == pytest.approx(sum(i * p for i, p in enumerate(expected)) / 9)
    calls = target.stats.role("target").calls
    assert judge.score_paths([node, node.parent]) == [scores, scores[:1]]  # cached: no model call
    assert target.stats.role("target").calls == calls


def test_ensemble_is_the_mean_of_its_members(target):
    from verifiers.likelihood import LikelihoodVerifier

    template = prompts.load("toy")
    a, b = JudgeVerifier(target, template), LikelihoodVerifier(target, template)
    node = path(["17+25=42", "42*3=126"])
    ens = EnsembleVerifier([a, b])
    assert ens.score_paths([node])[0] == pytest.approx(
        [(x + y) / 2 for x, y in zip(a.score_paths([node])[0], b.score_paths([node])[0])]
    )
    with pytest.raises(ValueError, match="at least two"):
        EnsembleVerifier([a])
