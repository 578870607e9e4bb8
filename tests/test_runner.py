"""The eval runner: killed at random points (SIGKILL) and resumed, a run ends with every problem exactly once and
the summary of an uninterrupted run; parallel workers; bad input is one line and exit code 2, losing nothing."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.runner import evaluate
from reasoner.recipe import Recipe

SUITE = [
    "--set",
    "suite.difficulty=ops=1-2,digits=1",
    "--set",
    "suite.size=24",
]  # large enough to outlive three kills on a fast machine
TIMING = ("wall_s", "s_per_problem", "busy_s")


def eval_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "reasoner",
        "eval",
        "--recipe",
        "toy-cot-draft",
        *SUITE,
        "--batch-size",
        "1",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def ids_in(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass
    return out


def without_timing(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in TIMING}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same suite."""
    out = tmp_path_factory.mktemp("reference")
    recipe = Recipe.load("toy-cot-draft", [s for s in SUITE if s != "--set"])
    return evaluate(recipe, out, batch_size=1, progress=False), out


def test_killed_at_random_points_and_resumed_every_problem_once_same_summary(tmp_path, reference):
    summary, ref_out = reference
    out = tmp_path / "run"
    rng = random.Random(7)
    for workers in ("1", "2", "1"):
        proc = subprocess.Popen(
            eval_cmd(out, "--workers", workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        before = len(ids_in(out)) if (out / "results.jsonl").exists() else 0
        target = before + rng.randint(1, 2)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if (out / "results.jsonl").exists() and len(ids_in(out)) >= target:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.05))  # a random point: mid-problem, mid-write or between problems
        workers_alive = children_of(proc.pid)
        proc.kill()
        proc.wait()
        assert proc.returncode == -9, "the run finished before it could be killed; make the suite larger"
        deadline = time.time() + 20
        while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers_alive):
            time.sleep(0.1)
        assert not [p for p in workers_alive if Path(f"/proc/{p}").exists()], "worker processes outlived the killed run"
    with open(out / "results.jsonl", "a") as f:  # a line cut short, as a kill in the middle of a write leaves it
        f.write('{"id": "toy-1234-9", "problem": "Compu')
    done = subprocess.run(eval_cmd(out, "--json"), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ids = ids_in(out)
    assert sorted(ids) == sorted(ids_in(ref_out)) and len(ids) == len(set(ids)) == 24
    resumed = json.loads((out / "summary.json").read_text())
    assert without_timing(resumed) == without_timing(summary)
    assert json.loads(done.stdout)["n"] == 24


def test_parallel_workers_give_the_same_results_as_one(tmp_path, reference):
    summary, ref_out = reference
    recipe = Recipe.load("toy-cot-draft", [s for s in SUITE if s != "--set"])
    parallel = evaluate(recipe, tmp_path, batch_size=1, workers=2, progress=False)
    answers = lambda out: {
        r["id"]: (r["answer"], r["correct"]) for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())
    }  # noqa: E731
    assert answers(tmp_path) == answers(ref_out)
    assert parallel["accuracy"] == summary["accuracy"] and parallel["tokens"] == summary["tokens"]


def test_a_sliding_window_gives_the_same_results_as_batches(tmp_path, reference):
    summary, ref_out = reference
    recipe = Recipe.load("toy-cot-draft", [s for s in SUITE if s != "--set"])
    window = evaluate(recipe, tmp_path, batch_size=4, window=True, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    reference_rows = [json.loads(line) for line in (ref_out / "results.jsonl").read_text().splitlines()]
    answers = lambda rows: {r["id"]: (r["answer"], r["correct"]) for r in rows}  # noqa: E731
    assert answers(rows) == answers(reference_rows)
    assert {r["batch"]["in_flight"] for r in rows} == {4} and window["tokens"] == summary["tokens"]


@pytest.mark.parametrize(
    "args, data, message",
    [
        (["--suite", "nope"], None, "unknown suite 'nope'"),
        (["--suite", "math500", "--data", "{missing}"], None, "not found"),
        (["--suite", "gsm8k", "--data", "{data}"], '{"question": "1+1?", "answer": "2"}\n', "no '#### <number>' line"),
        (["--suite", "math500", "--data", "{data}"], '{"problem": "What is 1+1?"}\n', "missing field 'answer'"),
        (
            ["--suite", "math500", "--data", "{data}"],
            '{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answ',
            "line 2 is not valid JSON",
        ),
        (["--suite", "aime24", "--data", "{data}"], '{"problem": "   ", "answer": "3"}\n', "field 'problem' is empty"),
        (["--set", "models.draft.path=/nonexistent/model"], None, "no config.json"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(tmp_path, capsys, reference, args, data, message):
    from reasoner.cli import main

    _, ref_out = reference
    out = tmp_path / "out"
    out.mkdir()
    if "models.draft.path=/nonexistent/model" not in args:  # a finished run's results must survive the error
        for name in ("results.jsonl", "summary.json", "recipe.yaml"):
            (out / name).write_bytes((ref_out / name).read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    path = tmp_path / "data.jsonl"
    if data is not None:
        path.write_text(data)
    args = [a.replace("{data}", str(path)).replace("{missing}", str(tmp_path / "missing.jsonl")) for a in args]
    code = main(["eval", "--recipe", "toy-cot-draft", *SUITE, "--out", str(out), "--no-progress", *args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name in before} == before
