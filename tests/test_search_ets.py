"""REBASE allocation, the ETS integer program (its milp optimum against brute force), ETS on the toy world,
and the KV accounting helper."""

import itertools
import random

import pytest

from reasoner.core.types import Problem, Step, Tree
from search.ets import Program, rebase_allocation, solve
from search.kv import retained_tokens


def test_rebase_allocation_spends_the_width_best_first():
    alloc = rebase_allocation([0.9, 0.2, 0.8, 0.1], width=8, temperature=0.2)
    assert sum(alloc) == 8
    assert alloc[0] >= alloc[2] >= alloc[1] >= alloc[3]
    assert rebase_allocation([0.5, 0.5], width=1, temperature=0.2) == [1, 0]
    # a hot temperature spreads the width, a cold one concentrates it
    assert max(rebase_allocation([0.9, 0.6, 0.3], 12, 10.0)) < max(rebase_allocation([0.9, 0.6, 0.3], 12, 0.05))


def random_program(rng, n_leaves):
    n_anc = rng.randint(0, 4)
    under = [sorted(rng.sample(range(n_leaves), rng.randint(1, n_leaves))) for _ in range(n_anc)]
    weights = [rng.random() for _ in range(n_leaves)]
    total = sum(weights)
    return Program(
        weights=[w / total for w in weights],
        leaf_costs=[rng.random() / 4 for _ in range(n_leaves)],
        ancestor_costs=[rng.random() / 4 for _ in range(n_anc)],
        under=under,
        clusters=[rng.randint(0, 2) for _ in range(n_leaves)],
        lambda_c=rng.choice([0.5, 1.0, 2.0]),
        lambda_s=rng.choice([0.0, 1.5]),
    )


def test_milp_optimum_equals_brute_force():
    rng = random.Random(0)
    for _ in range(40):
        p = random_program(rng, rng.randint(1, 7))
        best = max(p.value(list(keep)) for keep in itertools.product([False, True], repeat=len(p.weights)) if any(keep))
        keep = solve(p)
        assert any(keep)
        assert p.value(keep) == pytest.approx(best, abs=1e-9)


def test_coverage_keeps_a_second_cluster():
    # two leaves share everything but their cluster; without coverage only the heavier is worth its cost
    p = Program([0.7, 0.3], [0.35, 0.35], [], [], [0, 1], lambda_c=1.0, lambda_s=0.0)
    assert solve(p) == [True, False]
    assert solve(Program(**{**p.__dict__, "lambda_s": 1.5})) == [True, True]


def test_retained_tokens_count_shared_prefixes_once():
    tree = Tree(Problem("Compute 1+2."))
    a = tree.root.add_child(Step("1+2=3", token_ids=[1] * 5), False)
    b = a.add_child(Step("3*2=6", token_ids=[1] * 5), False)
    c = a.add_child(Step("3*2=7", token_ids=[1] * 4), False)
    assert retained_tokens([b, c]) == 5 + 5 + 4
    assert retained_tokens([b, b, a]) == 10
    assert retained_tokens([]) == 0


def test_ets_prunes_and_retains_less_kv_than_rebase():
    from reasoner import Reasoner
    from reasoner.toy import generate_problems

    problems = [Problem(p.question, str(p.answer)) for p in generate_problems(2, seed=13, difficulty="ops=4,digits=2")]
    kv = {}
    for method in ("rebase", "ets"):
        r = Reasoner("toy-ets", search={"method": method})
        solutions = r.solve_many(problems)
        kv[method] = sum(s.stats.counters["kv_tokens_mean"] for s in solutions)
        for s in solutions:
            assert 1 <= len(s.candidates) <= r.recipe.search.n
        if method == "ets":
            assert sum(s.stats.counters.get("ets_pruned", 0) for s in solutions) > 0
    assert kv["ets"] < kv["rebase"]
