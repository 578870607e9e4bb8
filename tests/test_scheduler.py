"""The scheduler and continuous batching: trajectories move on independently (one problem's slow rewrite does not
hold another), rows join and leave the decode batch at any step, and none of it changes what is generated."""

import threading
import time

import pytest

import search
from reasoner import Reasoner
from reasoner.backends.continuous import GenerateRequest
from reasoner.core.lm import SamplingParams
from reasoner.core.types import Problem, Tree
from reasoner.toy import generate_problems

pytestmark = pytest.mark.usefixtures("one_torch_thread")
PROBLEMS = [Problem(p.question, str(p.answer)) for p in generate_problems(12, seed=21)]


def tokens(solutions):
    return [[s.token_ids for s in sol.steps] for sol in solutions]


def test_rejecting_every_draft_step_gives_target_cot_token_for_token():
    cot = Reasoner("toy-cot").solve_many(PROBLEMS)
    spec = Reasoner("toy-likelihood", ["step_speculation.threshold=2"]).solve_many(PROBLEMS)  # scores are <= 1
    assert tokens(spec) == tokens(cot)
    assert all(s.source == "target" and s.speculation["accepted"] is False for sol in spec for s in sol.steps)


def test_accepting_every_draft_step_gives_draft_cot_token_for_token():
    cot = Reasoner("toy-cot-draft").solve_many(PROBLEMS)
    spec = Reasoner("toy-likelihood", ["step_speculation.threshold=0"]).solve_many(PROBLEMS)
    assert tokens(spec) == tokens(cot)
    assert all(s.source == "draft" for sol in spec for s in sol.steps)


def test_the_scheduler_changes_timing_not_results():
    """Concurrent problems and nodes (the default) against one lock-step round over every node of every problem,
    through the same models: the same steps, the same verdicts."""
    reasoner = Reasoner("toy-likelihood")
    concurrent = reasoner.solve_many(PROBLEMS)
    assert {s.speculation["accepted"] for sol in concurrent for s in sol.steps} == {True, False}  # a mixed acceptor
    reasoner.engine.pool = None  # one round for every node at once
    trees = [Tree(p) for p in PROBLEMS]
    r = reasoner.recipe
    leaves = search.build(r.search, reasoner.engine, reasoner.verifier, r.verifier.aggregate, r.seed).run(trees)
    lockstep = [[n.step for n in leaf[0].path()] for leaf in leaves]
    assert [[s.token_ids for s in steps] for steps in lockstep] == tokens(concurrent)
    assert [[s.speculation for s in steps] for steps in lockstep] == [
        [{k: v for k, v in s.speculation.items()} for s in sol.steps] for sol in concurrent
    ]


class GateAcceptor:
    """Holds the verdicts on one problem's steps until ``gate`` opens; tells when another problem has finished."""

    def __init__(self, inner, held: str, watched: str):
        self.inner, self.name, self.threshold = inner, inner.name, inner.threshold
        self.held, self.watched = held, watched
        self.gate, self.watched_finished = threading.Event(), threading.Event()

    def judge(self, children):
        if any(c.tree.problem.text == self.held for c in children):
            assert self.gate.wait(120), "the gate was never opened"
        verdicts = self.inner.judge(children)
        if any(c.tree.problem.text == self.watched and "\\boxed" in c.step.text for c in children):
            self.watched_finished.set()
        return verdicts


def test_a_problem_whose_verdict_is_held_does_not_hold_the_others():
    reasoner = Reasoner("toy-likelihood")
    held, watched = PROBLEMS[0], PROBLEMS[1]
    gate = reasoner.engine.acceptor = GateAcceptor(reasoner.engine.acceptor, held.text, watched.text)
    out: list = []
    solver = threading.Thread(target=lambda: out.extend(reasoner.solve_many([held, watched])))
    solver.start()
    try:
        # the watched problem writes, has judged and finishes all its steps while the held one waits for a verdict
        assert gate.watched_finished.wait(120), "the other problem did not advance while one verdict was held"
        assert solver.is_alive()
    finally:
        gate.gate.set()
        solver.join(120)
    assert [s.problem.text for s in out] == [held.text, watched.text] and all(s.answer for s in out)


