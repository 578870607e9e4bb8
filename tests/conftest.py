import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy_target():
    from reasoner.backends import load_lm

    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="session")
def toy_draft():
    from reasoner.backends import load_lm

    return load_lm("transformers", "toy:draft", "draft", seed=0)


@pytest.fixture(scope="session")
def template():
    from prompts import load

    return load("toy")


@pytest.fixture(scope="session")
def toy_prompts(toy_target, template):
    from reasoner.toy import generate_problems

    return [template.prompt(toy_target.tokenizer, p.question) for p in generate_problems(24, seed=99)]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a test module: on a shared 2-core machine two threads are over 10x slower for the toy
    models."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FINISHED_SUITE = ["--set", "suite.difficulty=ops=1-2,digits=1", "--set", "suite.size=4"]  # toy-cot: seconds


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One finished toy eval (toy-cot, 4 easy problems), made once: tests that must leave an earlier run untouched
    point their bad inputs at it and compare its bytes before and after."""
    from evals.runner import evaluate
    from reasoner.recipe import Recipe

    out = tmp_path_factory.mktemp("finished") / "run"
    recipe = Recipe.load("toy-cot", [s for s in FINISHED_SUITE if s != "--set"])
    evaluate(recipe, out, progress=False)
    return out


def folder_bytes(folder) -> dict:
    """Every file of a folder (recursively) by relative path, with its bytes."""
    from pathlib import Path

    root = Path(folder)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run_main(argv: list[str]) -> int:
    """``reasoner`` with ``argv`` in this process; its exit code (argparse's exits included)."""
    from reasoner.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse exits; the process would exit with this code
        return e.code
