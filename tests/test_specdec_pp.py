"""SpecDec++ (``token_speculation.acceptance_head``): the trained acceptance head ends each draft chain where the
target is about to reject, so chains vary in length from position to position, the short ones are the ones the
target cuts, fewer drafted tokens are thrown away than with a fixed chain, and the output is still exactly plain
greedy decoding. ``_check_adaptive`` is what the head promises; it fails without a head (every chain full length)
and with a constant head (every chain one length), which the second test proves."""

import json
import subprocess
import sys

import pytest

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LONGEST = 8
CHAIN = {"method": "draft_model", "draft": "toy:draft", "num_tokens": LONGEST}


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="module")
def prompts(target, template):
    from reasoner.toy import Difficulty, generate_problems

    problems = generate_problems(8, seed=99, difficulty=Difficulty.parse("medium"))
    return [target.encode(template.prompt(target.tokenizer, p.question)) for p in problems]


@pytest.fixture(scope="module")
def plain(target, prompts):
    target.drafter = None
    return _generate(target, prompts)


def _generate(lm, prompts):
    return [lm.generate([p], SamplingParams(temperature=0.0, max_tokens=200))[0][0].token_ids for p in prompts]


def _chains(lm, prompts, config):
    """Greedy outputs and, per verify forward, (tokens drafted, tokens accepted)."""
    lm.drafter = build_drafter(config, lm)
    chains, update = [], lm.drafter.update

    def recorded(seqs, verdicts):
        chains.extend((len(v.tree), len(v.path)) for v in verdicts)
        return update(seqs, verdicts)

    lm.drafter.update = recorded
    try:
        return _generate(lm, prompts), chains
    finally:
        lm.drafter = None


def _check_adaptive(chains):
    """Draft lengths vary per position, and a chain the head cut short holds a token the target rejects far more
    often than a chain it let run to the longest length."""
    short = [(d, a) for d, a in chains if d < LONGEST]
    full = [(d, a) for d, a in chains if d == LONGEST]
    assert len({d for d, _ in chains}) >= 3, f"draft lengths {sorted({d for d, _ in chains})}"
    assert len(short) >= 5 and len(full) >= 5, f"{len(short)} short and {len(full)} full chains"

    def rejected(xs):
        return sum(a < d for d, a in xs) / len(xs)

    assert rejected(short) >= 3 * rejected(full) and rejected(short) >= 0.25, (rejected(short), rejected(full))


def test_head_stops_chains_where_the_target_rejects_and_stays_lossless(target, prompts, plain):
    fixed_out, fixed = _chains(target, prompts, CHAIN)
    head_out, head = _chains(target, prompts, CHAIN | {"acceptance_head": "toy"})
    assert fixed_out == plain and head_out == plain  # lossless: greedy output identical to plain decoding
    _check_adaptive(head)

    def wasted(chains):
        return sum(d - a for d, a in chains)

    # fewer drafted tokens thrown away than the fixed chain of the same longest length, at a few more forwards
    assert wasted(head) <= 0.6 * wasted(fixed), (wasted(head), wasted(fixed))
    assert len(head) <= 1.15 * len(fixed), (len(head), len(fixed))


def test_a_constant_head_or_no_head_fails_the_check(target, prompts, tmp_path):
    """The check above is about the head: a head that says the same thing everywhere (each token rejected with
    probability 0.2: every chain stops after 4 tokens at threshold 0.5) and no head (every chain 8 tokens) fail."""
    import torch

    from reasoner.specdec.acceptance import AcceptanceHead

    constant = AcceptanceHead(128, 8, 1)
    with torch.no_grad():
        for p in constant.parameters():
            p.zero_()
        constant.out.bias.fill_(float(torch.logit(torch.tensor(0.2))))
    constant.save(tmp_path / "constant.safetensors", {"draft": "toy:draft"})
    for config in (CHAIN, CHAIN | {"acceptance_head": str(tmp_path / "constant.safetensors")}):
        _, chains = _chains(target, prompts[:3], config)
        with pytest.raises(AssertionError):
            _check_adaptive(chains)


def test_head_is_refused_where_it_cannot_apply(target, tmp_path):
    from reasoner.specdec.acceptance import AcceptanceHead

    with pytest.raises(ValueError, match="tree: chain"):
        build_drafter(CHAIN | {"acceptance_head": "toy", "tree": "dynamic"}, target)
    with pytest.raises(ValueError, match="method: draft_model"):
        build_drafter({"method": "prompt_lookup", "acceptance_head": "toy"}, target)
    AcceptanceHead(64).save(tmp_path / "other.safetensors", {"draft": "a 64-wide draft"})
    with pytest.raises(ValueError, match="size 64 .* the draft's are 128"):
        build_drafter(CHAIN | {"acceptance_head": str(tmp_path / "other.safetensors")}, target)
    (tmp_path / "junk.safetensors").write_text("not a head")
    with pytest.raises(ValueError, match="is not a head file"):
        build_drafter(CHAIN | {"acceptance_head": str(tmp_path / "junk.safetensors")}, target)


def test_train_command_writes_a_head_a_recipe_can_name(target, tmp_path):
    from reasoner.specdec.acceptance import head_info

    out = tmp_path / "head.safetensors"
    cmd = [sys.executable, "-m", "reasoner", "specdec", "train", "--out", str(out), "--problems", "12"]
    done = subprocess.run(cmd + ["--steps", "20", "--max-tokens", "80"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["tokens_train"] > 0 and "heldout_roc_auc" in info
    assert head_info(out)["hidden_size"] == 128 and head_info(out)["draft"] == "toy:draft"
    drafter = build_drafter(CHAIN | {"acceptance_head": str(out)}, target)
    assert drafter.head is not None
    bad = subprocess.run(
        [sys.executable, "-m", "reasoner", "specdec", "train", "--out", str(out), "--prompts", str(tmp_path / "no")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "cannot read prompts" in bad.stderr


def test_batched_rows_stop_on_their_own_and_stay_lossless(target, prompts, plain):
    """Rows decoded together each get their own chain length in the same forward; output is still plain greedy."""
    target.drafter = build_drafter(CHAIN | {"acceptance_head": "toy"}, target)
    lengths, update = [], target.drafter.update

    def recorded(seqs, verdicts):
        lengths.append([len(v.tree) for v in verdicts])
        return update(seqs, verdicts)

    target.drafter.update = recorded
    try:
        out = target.generate(prompts, SamplingParams(temperature=0.0, max_tokens=200))
    finally:
        target.drafter = None
    assert [g[0].token_ids for g in out] == plain
    assert any(len(set(step)) > 1 for step in lengths)  # one forward, rows of different draft lengths
