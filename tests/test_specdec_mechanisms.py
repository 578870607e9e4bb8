"""Each token-level system does what its paper says, not just "lossless and some tokens accepted" (which a plain
chain drafter passes too): Goose's anisotropic tree, SuffixDecoding's cross-request suffix tree, DySpec's global
best-first heap, STAND's per-problem pools, SmartSpec's per-request draft lengths, RASD's pruned and fused
retrieval. Each test fails when the mechanism it names is removed (see the docstrings)."""

import json

import pytest
import torch

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


class MarkovDraft:
    """A stand-in for the draft model's cache: after token t the draft says t+1 (0.7), t+2 (0.15), t+3 (0.1),
    t+4 (0.05), the same at every node, so cumulative probabilities are products of these."""

    probs = {1: 0.7, 2: 0.15, 3: 0.1, 4: 0.05}

    def forward(self, ids, depth, sees):
        V = 64
        q = torch.full((*ids.shape, V), 1e-12)
        for step, p in self.probs.items():
            q.scatter_(-1, ((ids + step) % V)[..., None], p)
        return q.log()


def test_dyspec_tree_comes_from_one_global_heap():
    """With a budget of 12 nodes and a draft that is 0.7 sure of its top token everywhere, the 12 candidates with
    the highest cumulative draft probability anywhere in the tree include the top path down to depth 7. A global
    best-first heap goes that deep and collects (nearly) their total probability; a tree expanded level by level
    (top_k = 4 per level, EAGLE-2 style) stops at depth 3 with 2.33 of the best 2.66 expected accepted tokens."""
    from itertools import product
    from math import factorial, prod

    from reasoner.specdec.drafters import DraftModel

    drafter = DraftModel(torch.nn.Linear(1, 1), tree="dynamic", num_tokens=12, nodes=12, top_k=4)
    drafter.temperature, drafter.top_p, drafter.cache, drafter.fed = 0.0, 1.0, MarkovDraft(), [3]
    tree = drafter.draft([[5, 6, 7, 8]])[0]
    assert len(tree) == 12
    step = {1: 0.7, 2: 0.15, 3: 0.1, 4: 0.05}
    value = []
    for t, p in zip(tree.tokens, tree.parents):
        value.append(step[(t - (tree.tokens[p] if p >= 0 else 8)) % 64] * (value[p] if p >= 0 else 1.0))
    # every candidate node, by how many times each of the four steps occurs on its path
    candidates = []
    for counts in product(range(8), repeat=4):
        if 0 < sum(counts) <= 12:
            ways = factorial(sum(counts)) // prod(factorial(c) for c in counts)
            candidates += [prod(p**c for p, c in zip(step.values(), counts))] * min(ways, 12)
    best = sorted(candidates, reverse=True)[:12]
    assert max(tree.depths()) >= 6
    assert sum(value) >= 0.98 * sum(best)  # 2.66; level by level: 2.33


def _rasd(cache_size: int = 10, top_k: int = 4):
    """RASD over a MarkovDraft chain of 4 (after 8: 9 10 11 12) and a suffix datastore of two earlier outputs after
    "5 6 7 8": one goes on 9 10 20 21 (agrees with the draft for two tokens, then not), one 40 41 42 (a first token
    the draft model does not rank in its top 4)."""
    from reasoner.specdec.drafters import DraftModel, Rasd, Suffix

    model = DraftModel(torch.nn.Linear(1, 1), tree="chain", num_tokens=4)
    model.temperature, model.top_p, model.cache, model.fed = 0.0, 1.0, MarkovDraft(), [3]
    retrieval = Suffix(num_tokens=24, nodes=24, cache_size=cache_size)
    retrieval.select_rows([], [[5, 6, 7, 8, 9, 10, 20, 21], [5, 6, 7, 8, 40, 41, 42]])
    retrieval.begin([[5, 6, 7, 8]], 0.0, 1.0)
    return Rasd(model, retrieval, top_k=top_k).draft([[5, 6, 7, 8]])[0]


