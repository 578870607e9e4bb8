"""What the backends share: per-request seeds and finish reasons for those that hand requests to an engine
(``vllm``, ``openai``), and for all of them one way to decode a generation, to check judge candidates and to
prepare ``score``'s input."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from contextlib import contextmanager

from ..core.lm import Generation, Prompt, SamplingParams, check_context
from ..core.stats import RoleStats, Stats


class Backend:
    """What every backend shares: its own running ``stats``, text <-> token ids with its tokenizer, and the
    accounting of one call. Subclasses set ``name``, ``role``, ``tokenizer`` and ``add_special_tokens``."""

    kv_bytes_per_token: int | None = None  # unknown unless the backend holds the model
    context_length: int | None = None  # tokens of context (None: unknown, prompts are not checked)
    batch = None  # a continuous decode batch a scheduler may drive (the transformers backend has one)
    add_special_tokens = False

    def __init__(self):
        self.stats = Stats()

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=self.add_special_tokens)["input_ids"]
        return list(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def clear_prefix_cache(self) -> None:
        """Nothing to forget unless the backend keeps a prefix cache of its own."""

    @contextmanager
    def _account(self):
        """One call: yields its ``RoleStats`` to fill, then books it, with its wall time, on this model's stats."""
        call = RoleStats(calls=1)
        start = time.perf_counter()
        try:
            yield call
        finally:
            call.wall_s = time.perf_counter() - start
            self.stats.book(self.role, call)

    @staticmethod
    def _served(call: RoleStats, prompt_tokens: int, cached: int) -> RoleStats:
        """One prompt's usage from what the engine reports (its tokens, those its prefix cache served), added to
        the call's."""
        usage = RoleStats(prefill_tokens=prompt_tokens - cached, prefix_cached_tokens=cached)
        call.prefill_tokens += usage.prefill_tokens
        call.prefix_cached_tokens += cached
        return usage


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


def make_generation(tokenizer, ids: list[int], lps: list[float], finish: tuple[str, str | None]) -> Generation:
    """A ``Generation`` decoded the one way every backend decodes (special tokens kept, EOS and everything from the
    stop string on cut off)."""
    reason, stop = finish
    body = ids[:-1] if reason == "eos" and ids else ids
    text = tokenizer.decode(body, skip_special_tokens=False)
    if stop is not None and stop in text:
        text = text[: text.find(stop)]
    return Generation(text, list(ids), list(lps), reason, stop)


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
    lm, prompts: Sequence[Prompt], continuations: Sequence[Prompt], reserve: int = 0
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """``score``'s input as token ids, and the indices of the pairs with a continuation to score; each prompt with
    its continuation must fit in the model's context with ``reserve`` tokens more (engines that score by generating
    one token need one)."""
    if len(prompts) != len(continuations):
        raise ValueError(
            f"score needs one continuation per prompt, got {len(prompts)} prompts and {len(continuations)} "
            "continuations"
        )
    pairs = [(lm.encode(p), lm.encode(c)) for p, c in zip(prompts, continuations)]
    todo = [i for i, (_, c) in enumerate(pairs) if c]
    if any(not pairs[i][0] for i in todo):
        raise ValueError("score needs a non-empty prompt before every continuation")
    for i in todo:
        check_context(lm, pairs[i][0] + pairs[i][1], reserve)
    return pairs, todo
