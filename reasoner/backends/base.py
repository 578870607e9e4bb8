"""The ``LM`` protocol every backend implements. A backend knows nothing of trees: it takes prompts (text or
token ids) and returns generations with token ids and log-probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ..stats import Stats

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
    prompt_tokens: int = 0
    extra: dict = field(default_factory=dict)
    cached_tokens: int = 0  # of the prompt tokens, those served from a prefix cache (not prefilled)


@runtime_checkable
class LM(Protocol):
    name: str
    role: str
    stats: Stats
    tokenizer: object

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        """``params.n`` generations for every prompt."""

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> list[list[float]]:
        """Teacher-forced log-probabilities of each continuation's tokens after its prompt (one prefill)."""

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        """Log-probability that the next token is each candidate (each must be a single token), for judges."""
