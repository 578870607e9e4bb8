"""Runs that cannot mix or lie, and inputs with limits (issue 23): one writer per run folder, the data file's content
in the run's identity, limits checked at the edge, prompts longer than a model's context, errors that say what
happened. Each test fails when the mechanism it is about is taken out."""

import contextlib
import fcntl
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import FINISHED_SUITE, folder_bytes, run_main

from evals.runner import LOCK_FILE, evaluate, summarize
from reasoner.core.errors import PromptTooLong
from reasoner.core.lm import SamplingParams, check_context
from reasoner.recipe import Recipe


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def copy_of(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


EVAL = ["eval", "--recipe", "toy-cot", *FINISHED_SUITE, "--no-progress", "--out"]


# -- one writer per run folder ---------------------------------------------------------------------------------------


def test_an_eval_into_a_folder_another_eval_holds_exits_2_naming_the_holder(finished_run, tmp_path, capsys):
    out = copy_of(finished_run, tmp_path)
    with open(out / LOCK_FILE, "a+") as held:  # what a running eval holds
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("424242\n")
        held.flush()
        before = folder_bytes(out)
        assert run_main(EVAL + [str(out)]) == 2
        line = one_error_line(capsys)
        assert "is in use by another eval (pid 424242)" in line
        assert folder_bytes(out) == before
    # once it is let go, the folder is usable again (and a finished run resumes to the same summary)
    summary = json.loads((out / "summary.json").read_text())
    assert run_main(EVAL + [str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == summary["n"]


def test_two_evals_at_once_one_runs_and_the_other_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    suite = ["--set", "suite.difficulty=ops=1-2,digits=1", "--set", "suite.size=12"]
    first = subprocess.Popen(
        [sys.executable, "-m", "reasoner", "eval", "--recipe", "toy-cot", *suite, "--batch-size", "1", "--out"]
        + [str(out), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and first.poll() is None:
            if (out / LOCK_FILE).is_file() and (out / LOCK_FILE).read_text().strip() == str(first.pid):
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first eval ended before the second started"
        assert run_main(["eval", "--recipe", "toy-cot", *suite, "--batch-size", "1", "--out", str(out)]) == 2
        assert f"in use by another eval (pid {first.pid})" in one_error_line(capsys)
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    ids = [json.loads(line)["id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 12
    assert (out / LOCK_FILE).read_text() == ""  # emptied when the run ended


# -- the data file's content is part of the run's identity ------------------------------------------------------------


def test_a_data_file_changed_under_the_same_path_is_refused_on_resume(tmp_path, capsys):
    data, out = tmp_path / "problems.jsonl", tmp_path / "run"
    first = '{"problem": "Compute 1+2.", "answer": "3"}\n{"problem": "Compute 2+2.", "answer": "4"}\n'
    data.write_text(first)
    argv = ["eval", "--recipe", "toy-cot", "--suite", "math500", "--data", str(data), "--out", str(out)]
    assert run_main(argv + ["--limit", "1", "--no-progress"]) == 0
    assert json.loads((out / "run.json").read_text())["data_sha256"]
    capsys.readouterr()
    data.write_text('{"problem": "Compute 5+2.", "answer": "7"}\n{"problem": "Compute 2+2.", "answer": "4"}\n')
    before = folder_bytes(out)
    assert run_main(argv + ["--no-progress"]) == 2
    assert "and the file has changed since" in one_error_line(capsys)
    assert folder_bytes(out) == before
    data.write_text(first)  # the same bytes again: the run continues
    assert run_main(argv + ["--no-progress"]) == 0
    assert len((out / "results.jsonl").read_text().splitlines()) == 2


# -- limits at the edge -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -5])
def test_evaluate_refuses_a_limit_below_one_before_making_a_folder(limit, tmp_path):
    with pytest.raises(ValueError, match="limit must be a whole number >= 1"):
        evaluate(Recipe.load("toy-cot"), tmp_path / "run", limit=limit, progress=False)
    assert not (tmp_path / "run").exists()


def test_a_data_line_over_the_limit_is_refused_while_reading_and_no_folder_is_made(tmp_path, capsys):
    from evals.suites import MAX_LINE_BYTES, load_suite
    from reasoner.recipe import SuiteConfig

    data = tmp_path / "problems.jsonl"
    head = '{"answer": "1", "problem": "'
    fits = head + "x" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
    assert len(fits) == MAX_LINE_BYTES
    data.write_text(fits + "\n")
    assert len(load_suite(SuiteConfig(name="math500", data=str(data)))) == 1  # at the limit: read
    data.write_text('{"problem": "Compute 1+2.", "answer": "3"}\n' + fits[:-2] + 'x"}\n')
    out = tmp_path / "run"
    argv = ["eval", "--recipe", "toy-cot", "--suite", "math500", "--data", str(data), "--out", str(out)]
    assert run_main(argv) == 2
    assert f"line 2 is over {MAX_LINE_BYTES} bytes" in one_error_line(capsys)
    assert not out.exists()


# -- prompts longer than the context ----------------------------------------------------------------------------------


def test_prompt_too_long_says_how_long_and_survives_pickling():
    e = PromptTooLong(700, 512)
    assert str(e) == "prompt of 700 tokens exceeds the context of 512" and isinstance(e, ValueError)
    copy = pickle.loads(pickle.dumps(e))
    assert type(copy) is PromptTooLong and str(copy) == str(e) and (copy.tokens, copy.context) == (700, 512)
    assert "less the 256 tokens" in str(PromptTooLong(300, 512, 256))

    class Model:
        context_length = 10

    assert check_context(Model(), [1] * 7, 3) == 3
    with pytest.raises(PromptTooLong, match="prompt of 8 tokens exceeds the context of 10 less the 3"):
        check_context(Model(), [1] * 8, 3)
    Model.context_length = None
    assert check_context(Model(), [1] * 10_000, 3) is None  # unknown: not checked


def test_the_transformers_backend_checks_prompts_and_ends_generation_at_its_context(toy_target, toy_prompts):
    assert toy_target.context_length == 512
    ids = toy_target.encode(toy_prompts[0])
    long = ids * (600 // len(ids) + 1)
    for call, tokens in (
        (lambda: toy_target.generate([long], SamplingParams(max_tokens=4)), len(long)),
        (lambda: toy_target.score([long], [ids[:3]]), len(long) + 3),  # scored: the prompt and its continuation
        (lambda: toy_target.next_token_logprobs([long], ["1"]), len(long)),
    ):
        with pytest.raises(PromptTooLong, match=f"prompt of {tokens} tokens exceeds the context of 512"):
            call()
    near = long[: 512 - 5]
    gen = toy_target.generate([near], SamplingParams(max_tokens=100, ignore_eos=True))[0][0]
    assert gen.finish_reason == "length" and len(near) + len(gen.token_ids) == 512
    # the token-speculation decoding loop ends there too
    from reasoner.backends import load_lm
    from reasoner.specdec.config import TokenSpeculation

    speculating = load_lm(
        "transformers", "toy:target", "target", token_speculation=TokenSpeculation(method="prompt_lookup")
    )
    gen = speculating.generate([near], SamplingParams(max_tokens=100, ignore_eos=True))[0][0]
    assert gen.finish_reason == "length" and len(near) + len(gen.token_ids) == 512


def test_the_openai_backend_takes_the_servers_context_or_the_recipes_and_cuts_max_tokens_to_it():
    from test_backends_remote import Server

    from reasoner.backends import load_lm, resolve_path

    target, bodies = resolve_path("toy:target"), []

    def reply(path, body):
        if path.endswith("/models"):
            return 200, {"data": [{"id": target, "max_model_len": 16}]}  # as vLLM's server reports it
        bodies.append(body)
        n = body["max_tokens"]
        choice = {
            "index": 0,
            "token_ids": [5] * n,
            "finish_reason": "length",
            "logprobs": {"token_logprobs": [-1.0] * n},
        }
        return 200, {"choices": [choice], "usage": {"prompt_tokens": len(body["prompt"]), "completion_tokens": n}}

    server = Server(reply)
    try:
        lm = load_lm("openai", "toy:target", "target", base_url=[server.url])
        assert lm.context_length == 16
        with pytest.raises(PromptTooLong, match="prompt of 16 tokens exceeds the context of 16"):
            lm.generate([[1] * 16], SamplingParams(max_tokens=4))
        assert len(lm.generate([[1] * 10], SamplingParams(max_tokens=100))[0][0].token_ids) == 6
        assert bodies[-1]["max_tokens"] == 6  # asked for no more than the context holds
        recipe = Recipe.load(
            "toy-cot",
            ["models.target.backend=openai", f"models.target.base_url={server.url}", "models.target.context_length=8"],
        )
        lm = load_lm("openai", "toy:target", "target", **recipe.models.target.backend_options())
        assert lm.context_length == 8
    finally:
        server.close()


def test_a_problem_too_long_for_the_context_is_one_error_row_and_the_run_goes_on(tmp_path):
    data = tmp_path / "problems.jsonl"
    long = "Compute " + "+".join(["1"] * 400) + "."  # ~800 tokens: over the toy models' 512
    rows = [("Compute 1+2.", "3"), (long, "400"), ("Compute 2+5.", "7")]
    data.write_text("".join(json.dumps({"problem": p, "answer": a}) + "\n" for p, a in rows))
    # two models (draft and target), on a CPU each in a process of its own (RemoteModel), solved in one batch
    recipe = Recipe.load("toy-likelihood", ["suite.name=math500", f"suite.data={data}"])
    summary = evaluate(recipe, tmp_path / "run", batch_size=3, progress=False)
    written = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    results = sorted(written, key=lambda r: [p for p, _ in rows].index(r["problem"]))  # written as they finish
    assert [r["problem"] for r in results] == [p for p, _ in rows]
    error = results[1]["error"]
    assert error.startswith("prompt of ") and error.endswith(" tokens exceeds the context of 512")
    assert int(error.split()[2]) > 512 and results[1]["answer"] is None and results[1]["correct"] is False
    assert [r["answer"] for r in (results[0], results[2])] == ["3", "7"] and "error" not in results[0]
    assert summary["n"] == 3 and summary["errors"] == 1 and summary["correct"] == 2
    assert summary["metrics"]["pass@1"] == round(summary["accuracy"], 4)


def test_error_rows_count_as_unsolved_and_cost_nothing():
    ran = {
        "id": "a",
        "correct": True,
        "n_samples": 1,
        "n_correct": 1,
        "stats": {"roles": {"target": {"generated_tokens": 10, "prefill_tokens": 20}}, "counters": {}},
        "batch": {"size": 1, "wall_s": 2.0, "forward_passes": {"target": 10}},
    }
    failed = {"id": "b", "problem": "x", "answer": None, "correct": False, "error": "prompt of 9 tokens exceeds ..."}
    s = summarize([ran, failed], Recipe.load("toy-cot"))
    assert (s["n"], s["errors"], s["accuracy"], s["metrics"]["pass@1"]) == (2, 1, 0.5, 0.5)
    assert s["per_problem"]["tokens"] == {"target": 10.0} and s["s_per_problem"] == 2.0


def test_compress_skips_the_rows_of_problems_that_were_not_attempted(tmp_path):
    from evals.compress import read_traces

    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps({"id": "a", "problem": "p", "steps": [{"text": "1+2=3"}, {"text": "\\boxed{3}"}]})
        + "\n"
        + json.dumps({"id": "b", "problem": "q", "answer": None, "error": "prompt of 900 tokens exceeds the context"})
        + "\n"
    )
    traces, skipped = read_traces(path)
    assert [t.id for t in traces] == ["a"] and skipped == [
        {"line": 2, "id": "b", "reason": "prompt of 900 tokens exceeds the context"}
    ]


# -- errors that say what happened ------------------------------------------------------------------------------------


def test_problems_of_the_wrong_type_are_type_errors():
    from reasoner.core.types import Problem

    with pytest.raises(TypeError, match="not int"):
        Problem(123)
    with pytest.raises(TypeError, match="not bytes: decode it first"):
        Problem(b"Compute 1+2.")
    with pytest.raises(ValueError, match="empty problem"):
        Problem("  ")


def test_reasoner_none_is_an_error_and_reasoner_still_means_the_default(one_torch_thread):
    from reasoner import Reasoner

    with pytest.raises(TypeError, match=r"Reasoner\(None\)"):
        Reasoner(None)
    with Reasoner() as reasoner:
        assert reasoner.recipe == Recipe.load(None)
        with pytest.raises(TypeError, match="not int"):
            reasoner.solve(123)
        with pytest.raises(TypeError, match="solve_many takes a list"):
            reasoner.solve_many("Compute 1+2.")


def test_an_unreachable_hub_fails_in_one_line_at_once(monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    start = time.perf_counter()
    assert run_main(["solve", "--recipe", "toy-cot", "--set", "models.target.path=nobody/no-such-model"]) == 2
    assert "the hub (http://127.0.0.1:9) cannot be reached" in one_error_line(capsys)
    assert time.perf_counter() - start < 30
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert run_main(["solve", "--recipe", "toy-cot", "--set", "models.target.path=nobody/no-such-model"]) == 2
    assert "HF_HUB_OFFLINE is set" in one_error_line(capsys)


@contextlib.contextmanager
def unprivileged():
    """Run as a user whom file permissions bind (root's are not checked): this process's effective uid becomes
    nobody's for the block."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_a_read_only_out_folder_is_named_as_such(finished_run, capsys):
    base = Path(tempfile.mkdtemp(prefix="read-only-"))  # pytest's own folders are private to root: nobody cannot enter
    try:
        base.chmod(0o755)
        out = base / "run"
        shutil.copytree(finished_run, out)
        out.chmod(0o555)
        before = folder_bytes(out)
        with unprivileged():
            code = run_main(EVAL + [str(out)])
        assert code == 2
        assert f"--out {out} is not writable (Permission denied)" in one_error_line(capsys)
        assert folder_bytes(out) == before
    finally:
        (base / "run").chmod(0o755)
        shutil.rmtree(base)
