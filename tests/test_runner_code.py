"""The code path end to end with a real model: toy:code writes programs, the runner extracts them and runs the
problems' tests in the sandbox; every verdict agrees with re-checking the program, and pass@k is reported."""

import json

from evals.runner import evaluate
from evals.suites import load_suite
from reasoner.recipe import Recipe
from verifiers.code import check


def test_toy_code_model_solves_code_problems_checked_in_the_sandbox(tmp_path):
    recipe = Recipe.load("toy-code", ["suite.size=12"])
    summary = evaluate(recipe, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    tests = {p.id: p.tests for p in load_suite(recipe.suite)}
    assert len(rows) == summary["n"] == 12
    for r in rows:
        assert r["answer"] and r["answer"].startswith("def f(x):"), r["text"]
        assert check(r["answer"], tests[r["id"]], 10).passed == r["correct"], r["reason"]
        assert (r["reason"] == "passed") == r["correct"]
    assert summary["correct"] >= 3  # a real, small model: it gets a fair share right
    assert summary["metrics"]["pass@1"] == round(summary["accuracy"], 4)


def test_sampled_programs_give_pass_at_k(tmp_path):
    recipe = Recipe.load("toy-code-bon", ["suite.size=4", "search.n=4"])
    summary = evaluate(recipe, tmp_path, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert all(r["n_samples"] == 4 and r["n_correct"] == sum(c["passed"] for c in r["candidates"]) for r in rows)
    m = summary["metrics"]
    assert m["samples"] == 4 and m["pass@1"] <= m["pass@2"] <= m["pass@4"]
    assert m["pass@4"] == sum(r["n_correct"] > 0 for r in rows) / 4
