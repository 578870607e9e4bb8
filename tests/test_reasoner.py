"""Reasoner.solve end to end on the toy world: answers, step sources, candidates and costs."""

import itertools

import pytest

from reasoner import Problem, Reasoner
from reasoner.core.types import Tree
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
    assert r.calls == 1 and r.forward_passes >= r.generated_tokens and s.stats.wall_s > 0  # one request, whole


def steps_of(solutions):
    return [[(st.text, st.token_ids, st.finish_reason) for st in s.steps] for s in solutions]


@pytest.mark.parametrize(
    "sections",
    [{}, {"budget": {"max_steps": 2}}, {"sampling": {"max_step_tokens": 5}}, {"budget": {"max_tokens": 12}}],
    ids=["plain", "max-steps", "max-step-tokens", "max-tokens"],
)
def test_cot_writes_each_trajectory_in_one_request_with_the_steps_of_step_by_step(cot, problems, sections):
    """No round trip per step (``StepEngine.write_whole``): one call per trajectory, split into the steps that step
    by step writes, budgets and step limits cut where they cut."""
    whole, stepwise = cot.variant(**sections), cot.variant(**sections, search={"whole": False})
    a, calls_a = whole.solve_many(problems[:8]), whole.last_run.role("target").calls
    b, calls_b = stepwise.solve_many(problems[:8]), stepwise.last_run.role("target").calls
    assert steps_of(a) == steps_of(b) and [s.answer for s in a] == [s.answer for s in b]
    assert calls_a == 8 and calls_b == sum(len(s.steps) for s in b)
    if sections:  # every limit ends some trajectory early here
        assert any(s.answer is None for s in a)
    else:
        assert calls_b > 2 * calls_a


def test_a_caller_listening_for_steps_hears_each_as_it_is_written(cot):
    """``Tree.on_step`` (the server's streaming): step by step, a call each, so every step is heard when written."""
    tree, heard = Tree(Problem("Compute (17+25)*3-48.")), []
    tree.on_step = lambda node: heard.append((node.step.text, tree.stats.role("target").generated_tokens))
    s = cot.solve_tree(tree)
    assert [text for text, _ in heard] == [st.text for st in s.steps] and len(s.steps) > 1
    # each step was heard before the next was written (not all at the end of one request)
    assert [tokens for _, tokens in heard] == list(itertools.accumulate(len(st.token_ids) for st in s.steps))


def test_a_stream_starts_the_next_problem_as_one_finishes_and_its_spans_add_up(cot):
    """A sliding window, not batches: with two in flight, the short problems behind a long one finish first (in
    batches of two, problem 2 could not start before problem 0 ended), with the same answers as solved alone."""
    long = "Compute " + "+".join(str(i) for i in range(1, 25)) + "."  # ~30 steps against 2
    problems = [long, "Compute 1+2.", "Compute 3+4.", "Compute 5+1."]
    streamed = list(cot.solve_stream(problems, window=2))
    order = [i for i, _, _ in streamed]
    assert sorted(order) == [0, 1, 2, 3] and order.index(2) < order.index(0) and order.index(3) < order.index(0)
    alone = [cot.solve(p).text for p in problems]
    assert {i: s.text for i, s, _ in streamed} == dict(enumerate(alone))
    run = cot.solve_many(problems)  # the same work as one window: the spans of a stream add up to its run
    spans = list(cot.solve_stream(problems, window=4))
    forwards = sum(span.role("target").forward_passes for _, _, span in spans)
    assert forwards == cot.last_run.role("target").forward_passes > 0
    assert sum(span.wall_s for _, _, span in spans) == pytest.approx(cot.last_run.wall_s, rel=0.05)
    assert sum(s.stats.role("target").generated_tokens for _, s, _ in spans) == sum(
        s.stats.role("target").generated_tokens for s in run
    )


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
