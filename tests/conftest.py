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
