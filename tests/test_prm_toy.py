"""The shipped toy PRM (labels from exact answers, its quality as a regression check), the LLM-judge
verifier on toy:target, and verifier ensembles."""
import math
import random

import pytest

from reasoner.backends import load_lm
from reasoner.toy import generate_problems
from reasoner.toy.prm import label_steps, trajectory
from reasoner.types import Problem, Step, Tree
from verifiers.ensemble import EnsembleVerifier
from verifiers.judge import DIGITS, JudgeVerifier, digit_distribution
from verifiers.prm import PRMVerifier

import prompts


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


def test_toy_prm_ranks_correct_steps_above_wrong_ones():
    from sklearn.metrics import roc_auc_score

    prm = PRMVerifier("toy:prm")
    rng = random.Random(7)
    pairs = [(p, trajectory(rng, p)) for p in generate_problems(60, seed=7, difficulty="hard")]
    scores = prm.score_steps([p.question for p, _ in pairs], [s for _, s in pairs])
    labels = [lab for p, s in pairs for lab in label_steps(p, s)]
    assert roc_auc_score(labels, [x for row in scores for x in row]) > 0.65  # measured 0.7+ (README)


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
    assert ens.score_paths([node])[0] == pytest.approx([(x + y) / 2 for x, y in zip(a.score_paths([node])[0], b.score_paths([node])[0])])
    with pytest.raises(ValueError, match="at least two"):
        EnsembleVerifier([a])
