"""Searches: each grows search trees through a ``StepEngine`` and leaves the choice of answer to ``vote``.

Every search has ``run(trees) -> finished leaves per tree`` and talks to the model only through
``engine.expand(nodes, k)`` and ``verifier.score_paths(nodes)``, so any step engine (plain or speculative)
and any verifier work under every search. ``config`` holds each search's recipe section.
"""

from .best_of_n import BestOfN, ChainOfThought
from .config import SEARCHES, TREE_SEARCHES, SearchConfig
from .vote import VOTES, choose, group_answers


def build(config, engine, verifier, aggregate: str = "last", seed: int = 0):
    """The search a recipe's ``search`` section describes; tree searches aggregate step scores as ``aggregate``
    (the recipe's ``verifier.aggregate``) says."""
    if config.method in TREE_SEARCHES and verifier is None:
        raise ValueError(f"search.method={config.method} ranks steps with a verifier: set verifier.type")
    return config.build(engine, verifier, aggregate, seed)


__all__ = [
    "SEARCHES",
    "TREE_SEARCHES",
    "VOTES",
    "BestOfN",
    "ChainOfThought",
    "SearchConfig",
    "build",
    "choose",
    "group_answers",
]
