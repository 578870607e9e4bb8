"""search.method: auto (Snell et al. 2024's compute-optimal search): the probe agreement picks the table's row and
that row's search really runs; bad tables are one clear error; the bench's fitting rule picks the better strategy."""

import json

import pytest

from evals.bench_search import auto_costs, fit_table, frontier
from reasoner import Reasoner
from reasoner.recipe import Recipe, RecipeError
from search.auto import agreement
from search.common import leaves
from verifiers.math import extract_answer

COT = {"method": "cot"}


@pytest.fixture(scope="module")
def problems(one_torch_thread):
    from evals.suites import load_suite

    return list(load_suite(Recipe.load("toy-auto").suite)[:6])


def auto(table, probe=4, **sections):
    return Reasoner("toy-auto", search={"method": "auto", "probe": probe, "table": table}, **sections)


def test_a_table_of_cot_gives_cots_answers_and_one_trajectory(problems):
    greedy = {"sampling": {"temperature": 0}}
    got = auto([{"max_agreement": 1.0, "search": COT}], **greedy).solve_many(problems[:3])
    cot = Reasoner("toy-auto", search=COT, **greedy).solve_many(problems[:3])
    assert [s.answer for s in got] == [s.answer for s in cot]
    for s in got:
        assert len(s.candidates) == 1 and len(s.tree.root.children) == 1
        assert s.stats.counters["auto_cot"] == 1 and s.stats.counters["auto_agreement"] == 1.0  # greedy probes agree


def test_the_measured_agreement_picks_the_row(problems):
    table = [{"max_agreement": 0.6, "search": {"method": "best_of_n", "n": 6}}, {"max_agreement": 1.0, "search": COT}]
    solutions = auto(table).solve_many(problems)
    hard = [s for s in solutions if s.stats.counters["auto_agreement"] <= 0.6]
    easy = [s for s in solutions if s.stats.counters["auto_agreement"] > 0.6]
    assert hard and easy  # the suite's first problems fall on both sides
    for s in hard:  # best-of-6 keeps the 4 probes and samples 2 more: the probes' agreement is the one recorded
        assert len(s.candidates) == 6 and s.stats.counters["auto_bin_0"] == 1
        assert agreement([c.answer for c in s.candidates[:4]]) == s.stats.counters["auto_agreement"]
    for s in easy:
        assert len(s.candidates) == 1 and s.stats.counters["auto_bin_1"] == 1


def test_a_tree_search_row_runs_that_search(problems):
    table = [
        {"max_agreement": 0.99, "search": {"method": "beam", "n": 4, "width": 2}},
        {"max_agreement": 1.0, "search": COT},
    ]
    solutions = auto(table, probe=2, sampling={"temperature": 1.5}).solve_many(problems[:3])
    beams = [s for s in solutions if s.stats.counters.get("auto_beam")]
    assert beams
    for s in beams:  # the probes are gone from the tree; beam's 4 finished paths are the candidates
        assert len(s.candidates) == 4 and len(s.tree.root.children) == 4
        assert s.stats.counters["kv_tokens_peak"] > 0  # the beam's retained-KV bookkeeping ran


def test_an_astar_row_continues_from_the_probes(problems):
    table = [{"max_agreement": 1.0, "search": {"method": "astar", "n": 1, "max_expansions": 1, "width": 2}}]
    solutions = auto(table, probe=3, sampling={"temperature": 1.5}).solve_many(problems[:3])
    for s in solutions:
        assert s.stats.counters["auto_astar"] == 1 and len(s.candidates) == 1
        # the 3 probe trajectories stay in the tree (from a bare root, one expansion of 2 children could not finish 3)
        assert sum(x.terminal for x in leaves(s.tree.root)) >= 3


@pytest.mark.parametrize(
    ("table", "says"),
    [
        ([{"max_agreement": 0.5, "search": COT}], "must increase and end at 1.0"),
        ([{"max_agreement": 0.8, "search": COT}, {"max_agreement": 0.5, "search": COT}], "must increase"),
        ([], "empty"),
        ("no/such/table.json", "not a readable JSON table"),
        (
            [{"max_agreement": 1.0, "search": {"method": "best_of_n", "vote": "majority"}}],
            "every bin shares auto's vote",
        ),
        ([{"max_agreement": 1.0, "search": {"method": "auto"}}], "does not match any of the expected tags"),
    ],
)
def test_a_bad_table_is_one_clear_error(table, says):
    with pytest.raises(RecipeError, match=says) as e:
        Recipe.load("toy-auto", {"search": {"method": "auto", "table": table}})
    assert "\n" not in str(e.value)


