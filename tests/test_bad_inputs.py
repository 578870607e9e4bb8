"""A fuzz list of bad inputs, as a hostile or careless user gives them: each is exit code 2, exactly one line on
stderr saying what is wrong, and a finished run (pointed at by every eval among them) left byte for byte as it was.

The commands run in this process (``reasoner.cli.main``, stderr captured) so that the list stays fast; a few also
run as real processes, whose stderr includes whatever a library prints or logs on the way."""

import os
import subprocess
import sys

import pytest
from conftest import FINISHED_SUITE, folder_bytes, run_main

EVAL = ["eval", "--recipe", "toy-cot", *FINISHED_SUITE, "--out", "{run}", "--no-progress"]
MATH = ["--suite", "math500", "--data"]
BON = ["--set", "search.method=best_of_n"]
BEAM = ["--set", "search.method=beam", "--set", "verifier.type=likelihood"]


def s(*pairs: str) -> list[str]:
    """``--set`` for each pair."""
    return [x for p in pairs for x in ("--set", p)]


CASES = {
    # numbers on the command line
    "limit-negative": (EVAL + ["--limit", "-5"], "argument --limit: must be >= 1, got -5"),
    "limit-zero": (EVAL + ["--limit", "0"], "argument --limit: must be >= 1, got 0"),
    "limit-text": (EVAL + ["--limit", "abc"], "'abc' is not a whole number"),
    "limit-float": (EVAL + ["--limit", "1.5"], "'1.5' is not a whole number"),
    "limit-empty": (EVAL + ["--limit", ""], "'' is not a whole number"),
    "batch-zero": (EVAL + ["--batch-size", "0"], "argument --batch-size: must be >= 1"),
    "batch-negative": (EVAL + ["--batch-size", "-3"], "argument --batch-size: must be >= 1"),
    "batch-huge": (EVAL + ["--batch-size", "100000"], "must be <= 4096"),
    "workers-zero": (EVAL + ["--workers", "0"], "argument --workers: must be >= 1"),
    "workers-huge": (EVAL + ["--workers", "100000"], "must be <= 64 (each worker loads its own models)"),
    "unknown-option": (EVAL + ["--bogus"], "unrecognized arguments: --bogus"),
    "option-without-value": (EVAL + ["--suite"], "argument --suite: expected one argument"),
    # numbers in the recipe
    "search-n-huge": (EVAL + BON + s("search.n=1000000000"), "search.n (best_of_n): at most 1024, got 1000000000"),
    "search-n-zero": (EVAL + BON + s("search.n=0"), "search.n (best_of_n): Input should be greater than or equal"),
    "search-n-text": (EVAL + BON + s("search.n=abc"), "search.n (best_of_n): Input should be a valid integer"),
    "search-width-huge": (EVAL + BEAM + s("search.n=128", "search.width=128"), "search.width (beam): at most 64"),
    "temperature-negative": (EVAL + s("sampling.temperature=-1"), "'sampling.temperature'"),
    "temperature-inf": (EVAL + s("sampling.temperature=.inf"), "sampling.temperature': Input should be a finite"),
    "temperature-nan": (EVAL + s("sampling.temperature=.nan"), "sampling.temperature': Input should be a finite"),
    "top-p-zero": (EVAL + s("sampling.top_p=0"), "'sampling.top_p'"),
    "step-tokens-huge": (EVAL + s("sampling.max_step_tokens=10000000"), "at most 131072, got 10000000"),
    "max-steps-zero": (EVAL + s("budget.max_steps=0"), "'budget.max_steps'"),
    "max-tokens-huge": (EVAL + s("budget.max_tokens=99999999999"), "'budget.max_tokens': at most 1048576"),
    "seed-huge": (EVAL + s("seed=99999999999999999999999"), "which take 64-bit seeds"),
    "seed-negative": (EVAL + s("seed=-1"), "'seed': Input should be greater than or equal to 0"),
    "suite-size-huge": (EVAL + s("suite.size=1000000000"), "'suite.size': at most 100000"),
    "suite-size-zero": (EVAL + s("suite.size=0"), "'suite.size'"),
    "batch-rows-zero": (EVAL + s("models.target.max_batch_size=0"), "'models.target.max_batch_size'"),
    "spec-nodes-huge": (
        EVAL + s("token_speculation.method=suffix", "token_speculation.nodes=100000"),
        "'token_speculation.nodes': at most 256",
    ),
    # Ray (all refused before ray is imported, where it is not installed too)
    "ray-address-malformed": (EVAL + ["--ray", "head node"], "scale.address 'head node' is not a Ray address"),
    "ray-address-scheme": (EVAL + ["--ray", "http://10.0.0.1:6379"], "is not a Ray address: give HOST:PORT"),
    "ray-nobody-there": (EVAL + ["--ray", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
    "ray-replicas-zero": (EVAL + ["--ray"] + s("scale.replicas=0"), "'scale.replicas': Input should be greater"),
    "ray-with-workers": (EVAL + ["--ray", "--workers", "2"], "on Ray set the replicas (scale.replicas) instead"),
    "ray-vllm-without-vllm": (
        EVAL + s("scale.vllm.tensor_parallel_size=2", "scale.num_gpus=2"),
        "needs a model with backend: vllm",
    ),
    "ray-tensor-parallel-without-gpus": (
        EVAL + s("models.target.backend=vllm", "scale.vllm.tensor_parallel_size=4"),
        "set scale.num_gpus=4 (got 0)",
    ),
    # recipe fields and overrides
    "vote-unknown": (EVAL + s("search.vote=plurality"), "search.vote"),
    "knob-typo": (EVAL + s("search.widht=3"), "search.widht is not a knob of search.method=cot"),
    "override-not-key-value": (EVAL + ["--set", "search"], "not key=value"),
    "unknown-section": (EVAL + s("nosuch.x=1"), "unknown recipe field 'nosuch'"),
    "unknown-search": (EVAL + s("search.method=tree"), "search.method='tree' is not a search"),
    "unknown-dtype": (EVAL + s("models.target.dtype=float8"), "'models.target.dtype'"),
    "unknown-difficulty": (EVAL + s("suite.difficulty=impossible"), "unknown difficulty"),
    "context-length-not-openai": (
        EVAL + s("models.target.context_length=100"),
        "context_length is for backend: openai",
    ),
    # recipe files
    "recipe-directory": (["eval", "--recipe", "{dir}", "--out", "{run}"], "is a directory"),
    "recipe-missing": (["eval", "--recipe", "{tmp}/missing.yaml", "--out", "{run}"], "not found"),
    "recipe-empty": (["eval", "--recipe", "{empty_yaml}", "--out", "{run}"], "is empty"),
    "recipe-comments-only": (["eval", "--recipe", "{comments_yaml}", "--out", "{run}"], "is empty"),
    "recipe-list": (["eval", "--recipe", "{list_yaml}", "--out", "{run}"], "must be a mapping of sections"),
    "recipe-bad-yaml": (["eval", "--recipe", "{bad_yaml}", "--out", "{run}"], "is not valid YAML"),
    "recipe-not-utf8": (["eval", "--recipe", "{latin1_yaml}", "--out", "{run}"], "is not UTF-8 text"),
    "recipe-foreign-knob": (["eval", "--recipe", "{knob_yaml}", "--out", "{run}"], "puct_init is a knob of mcts"),
    # data files
    "data-directory": (EVAL + MATH + ["{dir}"], "data file {dir} is a directory"),
    "data-missing": (EVAL + MATH + ["{tmp}/missing.jsonl"], "not found"),
    "data-device": (EVAL + MATH + ["/dev/null"], "is not a regular file"),
    "data-null-answer": (EVAL + MATH + ["{null_answer}"], "line 1: field 'answer' is null"),
    "data-null-problem": (EVAL + MATH + ["{null_problem}"], "line 1: field 'problem' is null"),
    "data-line-too-long": (EVAL + MATH + ["{long_line}"], "line 2 is over 1048576 bytes"),
    "data-bad-json": (EVAL + MATH + ["{bad_json}"], "line 2 is not valid JSON"),
    "data-array-line": (EVAL + MATH + ["{array_line}"], "line 1 is a JSON list, not an object"),
    "data-string-line": (EVAL + MATH + ["{string_line}"], "line 1 is a JSON str, not an object"),
    "data-empty": (EVAL + MATH + ["{empty_jsonl}"], "holds no problems"),
    "data-blank-lines": (EVAL + MATH + ["{blank_jsonl}"], "holds no problems"),
    "data-not-utf8": (EVAL + MATH + ["{latin1_jsonl}"], "is not UTF-8 text"),
    "data-missing-field": (EVAL + MATH + ["{no_answer}"], "missing field 'answer'"),
    "data-problem-object": (EVAL + MATH + ["{problem_object}"], "field 'problem' is a JSON object, not text"),
    "data-duplicate-ids": (EVAL + MATH + ["{duplicate_ids}"], "appears twice"),
    "data-gsm8k-no-answer-line": (
        ["eval", "--recipe", "toy-cot", "--out", "{run}", "--suite", "gsm8k", "--data", "{gsm8k}"],
        "no '#### <number>' line",
    ),
    "data-humaneval-null-prompt": (
        ["eval", "--recipe", "toy-code", "--out", "{run}", "--suite", "humaneval", "--data", "{humaneval_null}"],
        "field 'prompt' is null",
    ),
    "data-mbpp-empty-tests": (
        ["eval", "--recipe", "toy-code", "--out", "{run}", "--suite", "mbpp", "--data", "{mbpp_empty}"],
        "field 'test_list' must be a non-empty list",
    ),
    "suite-unknown": (EVAL + ["--suite", "nope"], "unknown suite 'nope'"),
    "hub-suite-without-data": (EVAL + ["--suite", "math500"], "give --data PATH"),
    # output folders
    "out-is-a-file": (["eval", "--recipe", "toy-cot", "--limit", "1", "--out", "{file}"], "is a file, not a folder"),
    "out-under-a-file": (
        ["eval", "--recipe", "toy-cot", "--limit", "1", "--out", "{file}/run"],
        "cannot make the --out folder",
    ),
    "out-other-recipe": (
        ["eval", "--recipe", "toy-cot-draft", *FINISHED_SUITE, "--out", "{run}", "--no-progress"],
        "holds results of a different recipe (sections differ: name, description, models, search)",
    ),
    "out-other-seed": (EVAL + s("suite.seed=7"), "different recipe (sections differ: suite)"),
    "baseline-missing": (EVAL + ["--baseline", "{tmp}/nowhere"], "baseline {tmp}/nowhere: cannot read"),
    # solve
    "solve-blank-problem": (["solve", "   "], "empty problem"),
    "solve-recipe-directory": (["solve", "--recipe", "{dir}"], "is a directory"),
    "solve-tests-missing": (["solve", "--tests", "{tmp}/missing.py"], "cannot read tests file"),
    "solve-tests-empty": (["solve", "--tests", "{empty_py}"], "is empty"),
    "solve-tests-not-python": (["solve", "--tests", "{bad_py}"], "not valid Python"),
    "solve-model-missing": (["solve", "--set", "models.target.path=/no/such/model"], "has no config.json"),
    "solve-openai-without-url": (["solve", *s("models.target.backend=openai")], "needs base_url"),
    # the other commands
    "compress-missing": (["compress", "{tmp}/missing.jsonl"], "not found"),
    "compress-limit-zero": (["compress", "{bad_json}", "--limit", "0"], "argument --limit: must be >= 1"),
    "compress-temperature-nan": (["compress", "{bad_json}", "--temperature", "nan"], "must be a finite number"),
    "compress-bad-json": (["compress", "{bad_traces}"], "line 2 is not valid JSON"),
    "compress-no-trace": (["compress", "{null_answer}"], 'line 1 has neither "steps" nor "text"'),
    "report-missing": (["report", "{tmp}/nowhere"], "no summary.json there"),
    "router-train-missing": (["router", "train", "{tmp}/missing.jsonl", "--out", "{tmp}/r.json"], "cannot read"),
    "calibrate-no-speculation": (["calibrate", "-r", "toy-cot", "--out", "{tmp}/cal"], "has no step_speculation"),
    "calibrate-write-exists": (["calibrate", "-r", "toy-likelihood", "--write", "{file}"], "the file exists"),
    "calibrate-thresholds-text": (["calibrate", "-r", "toy-likelihood", "--thresholds", "a,b"], "comma-separated"),
    "calibrate-write-two": (
        ["calibrate", "-r", "toy-likelihood", "-r", "toy-specreason", "--write", "{tmp}/w.yaml"],
        "takes one --recipe",
    ),
    "calibrate-thresholds-count": (
        ["calibrate", "-r", "toy-likelihood", "--thresholds", "0.1", "--thresholds", "0.2"],
        "once per recipe",
    ),
    "calibrate-two-pairs": (["calibrate", "-r", "toy-likelihood", "-r", "qwen-coder-likelihood"], "different models"),
    "calibrate-negative-loss": (["calibrate", "-r", "toy-likelihood", "--max-loss", "-1"], "loss allowed is >= 0"),
    "bench-tokens-real-no-data": (["bench", "tokens", "--pair", "qwen-coder", "--out", "{tmp}/bt"], "pass --data"),
    "bench-tokens-temperature": (["bench", "tokens", "--out", "{tmp}/bt", "--temperatures", "hot"], "comma-separated"),
    "bench-steps-real-no-data": (["bench", "steps", "--pair", "qwen-coder", "--out", "{tmp}/bs"], "pass --data"),
    "specdec-train-prompts-missing": (
        ["specdec", "train", "--out", "{tmp}/h.safetensors", "--prompts", "{tmp}/missing.jsonl"],
        "cannot read prompts",
    ),
    "specdec-train-prompts-not-json": (
        ["specdec", "train", "--out", "{tmp}/h.safetensors", "--prompts", "{bad_json}"],
        "line 1 is not",
    ),
    "specdec-train-holdout": (
        ["specdec", "train", "--out", "{tmp}/h.safetensors", "--holdout", "1.5"],
        "--holdout must be between 0 and 1",
    ),
    "no-command": ([], "the following arguments are required: command"),
    "unknown-command": (["nope"], "invalid choice: 'nope'"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory, finished_run):
    """The bad files the cases name, by placeholder."""
    tmp = tmp_path_factory.mktemp("bad")
    texts = {
        "empty_yaml": "",
        "comments_yaml": "# a recipe, one day\n",
        "list_yaml": "- models\n- search\n",
        "bad_yaml": "search: [unclosed\n",
        "latin1_yaml": b"name: caf\xe9\n",
        "knob_yaml": "search: {method: beam, n: 8, width: 4, puct_init: 2.0}\nverifier: {type: likelihood}\n",
        "null_answer": '{"problem": "Compute 1+2.", "answer": null}\n',
        "null_problem": '{"problem": null, "answer": "3"}\n',
        "long_line": '{"problem": "Compute 1+2.", "answer": "3"}\n{"problem": "'
        + "1+" * 600_000
        + '1", "answer": "1"}\n',
        "bad_json": '{"problem": "Compute 1+2.", "answer": "3"}\n{"problem": "Comp\n',
        "bad_traces": '{"problem": "Compute 1+2.", "steps": ["1+2=3"]}\n{"problem": "Comp\n',
        "array_line": "[1, 2]\n",
        "string_line": '"Compute 1+2."\n',
        "empty_jsonl": "",
        "blank_jsonl": "\n   \n\n",
        "latin1_jsonl": b'{"problem": "caf\xe9", "answer": "3"}\n',
        "no_answer": '{"problem": "Compute 1+2."}\n',
        "problem_object": '{"problem": {"text": "Compute 1+2."}, "answer": "3"}\n',
        "duplicate_ids": '{"problem": "Compute 1+2.", "answer": "3", "unique_id": "a"}\n'
        '{"problem": "Compute 2+2.", "answer": "4", "unique_id": "a"}\n',
        "gsm8k": '{"question": "What is 1+1?", "answer": "2"}\n',
        "humaneval_null": '{"task_id": "H/0", "prompt": null, "entry_point": "f", "test": "assert True"}\n',
        "mbpp_empty": '{"text": "Write f.", "test_list": []}\n',
        "empty_py": "",
        "bad_py": "assert f(1) ==\n",
        "file": "not a folder\n",
    }
    paths = {"tmp": str(tmp), "run": str(finished_run), "dir": str(tmp / "a-directory")}
    (tmp / "a-directory").mkdir()
    for name, text in texts.items():
        suffix = ".yaml" if name.endswith("_yaml") else ".py" if name.endswith("_py") else ".jsonl"
        path = tmp / (name + suffix)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        paths[name] = str(path)
    return paths


def test_the_list_is_long_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_exit_2_one_line_and_leaves_a_finished_run_as_it_was(case, files, finished_run, capsys):
    argv, message = CASES[case]
    before = folder_bytes(finished_run)
    code = run_main([a.format(**files) for a in argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert message.format(**files) in lines[0], lines[0]
    assert folder_bytes(finished_run) == before


@pytest.mark.parametrize("case", ["limit-negative", "search-n-huge", "data-line-too-long"])
def test_as_a_process_too(case, files, finished_run):
    """The same in a process of its own: nothing a library prints or logs adds a line."""
    argv, message = CASES[case]
    before = folder_bytes(finished_run)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run(
        [sys.executable, "-m", "reasoner", *[a.format(**files) for a in argv]],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message.format(**files) in lines[0], proc.stderr
    assert folder_bytes(finished_run) == before