def test_rasd_fuses_pruned_retrieval_into_the_draft_tree_by_longest_prefix():
    """The fused tree holds the draft model's chain and the retrieved branch that only retrieval proposed, sharing
    their common prefix "9 10" as one path (no (parent, token) twice: fusion by longest prefix matching, not
    concatenation); the retrieved branch starting with 40, which the draft model does not rank in its top 4, is
    pruned. The nodes the retrieved path runs through lose their draft distribution (point-mass verification),
    the others keep it."""
    tree = _rasd()
    leaves = [i for i in range(len(tree)) if i not in tree.parents]
    assert sorted(tree.path(i) for i in leaves) == [[9, 10, 11, 12], [9, 10, 20, 21]]
    assert len(set(zip(tree.parents, tree.tokens))) == len(tree) == 6
    assert 40 not in tree.tokens
    assert set(tree.dists) == {2}  # the root, 9 and 10 lead to retrieved tokens; 11 only to the draft's 12
    assert 40 in _rasd(top_k=64).tokens  # the pruning is what cut it: with every token in the top k it stays
    assert _rasd(cache_size=0).tokens == [9, 10, 11, 12]  # no datastore, the draft model's chain alone


def test_rasd_accepts_retrieved_tokens_the_draft_model_did_not_propose(target, prompts):
    """A request repeated after the first: the suffix datastore holds the first one's output, so the target accepts
    tokens on branches only retrieval proposed (past the draft chain's 4 tokens, or where the draft model is
    wrong), needing fewer verify forwards than the draft model alone, with output identical to plain decoding.
    Without the fusion (the draft model's tree alone) no token comes from retrieval and the forwards are the same."""
    params = SamplingParams(max_tokens=64)
    plain = target.generate([prompts[0]], params)[0][0].token_ids
    spent = {}
    for method in ("rasd", "draft_model"):
        target.drafter = build_drafter({"method": method, "draft": "toy:draft", "num_tokens": 4}, target)
        try:
            target.generate([prompts[0]], params)  # the first request
            before = target.stats.snapshot()
            again = target.generate([prompts[0]], params)[0][0].token_ids  # the same request again
            spent[method] = target.stats.since(before).counters
        finally:
            target.drafter = None
        assert again == plain
    assert spent["rasd"]["token_spec.retrieval_accepted"] >= 10
    assert spent["rasd"]["token_spec.verify_forwards"] < spent["draft_model"]["token_spec.verify_forwards"]


def test_stand_pools_are_per_problem_shared_by_its_trajectories():
    """Two trajectories of problem A and one of problem B decode together. What trajectory A1 decoded, its sibling
    A2 drafts (it never saw those tokens), and so does a later call whose prompt extends A's (a search step); B,
    in the same batch and with the same context, drafts none of it. One pool for the batch fails the second part,
    one pool per row the first."""
    from reasoner.specdec.drafters import NgramPool
    from reasoner.specdec.tree import DraftTree
    from reasoner.specdec.verify import Verdict

    def emitted(token):  # a verdict emitting one token, the target sure of it
        logits = torch.full((1, 64), -10.0)
        logits[0, token] = 10.0
        return Verdict([], [token], [0.0], DraftTree(), logits)

    pool = NgramPool(num_tokens=4, nodes=4, top_k=2, ngram=2)
    a, b = [1, 2, 3], [9, 8, 3]
    seqs = [list(a), list(a), list(b)]
    pool.begin(seqs, 0.0, 1.0)
    for token, other in zip([40, 41, 42, 43], [50, 51, 52, 53]):  # A1 decodes 40 41 42 43; A2 and B decode others
        for seq, t in zip(seqs, [token, other, other + 10]):
            seq.append(t)
        pool.update(seqs, [emitted(token), emitted(other), emitted(other + 10)])
    trees = pool.draft([seqs[0], a + [40], b + [3, 40]])
    assert trees[1].tokens[:3] == [41, 42, 43]  # the sibling's tokens
    assert not {40, 41, 42, 43} & set(trees[2].tokens)  # nothing of the other problem's
    pool.begin([a + [40, 41]], 0.0, 1.0)  # a later call for problem A
    assert pool.draft([a + [40, 41]])[0].tokens[:2] == [42, 43]


