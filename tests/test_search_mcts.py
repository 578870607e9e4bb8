"""MCTS and A* on the toy world (toy:draft writes, toy:target's likelihood scores)."""

import itertools
import math

import pytest

from reasoner import Reasoner
from reasoner.core.types import Problem, Step, Tree
from reasoner.toy import generate_problems
from search.astar import AStar
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
    search, width = r.search, r.recipe.search.width
    for tree, sol in zip(trees, solutions):
        # an expansion draws `width` children (a node sampled again has a multiple); beyond them only the rollout
        # that finishes the best open node when nothing finished in budget
        assert all(len(x.children) % width in (0, 1) for x in nodes(tree.root))
        assert sum(len(x.children) // width for x in nodes(tree.root)) <= 6
        # the first pick is the root's first child with the lowest f (only they were open then, and the root to be
        # sampled again; a repeated state is dropped unscored)
        opened = [c for c in tree.root.children[:width] if r.verifier.name in c.step.scores]
        first = min(opened, key=lambda c: search.cost(c, c.step.scores[r.verifier.name]))
        assert first.children or first.terminal or len(tree.root.children) > width
        assert 1 <= len(sol.candidates) <= r.recipe.search.n
    # f = beta * mean NLL - log(score): a better score or likelier tokens give a lower f
    leaf = next(x for x in nodes(trees[0].root) if x.step is not None)
    assert search.cost(leaf, 0.9) < search.cost(leaf, 0.5)
    lps = [lp for p in leaf.path() for lp in p.step.logprobs]
    assert math.isclose(search.cost(leaf, 1.0), -search.beta * sum(lps) / len(lps))


@pytest.fixture(scope="module")
def astar():
    return solve("toy-astar", n=4, max_expansions=32)


def test_astar_expands_a_repeated_state_once(astar):
    """Graph search: the confident toy draft writes the same step several times; only the first is expanded."""
    r, solutions, trees = astar
    assert sum(t.stats.counters.get("duplicate_states", 0) for t in trees) > 0
    for tree in trees:
        expanded = [x.text() for x in nodes(tree.root) if x.children and x.step is not None]
        assert len(expanded) == len(set(expanded))


def test_astar_samples_a_node_again_when_its_children_score_badly(astar):
    """Partial expansion: nodes go back on the open list and some are drawn from again (more than `width`
    children), each new draw counted; without it every expanded node has exactly `width` children."""
    r, solutions, trees = astar
    width = r.recipe.search.width
    again = [x for t in trees for x in nodes(t.root) if len(x.children) > width]
    assert again
    assert sum(t.stats.counters.get("reopened_states", 0) for t in trees) >= len(again)


def test_astar_reopening_costs_more_with_every_distinct_child_even_when_steps_are_improbable(astar):
    """A real model's long steps each have a tiny probability, so the probability its children cover stays near 0;
    the cost of drawing from a node again still rises with the children it has (1 in 1 + d draws beats d others),
    or a root at cost 0 would be drawn from until the budget ends."""
    r, solutions, trees = astar
    costs = []
    for distinct in (1, 3, 6):
        heap = []
        r.search._reopen(heap, trees[0].root, 0.0, 1e-12, distinct, itertools.count())
        costs.append(heap[0][0])
    assert costs == sorted(costs) and costs[0] > 0.5 and math.isclose(costs[1], math.log(4), rel_tol=1e-6)


class _Scripted:
    """A verifier whose step scores are set by the step's text."""

    name = "scripted"

    def __init__(self, scores: dict[str, float]):
        self.scores = scores

    def score_paths(self, nodes):
        return [[self.scores[p.step.text] for p in n.path()] for n in nodes]


class _Recorder:
    """An engine that records what it is asked to expand and writes one finished step ``<step>+``."""

    def __init__(self):
        self.expanded = []

    def expand(self, nodes, k):
        self.expanded += nodes
        return [[n.add_child(Step(n.step.text + "+", logprobs=[-0.1]), True)] for n in nodes]


def held_tree(*paths: list[tuple[str, float]]) -> Tree:
    """A tree holding trajectories (as auto's probes leave it): each a list of (step, log-prob), the last finished."""
    tree = Tree(Problem("q", "1"))
    for path in paths:
        node = tree.root
        for i, (text, lp) in enumerate(path):
            node = node.add_child(Step(text, logprobs=[lp]), terminal=i == len(path) - 1)
    return tree


def test_astar_continues_from_the_trajectories_a_tree_holds():
    """Held trajectories are states found: their finished ends are candidates with no new step drawn, and a state
    held twice counts once (from a bare root the search would have to expand it first)."""
    tree = held_tree(
        [("a", 0.0), ("a1", 0.0)], [("b", 0.0), ("b1", 0.0)], [("a", 0.0), ("a1", 0.0)], [("c", 0.0), ("c1", 0.0)]
    )
    engine = _Recorder()
    scores = {"a": 0.9, "a1": 0.9, "b": 0.8, "b1": 0.8, "c": 0.1, "c1": 0.1}
    found = AStar(engine, _Scripted(scores), n=2, aggregate="last").run([tree])[0]
    assert [x.text() for x in found] == ["a\n\na1", "b\n\nb1"] and not engine.expanded
    assert tree.stats.counters["duplicate_states"] == 2


def test_astar_draws_again_from_a_held_step_when_the_trajectory_below_it_scores_badly():
    tree = held_tree([("a", math.log(0.9)), ("a1", math.log(0.5))])
    engine = _Recorder()
    found = AStar(engine, _Scripted({"a": 0.9, "a1": 0.01, "a+": 0.9}), n=1, aggregate="last").run([tree])[0]
    a = tree.root.children[0]
    assert engine.expanded == [a] and [x.text() for x in found] == ["a\n\na+"]
