"""KV accounting from the search tree: what a prefix-sharing KV cache (vLLM / SGLang radix cache) must hold.

The KV retained at a moment is that of every node on the paths of the nodes the search keeps alive; a node
costs its step's tokens and a prefix shared by several paths is held once. The prompt, shared by every
path of a problem, is left out: it is the same for every search. ``KVMeter`` samples the retained KV after
every selection and books the peak and mean per problem as ``kv_tokens_peak`` / ``kv_tokens_mean``; where the
policy backend knows its KV size per token (``TransformersLM.kv_bytes_per_token``), ``book_bytes`` adds them
in bytes (``kv_bytes_peak`` / ``kv_bytes_mean``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from reasoner.core.stats import Stats
from reasoner.core.types import Node, Tree


def retained_tokens(nodes: Iterable[Node]) -> int:
    """Tokens of the union of the nodes' paths (each node counted once)."""
    seen: set[int] = set()
    total = 0
    for node in nodes:
        while node.parent is not None and id(node) not in seen:
            seen.add(id(node))
            total += len(node.step.token_ids)
            node = node.parent
    return total


class KVMeter:
    """Samples of the retained KV per tree; ``book`` writes their peak and mean into each tree's counters."""

    def __init__(self):
        self.samples: dict[Tree, list[int]] = defaultdict(list)

    def observe(self, tree: Tree, alive: Iterable[Node]) -> None:
        self.samples[tree].append(retained_tokens(alive))

    def book(self) -> None:
        for tree, samples in self.samples.items():
            if samples:
                tree.stats.counters["kv_tokens_peak"] = max(samples)
                tree.stats.counters["kv_tokens_mean"] = sum(samples) / len(samples)


def book_bytes(stats: Stats, bytes_per_token: int | None) -> None:
    """``kv_bytes_peak`` / ``kv_bytes_mean`` next to the token counts a search booked, at ``bytes_per_token``
    (the policy model's; ``None``: its backend does not say, nothing is booked)."""
    if not bytes_per_token:
        return
    for unit in ("peak", "mean"):
        if f"kv_tokens_{unit}" in stats.counters:
            stats.counters[f"kv_bytes_{unit}"] = stats.counters[f"kv_tokens_{unit}"] * bytes_per_token
