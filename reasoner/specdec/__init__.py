"""Token-level speculative decoding for the transformers backend: drafters propose token trees, the target
verifies every tree in one forward and keeps what plain decoding would have produced (losslessly).

- ``tree.DraftTree``: what drafters return; ``verify``: the forward and the acceptance rules;
- ``cache.RaggedCache``: rows of different lengths, speculative KV kept or dropped without recomputation;
- ``decode.speculative_chunk``: the decoding loop the backend runs when it has a drafter;
- ``drafters``: prompt_lookup, draft_model, ngram_pool, suffix, recycling, goose.
"""

from __future__ import annotations

from .tree import DraftTree


def build_drafter(config, lm=None):
    """The drafter a ``token_speculation`` recipe section (or a dict of its fields) asks for, for backend ``lm``."""
    from ..recipe import TokenSpeculation
    from . import drafters

    if isinstance(config, dict):
        config = TokenSpeculation(**config)
    return drafters.build(config, lm)


def token_speculation_options(recipe, role: str) -> dict:
    """Backend options that make the model of ``role`` speculate as ``recipe.token_speculation`` asks, if it
    generates (the search policy; the target when step speculation regenerates with it). A draft model is never
    its own drafter. Only the transformers backend runs our drafters: other backends get the option too, so that
    ``load_lm`` refuses it with the fix rather than ignoring it."""
    spec = recipe.token_speculation
    generates = role == recipe.search.policy or (
        getattr(recipe, "step_speculation", None) is not None and role == "target"
    )
    if spec is None or not generates:
        return {}
    if spec.method == "draft_model":
        draft = spec.draft or recipe.models.draft.path
        if role == "draft" or draft == getattr(recipe.models, role).path:
            return {}
        spec = spec.model_copy(update={"draft": draft})
    return {"token_speculation": spec}


__all__ = ["DraftTree", "build_drafter", "token_speculation_options"]
