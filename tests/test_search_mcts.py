"""MCTS and A* on the toy world (toy:draft writes, toy:target's likelihood scores)."""

import math

import pytest

from reasoner import Reasoner
from reasoner.core.types import Problem
from reasoner.toy import generate_problems
from search.common import leaves

PROBLEMS = [Problem(p.question, str(p.answer)) for p in generate_problems(2, seed=12, difficulty="ops=4,digits=2")]


def solve(recipe, **search):
    r = Reasoner(recipe, search=search) if search else Reasoner(recipe)
    solutions = r.solve_many(PROBLEMS)
    return r, solutions, [s.tree for s in solutions]


def nodes(node):
    yield node
    for c in node.children:
        yield from nodes(c)


@pytest.fixture(scope="module")
def mcts():
    return solve("toy-mcts", n=4, select="visits")


def test_mcts_visit_counts_add_up(mcts):
    r, solutions, trees = mcts
    n, width = r.recipe.search.n, r.recipe.search.width
    for tree in trees:
        assert tree.root.visits == n  # one backup per iteration
        for node in nodes(tree.root):
            if node.children and not node.terminal:
                assert node.visits == sum(c.visits for c in node.children)
            if node.visits:
                assert 0.0 <= node.value <= 1.0  # the mean of PRM scores backed up through it
        finished = [x for x in leaves(tree.root) if x.terminal]
        assert sum(x.visits for x in finished) == n  # every iteration ends at a finished trajectory
        assert len(tree.root.children) >= width


def test_mcts_select_by_visits_follows_the_most_visited_children(mcts):
    r, solutions, trees = mcts
    for tree, sol in zip(trees, solutions):
        assert len(sol.candidates) == 1
        node = tree.root
        while not node.terminal:
            node = max([c for c in node.children if c.visits], key=lambda c: c.visits)
        assert [s.text for s in sol.candidates[0].steps] == node.steps()


def test_astar_pops_best_first_within_its_budget():
    r, solutions, trees = solve("toy-astar", max_expansions=6)
    search = r.search
    for tree, sol in zip(trees, solutions):
        expanded = [x for x in nodes(tree.root) if len(x.children) == r.recipe.search.width]
        assert len(expanded) <= 6
        # beyond them only the rollout that finishes the best open node when nothing finished in budget
        assert all(len(x.children) in (0, 1, r.recipe.search.width) for x in nodes(tree.root))
        # the first pick is the root's child with the lowest f (only they were open then)
        f = {id(c): search.cost(c, c.step.scores[r.verifier.name]) for c in tree.root.children}
        first = min(tree.root.children, key=lambda c: f[id(c)])
        assert first.children or first.terminal
        assert 1 <= len(sol.candidates) <= r.recipe.search.n
    # f = beta * mean NLL - log(score): a better score or likelier tokens give a lower f
    leaf = next(x for x in nodes(trees[0].root) if x.step is not None)
    assert search.cost(leaf, 0.9) < search.cost(leaf, 0.5)
    lps = [lp for p in leaf.path() for lp in p.step.logprobs]
    assert math.isclose(search.cost(leaf, 1.0), -search.beta * sum(lps) / len(lps))
