"""The transformers backend: batching, stops, log-probs, sampling, costs. Real toy models and a tiny random one."""

import math

import pytest
import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter


@pytest.fixture(scope="module")
def random_lm(tmp_path_factory):
    """A tiny random-weight Llama with the toy tokenizer: behaviour that must not depend on training."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from reasoner.toy import model_path

    path = tmp_path_factory.mktemp("random-llama")
    tok = AutoTokenizer.from_pretrained(model_path("target"))
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return load_lm("transformers", str(path), "target", dtype="float32")


def test_greedy_batched_equals_one_by_one(toy_target, toy_prompts):
    params = SamplingParams(max_tokens=80)
    batched = toy_target.generate(toy_prompts, params)
    single = [toy_target.generate([p], params)[0] for p in toy_prompts]
    assert [b[0].token_ids for b in batched] == [s[0].token_ids for s in single]
    assert all(b[0].finish_reason == "eos" for b in batched)  # whole solutions end with <|im_end|>


def test_greedy_batched_equals_one_by_one_on_random_weights(random_lm, toy_prompts):
    params = SamplingParams(max_tokens=24)
    batched = random_lm.generate(toy_prompts[:12], params)
    single = [random_lm.generate([p], params)[0] for p in toy_prompts[:12]]
    assert [b[0].token_ids for b in batched] == [s[0].token_ids for s in single]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_score_reproduces_generate_logprobs(toy_target, toy_prompts, temperature):
    gens = toy_target.generate(toy_prompts[:8], SamplingParams(n=2, temperature=temperature, max_tokens=40, seed=3))
    prompts = [p for p, g in zip(toy_prompts, gens) for _ in g]
    conts = [x.token_ids for g in gens for x in g]
    scored = toy_target.score(prompts, conts)
    for gen, s in zip((x for g in gens for x in g), scored):
        assert len(s) == len(gen.logprobs)
        assert max(abs(a - b) for a, b in zip(gen.logprobs, s)) < 1e-4


def test_generation_stops_exactly_at_the_delimiter(toy_target, toy_prompts):
    full = toy_target.generate(toy_prompts, SamplingParams(max_tokens=80))
    step = toy_target.generate(toy_prompts, SamplingParams(max_tokens=80, stop=("\n\n",)))
    delim = toy_target.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    for f, s in zip(full, step):
        f, s = f[0], s[0]
        assert s.finish_reason == "stop" and s.stop_reason == "\n\n"
        assert "\n\n" not in s.text and s.text == f.text.split("\n\n")[0]
        assert s.token_ids == f.token_ids[: len(s.token_ids)] and s.token_ids[-len(delim) :] == delim


def test_stop_on_random_weights_cuts_at_the_first_occurrence(random_lm, toy_prompts):
    # the most common token of the random model's free run makes a stop string that occurs mid-generation
    free = random_lm.generate(toy_prompts[:8], SamplingParams(max_tokens=30))
    counts = {}
    for g in free:
        for t in g[0].token_ids[1:]:
            counts[t] = counts.get(t, 0) + 1
    stop = random_lm.tokenizer.decode([max(counts, key=counts.get)])
    cut = random_lm.generate(toy_prompts[:8], SamplingParams(max_tokens=30, stop=(stop,)))
    stopped = 0
    for f, c in zip(free, cut):
        f, c = f[0], c[0]
        if stop in f.text:
            stopped += 1
            assert c.finish_reason == "stop" and c.text == f.text[: f.text.find(stop)]
        else:
            assert c.token_ids == f.token_ids
    assert stopped >= 4


def test_max_tokens_and_finish_reasons(toy_target, toy_prompts):
    gens = toy_target.generate(toy_prompts[:4], SamplingParams(max_tokens=3))
    assert all(g[0].finish_reason == "length" and len(g[0].token_ids) == 3 for g in gens)
    free = toy_target.generate(toy_prompts[:4], SamplingParams(max_tokens=120, ignore_eos=True))
    assert all(g[0].finish_reason == "length" and len(g[0].token_ids) == 120 for g in free)
    assert all(toy_target.tokenizer.eos_token_id in g[0].token_ids for g in free)  # it went past the end of its answer


def test_sampling_n_seeded_and_diverse(toy_draft, toy_prompts):
    params = SamplingParams(n=6, temperature=1.0, max_tokens=60, seed=11)
    a = toy_draft.generate(toy_prompts[:4], params)
    b = toy_draft.generate(toy_prompts[:4], params)
    assert [[x.token_ids for x in g] for g in a] == [[x.token_ids for x in g] for g in b]
    assert all(len(g) == 6 for g in a)
    assert len({tuple(x.token_ids) for g in a for x in g}) > 4


def test_top_p_tiny_is_greedy(toy_draft, toy_prompts):
    greedy = toy_draft.generate(toy_prompts[:6], SamplingParams(max_tokens=40))
    nucleus = toy_draft.generate(toy_prompts[:6], SamplingParams(temperature=1.0, top_p=1e-6, max_tokens=40, seed=5))
    assert [g[0].token_ids for g in greedy] == [g[0].token_ids for g in nucleus]


def test_next_token_logprobs_agree_with_score(toy_target, toy_prompts):
    digits = [str(d) for d in range(10)]
    dist = toy_target.next_token_logprobs(toy_prompts[:3], digits)
    for prompt, d in zip(toy_prompts[:3], dist):
        scored = toy_target.score([prompt] * 10, digits)
        assert all(abs(d[k] - s[0]) < 1e-4 for k, s in zip(digits, scored))
        assert sum(math.exp(v) for v in d.values()) <= 1.0 + 1e-6
    with pytest.raises(ValueError, match="single-token"):
        toy_target.next_token_logprobs(toy_prompts[:1], ["The answer"])


def test_each_call_returns_what_it_cost(toy_draft, toy_prompts):
    before = toy_draft.stats.snapshot()
    gens = toy_draft.generate(toy_prompts[:5], SamplingParams(n=3, temperature=1.0, max_tokens=20, seed=1))
    role = gens.total
    assert toy_draft.stats.since(before).roles == {"draft": role}  # the model's running total grew by as much
    assert [u.prefill_tokens for u in gens.usage] == [len(toy_draft.encode(p)) for p in toy_prompts[:5]]
    assert [u.generated_tokens for u in gens.usage] == [sum(len(x.token_ids) for x in g) for g in gens]
    assert role.calls == 1
    assert role.generated_tokens == sum(len(x.token_ids) for g in gens for x in g)
    assert role.prefill_tokens == sum(
        len(toy_draft.encode(p)) for p in toy_prompts[:5]
    )  # one prefill per prompt, not per sample
    assert role.forward_passes == max(len(x.token_ids) for g in gens for x in g)
    assert role.wall_s > 0


def test_bad_inputs_are_named(toy_draft, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        toy_draft.generate([""], SamplingParams())
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError, match="one continuation per prompt"):
        toy_draft.score(["a"], ["b", "c"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_lm("transformers", str(tmp_path / "nowhere"), "target")
    with pytest.raises(ValueError, match="toy:target"):
        load_lm("transformers", "toy:huge", "target")
    with pytest.raises(ValueError, match="backend"):
        load_lm("tensorrt", "toy:target", "target")


def test_int8_quantization_stores_int8_linear_layers_and_still_solves():
    """``quantize: int8`` (the CPU speed option of issue 16): every linear layer runs int8 weights with a scale per
    output channel (per-tensor scales moved the real model's tokens further), and the toy target still solves what it
    solves in float32 (lossy in general; on this problem the answer holds)."""
    from reasoner import Reasoner
    from reasoner.recipe import Recipe, RecipeError

    lm = load_lm("transformers", "toy:target", "target", quantize="int8")
    linear = [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in lm.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not linear
    assert {m.weight().qscheme() for m in quantized} == {torch.per_channel_affine}
    solution = Reasoner("toy-cot", ["models.target.quantize=int8"]).solve("Compute 12+7.")
    assert solution.answer == "19"
    with pytest.raises(RecipeError, match="quantize is a transformers backend option"):
        Recipe.load("toy-cot-vllm", ["models.target.quantize=int8"])


def test_fp16_weights_decode_as_float32_does():
    """``quantize: fp16`` stores every linear layer's weights as float16 and keeps activations float32: the CPU option
    that is faster than float32 without changing the tokens, so greedy output equals float32's, row by row."""
    prompts = ["Compute 12+7*3.", "Compute (5+8)*4-9.", "Compute 3*3*3."]
    params = SamplingParams(temperature=0.0, max_tokens=40)
    plain = [g[0].token_ids for g in load_lm("transformers", "toy:target", "target").generate(prompts, params)]
    lm = load_lm("transformers", "toy:target", "target", quantize="fp16")
    quantized = [m for m in lm.model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not [m for m in lm.model.modules() if isinstance(m, torch.nn.Linear)]
    assert {m._packed_params.dtype for m in quantized} == {torch.float16}
    assert [g[0].token_ids for g in lm.generate(prompts, params)] == plain
    with pytest.raises(ValueError, match=r"quantize: 'int4' is not an option \(none \| int8 \| fp16\)"):
        load_lm("transformers", "toy:target", "target", quantize="int4")


def test_int8_draft_model_speculates_losslessly():
    """``token_speculation.draft_quantize: int8`` quantizes only the drafter: its linear layers are int8, the target's
    stay float32, and the target's verification keeps greedy output identical to plain decoding."""
    from reasoner.recipe import Recipe, RecipeError

    lm = load_lm("transformers", "toy:target", "target")
    params = SamplingParams(temperature=0.0, max_tokens=40)
    prompts = ["Compute 12+7*3.", "Compute (5+8)*4-9."]
    plain = [g[0].token_ids for g in lm.generate(prompts, params)]
    lm.drafter = build_drafter({"method": "draft_model", "draft": "toy:draft", "draft_quantize": "int8"}, lm)
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in lm.drafter.model.modules())
    assert not any(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in lm.model.modules())
    before = lm.stats.counters.get("token_spec.accepted_tokens", 0)
    assert [g[0].token_ids for g in lm.generate(prompts, params)] == plain
    assert lm.stats.counters.get("token_spec.accepted_tokens", 0) > before
    with pytest.raises(RecipeError, match="draft_quantize quantizes a draft model"):
        Recipe.load(
            "toy-cot-specdec", ["token_speculation.method=prompt_lookup", "token_speculation.draft_quantize=int8"]
        )
