"""The ``token_speculation`` section: which drafter proposes token trees and how large they grow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..core.config import SEED_WHY, Section, at_most

TREE_WHY = "every drafted token is a row of the verifying forward: past it a forward costs more than speculation saves"


class TokenSpeculation(Section):
    """Token-level speculative decoding inside the backend: drafted token trees verified by the generating model,
    losslessly (greedy output identical, sampled output identically distributed). See ``reasoner/specdec``."""

    method: Literal["draft_model", "prompt_lookup", "ngram_pool", "suffix", "recycling", "goose", "swift"] = Field(
        description="draft_model: a smaller model; prompt_lookup: n-gram match in prompt + output; ngram_pool: "
        "n-grams with the target's own probabilities, one pool per problem shared by its trajectories (STAND); "
        "suffix: suffix trees over this and earlier outputs (SuffixDecoding); "
        "recycling: the target's top-k successor table (Token Recycling); goose: a context-match spine plus table "
        "branches; swift: the target itself with some sublayers skipped, the set searched while decoding (SWIFT "
        "self-speculation, no draft model)"
    )
    draft: str | None = Field(None, description="draft_model: the draft model's path (default: models.draft)")
    tree: Literal["chain", "dynamic"] = Field(
        "chain",
        description="draft_model: a chain, or a tree grown from one global best-first heap of cumulative draft "
        "probability (DySpec)",
    )
    num_tokens: int = Field(
        6, ge=1, **at_most(64, TREE_WHY), description="longest draft (chain length, tree depth, spine length)"
    )
    nodes: int = Field(
        24, ge=1, **at_most(256, TREE_WHY), description="tree size budget in draft tokens per row and forward"
    )
    top_k: int = Field(
        4, ge=1, **at_most(32, TREE_WHY), description="most children per node (and successors kept per token)"
    )
    ngram: int = Field(
        3,
        ge=1,
        **at_most(8, "longer contexts almost never match again: past it drafts are never found"),
        description="longest n-gram context matched (prompt_lookup, ngram_pool, goose)",
    )
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="draft_model, suffix: stop growing a branch below this cumulative draft probability (default: "
        "draft_model 0, suffix 0.1)",
    )
    shared: bool = Field(
        True,
        description="ngram_pool: one pool per problem, shared by its rows and by later calls whose prompt extends its "
        "prompt (false: one per row); suffix and recycling always share theirs across requests",
    )
    shape: str | None = Field(
        None,
        description="ngram_pool: a tree shape fitted offline (STAND): a file from `python -m evals.fit_stand`, or "
        "toy (fitted on toy:target); none: the tree is grown at run time",
    )
    cache_size: int = Field(
        1000,
        ge=0,
        **at_most(100_000, "the suffix tree holds every kept output in memory and is searched each step"),
        description="suffix: earlier outputs kept in the global suffix tree",
    )
    verification: Literal["token", "traversal"] = Field(
        "token",
        description="sampling: token (token by token from the root: speculative sampling, multi-step for trees) or "
        "traversal (leaf to root with sequence-level acceptance, Traversal Verification); greedy is the same either "
        "way",
    )
    acceptance_head: str | None = Field(
        None,
        description="draft_model, chain: SpecDec++'s trained acceptance-prediction head (a file from `reasoner specdec "
        "train`, or toy: toy:draft's against toy:target, one for greedy and one for sampling); the chain stops once "
        "the head's probability that some drafted token is rejected crosses stop_threshold (num_tokens stays the "
        "longest draft)",
    )
    stop_threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="acceptance_head: stop drafting once 1 - prod(1 - P(reject)) over the chain exceeds this",
    )
    adaptive: bool = Field(
        False,
        description="SmartSpec: per step, each row's draft length (chain tokens or tree nodes) maximising goodput, "
        "from the row's acceptance rate and a step-time model fitted on measured steps; down to no draft",
    )
    judge: str | None = Field(
        None,
        description="Judge Decoding (lossy): a judge head on the target's last hidden state (a file from `reasoner "
        "judge train`, or toy: trained for toy:target) that also accepts a drafted token the target would not have "
        "produced when it judges the token correct; greedy and token-level sampled verification",
    )
    judge_threshold: float = Field(
        0.5,
        ge=0.0,
        description="judge: accept a token the target rejects when the judge's probability is at least this "
        "(above 1: never, i.e. lossless)",
    )
    skip_ratio: float = Field(
        0.45,
        gt=0.0,
        lt=1.0,
        description="swift: fraction of the attention and MLP sublayers (all layers but the first and last) the draft "
        "skips",
    )
    search_budget: int = Field(
        1000,
        ge=0,
        **at_most(100_000, "each search step costs two forwards of context_window tokens"),
        description="swift: layer-set search steps at most (one per decoding step until it stops; it also stops "
        "after a third of them without a better set); 0: draft with the starting set only",
    )
    stop_confidence: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="swift: stop drafting after a token whose draft probability is below this",
    )
    context_window: int = Field(
        32,
        ge=1,
        **at_most(4096, "the window is one forward of the skipped model per row"),
        description="swift: recent generated tokens a proposed layer set is scored on (the search waits until every "
        "row has generated this many)",
    )
    skip: list[str] | None = Field(
        None,
        description="swift: the starting set of skipped sublayers, e.g. [attn.3, mlp.5] (default: every other layer, "
        "cut to skip_ratio); with search_budget: 0, the set always used",
    )
    seed: int = Field(
        0,
        ge=0,
        **at_most(2**63 - 1, SEED_WHY),
        description="seeds the drafters that sample (draft_model, ngram_pool, swift)",
    )

    @model_validator(mode="after")
    def _judge_alone(self):
        if self.judge and self.verification == "traversal":
            raise ValueError(
                "token_speculation.judge works with verification: token (traversal verification accepts whole "
                "paths, the judge single tokens)"
            )
        return self
