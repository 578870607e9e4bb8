"""A*-Thought trace compression (search/astar_thought.py, evals/compress.py, `reasoner compress`) on real toy traces."""

import json
import os
import subprocess
import sys

import pytest

from evals.compress import read_traces
from search.astar_thought import AStarThought, CompressConfig, Trace, split_trace

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def rows(one_torch_thread):
    """Result rows of toy:target's chain of thought, as `reasoner eval` writes them."""
    from evals.runner import solve_batch
    from evals.suites import load_suite
    from reasoner.api import Reasoner

    reasoner = Reasoner("toy-cot")
    return solve_batch(reasoner, load_suite(reasoner.recipe.suite)[:10])  # `reasoner eval --recipe toy-cot --limit 10`


@pytest.fixture(scope="module")
def traces(rows, tmp_path_factory):
    path = tmp_path_factory.mktemp("traces") / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found, skipped = read_traces(path)
    assert not skipped and len(found) == len(rows)
    return found


def test_runner_rows_split_into_thought_solution_and_answer(rows, traces):
    for row, t in zip(rows, traces):
        assert t.problem == row["problem"] and t.answer == row["answer"] and t.reference == row["reference"]
        assert t.steps + [t.solution] == [s["text"] for s in row["steps"]]
        assert "\\boxed{" in t.solution and not any("\\boxed" in s for s in t.steps)


def test_compressed_traces_are_shorter_ordered_subsets_the_validator_still_solves(toy_target, template, traces):
    compressor = AStarThought(toy_target, template, CompressConfig(min_search_steps=1))
    results = compressor.compress(traces)
    for r in results:
        n = len(r.trace.steps)
        assert r.kept == sorted(set(r.kept)) and set(r.kept) <= set(range(n)) and r.kept
        assert r.steps == [r.trace.steps[i] for i in r.kept]  # original order, original text
        assert r.to_dict()["text"] == "\n\n".join(r.steps + [r.trace.solution])
        assert r.iterations <= 20 and len(r.importance) == n
    shorter = [r for r in results if len(r.kept) < len(r.trace.steps)]
    assert len(shorter) >= 2, [(r.kept, len(r.trace.steps), r.reason) for r in results]
    for r in shorter:
        assert r.validated and r.answer_holds and r.tokens_after < r.tokens_before
    # the validator, asked afresh, reaches each shortened trace's answer from the kept steps alone
    again = compressor.answers([(r.trace, r.kept) for r in shorter])
    assert again == [r.trace.answer for r in shorter]


def test_nothing_validates_gives_the_full_trace_after_max_search_steps(toy_target, template, traces):
    longest = max(traces, key=lambda t: len(t.steps))
    assert len(longest.steps) >= 4
    wrong = Trace(longest.problem, longest.steps, longest.solution.replace(longest.answer, "99999"), "99999")
    cfg = CompressConfig(min_search_steps=1, max_search_steps=3, neighbours=0)
    (r,) = AStarThought(toy_target, template, cfg).compress([wrong])
    assert r.iterations == 3 and r.reason == "max_search_steps" and not r.validated
    assert r.kept == list(range(len(longest.steps))) and r.tokens_after == r.tokens_before
    assert not r.answer_holds and r.validator_answer == longest.answer  # the validator keeps its own answer


def test_short_trace_exhausts_the_search_before_min_search_steps(toy_target, template, traces):
    shortest = min(traces, key=lambda t: len(t.steps))
    (r,) = AStarThought(toy_target, template, CompressConfig()).compress([shortest])  # paper defaults: 5 pops
    assert r.iterations < 5 and r.reason in ("validated-exhausted", "exhausted")
    assert r.answer_holds == (r.reason == "validated-exhausted")


