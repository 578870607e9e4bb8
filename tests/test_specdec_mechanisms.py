"""Each token-level system does what its paper says, not just "lossless and some tokens accepted" (which a plain
chain drafter passes too): Goose's anisotropic tree, SuffixDecoding's cross-request suffix tree, DySpec's global
best-first heap, STAND's per-problem pools, SmartSpec's per-request draft lengths. Each test fails when the
mechanism it names is removed (see the docstrings)."""

import pytest

from reasoner.backends import SamplingParams, load_lm
from reasoner.backends.speculative import build_drafter

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def target():
    return load_lm("transformers", "toy:target", "target", seed=0)


@pytest.fixture(scope="module")
def prompts(target, template):
    from reasoner.toy import generate_problems

    return [template.prompt(target.tokenizer, p.question) for p in generate_problems(6, seed=2024)]


def test_goose_tree_is_a_deep_spine_with_branches_shrinking_as_one_over_i():
    """The context match becomes the spine, deeper than any branch; the table's branches hanging at spine position
    i (0 = the root) take a 1/(i+1) share of the budget left. An isotropic tree (equal shares, or branches as deep
    as the spine) fails."""
    from reasoner.specdec.drafters import Goose

    goose = Goose(nodes=24, top_k=4, spine=8, ngram=3)
    for t in range(5000):  # every token has four table successors, none of them on the spine
        goose.adjacency.table[t] = [1000 + t, 2000 + t, 3000 + t, 4000 + t]
    seq = list(range(1, 12)) + [90, 1, 2, 3]  # "1 2 3" occurred before, followed by 4 .. 11
    tree = goose.draft([seq])[0]
    assert len(tree) == 24
    spine = tree.path(7)
    assert spine == list(range(4, 12)) and tree.parents[:8] == [-1, 0, 1, 2, 3, 4, 5, 6]
    depths = tree.depths()
    anchor, below = {}, {}  # branch node -> spine position it hangs at, and its depth below it
    for n in range(8, len(tree)):
        p = tree.parents[n]
        anchor[n] = anchor[p] if p >= 8 else p + 1
        below[n] = depths[n] - anchor[n]
    assert max(below.values()) <= len(spine) // 2  # anisotropic: the spine is deeper than every branch
    assert sum(1 for n in anchor if tree.parents[n] == -1) >= 2  # and the branches are wide near the root
    share = [sum(1 for a in anchor.values() if a == i) for i in range(8)]
    harmonic = sum(1 / (i + 1) for i in range(8))
    assert share == sorted(share, reverse=True) and share[0] >= 3 * share[2]
    assert all(abs(s - 16 / harmonic / (i + 1)) <= 1 for i, s in enumerate(share))


def _accepted_from_elsewhere(drafts: list[tuple[list[int], list]]) -> int:
    """Accepted draft tokens that the row's own context could not have proposed: the root followed by the accepted
    tokens up to them occurs nowhere in the tokens the row had when the tree was drafted."""

    def occurs(seq, pattern):
        n = len(pattern)
        return any(seq[i : i + n] == pattern for i in range(len(seq) - n + 1))

    count = 0
    for seq, verdict in drafts:
        accepted = [verdict.tree.tokens[n] for n in verdict.path]
        for j in range(1, len(accepted) + 1):
            if not occurs(seq[:-1], [seq[-1]] + accepted[:j]):
                count += 1
    return count


def _recording(lm):
    """Record, per verify forward, the row's tokens when its tree was drafted and the verdict."""
    drafter, log, pending = lm.drafter, [], []
    draft, update = drafter.draft, drafter.update

    def recorded_draft(seqs):
        pending[:] = [list(s) for s in seqs]
        return draft(seqs)

    def recorded_update(seqs, verdicts):
        log.extend(zip(pending, verdicts))
        return update(seqs, verdicts)

    drafter.draft, drafter.update = recorded_draft, recorded_update
    return log


def test_suffix_drafts_from_an_earlier_requests_output(target, prompts):
    """Request B gets accepted draft tokens that occur only in request A's output: they come from the global
    suffix tree over earlier outputs. Without it (a tree over the request alone) there are none."""
    counts = {}
    for cache_size in (1000, 0):
        target.drafter = build_drafter({"method": "suffix", "cache_size": cache_size}, target)
        try:
            target.generate([prompts[0]], SamplingParams(max_tokens=64))  # request A
            log = _recording(target)
            target.generate([prompts[1]], SamplingParams(max_tokens=64))  # request B, another problem
        finally:
            target.drafter = None
        counts[cache_size] = _accepted_from_elsewhere(log)
    assert counts[1000] >= 3 and counts[0] == 0
