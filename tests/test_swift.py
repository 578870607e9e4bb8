"""SWIFT self-speculation (``token_speculation.method: swift``): the target drafts with some of its own sublayers
skipped, the set found by an on-the-fly search, and the full model verifies losslessly. Each test fails when the
mechanism it names is removed (see the docstrings)."""

import pytest
import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAIVE = ["attn.1", "mlp.1"]  # SWIFT's own starting point on a 4-layer model: skip layer 1 (every other layer)


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="module")
def prompts(target, template):
    from reasoner.toy import generate_problems

    return [template.prompt(target.tokenizer, p.question) for p in generate_problems(7, seed=2024)]


def _greedy(lm, prompts, max_tokens=120):
    before = lm.stats.snapshot()
    outs = [lm.generate([p], SamplingParams(temperature=0, max_tokens=max_tokens))[0][0].token_ids for p in prompts]
    return outs, lm.stats.since(before)


def test_swift_is_lossless_and_drafts_with_fewer_layers_of_the_target_itself(target, prompts, monkeypatch):
    """Greedy output equals plain decoding; drafts come from the target module itself (loading any model fails
    here), and a draft forward runs fewer sublayers than the target has (counted): a drafter that ran every layer,
    or loaded a draft model, fails."""
    plain, _ = _greedy(target, prompts[:3])

    def no_loading(*args, **kwargs):
        raise AssertionError("self-speculation loaded a model")

    monkeypatch.setattr("reasoner.backends.speculative.load_draft_model", no_loading)
    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", no_loading)
    target.drafter = build_drafter(
        {"method": "swift", "skip_ratio": 0.5, "num_tokens": 8, "context_window": 16}, target
    )
    calls = []  # every attention and MLP sublayer the target's module runs
    layers = target.model.model.layers
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for x in layers for m in (x.self_attn, x.mlp)]
    try:
        assert target.drafter.model is target.model
        outs, spent = _greedy(target, prompts[:3])
    finally:
        target.drafter = None
        for h in hooks:
            h.remove()
    assert outs == plain
    c = spent.counters
    draft_forwards = spent.roles["drafter"].forward_passes
    assert draft_forwards > 0 and c["token_spec.accepted_tokens"] > c["token_spec.verify_forwards"]
    full = 2 * len(layers) * spent.roles["target"].forward_passes  # prefills and verifications run every sublayer
    search = (2 * len(layers) - 2) * c["token_spec.search_forwards"]  # scoring proposed sets, as many skipped
    per_draft = (len(calls) - full - search) / draft_forwards
    assert per_draft == 2 * len(layers) - 2  # 2 of the 4 skippable sublayers skipped
    assert c["token_spec.draft_sublayers"] / draft_forwards == 2 * len(layers) - 2
    assert c["token_spec.search_steps"] > 0  # the search ran (it changes the set, never the output)


def test_searched_layer_set_accepts_more_drafted_tokens_than_a_fixed_naive_one(target, prompts):
    """Starting from the naive set (skip layer 1), the search on earlier problems moves to a set whose drafts the
    target accepts more of on the same later text than the naive set, kept fixed, gets. Without the search (or
    with proposals never adopted) the two are the same drafter and this fails."""
    config = {"method": "swift", "skip": NAIVE, "skip_ratio": 0.5, "num_tokens": 8, "context_window": 16}
    searched = build_drafter({**config, "search_budget": 30}, target)
    target.drafter = searched
    try:
        _greedy(target, prompts[3:6])  # the optimization phase
        assert sorted(f"{k}.{i}" for k, i in searched.skipped) != NAIVE
        _, after = _greedy(target, prompts[:2])
        target.drafter = build_drafter({**config, "search_budget": 0}, target)
        _, fixed = _greedy(target, prompts[:2])
    finally:
        target.drafter = None

    def per_forward(spent):
        return spent.counters["token_spec.accepted_tokens"] / spent.counters["token_spec.verify_forwards"]

    print("accepted per forward: searched", per_forward(after), "fixed", per_forward(fixed), searched.skipped)
    assert per_forward(after) > 1.3 * per_forward(fixed)


