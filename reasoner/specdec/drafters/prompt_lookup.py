"""Prompt lookup decoding (PLD; Saxena 2023, HF ``prompt_lookup_num_tokens``): continue the longest n-gram match
found in the prompt and the output so far. A chain of deterministic drafts. Unlike HF, which takes the first
match from the left, we take the most recent one: in step-wise reasoning the last steps are the best guide."""

from __future__ import annotations

from ..tree import DraftTree
from .base import Drafter, longest_match


class PromptLookup(Drafter):
    name = "prompt_lookup"

    def __init__(self, num_tokens: int = 8, ngram: int = 3):
        self.num_tokens, self.ngram = num_tokens, ngram

    def draft(self, seqs):
        trees = []
        for seq in seqs:
            tree = DraftTree()
            tree.add_chain(longest_match(seq, self.ngram, 1, self.num_tokens)[1])
            trees.append(tree)
        return trees
