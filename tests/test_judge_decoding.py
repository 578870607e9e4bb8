"""Judge Decoding (``reasoner.specdec.judge``): a linear head on the target's hidden state accepts drafted tokens
the target would not have produced. The judge lengthens the accepted path on the very same drafts and its
acceptances are counted; a judge that never fires (threshold above 1, or a head that always says no) leaves the
output identical to lossless decoding; the shipped toy judge keeps toy accuracy within a stated bound
(``ACCURACY_BOUND``).

Removing the mechanism (verification ignoring the judge's verdicts) fails
``test_judge_accepts_draft_tokens_the_target_rejects_on_the_same_drafts`` and
``test_judge_decoding_counts_its_acceptances_and_raises_mean_accepted_length``."""

import json
import subprocess
import sys

import pytest
import torch

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter, load_draft_model
from reasoner.specdec.cache import RaggedCache
from reasoner.specdec.drafters import DraftModel
from reasoner.specdec.judge import load_judge
from reasoner.specdec.verify import verify

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAIN = {"method": "draft_model", "draft": "toy:draft", "num_tokens": 8}


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="module")
def problems():
    from reasoner.toy import generate_problems

    return generate_problems(12, seed=7, difficulty="ops=4-7")


@pytest.fixture(scope="module")
def prompts(target, template, problems):
    return [target.encode(template.prompt(target.tokenizer, p.question)) for p in problems]


@pytest.fixture(scope="module")
def lossless(target, prompts):
    """The lossless draft_model chain on every problem: outputs and counters."""
    return _decode(target, CHAIN, prompts)


def _head(tmp_path, bias: float, name: str) -> str:
    """A constant head: zero weights, so its probability is sigmoid(bias) everywhere (+30: always, -30: never)."""
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"hidden_size": 192, "w": [0.0] * 192, "b": bias}))
    return str(path)


def _decode(target, config, prompts, temperature=0.0, seed=0):
    """Each prompt decoded alone; the outputs and what the decoding loop counted."""
    target.drafter = build_drafter(config, target) if config else None
    before = target.stats.snapshot()
    outs = [
        target.generate([p], SamplingParams(temperature=temperature, max_tokens=200, seed=seed + i))[0][0].token_ids
        for i, p in enumerate(prompts)
    ]
    target.drafter = None
    return outs, target.stats.since(before).counters


def _correct(target, outs, problems) -> int:
    from verifiers.math import extract_answer

    return sum(extract_answer(target.decode(o)) == str(p.answer) for o, p in zip(outs, problems))


