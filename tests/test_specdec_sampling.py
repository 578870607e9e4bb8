"""Sampling with token trees follows the target's distribution exactly: a chi-square test on the first three
tokens of thousands of samples from a tiny random-weight Llama with a 6-token vocabulary, for every sampling rule
(point-mass drafts tried in order; multi-step speculative sampling with drafts drawn without replacement; both in
one tree, RASD's), and
the same test catching deliberately wrong rules."""

import pytest
import torch
from scipy.stats import chisquare

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter
from reasoner.specdec import verify

VOCAB = ["<pad>", "<eos>", "a", "b", "c", "d"]
PROMPT = [2, 3, 4, 2, 3, 4, 2, 3]  # a repeated pattern, so prompt lookup and suffix matching propose drafts
SAMPLES = 4000


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_llama(path, seed: int, scale: float, layers: int = 2):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel({t: i for i, t in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>").save_pretrained(path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale / model.lm_head.weight.std())  # spread-out but far from uniform distributions
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-vocab")
    return tiny_llama(root / "target", 0, 0.6), tiny_llama(root / "draft", 1, 0.6)


@pytest.fixture(scope="module")
def exact(models):
    return exact_probs(models[0])


def exact_probs(path):
    """The exact probability of every (t1, t2, t3) after PROMPT, at temperature 1, under the model at ``path``."""
    lm = load_lm("transformers", path, "target", dtype="float32")
    V = len(VOCAB)
    pairs = torch.cartesian_prod(torch.arange(V), torch.arange(V))
    seqs = torch.cat([torch.tensor(PROMPT).repeat(V * V, 1), pairs], dim=1)
    with torch.inference_mode():
        p = torch.softmax(lm.model(input_ids=seqs).logits.double(), -1)
    p1 = p[0, len(PROMPT) - 1]
    p2 = p[:, len(PROMPT)].view(V, V, V)[:, 0]  # p(t2 | t1), the same for every t2 in the pair
    p3 = p[:, len(PROMPT) + 1].view(V, V, V)
    return (p1[:, None, None] * p2[:, :, None] * p3).flatten()


def sample_first_tokens(models, config, seed=0):
    lm = load_lm("transformers", models[0], "target", dtype="float32", max_batch_size=SAMPLES)
    if config is not None:
        if config.get("draft") == "draft":
            config = dict(config, draft=models[1])
        lm.drafter = build_drafter(config, lm)
    before = lm.stats.snapshot()
    gens = lm.generate([PROMPT], SamplingParams(n=SAMPLES, temperature=1.0, max_tokens=3, ignore_eos=True, seed=seed))[
        0
    ]
    V = len(VOCAB)
    counts = torch.zeros(V**3)
    for g in gens:
        a, b, c = g.token_ids
        counts[a * V * V + b * V + c] += 1
    return counts, lm.stats.since(before).counters


def p_value(counts, expected_p) -> float:
    expected = expected_p * counts.sum()
    big = expected >= 5  # pool the rare cells so the chi-square approximation holds
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    return float(chisquare(obs.numpy(), exp.numpy()).pvalue)


RULES = {
    "point_mass-chain": {"method": "prompt_lookup", "num_tokens": 3},
    "point_mass-tree": {"method": "recycling", "nodes": 10, "top_k": 3},
    "multi_step-chain": {"method": "draft_model", "draft": "draft", "num_tokens": 3},
    "multi_step-tree": {
        "method": "draft_model",
        "draft": "draft",
        "tree": "dynamic",
        "top_k": 3,
        "nodes": 10,
        "num_tokens": 3,
    },
    "multi_step-pool": {"method": "ngram_pool", "ngram": 2, "top_k": 3, "nodes": 10},
    "multi_step-fitted_pool": {"method": "ngram_pool", "ngram": 2, "nodes": 10, "shape": "toy"},
    # RASD: sampled draft-model children and retrieved (point-mass) ones fused in one tree
    "mixed-rasd": {"method": "rasd", "draft": "draft", "tree": "dynamic", "top_k": 3, "nodes": 6, "num_tokens": 3},
}
# the same trees verified leaf to root (traversal verification)
RULES.update(
    {
        f"traversal-{name}": dict(RULES[rule], verification="traversal")
        for name, rule in [
            ("point_mass", "point_mass-tree"),
            ("chain", "multi_step-chain"),
            ("tree", "multi_step-tree"),
            ("pool", "multi_step-pool"),
        ]
    }
)


def test_plain_sampling_passes_the_test(models, exact):
    counts, _ = sample_first_tokens(models, None)
    assert p_value(counts, exact) > 1e-3


@pytest.mark.parametrize("rule", list(RULES))
def test_sampling_rule_follows_the_target_distribution(models, exact, rule):
    counts, counters = sample_first_tokens(models, RULES[rule])
    assert counters["token_spec.accepted_tokens"] > SAMPLES // 4  # drafts were accepted and rejected, both
    assert counters["token_spec.accepted_tokens"] < counters["token_spec.drafted_tokens"]
    assert p_value(counts, exact) > 1e-3


def wrong_point_mass(p, children, generator):
    """Wrong: a rejected draft token stays in the distribution sampled from afterwards."""
    for child, x in children:
        if verify._uniform(generator) < float(p[x]):
            return x, child
    return verify._sample(p, generator), None


def wrong_multi_step(p, q, children, generator):
    """Wrong: after rejecting every draft, sample from p itself instead of the residual."""
    for child, x in children:
        if verify._uniform(generator) * float(q[x]) < float(p[x]):
            return x, child
    return verify._sample(p, generator), None


@pytest.mark.parametrize("rule,wrong", [("point_mass-tree", wrong_point_mass), ("multi_step-tree", wrong_multi_step)])
def test_a_wrong_rule_fails_the_test(models, exact, monkeypatch, rule, wrong):
    monkeypatch.setattr(verify, "point_mass_rule" if rule.startswith("point") else "multi_step_rule", wrong)
    counts, _ = sample_first_tokens(models, RULES[rule])
    assert p_value(counts, exact) < 1e-6


def test_traversal_accepts_more_than_token_by_token(models):
    """Sequence-level acceptance keeps paths the token-level rule cuts at a parent: on the same draft chains more
    tokens are accepted per forward (Block / Traversal Verification's optimality on chains)."""
    accepted = {}
    for rule in ("multi_step-chain", "traversal-chain"):
        _, counters = sample_first_tokens(models, RULES[rule], seed=1)
        accepted[rule] = counters["token_spec.accepted_tokens"]
    assert accepted["traversal-chain"] > accepted["multi_step-chain"]


def wrong_traversal(tree, probs, generator):
    """Wrong: the first branch's whole path is accepted with its sequence-level probability, but when it is
    rejected the token is drawn from p itself, not from the residual."""
    path, weight, node = [], 1.0, -1
    kids = tree.children()
    while kids[node + 1]:
        child = kids[node + 1][0]
        q = verify._draft_dist(tree, node, probs[0])
        x = tree.tokens[child]
        weight = min(1.0, weight * float(probs[node + 1][x]) / float(q[x]))
        path.append(child)
        node = child
    if verify._uniform(generator) < weight:
        return path, verify._sample(probs[node + 1], generator)
    return [], verify._sample(probs[0], generator)


def test_a_wrong_traversal_fails_the_test(models, exact, monkeypatch):
    monkeypatch.setattr(verify, "walk_traversal", wrong_traversal)
    counts, _ = sample_first_tokens(models, RULES["traversal-chain"])
    assert p_value(counts, exact) < 1e-6
