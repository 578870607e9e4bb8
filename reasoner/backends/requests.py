"""What the backends that hand requests to an engine (``vllm``, ``openai``) share: per-request seeds, finish
reasons and generations decoded exactly as the transformers backend decodes its own."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .base import Generation, Prompt, SamplingParams


class RequestSeeds:
    """One seed per request, drawn from a stream seeded by the backend (or reseeded by ``params.seed``): a run is
    reproducible whatever order or server the requests are served in, and a retried request samples the same."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)

    def draw(self, params: SamplingParams, count: int) -> list[int | None]:
        if params.temperature == 0:
            return [None] * count
        if params.seed is not None:
            self.rng.seed(params.seed)
        return [self.rng.getrandbits(62) for _ in range(count)]


def finish_of(reason: str | None, stop_reason) -> tuple[str, str | None]:
    """vLLM's (and the OpenAI API's) finish reason as ours: a stop string is "stop", EOS (or a stop token) "eos"."""
    if reason == "length":
        return "length", None
    if isinstance(stop_reason, str):
        return "stop", stop_reason
    return "eos", None


def make_generation(
    tokenizer, ids: list[int], lps: list[float], finish: tuple[str, str | None], prompt_tokens: int
) -> Generation:
    """A ``Generation`` decoded exactly as the transformers backend decodes its own (special tokens kept, EOS and
    everything from the stop string on cut off)."""
    reason, stop = finish
    body = ids[:-1] if reason == "eos" and ids else ids
    text = tokenizer.decode(body, skip_special_tokens=False)
    if stop is not None and stop in text:
        text = text[: text.find(stop)]
    return Generation(text, list(ids), list(lps), reason, stop, prompt_tokens)


def single_token_ids(tokenizer, candidates: Sequence[str], name: str) -> dict[str, int]:
    out = {}
    for c in candidates:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"candidate {c!r} is {len(ids)} tokens for {name}; next_token_logprobs needs single-token candidates"
            )
        out[c] = ids[0]
    return out


def score_pairs(
    lm, prompts: Sequence[Prompt], continuations: Sequence[Prompt]
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """``score``'s input as token ids, and the indices of the pairs with a continuation to score."""
    if len(prompts) != len(continuations):
        raise ValueError(
            f"score needs one continuation per prompt, got {len(prompts)} prompts and {len(continuations)} continuations"
        )
    pairs = [(lm.encode(p), lm.encode(c)) for p, c in zip(prompts, continuations)]
    todo = [i for i, (_, c) in enumerate(pairs) if c]
    if any(not pairs[i][0] for i in todo):
        raise ValueError("score needs a non-empty prompt before every continuation")
    return pairs, todo
