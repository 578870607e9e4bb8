"""Token-level speculative decoding is lossless: greedy output token for token equal to plain decoding, for every
drafter, batched and alone, on the shipped toy models and on tiny random-weight Llamas; the KV cache after
acceptance equals plain decoding's; stops, finish reasons and log-probs mean what they mean in plain decoding."""

import pytest
import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter
from reasoner.recipe import Recipe, RecipeError
from reasoner.specdec import DraftTree
from reasoner.specdec.cache import RaggedCache
from reasoner.specdec.verify import verify

# trees of 12 nodes: 50 rows of 24-node trees make every forward 1250 tokens, slow on a CPU
DRAFTERS = {
    "prompt_lookup": {"method": "prompt_lookup"},
    "ngram_pool": {"method": "ngram_pool", "nodes": 12},
    "ngram_pool-fitted": {"method": "ngram_pool", "nodes": 12, "shape": "toy"},  # STAND's offline-fitted tree
    "suffix": {"method": "suffix"},
    "recycling": {"method": "recycling", "nodes": 12},
    "goose": {"method": "goose", "nodes": 12},
    "draft_model-chain": {"method": "draft_model", "draft": "toy:draft"},
    "draft_model-tree": {"method": "draft_model", "draft": "toy:draft", "tree": "dynamic", "nodes": 12},
    "goose-adaptive": {"method": "goose", "nodes": 12, "adaptive": True},  # trees cut per row by goodput (SmartSpec)
    "draft_model-chain-adaptive": {"method": "draft_model", "draft": "toy:draft", "adaptive": True},
    "rasd": {"method": "rasd", "draft": "toy:draft", "nodes": 12},  # the draft chain fused with retrieved branches
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_llama(path, tok, seed, hidden=32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="module")
def prompts50(target, template):
    from reasoner.toy import generate_problems

    return [template.prompt(target.tokenizer, p.question) for p in generate_problems(50, seed=2024)]


@pytest.fixture(scope="module")
def plain50(target, prompts50):
    return target.generate(prompts50, SamplingParams(max_tokens=32))


@pytest.fixture(scope="module")
def random_pair(tmp_path_factory):
    """Two tiny random-weight Llamas with the toy tokenizer: a target and an unrelated draft."""
    from transformers import AutoTokenizer

    from reasoner.toy import model_path

    tok = AutoTokenizer.from_pretrained(model_path("target"))
    root = tmp_path_factory.mktemp("random-llamas")
    return random_llama(root / "target", tok, 0), random_llama(root / "draft", tok, 1, hidden=16)


def speculating(lm, config):
    lm.drafter = build_drafter(config, lm) if config else None
    return lm


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_greedy_equals_plain_on_50_toy_prompts_batched(target, prompts50, plain50, name):
    lm = speculating(target, DRAFTERS[name])
    before = lm.stats.snapshot()
    try:
        spec = lm.generate(prompts50, SamplingParams(max_tokens=32))
    finally:
        lm.drafter = None
    assert [g[0].token_ids for g in spec] == [g[0].token_ids for g in plain50]
    assert [g[0].finish_reason for g in spec] == [g[0].finish_reason for g in plain50]
    counters = lm.stats.since(before).counters
    assert counters["token_spec.emitted_tokens"] == sum(len(g[0].token_ids) for g in plain50)
    assert counters["token_spec.accepted_tokens"] > 0  # the drafts were used, not just verified away


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_greedy_equals_plain_one_by_one_with_logprobs(target, prompts50, plain50, name):
    lm = speculating(target, DRAFTERS[name])
    before = lm.stats.snapshot()
    try:
        for prompt, plain in zip(prompts50[:3], plain50[:3]):  # batch 1; the drafter's state carries over calls
            g = lm.generate([prompt], SamplingParams(max_tokens=32))[0][0]
            assert g.token_ids == plain[0].token_ids and g.text == plain[0].text
            assert max(abs(a - b) for a, b in zip(g.logprobs, plain[0].logprobs)) < 1e-4
    finally:
        lm.drafter = None
    spent = lm.stats.since(before).roles["target"]
    assert spent.forward_passes < spent.generated_tokens + 3


@pytest.mark.parametrize("name", list(DRAFTERS))
def test_greedy_equals_plain_on_random_weights(random_pair, prompts50, name):
    target_path, draft_path = random_pair
    lm = load_lm("transformers", target_path, "target", dtype="float32")
    plain = lm.generate(prompts50, SamplingParams(max_tokens=24))
    config = dict(DRAFTERS[name], draft=draft_path) if "draft" in DRAFTERS[name] else DRAFTERS[name]
    spec = speculating(lm, config).generate(prompts50, SamplingParams(max_tokens=24))
    assert [g[0].token_ids for g in spec] == [g[0].token_ids for g in plain]


def test_draft_model_that_is_the_target_accepts_everything(random_pair, prompts50):
    target_path, _ = random_pair
    lm = load_lm("transformers", target_path, "target", dtype="float32")
    plain = lm.generate(prompts50[:8], SamplingParams(max_tokens=30))
    before = lm.stats.snapshot()
    spec = speculating(lm, {"method": "draft_model", "draft": target_path, "num_tokens": 5}).generate(
        prompts50[:8], SamplingParams(max_tokens=30)
    )
    assert [g[0].token_ids for g in spec] == [g[0].token_ids for g in plain]
    c = lm.stats.since(before).counters
    assert c["token_spec.accepted_tokens"] == c["token_spec.drafted_tokens"] - (
        c["token_spec.drafted_tokens"] - c["token_spec.accepted_tokens"]
    )
    assert (
        c["token_spec.emitted_tokens"] / c["token_spec.verify_forwards"] > 4
    )  # 5 drafts + 1 bonus per forward, bar the ends


def test_n_samples_stops_and_lengths_match_plain(target, prompts50):
    params = SamplingParams(n=3, max_tokens=20, stop=("\n\n",))
    plain = target.generate(prompts50[:6], params)
    spec = speculating(target, {"method": "recycling"})
    try:
        out = spec.generate(prompts50[:6], params)
        short = spec.generate(prompts50[:6], SamplingParams(max_tokens=5))
    finally:
        target.drafter = None
    for a, b in zip(plain, out):
        assert [(g.token_ids, g.text, g.finish_reason, g.stop_reason) for g in a] == [
            (g.token_ids, g.text, g.finish_reason, g.stop_reason) for g in b
        ]
    assert all(g[0].finish_reason == "length" and len(g[0].token_ids) == 5 for g in short)


def test_cache_after_acceptance_equals_plain_cache(target, prompts50, plain50):
    """Two rows verify hand-made trees that accept different numbers of tokens (ragged rows); afterwards each
    row's valid KV columns equal the KV of one plain forward over the same tokens."""
    rows = [target.encode(p) for p in prompts50[:2]]
    answers = [g[0].token_ids for g in plain50[:2]]
    heads = [r[:-1] for r in rows]
    batch = target._batch(heads, [0] * len(heads), [None] * len(heads))  # nothing cached: plain left padding
    ids, mask, pos = batch.ids, batch.mask, batch.positions
    with torch.inference_mode():
        _, kv = target._forward(ids, mask, pos, cache=target._new_cache())
        cache = RaggedCache.from_prefill(target.model, kv, mask)
        seqs = [list(r) for r in rows]
        for accept in ([3, 1], [0, 4], [2, 2]):
            trees = []
            for b, seq in enumerate(seqs):
                truth = answers[b][len(seq) - len(rows[b]) :]
                tree = DraftTree()
                wrong = tree.add((truth[0] + 1) % 300)  # a rejected sibling first
                tree.add(truth[1], wrong)
                tree.add_chain(truth[: accept[b]] + [(truth[accept[b]] + 7) % 300])
                trees.append(tree)
            verdicts = verify(cache, [s[-1] for s in seqs], trees, 0.0, 1.0, target.generator)
            for b, v in enumerate(verdicts):
                assert len(v.path) == accept[b]
                seqs[b] += v.tokens
        for b, seq in enumerate(seqs):
            assert seq[len(rows[b]) :] == answers[b][: len(seq) - len(rows[b])]
            ref = target.model(input_ids=torch.tensor([seq[:-1]]), use_cache=True).past_key_values
            valid = cache.valid[b]
            for layer, ref_layer in zip(cache.cache.layers, ref.layers):
                assert torch.allclose(layer.keys[b][:, valid], ref_layer.keys[0], atol=1e-4)
                assert torch.allclose(layer.values[b][:, valid], ref_layer.values[0], atol=1e-4)


def test_recipe_section_and_reasoner_wiring():
    from reasoner import Reasoner

    recipe = Recipe.load("toy-cot", ["token_speculation.method=suffix", "token_speculation.nodes=16"])
    assert recipe.token_speculation.method == "suffix" and recipe.token_speculation.nodes == 16
    with pytest.raises(RecipeError, match="token_speculation.method"):
        Recipe.load("toy-cot", ["token_speculation.method=medusa"])
    with pytest.raises(RecipeError, match="token_speculation.wrong.*allowed here are method"):
        Recipe.load("toy-cot", ["token_speculation.method=suffix", "token_speculation.wrong=1"])
    with pytest.raises(RecipeError, match="needs a draft model"):
        Recipe.load("toy-cot", ["token_speculation.method=draft_model"])
    plain = Reasoner("toy-cot").solve("Compute (17+25)*3-48.")
    reasoner = Reasoner("toy-cot", token_speculation={"method": "draft_model"}, models={"draft": {"path": "toy:draft"}})
    spec = reasoner.solve("Compute (17+25)*3-48.")
    assert [s.token_ids for s in spec.steps] == [
        s.token_ids for s in plain.steps
    ] and spec.answer == plain.answer == "78"
    assert reasoner.models["target"].drafter.name == "draft_model"
    assert spec.stats.roles["target"].forward_passes < plain.stats.roles["target"].forward_passes
    assert reasoner.last_run.counters["token_spec.verify_forwards"] > 0


def test_draft_model_with_another_tokenizer_is_refused(target, tmp_path):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from reasoner.toy import model_path

    tok = AutoTokenizer.from_pretrained(model_path("draft"))
    other = PreTrainedTokenizerFast(
        tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token, pad_token=tok.pad_token
    )
    other.add_tokens(["<extra>"])
    path = random_llama(tmp_path / "other", other, 0)
    with pytest.raises(ValueError, match="different tokenizer"):
        build_drafter({"method": "draft_model", "draft": path}, target)


def test_draft_model_with_a_padded_embedding_table_samples_and_stays_exact(target, prompts50, plain50, tmp_path):
    """Same tokenizer, more embedding rows (as Qwen2.5 1.5B vs 7B): the draft's distribution is cut to the target's
    vocabulary, so sampling runs and greedy output is still plain decoding's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from reasoner.toy import model_path

    model = AutoModelForCausalLM.from_pretrained(model_path("draft"))
    model.resize_token_embeddings(model.config.vocab_size + 64)
    model.save_pretrained(tmp_path / "padded")
    AutoTokenizer.from_pretrained(model_path("draft")).save_pretrained(tmp_path / "padded")
    lm = speculating(
        target, {"method": "draft_model", "draft": str(tmp_path / "padded"), "tree": "dynamic", "nodes": 12}
    )
    try:
        greedy = lm.generate(prompts50[:8], SamplingParams(max_tokens=32))
        assert [g[0].token_ids for g in greedy] == [g[0].token_ids for g in plain50[:8]]
        sampled = lm.generate(prompts50[:8], SamplingParams(max_tokens=32, temperature=0.8, seed=3))
        assert all(len(g[0].token_ids) > 0 and max(g[0].token_ids) < target.model.config.vocab_size for g in sampled)
    finally:
        speculating(target, None)


def test_drafters_learn_from_the_tokens_each_row_kept(target, prompts50, monkeypatch):
    """A row that stops mid-verdict keeps only part of the verdict's tokens; drafters must see exactly those at the
    end of the row's sequence, or their n-gram contexts shift (acceptance drops, silently)."""
    from reasoner.specdec.drafters.ngram_pool import NgramPool

    seen = []
    update = NgramPool.update

    def checked(self, seqs, verdicts):
        seen.extend(list(seq[len(seq) - len(v.tokens) :]) == list(v.tokens) for seq, v in zip(seqs, verdicts))
        return update(self, seqs, verdicts)

    monkeypatch.setattr(NgramPool, "update", checked)
    lm = speculating(target, {"method": "ngram_pool", "nodes": 12})
    try:
        lm.generate(prompts50[:16], SamplingParams(max_tokens=48, stop=("\n\n",)))
    finally:
        speculating(target, None)
    assert seen and all(seen)
