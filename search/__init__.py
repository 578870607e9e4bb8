"""Searches: each grows search trees through a ``StepEngine`` and leaves the choice of answer to ``vote``.

Every search has ``run(trees) -> finished leaves per tree`` and talks to the model only through
``engine.expand(nodes, k)`` and ``verifier.score_paths(nodes)``, so any step engine (plain or speculative)
and any verifier work under every search.
"""

from .best_of_n import BestOfN, ChainOfThought
from .vote import VOTES, choose, group_answers

SEARCHES = ("cot", "best_of_n", "beam", "dvts", "mcts", "astar", "rebase", "ets", "fetch", "rethink_mcts")


def build(recipe, engine, verifier):
    """The search a recipe's ``search`` section describes; tree searches aggregate step scores as
    ``verifier.aggregate`` says."""
    s, how = recipe.search, recipe.verifier.aggregate
    if s.method == "cot":
        return ChainOfThought(engine)
    if s.method == "best_of_n":
        return BestOfN(engine, s.n)
    if verifier is None:
        raise ValueError(f"search.method={s.method} ranks steps with a verifier: set verifier.type")
    merger = None
    if s.merge and s.method in ("beam", "mcts"):
        from .fetch import Merger

        merger = Merger(s.merge_distance)
    if s.method == "beam":
        from .beam import BeamSearch

        return BeamSearch(engine, verifier, s.n, s.width, how, s.filter_duplicates, s.lookahead, merger)
    if s.method == "fetch":
        from .fetch import Fetch

        return Fetch(engine, verifier, s.n, s.width, how, s.merge_distance, s.filter_duplicates, s.lookahead)
    if s.method == "dvts":
        from .beam import DVTS

        return DVTS(engine, verifier, s.n, s.width, how)
    if s.method == "mcts":
        from .mcts import MCTS

        return MCTS(
            engine,
            verifier,
            s.n,
            s.width,
            how,
            s.rollout,
            s.select,
            s.puct_base,
            s.puct_init,
            s.root_noise,
            recipe.seed,
            merger,
        )
    if s.method == "rethink_mcts":
        from .rethink import RethinkMCTS

        return RethinkMCTS(
            engine,
            verifier,
            s.n,
            s.width,
            s.max_think_times,
            s.rethink_pick,
            s.stop_on_pass,
            s.puct_base,
            s.puct_init,
            s.rethink_prompt,
            recipe.seed,
        )
    if s.method == "astar":
        from .astar import AStar

        return AStar(engine, verifier, s.n, s.width, how, s.beta, s.max_expansions)
    from .ets import ETS, Rebase

    return (ETS if s.method == "ets" else Rebase)(
        engine, verifier, s.n, how, s.temperature, s.lambda_c, s.lambda_s, s.cluster_distance
    )


__all__ = ["BestOfN", "ChainOfThought", "build", "choose", "group_answers", "SEARCHES", "VOTES"]
