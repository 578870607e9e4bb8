import json

from transformers import AutoTokenizer

from prompts import load
from reasoner.toy import MODELS, model_path


def test_shipped_tokenizers_load_and_are_saved_portably():
    for name in MODELS:
        path = model_path(name)
        cfg = json.loads((path / "tokenizer_config.json").read_text())
        assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
        tok = AutoTokenizer.from_pretrained(path)
        enc = tok("17+25=42")
        assert set(enc) == {"input_ids", "attention_mask"}  # no token_type_ids for generate to reject


def test_digits_and_delimiter_are_single_tokens():
    tok = AutoTokenizer.from_pretrained(model_path("target"))
    assert len(tok("\n\n", add_special_tokens=False)["input_ids"]) == 1
    ids = tok("12345", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == list("12345")
    text = "Compute (17+25)*3.\n\n17+25=42\n\nThe answer is \\boxed{126}"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_is_qwen_style():
    tok = AutoTokenizer.from_pretrained(model_path("target"))
    prompt = load("toy").prompt(tok, "Compute 1+2.", ["1+2=3"])
    assert prompt == "<|im_start|>user\nCompute 1+2.<|im_end|>\n<|im_start|>assistant\n1+2=3\n\n"
    assert tok.eos_token == "<|im_end|>"