def test_greedy_probes_with_several_rows_are_an_error():
    with pytest.raises(RecipeError, match="greedy probes always agree"):
        Recipe.load("toy-auto", ["sampling.temperature=0"])


def test_a_tree_search_row_needs_a_verifier():
    with pytest.raises(RecipeError, match="search.method=beam ranks steps with a verifier"):
        Recipe.load("toy-auto", {"verifier": {"type": "none"}})


def test_a_fitted_table_file_loads(tmp_path):
    path = tmp_path / "auto.json"
    path.write_text(
        json.dumps({"probe": 4, "table": [{"max_agreement": 1.0, "search": {"method": "best_of_n", "n": 8}}]})
    )
    recipe = Recipe.load("toy-auto", [f"search.table={path}"])
    assert [(b.max_agreement, b.search.method, b.search.n) for b in recipe.search.table] == [(1.0, "best_of_n", 8)]


def test_the_fit_sends_hard_problems_to_the_search_that_solves_them_within_budget():
    agree = {"a": 1.0, "b": 1.0, "c": 0.25, "d": 0.25}
    costs = {  # (correct, tokens) per problem
        "probe": {"a": (True, 10), "b": (True, 10), "c": (False, 10), "d": (False, 10)},
        "beam-8": {"a": (True, 50), "b": (True, 50), "c": (True, 50), "d": (True, 50)},
        "best_of_n-8": {"a": (True, 20), "b": (True, 20), "c": (False, 20), "d": (True, 20)},
    }
    picked = fit_table(agree, costs, (0.5, 1.0), budget=30)  # all-beam (50/problem) is over budget
    assert [b["strategy"] for b in picked] == ["beam-8", "probe"]
    assert [b["strategy"] for b in fit_table(agree, costs, (0.5, 1.0), budget=15)] == ["best_of_n-8", "probe"]
    assert [b["strategy"] for b in fit_table(agree, costs, (0.5, 1.0), budget=5)] == ["probe", "probe"]  # cheapest


def test_auto_costs_count_the_probes_once_for_best_of_n_and_on_top_for_other_searches():
    results = {
        "probe": {"a": {"correct": True, "tokens": 40}},
        "best_of_n-8": {"a": {"correct": True, "tokens": 80}},
        "beam-8": {"a": {"correct": False, "tokens": 100}},
    }
    costs = auto_costs(results, {"a": 1.0})
    assert costs["probe"]["a"] == (True, 40)
    assert costs["best_of_n-8"]["a"] == (True, 80)
    assert costs["beam-8"]["a"] == (False, 140)
    # a run of auto itself (A* continuing from the probes) counted them already
    assert auto_costs(results, {"a": 1.0}, probed={"probe", "beam-8"})["beam-8"]["a"] == (False, 100)


def test_auto_is_compared_with_what_the_fixed_runs_buy_at_its_tokens():
    """Between two budgets the fixed runs mixed (each problem run by one of them) set the bar, not the cheaper alone."""
    rows = [
        {"run": "astar-4", "accuracy": 0.6, "tokens_per_problem": 200},
        {"run": "astar-16", "accuracy": 0.8, "tokens_per_problem": 800},
        {"run": "beam-16", "accuracy": 0.7, "tokens_per_problem": 1000},
    ]
    accuracy, how = frontier(rows, 500)
    assert accuracy == pytest.approx(0.7) and how == "astar-4 and astar-16 mixed"
    assert frontier(rows, 900) == (0.8, "astar-16 at 800")
    assert frontier(rows, 100)[0] == 0.0


def test_agreement_groups_equivalent_answers():
    assert agreement(["1/2", "0.5", "3", None]) == 0.5
    assert agreement([extract_answer("The answer is \\boxed{4}")] * 3) == 1.0


def test_solve_says_which_bin_and_search_ran(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "auto.json"
    path.write_text(json.dumps([{"max_agreement": 1.0, "search": {"method": "best_of_n", "n": 5}}]))
    args = ["solve", "Compute 12+30.", "--recipe", "toy-auto", "--set", f"search.table={path}"]
    proc = subprocess.run([sys.executable, "-m", "reasoner.cli", *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "-> bin 0 (<= 1.0): best_of_n, n=5" in proc.stdout and "5 candidates" in proc.stdout
