"""What a drafter is: something that proposes a token tree per row and may learn from the target's verdicts."""

from __future__ import annotations

from ..tree import DraftTree
from ..verify import Verdict


class Drafter:
    """Rows are the sequences decoded together (prompt + output so far; the last token is the root, not yet in the
    target's cache). The decoding loop calls ``begin`` once per batch, then ``draft`` and ``update`` once per target
    forward, and ``select_rows`` when rows finish. Drafters keep their state across calls (pools, caches)."""

    name = "drafter"
    goodput = None  # an ``adaptive.SmartSpec`` sizes (or skips) each row's tree by goodput
    slo_trees = None  # a ``slo_trees.SLOTrees`` cuts each row's tree to its TPOT SLO (AdaServe)
    verification = "token"  # how the backend verifies sampled trees: "token" or "traversal" (``verify.verify``)
    judge = None  # a ``judge.JudgeHead``: Judge Decoding also accepts the tokens it judges correct (lossy)
    limit = (
        None  # the longest draft any row takes this step (SmartSpec sets it); drafters that pay per token stop there
    )
    drafted = False  # whether ``draft`` ran since the last ``update`` (the goodput controller may skip it)
    target_cache = None  # the target's ``RaggedCache`` of this batch, set by the decoding loop (SWIFT drafts on it)

    def begin(self, seqs: list[list[int]], temperature: float, top_p: float) -> None:
        """A new batch of rows starts; ``seqs[r]`` is row r's prompt."""

    def draft(self, seqs: list[list[int]]) -> list[DraftTree]:
        raise NotImplementedError

    def update(self, seqs: list[list[int]], verdicts: list[Verdict]) -> None:
        """Rows' sequences now end with the tokens the target emitted; learn from its logits if useful."""

    def select_rows(self, keep: list[int], finished: list[list[int]]) -> None:
        """Only rows ``keep`` go on; ``finished`` are the generated tokens of the rows that ended."""


def longest_match(seq: list[int], max_ngram: int, min_ngram: int = 1, length: int = 8) -> tuple[int, list[int]]:
    """Prompt lookup: the tokens that followed the most recent earlier occurrence of the longest suffix n-gram
    (``max_ngram`` down to ``min_ngram``) of ``seq``; returns ``(n, continuation)``, ``(0, [])`` without a match."""
    last = seq[-1]
    end = len(seq) - 1
    for n in range(min(max_ngram, end), min_ngram - 1, -1):
        pattern = seq[-n:]
        for i in range(end - 1, n - 2, -1):  # candidate occurrence ends at i
            if seq[i] == last and seq[i - n + 1 : i + 1] == pattern:
                return n, seq[i + 1 : i + 1 + length]
    return 0, []
