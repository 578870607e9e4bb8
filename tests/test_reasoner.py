"""Reasoner.solve end to end on the toy world: answers, step sources, candidates and costs."""

import pytest

from reasoner import Problem, Reasoner
from reasoner.toy import generate_problems


@pytest.fixture(scope="module")
def problems():
    return [
        Problem(p.question, answer=str(p.answer), id=str(i)) for i, p in enumerate(generate_problems(64, seed=1234))
    ]


@pytest.fixture(scope="module")
def cot():
    return Reasoner("toy-cot")


def test_target_chain_of_thought_solves_toy_problems(cot, problems):
    solutions = cot.solve_many(problems)
    assert sum(s.correct for s in solutions) >= 56  # the shipped target is about 90% accurate at this difficulty
    for s in solutions:
        assert [st.source for st in s.steps] == ["target"] * len(s.steps)
        assert s.steps[-1].finish_reason == "eos" and s.text.endswith(f"\\boxed{{{s.answer}}}")
        assert s.stats.role("target").generated_tokens == sum(len(st.token_ids) for st in s.steps)


def test_solve_one_equals_solve_many_when_greedy(cot, problems):
    together = cot.solve_many(problems[:6])
    alone = [cot.solve(p) for p in problems[:6]]
    assert [s.text for s in together] == [s.text for s in alone]


def test_single_solve_stats_are_complete(cot):
    s = cot.solve("Compute (17+25)*3-48.")
    assert s.answer == "78" and s.correct is None
    assert s.steps[0].text == "17+25=42"
    r = s.stats.role("target")
    assert r.calls == len(s.steps) and r.forward_passes >= len(s.steps) and s.stats.wall_s > 0


def test_best_of_n_samples_n_candidates_scored_by_the_target(problems):
    reasoner = Reasoner("toy-bon", ["search.n=4"])
    solutions = reasoner.solve_many(problems[:4])
    for s in solutions:
        assert len(s.candidates) == 4
        assert all(st.source == "draft" for c in s.candidates for st in c.steps)
        assert all(0.0 <= c.score <= 1.0 for c in s.candidates)
        assert all("likelihood-min" in st.scores for st in s.steps)
        assert s.stats.role("draft").generated_tokens == sum(len(st.token_ids) for c in s.candidates for st in c.steps)
        assert s.stats.role("target").generated_tokens == 0 and s.stats.role("target").prefill_tokens > 0
        assert s.answer in {c.answer for c in s.candidates}


def test_budget_ends_trajectories():
    s = Reasoner("toy-cot", ["budget.max_steps=2"]).solve("Compute ((17+25)*3-48)*2+5.")
    assert len(s.steps) == 2 and s.answer is None


def test_empty_problem_is_a_clear_error(cot):
    with pytest.raises(ValueError, match="empty problem"):
        cot.solve("   ")
