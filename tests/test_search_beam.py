"""Beam search and DVTS on the toy world (toy:draft writes, toy:target's likelihood scores): their own behaviour."""

import pytest

from reasoner import Reasoner
from reasoner.core.types import Problem
from reasoner.toy import generate_problems

PROBLEMS = [Problem(p.question, str(p.answer)) for p in generate_problems(2, seed=11, difficulty="ops=4,digits=2")]


def solve(recipe, **search):
    """The reasoner, its solutions and the search trees behind them; steps ranked by their own score (last)."""
    r = Reasoner(recipe, verifier={"aggregate": "last"}, **({"search": search} if search else {}))
    solutions = r.solve_many(PROBLEMS)
    return r, solutions, [s.tree for s in solutions]


def levels(tree):
    out, level = [], [tree.root]
    while level:
        out.append(level)
        level = [c for n in level for c in n.children]
    return out


@pytest.fixture(scope="module")
def beam():
    return solve("toy-beam", filter_duplicates=True)


@pytest.fixture(scope="module")
def dvts():
    return solve("toy-dvts")


def test_beam_keeps_the_best_n_over_width_and_refills_to_n(beam):
    r, solutions, trees = beam
    n, width, name = r.recipe.search.n, r.recipe.search.width, r.verifier.name
    for tree, sol in zip(trees, solutions):
        for level in levels(tree)[1:]:
            parents = [x for x in level if x.children]
            assert len(parents) <= n // width  # only the best n/width beams go on
            if parents:
                assert sum(len(x.children) for x in parents) == n  # duplicated back to n beams
                # no live candidate left behind scored better than a kept one (aggregate: last)
                others = [x for x in level if not x.terminal and x not in parents]
                assert all(
                    x.step.scores[name] <= min(p.step.scores[name] for p in parents)
                    for x in others
                    if x.text() not in {p.text() for p in parents}
                )
            texts = [x.text() for x in parents]
            assert len(texts) == len(set(texts))  # filter_duplicates
        assert 1 <= len(sol.candidates) <= n
        assert sol.stats.counters["kv_tokens_peak"] >= sol.stats.counters["kv_tokens_mean"] > 0


def test_dvts_grows_independent_greedy_subtrees(dvts):
    r, solutions, trees = dvts
    n, width, name = r.recipe.search.n, r.recipe.search.width, r.verifier.name
    for tree, sol in zip(trees, solutions):
        assert len(tree.root.children) == n
        for level in levels(tree)[2:]:
            expanded = [x for x in level if x.children]
            assert len(expanded) <= n // width  # one node per subtree and step
            for x in expanded:
                assert len(x.children) == width
                assert x.step.scores[name] == max(s.step.scores[name] for s in x.parent.children)  # greedy
        assert len(sol.candidates) == n  # every subtree hands over its last expansion


def test_bad_width_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of search.width"):
        Reasoner("toy-beam", search={"n": 6, "width": 4})
