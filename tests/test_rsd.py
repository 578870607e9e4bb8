"""Reward-guided speculation (RSD, ``acceptor: prm``): the toy PRM scores each draft step; a score below the
threshold makes the target rewrite the step, at or above keeps the draft's."""

import pytest

from reasoner import Problem, Reasoner
from reasoner.toy import generate_problems

THREADS = "scheduler.model_workers=thread"


@pytest.fixture(scope="module")
def problems():
    return [Problem(p.question, answer=str(p.answer), id=str(i)) for i, p in enumerate(generate_problems(8, seed=11))]


@pytest.fixture(scope="module")
def runs(problems):
    """The same problems at three thresholds, on one loaded reasoner (``variant`` keeps the models)."""
    reasoner = Reasoner("toy-rsd", [THREADS])
    return {t: reasoner.variant(step_speculation={"threshold": t}).solve_many(problems) for t in (0.0, 0.7, 1.01)} | {
        role: Reasoner(
            "toy-cot", [f"search.policy={role}", "models.draft.path=toy:draft", "budget.stop_on_repeat=true", THREADS]
        ).solve_many(problems)
        for role in ("draft", "target")
    }


@pytest.mark.parametrize(("threshold", "writer"), [(0.0, "draft"), (1.01, "target")])
def test_threshold_extremes_give_the_drafts_or_the_targets_output(runs, threshold, writer):
    """PRM scores lie in [0, 1]: at 0 every draft step is kept, above 1 the target rewrites every one."""
    assert [s.text for s in runs[threshold]] == [s.text for s in runs[writer]]
    for s in runs[threshold]:
        assert [st.source for st in s.steps] == [writer] * len(s.steps)
        assert s.stats.role("target").generated_tokens == (
            0 if writer == "draft" else sum(len(st.token_ids) for st in s.steps)
        )


def test_a_middle_threshold_rewrites_exactly_the_steps_the_prm_scored_below_it(runs):
    steps = [st for s in runs[0.7] for st in s.steps]
    below = [st for st in steps if st.speculation["score"] < 0.7]
    assert below and len(below) < len(steps)  # a mix on these problems: both branches are exercised
    for st in steps:
        spec = st.speculation
        assert spec["acceptor"].startswith("prm:") and 0.0 <= spec["score"] <= 1.0
        assert spec["accepted"] == (spec["score"] >= 0.7) == (st.source == "draft")
        if spec["accepted"]:  # the recorded score is the PRM's score of the step that was kept
            assert st.scores[spec["acceptor"]] == pytest.approx(spec["score"], abs=1e-4)
        assert ("draft" in spec) == (not spec["accepted"])  # a rewritten step keeps the rejected draft's text
    # the PRM sees the same draft steps as at threshold 0 up to the first rewrite: the first step of each problem
    # is the draft's first step, scored the same, and kept or rewritten by that score
    for mixed, kept in zip(runs[0.7], runs[0.0]):
        first, draft_first = mixed.steps[0], kept.steps[0]
        assert first.speculation["score"] == pytest.approx(draft_first.speculation["score"], abs=1e-4)
        assert (first.text == draft_first.text) or first.source == "target"