def test_judge_accepts_draft_tokens_the_target_rejects_on_the_same_drafts(target, prompts, tmp_path):
    """The same draft chains, verified in the same forward once losslessly and once with a judge that accepts every
    token: the lossless walk stops at the first token that is not the target's argmax, the judged walk takes the
    whole chain, and the token the lossless walk stopped at is marked as the judge's."""
    draft = DraftModel(load_draft_model("toy:draft", target), num_tokens=8)
    judge = load_judge(_head(tmp_path, 30.0, "always"), 0.5)
    rows = [p[:-1] for p in prompts[:6]]
    seqs = [list(p) for p in prompts[:6]]
    lossless, judged = [], []
    for walk_judge, sink in ((None, lossless), (judge, judged)):
        heads = torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(r[::-1]) for r in rows], batch_first=True, padding_value=target.pad_id
        ).flip(1)  # left-padded prompts minus their last token (the root)
        mask = torch.nn.utils.rnn.pad_sequence(
            [torch.ones(len(r), dtype=torch.long) for r in rows], batch_first=True
        ).flip(1)
        out = target.model(input_ids=heads, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        cache = RaggedCache.from_prefill(target.model, out.past_key_values, mask)
        draft.begin(seqs, 0.0, 1.0)
        trees = draft.draft(seqs)
        sink += verify(cache, [s[-1] for s in seqs], trees, 0.0, 1.0, None, target.pad_id, judge=walk_judge)
    assert all(len(v.tree) == 8 for v in judged)  # the same drafts both times
    assert [v.tree.tokens for v in lossless] == [v.tree.tokens for v in judged]
    assert all(len(v.path) == 8 for v in judged)  # the judge took every drafted token
    assert sum(len(v.path) for v in lossless) < sum(len(v.path) for v in judged)
    for a, b in zip(lossless, judged):
        assert b.path[: len(a.path)] == a.path  # the rule's acceptances come first ...
        if len(a.path) < 8:  # ... then the judge takes the token the rule rejected (later ones may match again)
            assert b.judged[0] == len(a.path)
        assert a.judged == []
    assert sum(len(v.judged) for v in judged) > 0


ACCURACY_BOUND = 3  # the judge may cost at most this many of the 12 problems' right answers (measured: 2)


def test_judge_decoding_counts_its_acceptances_and_raises_mean_accepted_length(target, prompts, problems, lossless):
    """End to end with the shipped toy judge (at threshold 0.2, where it fires on these problems): tokens accepted
    by the judge are counted apart from the rule's, the mean accepted length per target forward is higher than
    lossless verification's on the same problems, and (lossy by design) accuracy stays within ``ACCURACY_BOUND``."""
    lossless_outs, counts = lossless
    outs, judged = _decode(target, CHAIN | {"judge": "toy", "judge_threshold": 0.2}, prompts)
    assert judged["token_spec.judge_accepted"] > 0
    assert (
        judged["token_spec.judge_accepted"] + judged["token_spec.rule_accepted"] == judged["token_spec.accepted_tokens"]
    )
    assert "token_spec.judge_accepted" not in counts
    mean = lambda c: c["token_spec.emitted_tokens"] / c["token_spec.verify_forwards"]  # noqa: E731
    assert mean(judged) > mean(counts)
    assert outs != lossless_outs
    assert _correct(target, outs, problems) >= _correct(target, lossless_outs, problems) - ACCURACY_BOUND


def test_threshold_above_one_is_lossless(target, prompts):
    """A threshold the judge's probability cannot reach: greedy output identical to plain decoding, nothing judged;
    sampled output identical to lossless speculative sampling with the same seed."""
    plain, _ = _decode(target, None, prompts[:6])
    never, counts = _decode(target, CHAIN | {"judge": "toy", "judge_threshold": 1.5}, prompts[:6])
    assert never == plain and counts["token_spec.judge_accepted"] == 0
    sampled, _ = _decode(target, CHAIN, prompts[:4], temperature=0.7)
    never, _ = _decode(target, CHAIN | {"judge": "toy", "judge_threshold": 1.5}, prompts[:4], temperature=0.7)
    assert never == sampled


def test_a_head_that_always_says_no_accepts_nothing_extra(target, prompts, lossless, tmp_path):
    """A constant head of probability ~0: the same tokens and the same accepted counts as the lossless chain."""
    outs, plain_counts = lossless
    no, counts = _decode(target, CHAIN | {"judge": _head(tmp_path, -30.0, "never")}, prompts)
    assert no == outs
    assert counts["token_spec.judge_accepted"] == 0
    assert counts["token_spec.accepted_tokens"] == plain_counts["token_spec.accepted_tokens"]


def test_sampled_verification_takes_what_the_judge_accepts(target, prompts, tmp_path):
    """At T = 0.7 a judge that accepts everything makes every drafted token stay (the standard rule alone rejects
    some), and the judge's share is counted."""
    _, lossless = _decode(target, CHAIN, prompts[:3], temperature=0.7)
    _, counts = _decode(target, CHAIN | {"judge": _head(tmp_path, 30.0, "always")}, prompts[:3], temperature=0.7)
    assert lossless["token_spec.accepted_tokens"] < lossless["token_spec.drafted_tokens"]
    assert counts["token_spec.judge_accepted"] > 0
    # every verified chain is accepted whole (a row's last chain may be cut by the end of its answer)
    assert counts["token_spec.accepted_tokens"] >= counts["token_spec.drafted_tokens"] - 8 * 3


def test_bad_judge_settings_are_one_clear_error(target, tmp_path):
    from pydantic import ValidationError

    from reasoner.specdec.config import TokenSpeculation

    with pytest.raises(ValueError, match="cannot read token_speculation.judge"):
        build_drafter(CHAIN | {"judge": str(tmp_path / "missing.json")}, target)
    small = tmp_path / "small.json"
    small.write_text(json.dumps({"hidden_size": 4, "w": [0.0] * 4, "b": 0.0}))
    target.drafter = build_drafter(CHAIN | {"judge": str(small)}, target)
    try:
        with pytest.raises(ValueError, match="hidden states of size 4, the target's are 192"):
            target.generate([[5, 6, 7]], SamplingParams(max_tokens=2))
    finally:
        target.drafter = None
    with pytest.raises(ValidationError, match="verification: token"):
        TokenSpeculation(method="draft_model", judge="toy", verification="traversal")
    with pytest.raises(ValidationError, match="judge_threshold"):
        TokenSpeculation(method="draft_model", judge="toy", judge_threshold=-1)
    run = subprocess.run(
        [sys.executable, "-m", "reasoner", "judge", "train", "--out", str(tmp_path / "j.json"), "--holdout", "2"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "--holdout" in run.stderr


def test_training_writes_a_judge_that_decoding_uses(tmp_path, target, prompts):
    """A tiny training run: labelled mismatches, a held-out ROC-AUC, and a file ``token_speculation.judge`` loads."""
    from evals.judge_train import train

    info = train(tmp_path / "judge.json", problems=40, difficulty="ops=4-7", seed=3)
    assert info["mismatches_train"] > 0 and info["correct_train"] > 0
    assert "heldout_roc_auc" in info
    head = load_judge(str(tmp_path / "judge.json"))
    assert head.hidden_size == 192
    out, counts = _decode(target, CHAIN | {"judge": str(tmp_path / "judge.json")}, prompts[:2])
    assert all(out) and "token_spec.rule_accepted" in counts  # the judge was on (it may not fire on 2 problems)


def test_bench_tokens_reports_the_judge_rows_with_accuracy(tmp_path):
    """``reasoner bench tokens`` has the judge's rows, and every batch-1 row carries its toy accuracy."""
    from reasoner.cli import main

    argv = ["bench", "tokens", "--out", str(tmp_path), "--problems", "2", "--best-of-problems", "0", "--rounds", "1"]
    assert main([*argv, "--max-tokens", "24", "--temperatures", "0", "--only", "judge", "--no-progress"]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())}
    assert {"draft_model chain k=8, judge", "draft_model chain k=8, judge 0.2"} <= set(rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows.values())
    assert "| accuracy |" in (tmp_path / "bench.md").read_text()
