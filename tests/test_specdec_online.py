"""Online Speculative Decoding (``token_speculation.online``): the draft learns from the target's verdicts while it
serves. Its acceptance on a repeated stream rises (and does not with lr 0), greedy output stays identical to plain
decoding, and the updated draft is saved and loads as a draft again."""

import pytest
import torch

from reasoner.backends import SamplingParams
from reasoner.backends.speculative import build_drafter

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# long problems, past the draft's training lengths: it disagrees with the target often (frozen acceptance ~0.7)
SHIFT = "ops=9-10,digits=2"


@pytest.fixture(scope="module")
def stream(toy_target, template):
    from reasoner.toy import Difficulty, generate_problems

    problems = generate_problems(1, seed=5, difficulty=Difficulty.parse(SHIFT))
    return [toy_target.encode(template.prompt(toy_target.tokenizer, p.question)) for p in problems]


def _spec(lr: float, **online) -> dict:
    return {
        "method": "draft_model",
        "draft": "toy:draft",
        "num_tokens": 4,
        "online": {"update_every": 1, "lr": lr, "steps": 8, **online},
    }


def _passes(lm, prompts, rounds: int) -> tuple[list[float], list[list[int]]]:
    """Acceptance rate (accepted / drafted tokens) of each greedy pass over ``prompts``, and the last pass's
    outputs."""
    rates = []
    for _ in range(rounds):
        before = lm.stats.snapshot()
        outs = [lm.generate([p], SamplingParams(temperature=0.0, max_tokens=100))[0][0].token_ids for p in prompts]
        c = lm.stats.since(before).counters
        rates.append(c["token_spec.accepted_tokens"] / c["token_spec.drafted_tokens"])
    return rates, outs


def test_online_updates_raise_acceptance_and_stay_lossless(toy_target, stream, tmp_path):
    """Distilling on the positions the target rejected raises the draft's acceptance on the stream it serves;
    with lr 0 (buffer and schedule unchanged, no learning) acceptance stays where it was. Greedy output is plain
    decoding's either way. Fails if nothing is buffered, the update does not step, or the loss is not the
    distillation toward the target's distribution."""
    toy_target.drafter = None
    plain = [toy_target.generate([p], SamplingParams(temperature=0.0, max_tokens=100))[0][0].token_ids for p in stream]
    try:
        toy_target.drafter = build_drafter(_spec(0.0), toy_target)
        frozen, _ = _passes(toy_target, stream, 2)
        toy_target.drafter = build_drafter(_spec(3e-4, save=str(tmp_path / "draft")), toy_target)
        online, outs = _passes(toy_target, stream, 3)
        updates = toy_target.stats.counters["token_spec.online_updates"]
    finally:
        toy_target.drafter = None
    assert frozen[0] == frozen[1] < 0.8  # a draft the target often rejects here, and lr 0 learns nothing
    assert online[0] <= frozen[0] + 0.05
    assert online[-1] >= frozen[0] + 0.15  # learnt on the stream
    assert outs == plain  # lossless: the target decides every token
    assert updates >= 2 * len(stream)

    # the updated draft was saved, loads as a draft, and keeps what it learnt
    saved = build_drafter({"method": "draft_model", "draft": str(tmp_path / "draft"), "num_tokens": 4}, toy_target)
    original = build_drafter({"method": "draft_model", "draft": "toy:draft", "num_tokens": 4}, toy_target)
    assert not all(
        torch.equal(a, b) for a, b in zip(saved.model.state_dict().values(), original.model.state_dict().values())
    )
    try:
        toy_target.drafter = saved
        reloaded, _ = _passes(toy_target, stream, 1)
    finally:
        toy_target.drafter = None
    assert reloaded[0] >= frozen[0] + 0.15


def test_online_needs_a_draft_model():
    from pydantic import ValidationError

    from reasoner.specdec.config import TokenSpeculation

    with pytest.raises(ValidationError, match="online trains a draft model: use method: draft_model"):
        TokenSpeculation(method="prompt_lookup", online={})
    with pytest.raises(ValidationError, match="update_every"):
        TokenSpeculation(method="draft_model", online={"update_every": 0})
