"""PRM families on tiny random-weight models built here with each family's conventions: the exact input
text, the positions whose outputs are read, and that a step's score moves only when its path changes."""

import pytest
import torch

from reasoner.toy import model_path
from verifiers.prm import PRMVerifier

PROBLEM = "Compute 12+7*3."
STEPS = ["12+7=19", "19*3=57", "The answer is \\boxed{57}"]
EXPECTED_TEXT = {
    "qwen": "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
    "<|im_start|>user\nCompute 12+7*3.<|im_end|>\n<|im_start|>assistant\n12+7=19<extra_0>19*3=57<extra_0>The answer "
    "is \\boxed{57}<extra_0><|im_end|>\n",
    "skywork": "Compute 12+7*3.\n12+7=19\n19*3=57\nThe answer is \\boxed{57}\n",
    "math-shepherd": "Compute 12+7*3. 12+7=19 ки\n\n19*3=57 ки\n\nThe answer is \\boxed{57} ки",
    "rlhflow": "<|im_start|>user\nCompute 12+7*3. 12+7=19<|im_end|>\n<|im_start|>assistant\n+<|im_end|>\n<|im_start|>user\n19*3=57<|im_end|>\n"  # noqa: E501 (the exact format)
    "<|im_start|>assistant\n+<|im_end|>\n<|im_start|>user\nThe answer is "
    "\\boxed{57}<|im_end|>\n<|im_start|>assistant\n+<|im_end|>\n",
}


def tiny_prm(path, family):
    """A random-weight Llama with the family's head, saved with the toy tokenizer plus the family's tokens."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForTokenClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_path("target"))
    tok.add_tokens(["<extra_0>"], special_tokens=True)
    tok.add_tokens(["ки"])
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        pad_token_id=tok.pad_token_id,
    )
    if family in ("qwen", "skywork"):
        model = LlamaForTokenClassification(LlamaConfig(**config.to_dict(), num_labels=2 if family == "qwen" else 1))
    else:
        model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["qwen", "skywork", "math-shepherd", "rlhflow"])
def prm(request, tmp_path_factory):
    path = tiny_prm(tmp_path_factory.mktemp(request.param), request.param)
    return PRMVerifier(str(path), family=request.param, device="cpu")


def test_input_is_the_family_format(prm):
    ids, positions = prm.format.build(PROBLEM, STEPS)
    assert prm.tokenizer.decode(ids) == EXPECTED_TEXT[prm.format.family]
    assert len(positions) == len(STEPS)
    tokens = [prm.tokenizer.decode([ids[p]]) for p in positions]
    if prm.format.family == "qwen":
        assert tokens == ["<extra_0>"] * 3
    elif prm.format.family == "skywork":
        assert tokens == ["\n"] * 3
    elif prm.format.family == "math-shepherd":
        assert tokens == ["ки"] * 3
    else:  # the position right before each assistant "+"
        assert [prm.tokenizer.decode([ids[p + 1]]) for p in positions] == ["+"] * 3


def test_scores_are_read_at_those_positions(prm):
    ids, positions = prm.format.build(PROBLEM, STEPS)
    with torch.no_grad():
        logits = prm.model(input_ids=torch.tensor([ids])).logits[0]
    rows = logits[positions]
    if prm.format.family == "qwen":
        expected = torch.softmax(rows[:, :2], -1)[:, 1]
    elif prm.format.family == "skywork":
        expected = torch.sigmoid(rows[:, 0])
    else:
        plus, minus = prm.tokenizer.convert_tokens_to_ids(["+", "-"])
        expected = torch.softmax(rows[:, [plus, minus]], -1)[:, 0]
    # batched with a longer and a shorter path (padding must not move anything)
    scores = prm.score_steps([PROBLEM, PROBLEM + " Show the steps.", PROBLEM], [STEPS, STEPS, STEPS[:1]])
    assert scores[0] == pytest.approx(expected.tolist(), abs=1e-5)
    assert scores[2] == pytest.approx(expected[:1].tolist(), abs=1e-5)
    assert all(0 < s < 1 for s in scores[1])


def test_a_step_score_changes_only_with_its_path(prm):
    base, changed = prm.score_steps([PROBLEM, PROBLEM], [STEPS, [STEPS[0], "19*3=58", STEPS[2]]])
    assert base[0] == pytest.approx(changed[0], abs=1e-6)  # the first step's path is the same
    assert base[1] != pytest.approx(changed[1], abs=1e-6)  # the second step changed
    assert len(base) == len(changed) == 3


def test_unknown_family_is_a_clear_error(tmp_path):
    tiny_prm(tmp_path, "skywork")
    with pytest.raises(ValueError, match="verifier.family"):
        PRMVerifier(str(tmp_path))
