"""The ``token_speculation`` section: which drafter proposes token trees and how large they grow."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..core.config import SEED_WHY, Quantize, Section, at_most

TREE_WHY = "every drafted token is a row of the verifying forward: past it a forward costs more than speculation saves"


class OnlineDistillation(Section):
    """Online Speculative Decoding (Liu et al., ICML 2024): the draft model learns from the target's verdicts while
    it serves. See ``reasoner/specdec/online.py``."""

    update_every: int = Field(
        4,
        ge=1,
        **at_most(100_000, "the buffer keeps at most `buffer` positions: past it most mistakes are dropped unlearnt"),
        description="sequences decoded (rows finished) between draft updates (the paper's update interval I)",
    )
    lr: float = Field(
        1e-4, ge=0.0, le=1.0, description="AdamW learning rate of the draft's updates (0: record, never change)"
    )
    steps: int = Field(
        4,
        ge=1,
        **at_most(1000, "each step is a forward and backward of the draft over the whole buffer"),
        description="gradient steps per update, each over the whole buffer",
    )
    buffer: int = Field(
        512,
        ge=1,
        **at_most(100_000, "each position keeps the target's whole distribution (vocabulary-sized) in memory"),
        description="positions kept between updates (where the draft was wrong, with the target's distribution "
        "there); the oldest go first",
    )
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = Field(
        "forward_kl",
        description="distillation loss against the target's distribution p: forward_kl KL(p||q), reverse_kl "
        "KL(q||p), jsd the Jensen-Shannon divergence",
    )
    save: str | None = Field(
        None,
        description="a folder the draft is saved to (save_pretrained, with the tokenizer) after every update: "
        "loadable as token_speculation.draft",
    )


class TokenSpeculation(Section):
    """Token-level speculative decoding inside the backend: drafted token trees verified by the generating model,
    losslessly (greedy output identical, sampled output identically distributed). See ``reasoner/specdec``."""

    method: Literal["draft_model", "prompt_lookup", "ngram_pool", "suffix", "recycling", "goose", "rasd", "swift"] = (
        Field(
            description="draft_model: a smaller model; prompt_lookup: n-gram match in prompt + output; ngram_pool: "
            "n-grams with the target's own probabilities, one pool per problem shared by its trajectories (STAND); "
            "suffix: suffix trees over this and earlier outputs (SuffixDecoding); "
            "recycling: the target's top-k successor table (Token Recycling); goose: a context-match spine plus table "
            "branches; rasd: the draft model's tree fused with suffix-tree retrieval pruned by the draft's confidence "
            "(RASD); swift: the target itself with some sublayers skipped, the set searched while decoding (SWIFT "
            "self-speculation, no draft model)"
        )
    )
    draft: str | None = Field(None, description="draft_model, rasd: the draft model's path (default: models.draft)")
    tree: Literal["chain", "dynamic"] = Field(
        "chain",
        description="draft_model, rasd: a chain, or a tree grown from one global best-first heap of cumulative draft "
        "probability (DySpec)",
    )
    num_tokens: int = Field(
        6,
        ge=1,
        **at_most(64, TREE_WHY),
        description="longest draft (chain length, tree depth, spine length; rasd: the draft model's, while retrieved "
        "branches go as deep as nodes allows)",
    )
    nodes: int = Field(
        24,
        ge=1,
        **at_most(256, TREE_WHY),
        description="tree size budget in draft tokens per row and forward (rasd: the draft model's tree and, before "
        "pruning, the retrieved tree's)",
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
        "draft_model 0, suffix 0.1; rasd: the draft model's)",
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
        description="suffix, rasd: earlier outputs kept in the global suffix tree",
    )
    retrieval_top_k: int = Field(
        4,
        ge=1,
        **at_most(32, TREE_WHY),
        description="rasd: keep a retrieved branch only when the draft model ranks its first token among its this "
        "many most likely (RASD's tree pruning)",
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
    slo_trees: bool = Field(
        False,
        description="AdaServe: per step, each row's tree is the smallest that meets its request's TPOT SLO "
        "(sampling.tpot_ms, which reasoner serve sets from a request's slo) by the draft's path probabilities and "
        "the fitted step time, and the batch's budget left goes to the most probable nodes of any row; "
        "method: draft_model, tree: dynamic (nodes: the most one row gets)",
    )
    slo_budget: int = Field(
        8,
        ge=1,
        **at_most(256, TREE_WHY),
        description="slo_trees: draft tokens the verification batch takes per live row (its budget: this times "
        "the rows)",
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
    draft_quantize: Quantize = Field(
        "none",
        description="draft_model, rasd: int8 or fp16 weights for the draft model's linear layers on a CPU (the target "
        "still verifies at full precision, so output stays lossless; only acceptance may change). On the real pair "
        "int8 made the 0.5B drafter cheap enough to pay at batch 1 (docs/benchmarks.md)",
    )
    online: OnlineDistillation | None = Field(
        None,
        description="draft_model: Online Speculative Decoding, the draft distilled from the target's distributions "
        "where it was wrong, every update_every sequences, while it serves (none: the draft stays frozen)",
    )

    @model_validator(mode="after")
    def _online_needs_a_model(self):
        if self.online is not None and self.method != "draft_model":
            raise ValueError(
                f"token_speculation.online trains a draft model: use method: draft_model (got {self.method}) or "
                "remove online"
            )
        return self

    @model_validator(mode="after")
    def _draft_quantize_needs_a_model(self):
        if self.online is not None and self.draft_quantize != "none":
            raise ValueError(
                "token_speculation.online trains the draft's weights, which quantization freezes: use "
                "draft_quantize: none with online"
            )
        if self.draft_quantize != "none" and not self.uses_draft_model:
            raise ValueError(
                f"token_speculation.draft_quantize quantizes a draft model: use method: draft_model or rasd (got "
                f"{self.method}) or remove draft_quantize"
            )
        return self

    @property
    def uses_draft_model(self) -> bool:
        """Whether the drafter runs a draft model (``draft`` or ``models.draft``)."""
        return self.method in ("draft_model", "rasd")

    @model_validator(mode="after")
    def _rasd_not_adaptive(self):
        if self.method == "rasd" and self.adaptive:
            raise ValueError(
                "token_speculation.adaptive sizes one drafter's trees and rasd fuses two: use adaptive: false with "
                "method: rasd (or method: draft_model for SmartSpec)"
            )
        return self

    @model_validator(mode="after")
    def _slo_trees_need_scores(self):
        if self.slo_trees and (self.method != "draft_model" or self.tree != "dynamic"):
            raise ValueError(
                "token_speculation.slo_trees picks nodes by their draft path probability: use method: draft_model "
                "and tree: dynamic"
            )
        if self.slo_trees and self.adaptive:
            raise ValueError("token_speculation.slo_trees and adaptive both size the trees: set one of them")
        return self

    @model_validator(mode="after")
    def _judge_alone(self):
        if self.judge and self.verification == "traversal":
            raise ValueError(
                "token_speculation.judge works with verification: token (traversal verification accepts whole "
                "paths, the judge single tokens)"
            )
        return self
