"""Drafters: one small class each; ``build`` makes the one a ``token_speculation`` section (``TokenSpeculation``)
names. The draft model itself is loaded by the backend that drafts with it and handed in here."""

from __future__ import annotations

from ..acceptance import load_head
from ..adaptive import SmartSpec
from ..config import TokenSpeculation
from ..judge import load_judge
from ..online import OnlineDistiller
from ..slo_trees import SLOTrees
from .base import Drafter
from .draft_model import DraftModel
from .goose import Goose
from .ngram_pool import NgramPool, load_shape
from .prompt_lookup import PromptLookup
from .rasd import Rasd
from .recycling import Recycling
from .suffix import Suffix
from .swift import Swift

METHODS = ("draft_model", "prompt_lookup", "ngram_pool", "suffix", "recycling", "goose", "rasd", "swift")


def build(
    config: TokenSpeculation | dict,
    draft_model=None,
    vocab_size: int | None = None,
    stats=None,
    tokenizer=None,
    target=None,
) -> Drafter:
    """The drafter ``config`` names. ``draft_model`` (``method: draft_model`` or ``rasd``): the loaded draft
    ``nn.Module``; ``vocab_size``: the target's logits width; ``stats``: the ``Stats`` its forward passes are
    charged to; ``tokenizer``: the shared tokenizer (saved with an online-trained draft); ``target`` (``method:
    swift``): the target ``nn.Module`` itself, which drafts with some sublayers skipped."""
    config = config if isinstance(config, TokenSpeculation) else TokenSpeculation(**config)
    if config.acceptance_head and config.method != "draft_model":
        raise ValueError(
            "token_speculation.acceptance_head reads a draft model's hidden states: use method: draft_model"
        )
    drafter = _build(config, draft_model, vocab_size, stats, tokenizer, target)
    drafter.verification = config.verification
    drafter.judge = load_judge(config.judge, config.judge_threshold) if config.judge else None
    if config.adaptive:
        chain = config.method in ("prompt_lookup", "swift") or (
            config.method == "draft_model" and config.tree == "chain"
        )
        drafter.goodput = SmartSpec(config.num_tokens if chain else config.nodes)
    if config.slo_trees:
        drafter.slo_trees = SLOTrees(config.slo_budget)
    return drafter


def _build(
    config: TokenSpeculation, draft_model, vocab_size: int | None, stats, tokenizer=None, target=None
) -> Drafter:
    c = config
    if c.method == "swift":
        if target is None:
            raise ValueError(
                "token_speculation.method=swift drafts with the target's own layers: use a backend that "
                "runs the target in this process (transformers)"
            )
        return Swift(
            target,
            num_tokens=c.num_tokens,
            skip_ratio=c.skip_ratio,
            search_budget=c.search_budget,
            stop_confidence=c.stop_confidence,
            context_window=c.context_window,
            skip=c.skip,
            seed=c.seed,
            stats=stats,
        )
    if c.method == "prompt_lookup":
        return PromptLookup(num_tokens=c.num_tokens, ngram=c.ngram)
    if c.method == "ngram_pool":
        return NgramPool(
            num_tokens=c.num_tokens,
            nodes=c.nodes,
            top_k=c.top_k,
            ngram=c.ngram,
            shared=c.shared,
            seed=c.seed,
            shape=load_shape(c.shape) if c.shape else None,
        )
    if c.method == "suffix":
        return Suffix(
            num_tokens=c.num_tokens,
            nodes=c.nodes,
            min_prob=0.1 if c.min_score is None else c.min_score,
            cache_size=c.cache_size,
        )
    if c.method == "recycling":
        return Recycling(nodes=c.nodes, top_k=c.top_k, depth=c.num_tokens)
    if c.method == "goose":
        return Goose(nodes=c.nodes, top_k=c.top_k, spine=c.num_tokens, ngram=c.ngram)
    if c.uses_draft_model and draft_model is None:
        raise ValueError(
            f"token_speculation.method={c.method} needs token_speculation.draft (or models.draft in a recipe)"
        )
    if c.method == "rasd":
        # retrieval costs no forward: its branches are as deep as SuffixDecoding's budget allows (``nodes``)
        retrieval = Suffix(num_tokens=c.nodes, nodes=c.nodes, cache_size=c.cache_size)
        drafter = _build(c.model_copy(update={"method": "draft_model"}), draft_model, vocab_size, stats)
        return Rasd(drafter, retrieval, top_k=c.retrieval_top_k, stats=stats)
    if c.method == "draft_model":
        return DraftModel(
            draft_model,
            tree=c.tree,
            num_tokens=c.num_tokens,
            nodes=c.nodes,
            top_k=c.top_k,
            min_score=c.min_score or 0.0,
            seed=c.seed,
            stats=stats,
            vocab_size=vocab_size,
            head=load_head(c.acceptance_head, draft_model.config.hidden_size, draft_model.device)
            if c.acceptance_head
            else None,
            threshold=c.stop_threshold,
            # the shipped toy heads: one trained on greedy verdicts, one on sampling's (T = 0.7)
            sampling_head=load_head("toy-sampling", draft_model.config.hidden_size, draft_model.device)
            if c.acceptance_head == "toy"
            else None,
            online=OnlineDistiller(draft_model, c.online, tokenizer, stats) if c.online else None,
        )
    raise ValueError(f"unknown token_speculation.method {c.method!r}: use one of {', '.join(METHODS)}")


__all__ = [
    "Drafter",
    "DraftModel",
    "Goose",
    "NgramPool",
    "PromptLookup",
    "Rasd",
    "Recycling",
    "Suffix",
    "Swift",
    "build",
    "METHODS",
]
