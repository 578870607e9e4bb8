"""A prefix KV cache for the transformers backend: searches and step speculation call the model again and again
with prompts that share long prefixes (siblings share the whole path; a child's prompt extends its parent's; the
target scores ``prompt + step`` and then regenerates from ``prompt``), so the KV of a prefix computed once serves
every later call that starts with it, and only the rest is prefilled.

Entries are contiguous per-sequence tensors (one ``[kv_heads, tokens, head_dim]`` key and value per layer), found
through a token trie: an entry's KV serves every prefix of its sequence, so a lookup returns the entry that shares
the longest prefix with the prompt. This is the simple form of what production engines do: vLLM's automatic prefix
caching and SGLang's radix cache keep KV in fixed-size pages shared by every sequence that contains them; ours
copies a shared prefix into each entry that holds it (siblings of one node each hold the node's prompt), which
costs memory but needs no paged attention kernel. Capacity is counted in tokens (the sum of the entries'
lengths); the least recently used entries are evicted first.

Each entry may also hold the model's log-probability of each of its tokens (where a call computed it: generated
tokens, teacher-forced continuations), so ``score`` can serve a continuation's already scored tokens from the
cache as well and prefill only the new ones.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values, each [kv_heads, tokens, head_dim]


@dataclass(eq=False)
class Entry:
    tokens: tuple[int, ...]
    kv: KV
    logprobs: list[float | None]  # logprobs[j]: log p(tokens[j] | tokens[:j]) where known, else None

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(eq=False)
class _Node:
    children: dict[int, _Node] = field(default_factory=dict)
    through: dict[int, Entry] = field(default_factory=dict)  # entries whose sequence passes through this node, by id
    ends: int | None = None  # id of the entry whose sequence ends here


class PrefixCache:
    """Token-exact prefix cache with LRU eviction under ``capacity_tokens``. ``hits`` counts lookups that found a
    prefix of at least one token, ``tokens_reused`` the tokens they served (as the backend used them)."""

    def __init__(self, capacity_tokens: int):
        if capacity_tokens < 1:
            raise ValueError(
                f"prefix cache capacity must be >= 1 token, got {capacity_tokens} (0 disables it in the backend)"
            )
        self.capacity_tokens = capacity_tokens
        self.root = _Node()
        self.entries: OrderedDict[int, Entry] = OrderedDict()  # least recently used first
        self.size_tokens = 0
        self.hits = 0
        self.tokens_reused = 0
        self.evictions = 0
        self._ids = itertools.count()

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, tokens: Sequence[int]) -> tuple[Entry | None, int]:
        """The entry sharing the longest prefix with ``tokens`` and that prefix's length (``(None, 0)`` if none).
        The entry becomes the most recently used."""
        node, depth = self.root, 0
        for t in tokens:
            child = node.children.get(t)
            if child is None:
                break
            node, depth = child, depth + 1
        if depth == 0:
            return None, 0
        eid = next(reversed(node.through))  # the latest entry through this node
        self.entries.move_to_end(eid)
        return node.through[eid], depth

    def covers(self, tokens: Sequence[int]) -> bool:
        """Whether a stored sequence starts with ``tokens`` (inserting them would store nothing new)."""
        node = self.root
        for t in tokens:
            node = node.children.get(t)
            if node is None:
                return False
        return bool(tokens)

    def record_hit(self, tokens: int) -> None:
        """Book ``tokens`` served from the cache by one lookup (the backend may use less than the match)."""
        if tokens > 0:
            self.hits += 1
            self.tokens_reused += tokens

    def insert(self, tokens: Sequence[int], kv: KV, logprobs: Sequence[float | None] | None = None) -> bool:
        """Store the KV of ``tokens``. A sequence that is a prefix of a stored one is not stored (that entry
        serves it); stored sequences that are prefixes of this one are replaced. Returns whether it was stored."""
        tokens = tuple(tokens)
        if not tokens or len(tokens) > self.capacity_tokens:
            return False
        node, replaced = self.root, []
        for t in tokens:
            node = node.children.get(t)
            if node is None:
                break
            if node.ends is not None:
                replaced.append(node.ends)
        else:  # every token matched: a stored sequence contains this one
            self.entries.move_to_end(next(reversed(node.through)))
            return False
        for eid in replaced:
            self._remove(eid)
        lps = list(logprobs) if logprobs is not None else [None] * len(tokens)
        entry = Entry(tokens, kv, lps)
        eid = next(self._ids)
        node = self.root
        for t in tokens:
            node = node.children.setdefault(t, _Node())
            node.through[eid] = entry
        node.ends = eid
        self.entries[eid] = entry
        self.size_tokens += len(tokens)
        while self.size_tokens > self.capacity_tokens:
            self._remove(next(iter(self.entries)))
            self.evictions += 1
        return True

    def clear(self) -> None:
        """Drop every entry (the counters stay). ``Reasoner.solve_many`` clears the cache at the start of each batch
        so that a problem's prefill counts do not depend on the batches solved before it (resumed and parallel
        eval runs give the same summary); prompts of different problems share only a chat header anyway."""
        self.root, self.entries, self.size_tokens = _Node(), OrderedDict(), 0

    def _remove(self, eid: int) -> None:
        entry = self.entries.pop(eid)
        self.size_tokens -= len(entry)
        node = self.root
        for t in entry.tokens:
            child = node.children[t]
            del child.through[eid]
            if not child.through:  # no other entry passes here: drop the whole branch
                del node.children[t]
                return
            node = child
        node.ends = None
