"""The ``LM`` protocol every backend implements (transformers, vLLM, OpenAI-compatible servers, the fleet).

A backend knows nothing of trees: it takes prompts (text or token ids) and returns, for each prompt, its result
together with what the call cost (``Output``): per prompt the tokens prefilled, served from a prefix cache and
generated, and for the whole call the forward passes and seconds. Callers book those costs where they belong (a
problem's tree); nobody reads side channels or swaps a backend's counters. ``stats`` is the model's own running
total since it was loaded, which a run reads as a difference (``Stats.since``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .errors import PromptTooLong
from .stats import RoleStats, Stats

Prompt = str | Sequence[int]


@dataclass
class SamplingParams:
    n: int = 1  # samples per prompt
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()  # generation ends after the token that completes one of these
    seed: int | None = None  # reseed the backend's sampler for this call
    ignore_eos: bool = False  # keep going past EOS (benchmarks that need a fixed length)
    lookahead: bool = False  # a hint: the next call will likely continue this one past its stop (write ahead)
    # the TPOT SLO in ms of the call's rows, one for all or one per prompt (a scheduler merges calls that differ only
    # in it); token speculation's slo_trees sizes each row's tree to meet it, other backends ignore it
    tpot_ms: float | tuple[float | None, ...] | None = None

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        self.stop = tuple(self.stop)
        if isinstance(self.tpot_ms, list):
            self.tpot_ms = tuple(self.tpot_ms)

    def row_tpot_ms(self, prompts: int) -> list[float | None]:
        """``tpot_ms`` of each of ``prompts`` prompts."""
        if isinstance(self.tpot_ms, tuple):
            if len(self.tpot_ms) != prompts:
                raise ValueError(f"tpot_ms has {len(self.tpot_ms)} values for {prompts} prompts")
            return list(self.tpot_ms)
        return [self.tpot_ms] * prompts


@dataclass
class Generation:
    """One sample. ``text`` excludes the stop string (``stop_reason`` names it) and the EOS token;
    ``token_ids``/``logprobs`` cover every generated token, the one that completed the stop included.
    ``logprobs`` are the model's own log-probabilities (temperature 1, no top-p), as ``score`` returns them."""

    text: str
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (a stop string) | "eos" | "length"
    stop_reason: str | None = None
    extra: dict = field(default_factory=dict)


class Output(list):
    """A call's results, one row per prompt (a list of them), with what the call cost: ``usage[i]`` holds prompt
    ``i``'s prefilled, cached and generated tokens; ``total`` the whole call's, with its forward passes, seconds
    and ``calls == 1``."""

    def __init__(
        self, rows: Sequence[Any] = (), usage: Sequence[RoleStats] | None = None, total: RoleStats | None = None
    ):
        super().__init__(rows)
        self.usage = list(usage) if usage is not None else [RoleStats() for _ in self]
        if len(self.usage) != len(self):
            raise ValueError(f"Output: {len(self)} rows but {len(self.usage)} usages")
        self.total = total if total is not None else RoleStats()


@runtime_checkable
class LM(Protocol):
    name: str
    role: str  # the role whose costs this model's calls are (target, draft, verifier)
    tokenizer: Any
    stats: Stats  # everything this model has spent since it was loaded
    kv_bytes_per_token: int | None  # bytes of KV one token holds (None: unknown, e.g. a remote server)
    context_length: int | None  # tokens the model attends over, prompt and generation together (None: unknown)
    batch: Any  # a continuous decode batch (add / step / busy / reset; add_score if scores can ride) or None

    def encode(self, prompt: Prompt) -> list[int]:
        """Token ids of a rendered text (no special tokens added); token ids pass through."""

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, special tokens kept."""

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        """``params.n`` generations (a ``list[Generation]``) for every prompt."""

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        """Teacher-forced log-probabilities (a ``list[float]``) of each continuation's tokens after its prompt."""

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        """For each prompt, the log-probability that the next token is each candidate (a ``dict[str, float]``; each
        candidate must be a single token), for judges."""

    def clear_prefix_cache(self) -> None:
        """Forget cached prompt KV, so that what a run costs does not depend on what ran before it."""


def check_context(lm, prompt_ids: Sequence[int], max_new_tokens: int = 0) -> int | None:
    """The room ``lm``'s context leaves after ``prompt_ids`` (None when the context is unknown); raises
    ``PromptTooLong`` when the prompt and ``max_new_tokens`` more do not fit. Backends call it before a prompt reaches
    the model: past its context a model either fails deep inside (position tables, KV allocation) or silently answers
    from garbage positions."""
    context = getattr(lm, "context_length", None)
    if context is None:
        return None
    if len(prompt_ids) + max_new_tokens > context:
        raise PromptTooLong(len(prompt_ids), context, max_new_tokens)
    return context - len(prompt_ids)
