"""The toy world's tokenizer: a byte-level BPE trained locally, wrapped as a transformers ``PreTrainedTokenizerFast``.

Byte-level so any text a user types can be encoded; every digit is its own token (arithmetic is learned per
digit); the step delimiter ``"\\n\\n"`` is a single token; Qwen-style chat turns (``<|im_start|>``/``<|im_end|>``)
with a chat template, so the toy models go through exactly the code path a Qwen-family model does.
"""

from __future__ import annotations

import random

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

from prompts import load
from reasoner.toy.problems import Difficulty, generate_problem

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
VOCAB_SIZE = 384


def _corpus(n: int, seed: int) -> list[str]:
    """Texts the toy models will see: chat-rendered problems, solutions and judge prompts."""

    template = load("toy")
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        p = generate_problem(rng, Difficulty(1, 7, rng.choice([1, 2, 3])))
        texts.append(
            f"{IM_START}user\n{template.user.format(problem=p.question)}{IM_END}\n{IM_START}assistant\n"
            f"{p.solution}{IM_END}\n{IM_START}user\n{template.judge_instruction}{IM_END}\n"
            f"{IM_START}assistant\n{template.judge_prefix}{rng.randint(0, 9)}{IM_END}\n"
        )
    return texts


def build_tokenizer(seed: int = 0):
    """Train the BPE and wrap it; deterministic for a given seed."""
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\n\n"), behavior="isolated"),
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(4000, seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_input_names=["input_ids", "attention_mask"],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