def test_rows_join_and_leave_the_decode_batch_at_any_step(toy_target, toy_prompts):
    """A long request started first, a short one added while it runs: the short one finishes first, and each
    equals what it gives alone."""
    batch = toy_target.batch
    prompts = [toy_target.encode(p) for p in toy_prompts[:2]]
    long = GenerateRequest([prompts[0]], SamplingParams(max_tokens=60, ignore_eos=True))
    short = GenerateRequest([prompts[1]], SamplingParams(max_tokens=5, ignore_eos=True))
    batch.add(long)
    finished = []
    for step in range(200):
        if step == 3:
            batch.add(short)
        finished += batch.step()
        if not batch.busy:
            break
    assert finished == [short, long]
    alone = [toy_target.generate([p], SamplingParams(max_tokens=m, ignore_eos=True)) for p, m in zip(prompts, (60, 5))]
    assert [r.results[0][0].token_ids for r in (long, short)] == [a[0][0].token_ids for a in alone]


def test_model_processes_give_what_threads_give():
    """Each model in a process of its own (what a CPU uses for two models) writes the same steps as models served by
    threads of this process."""
    problems = PROBLEMS[:6]
    threads = Reasoner("toy-likelihood", ["scheduler.model_workers=thread"])
    processes = Reasoner("toy-likelihood", ["scheduler.model_workers=process"])
    try:
        start = time.perf_counter()
        got = processes.solve_many(problems)
        assert time.perf_counter() - start < 120
        same = threads.solve_many(problems)
        assert tokens(got) == tokens(same)
        # the tokens each problem booked (the models' own counts also hold what rows wrote ahead: timing decides)
        booked = [sum(s.stats.roles["draft"].generated_tokens for s in run) for run in (got, same)]
        assert booked[0] == booked[1] > 0
    finally:
        processes.scheduler.close()


def test_a_row_writes_ahead_and_the_next_step_takes_it_over(toy_target, toy_prompts, template):
    """Lookahead: a greedy row that ended its step writes on; the call for the next step (its prompt: the old one and
    the step) takes the row over instead of being prefilled, and gets what it would get on its own."""
    batch = toy_target.batch
    params = SamplingParams(max_tokens=40, stop=(template.step_delimiter,), lookahead=True)
    prompt = toy_target.encode(toy_prompts[0])

    def run(request):
        batch.add(request)
        while request.remaining:
            batch.step()
        return request.results[0][0]

    try:
        batch.lookahead_steps = 2
        first = run(GenerateRequest([prompt], params))
        assert first.finish_reason == "stop" and batch.busy  # the row stayed to write the next step
        following = GenerateRequest([prompt + first.token_ids], params)
        second = run(following)
        assert following.usage[0].prefill_tokens == 0  # taken over, not prefilled
    finally:
        batch.lookahead_steps = 0
        batch.reset()
    alone = toy_target.generate([prompt + first.token_ids], params)[0][0]
    assert second.token_ids == alone.token_ids and second.text == alone.text


def test_lookahead_changes_no_step_or_verdict():
    """Step speculation with rows writing ahead (the default) and without: the same steps and verdicts, and the
    draft's rows were taken over by the next step's call."""
    problems = PROBLEMS[:8]
    ahead = Reasoner("toy-likelihood", ["scheduler.model_workers=thread"])
    got = ahead.solve_many(problems)
    assert ahead.models["draft"].stats.counters["lookahead_claimed"] > 0
    plain = Reasoner("toy-likelihood", ["scheduler.model_workers=thread", "scheduler.lookahead_steps=0"])
    without = plain.solve_many(problems)
    assert tokens(got) == tokens(without)
    verdicts = [[[s.speculation for s in sol.steps] for sol in run] for run in (got, without)]
    assert verdicts[0] == verdicts[1]
    assert plain.models["draft"].stats.counters["lookahead_claimed"] == 0
