"""Arbitrage's router loop on the toy world: collect step pairs, train, route."""

import json

import pytest

from reasoner import Reasoner
from reasoner.cli import main
from reasoner.recipe import Recipe
from verifiers.router import FEATURES


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    out = tmp_path_factory.mktemp("router") / "pairs.jsonl"
    args = [
        "router",
        "collect",
        "--recipe",
        "toy-arbitrage",
        "--set",
        "suite.difficulty=hard",
        "--set",
        "suite.seed=5",
        "--limit",
        "12",
    ]
    assert main(args + ["--out", str(out), "--no-progress"]) == 0
    return out


def test_collect_writes_one_labelled_pair_per_prefix(collected):
    rows = [json.loads(line) for line in collected.read_text().splitlines()]
    assert len({r["problem"] for r in rows}) == 12
    for r in rows:
        assert set(r["features"]) == set(FEATURES)
        assert r["label"] == int(r["reward_target"] > r["reward_draft"])
        assert r["reward_target"] in (0.0, 1.0) and r["reward_draft"] in (0.0, 1.0)
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem"], []).append(r["depth"])
    assert all(depths == list(range(1, len(depths) + 1)) for depths in by_problem.values())
    # the draft errs at this difficulty, so some prefixes have a better target step
    assert 0 < sum(r["label"] for r in rows) < len(rows)


def test_trained_router_routes_steps(collected, tmp_path, capsys):
    router = tmp_path / "router.json"
    assert main(["router", "train", str(collected), "--out", str(router)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows_train"] + info["rows_test"] == len(collected.read_text().splitlines())
    saved = json.loads(router.read_text())
    assert saved["features"] == list(FEATURES) and len(saved["coef"]) == len(FEATURES)
    solution = Reasoner("toy-arbitrage", [f"step_speculation.router={router}"]).solve("Compute (17+25)*3-48.")
    assert solution.stats.counters["steps_total"] == len(solution.steps)
    for step in solution.steps:
        spec = step.speculation
        assert spec["acceptor"] == "router" and 0.0 <= spec["score"] <= 1.0
        assert (step.source == "target") == (spec["score"] >= 0.5) == (not spec["accepted"])


def test_shipped_router_loads_and_bad_files_are_named(tmp_path):
    assert Reasoner("toy-arbitrage").recipe.step_speculation.router == "toy:router"
    bad = tmp_path / "router.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a router"):
        Reasoner(Recipe.load("toy-arbitrage", [f"step_speculation.router={bad}"]))
    with pytest.raises(ValueError, match="cannot read router"):
        Reasoner(Recipe.load("toy-arbitrage", [f"step_speculation.router={tmp_path / 'missing.json'}"]))
    assert main(["router", "train", str(tmp_path / "missing.jsonl"), "--out", str(bad)]) == 2