def test_smartspec_gives_each_request_its_own_length_and_shortens_a_failing_one():
    """Two requests in one batch, steps costing 10 ms + 0.5 ms per batch token: the one whose drafts are all
    accepted gets long drafts, the one whose drafts are all rejected gets none (at most a probe of one token);
    when the first one's acceptance drops, its drafts shrink too. One length for the batch, or lengths without
    the acceptance or the step-time model, fail."""
    from reasoner.specdec.adaptive import SmartSpec

    spec = SmartSpec(max_len=8)
    spec.begin(2)

    def run(steps, accepts):
        for _ in range(steps):
            ks = spec.lengths()
            accepted = [k if accept else 0 for k, accept in zip(ks, accepts)]
            spec.record(ks, accepted, ks, 0.010 + 0.0005 * (2 + sum(ks)))

    run(40, [True, False])
    good, bad = spec.plan()
    assert good >= 6 and bad <= 1
    run(20, [False, False])
    assert spec.plan()[0] <= 1
    # the step-time model: when every batch token costs as much as a whole step, short drafts win
    costly = SmartSpec(max_len=8)
    costly.begin(2)
    for _ in range(40):
        ks = costly.lengths()
        costly.record(ks, [k // 2 for k in ks], ks, 0.001 + 0.010 * (2 + sum(ks)))
    assert max(costly.plan()) <= 1


def test_stand_tree_shape_is_fitted_from_measured_acceptance_and_used():
    """Where the top-ranked child is usually accepted the fitted shape is a deep spine; where acceptance is spread
    over ranks, it is wide and shallow. The pool then drafts exactly the fitted slots. A shape ignoring the
    measured rates, or drafting that grows its own tree, fails."""
    from reasoner.specdec.drafters import NgramPool
    from reasoner.specdec.drafters.ngram_pool import fit_shape

    tried = [[100.0] * 4 for _ in range(6)]
    deep = fit_shape([[90.0, 5.0, 5.0, 5.0]] * 6, tried, nodes=10)
    wide = fit_shape([[30.0, 30.0, 30.0, 30.0]] * 6, tried, nodes=10)

    def shape_depths(shape):
        d = []
        for parent, _ in shape:
            d.append(1 if parent < 0 else d[parent] + 1)
        return d

    assert deep[:6] == [(i - 1, 0) for i in range(6)]  # the spine first, down to depth 6
    assert max(shape_depths(wide)) <= 3 and sum(p < 0 for p, _ in wide) == 4
    pool = NgramPool(ngram=1, shape=deep, nodes=10)
    pool.begin([[1, 2, 3]], 0.0, 1.0)
    for t in range(64):  # every token has been seen followed by t+1 (0.6), t+2, t+3, t+4
        pool.observe(pool.pools[0], [t], [(t + k) % 64 for k in (1, 2, 3, 4)], [0.6, 0.2, 0.1, 0.1])
    tree = pool.draft([[1, 2, 3]])[0]
    assert tree.parents == [p for p, _ in deep]
    assert [t - (tree.tokens[p] if p >= 0 else 3) for t, p in zip(tree.tokens, tree.parents)] == [
        r + 1 for _, r in deep
    ]


def test_bench_tokens_times_plain_ours_and_transformers_side_by_side_with_greedy_output_identical(tmp_path):
    from reasoner.cli import main

    argv = ["bench", "tokens", "--out", str(tmp_path), "--problems", "2", "--best-of-problems", "0", "--rounds", "1"]
    assert main([*argv, "--max-tokens", "24", "--temperatures", "0", "--only", "chain k=4", "--no-progress"]) == 0
    rows = {r["method"]: r for r in json.loads((tmp_path / "bench.json").read_text())}
    ours = {"draft_model chain k=4", "rasd chain k=4"}
    assert set(rows) == {"plain", *ours, "hf generate", "hf assisted (draft)", "hf prompt lookup"}
    assert all(r["identical_to_plain"] for r in rows.values())  # lossless, and transformers decodes the same tokens
    assert all(rows["plain"]["mean_accepted"] == 1.0 < rows[name]["mean_accepted"] for name in ours)
    assert (tmp_path / "bench.md").read_text().count("| batch 1 |") == 6
