"""Drafters: one small class each; ``build`` makes the one a ``token_speculation`` recipe section names."""

from __future__ import annotations

from .base import Drafter
from .draft_model import DraftModel
from .goose import Goose
from .ngram_pool import NgramPool
from .prompt_lookup import PromptLookup
from .recycling import Recycling
from .suffix import Suffix

METHODS = ("draft_model", "prompt_lookup", "ngram_pool", "suffix", "recycling", "goose")


def build(config, lm=None) -> Drafter:
    drafter = _build(config, lm)
    if config.adaptive:
        from ..adaptive import Goodput

        chain = config.method == "prompt_lookup" or (config.method == "draft_model" and config.tree == "chain")
        drafter.goodput = Goodput(config.num_tokens if chain else config.nodes)
    return drafter


def _build(config, lm=None) -> Drafter:
    c = config
    if c.method == "prompt_lookup":
        return PromptLookup(num_tokens=c.num_tokens, ngram=c.ngram)
    if c.method == "ngram_pool":
        return NgramPool(
            num_tokens=c.num_tokens, nodes=c.nodes, top_k=c.top_k, ngram=c.ngram, shared=c.shared, seed=c.seed
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
    if c.method == "draft_model":
        if not c.draft:
            raise ValueError(
                "token_speculation.method=draft_model needs token_speculation.draft (or models.draft in a recipe)"
            )
        model = load_draft_model(c.draft, lm)
        stats = (lambda: lm.stats) if lm is not None else None
        vocab = lm.model.get_output_embeddings().out_features if lm is not None else None
        return DraftModel(
            model,
            tree=c.tree,
            num_tokens=c.num_tokens,
            nodes=c.nodes,
            top_k=c.top_k,
            min_score=c.min_score or 0.0,
            seed=c.seed,
            stats=stats,
            vocab_size=vocab,
        )
    raise ValueError(f"unknown token_speculation.method {c.method!r}: use one of {', '.join(METHODS)}")


def load_draft_model(path: str, lm):
    """The draft model at ``path`` on ``lm``'s device and dtype; its tokenizer must be ``lm``'s."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ...backends import resolve_path

    resolved = resolve_path(path)
    model = AutoModelForCausalLM.from_pretrained(resolved, dtype=lm.model.dtype if lm else None).eval()
    if lm is not None:
        model = model.to(lm.device)
        if AutoTokenizer.from_pretrained(resolved).get_vocab() != lm.tokenizer.get_vocab():
            raise ValueError(
                f"token_speculation.draft {path!r} has a different tokenizer from {lm.name}: a draft model must share the target's vocabulary"
            )
    return model


__all__ = ["Drafter", "DraftModel", "Goose", "NgramPool", "PromptLookup", "Recycling", "Suffix", "build", "METHODS"]