def test_plain_lines_and_think_traces(tmp_path):
    path = tmp_path / "plain.jsonl"
    lines = [
        {"problem": "Compute 1+2*3.", "text": "2*3=6\n\n1+6=7\n\nThe answer is \\boxed{7}", "gold": "7"},
        {"problem": "Compute 2+2.", "steps": ["2+2=4", "so 4"], "answer": "4"},
        {"problem": "Compute 5-1.", "steps": ["5-1=4", "hmm"]},  # no answer anywhere: skipped
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    traces, skipped = read_traces(path)
    assert [t.steps for t in traces] == [["2*3=6", "1+6=7"], ["2+2=4"]]
    assert [t.solution for t in traces] == ["The answer is \\boxed{7}", "so 4"]
    assert [t.answer for t in traces] == ["7", "4"] and traces[0].reference == "7"
    assert skipped == [{"line": 3, "id": None, "reason": "no final answer"}]
    thought, solution, answer = split_trace(["<think>\nfirst", "second\n</think>", "So \\boxed{3}."])
    assert thought == ["first", "second"] and solution.startswith("</think>") and answer == "3"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"problem": "Compute 1+1.", "steps": ["1+1=2"]}\n{"problem": \n', "line 2 is not valid JSON"),
        ('{"steps": ["1+1=2", "\\\\boxed{2}"]}\n', 'line 1 has no "problem"'),
        ('{"problem": "Compute 1+1.", "steps": []}\n', "line 1 is an empty trace"),
        ('{"problem": "Compute 1+1.", "answer": "2"}\n', 'line 1 has neither "steps" nor "text"'),
        ("\n\n", "has no traces"),
    ],
)
def test_bad_trace_files_name_the_line_and_the_fix(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        read_traces(path)


def run(*args):
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "reasoner.cli", *args], capture_output=True, text=True, timeout=600, check=False, env=env
    )


@pytest.mark.parametrize(
    "content, message", [(None, "not found"), ('{"problem": "x", "steps": [\n', "line 1 is not valid JSON")]
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, content, message):
    path = tmp_path / "in.jsonl"
    if content is not None:
        path.write_text(content)
    proc = run("compress", str(path), "--no-progress")
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_compress_file_writes_one_line_per_trace_and_the_summary(rows, tmp_path):
    from evals.compress import compress_file, from_recipe
    from reasoner.recipe import Recipe

    src = tmp_path / "results.jsonl"
    src.write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:4]) + '{"problem": "Compute 1+1.", "steps": ["1+1=2"]}\n'
    )
    compressor = from_recipe(Recipe.load("toy-cot"), CompressConfig(min_search_steps=1))
    assert compressor.scorer is compressor.validator  # one toy:target for both
    summary = compress_file(src, tmp_path / "out.jsonl", compressor, progress=False)
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert summary["n"] == len(out) == 4 and summary["skipped"] == 1  # the last line has no final answer
    assert [o["id"] for o in out] == [r["id"] for r in rows[:4]]
    assert summary["tokens_after"] == sum(o["tokens_after"] for o in out) / 4 <= summary["tokens_before"]
    assert summary["answer_holds"] == sum(o["answer_holds"] for o in out) / 4
    assert summary["gold_correct_before"] == sum(r["correct"] for r in rows[:4]) / 4
    assert summary["cost"]["validator"]["generated_tokens"] > 0
    assert json.loads((tmp_path / "out.summary.json").read_text())["n"] == 4


@pytest.mark.slow
def test_cli_compresses_eval_results(rows, tmp_path):
    src = tmp_path / "results.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    proc = run("compress", str(src), "--min-search-steps", "1", "--no-progress", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    out = [json.loads(line) for line in (tmp_path / "results.compressed.jsonl").read_text().splitlines()]
    assert summary["n"] == len(out) == 4 and [o["id"] for o in out] == [r["id"] for r in rows[:4]]
    assert summary["tokens_after"] == sum(o["tokens_after"] for o in out) / 4 <= summary["tokens_before"]
    assert summary["answer_holds"] == sum(o["answer_holds"] for o in out) / 4
    assert json.loads((tmp_path / "results.compressed.summary.json").read_text())["n"] == 4
