"""The likelihood verifier on hand-written trajectories: the target's likelihood exposes a wrong step."""

from reasoner.core.types import Problem, Step, Tree
from verifiers.base import aggregate
from verifiers.likelihood import LikelihoodVerifier


def trajectory(tree, steps):
    node = tree.root
    for i, text in enumerate(steps):
        last = i == len(steps) - 1
        node = node.add_child(Step(text, finish_reason="eos" if last else "stop"), terminal=last)
    return node


def test_a_wrong_step_scores_low_and_correct_steps_high(toy_target, template):
    tree = Tree(Problem("Compute (17+25)*3-48."))
    right = trajectory(tree, ["17+25=42", "42*3=126", "126-48=78", "The answer is \\boxed{78}"])
    wrong = trajectory(tree, ["17+25=42", "42*3=136", "136-48=88", "The answer is \\boxed{88}"])
    verifier = LikelihoodVerifier(toy_target, template, "mean")
    r, w = verifier.score_paths([right, wrong])
    assert min(r) > 0.9
    assert w[1] < 0.5 and w[0] == r[0]  # the shared first step has one score
    assert aggregate(r, "min") > aggregate(w, "min")
    assert aggregate(r, "prod") > aggregate(w, "prod")


def test_scores_are_cached_per_step(toy_target, template):
    tree = Tree(Problem("Compute 12+30."))
    leaf = trajectory(tree, ["12+30=42", "The answer is \\boxed{42}"])
    verifier = LikelihoodVerifier(toy_target, template, "min")
    first = verifier.score_paths([leaf])
    calls = toy_target.stats.role("target").calls
    assert verifier.score_paths([leaf]) == first
    assert toy_target.stats.role("target").calls == calls
    assert tree.stats.role("target").prefill_tokens > 0


def test_aggregations():
    assert aggregate([0.5, 0.2, 0.9], "last") == 0.9
    assert aggregate([0.5, 0.2, 0.9], "min") == 0.2
    assert abs(aggregate([0.5, 0.2, 0.9], "prod") - 0.09) < 1e-12
    assert aggregate([], "min") == 0.0