def test_matchness_of_the_full_model_on_its_own_greedy_tokens_is_one(target, prompts):
    """Matchness (the search's score) is the teacher-forced agreement on recent generated tokens, read over the
    target's own KV of what precedes them: with nothing skipped the model predicts every one of its own greedy
    tokens (a window that saw the wrong columns or positions would not); skipping layers lowers it."""
    from reasoner.specdec.cache import RaggedCache

    seqs = []
    for p in prompts[:2]:
        ids = target.encode(p)
        seqs.append(ids + target.generate([ids], SamplingParams(temperature=0, max_tokens=24))[0][0].token_ids[:20])
    width = max(len(s) for s in seqs) - 1
    ids = torch.zeros((2, width), dtype=torch.long)
    mask = torch.zeros((2, width), dtype=torch.long)
    for i, s in enumerate(seqs):  # the committed tokens (all but the root), left-padded as the backend's prefill
        ids[i, width - len(s) + 1 :], mask[i, width - len(s) + 1 :] = torch.tensor(s[:-1]), 1
    with torch.inference_mode():
        out = target.model(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), use_cache=True
        )
    swift = build_drafter({"method": "swift", "skip_ratio": 0.5}, target)
    swift.target_cache = RaggedCache.from_prefill(target.model, out.past_key_values, mask)
    assert swift.matchness(seqs, frozenset(), 16) == 1.0
    assert swift.matchness(seqs, frozenset({("attn", 1), ("mlp", 1)}), 16) < 0.9


def test_confidence_stop_drafts_fewer_rejected_tokens(target, prompts):
    """SWIFT's early stop: a chain ends after a token the draft is unsure of, so fewer drafted tokens are thrown
    away than with chains always num_tokens long; the output stays plain decoding's. Without the stop the two
    runs draft the same and this fails."""
    config = {"method": "swift", "skip": ["attn.2", "mlp.2"], "search_budget": 0, "skip_ratio": 0.5, "num_tokens": 8}
    rejected, outs = {}, {}
    for stop in (0.0, 0.8):
        target.drafter = build_drafter({**config, "stop_confidence": stop}, target)
        try:
            outs[stop], spent = _greedy(target, prompts[:2])
        finally:
            target.drafter = None
        c = spent.counters
        rejected[stop] = c["token_spec.drafted_tokens"] - c["token_spec.accepted_tokens"]
    assert outs[0.0] == outs[0.8]
    print("rejected", rejected)
    assert rejected[0.8] < 0.7 * rejected[0.0]


@pytest.mark.parametrize(
    "config, message",
    [
        ({"skip_ratio": 0.1}, "skip_ratio 0.1 skips no sublayer"),
        ({"skip": ["attn.0"]}, "attn.0 cannot be skipped"),
        ({"skip": ["mlp.3"]}, "mlp.3 cannot be skipped"),
    ],
)
def test_bad_swift_settings_say_what_to_change(target, config, message):
    with pytest.raises(ValueError, match=message):
        build_drafter({"method": "swift", **config}, target)


def test_swift_sampling_follows_the_target_distribution(tmp_path):
    """Sampled drafts carry the skipped model's distribution, and multi-step speculative sampling keeps the
    target's: a chi-square test on the first three tokens of 4000 samples from a 4-layer tiny-vocabulary model
    (``test_specdec_sampling``)."""
    from test_specdec_sampling import exact_probs, p_value, sample_first_tokens, tiny_llama

    path = tiny_llama(tmp_path / "deep", 0, 0.6, layers=4)
    config = {"method": "swift", "skip": ["attn.1", "mlp.2"], "search_budget": 0, "num_tokens": 3}
    counts, counters = sample_first_tokens((path, None), config)
    assert 4000 // 4 < counters["token_spec.accepted_tokens"] < counters["token_spec.drafted_tokens"]
    assert p_value(counts, exact_probs(path)) > 1e-3


def test_bench_tokens_has_the_swift_row_without_loading_transformers_baselines(tmp_path):
    """``reasoner bench tokens --only swift --no-hf``: plain decoding and SWIFT side by side, identical greedy output,
    more than one token per target forward, no transformers rows (so no draft model is loaded)."""
    import json

    from reasoner.cli import main

    argv = ["bench", "tokens", "--out", str(tmp_path), "--problems", "1", "--best-of-problems", "0", "--rounds", "1"]
    argv += ["--max-tokens", "48", "--temperatures", "0", "--only", "swift", "--no-hf", "--warmup", "1"]
    assert main([*argv, "--no-progress"]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())}
    assert set(rows) == {"plain", "swift (self-speculation)"}
    assert all(r["identical_to_plain"] for r in rows.values())
    assert rows["swift (self-speculation)"]["mean_accepted"] > 1.5
