"""AdaServe's SLO-customized token trees (``reasoner/specdec/slo_trees.py``): each row first gets the smallest tree
its TPOT SLO needs, the verification budget left goes to the most probable nodes of any row, and a budget too small
for every minimum serves the most urgent rows first. On the toy pair, a tight request batched with a loose one gets
the larger trees, and the output stays plain greedy decoding's."""

import pytest

from reasoner.backends import SamplingParams
from reasoner.backends.speculative import build_drafter
from reasoner.recipe import Recipe, RecipeError
from reasoner.specdec.slo_trees import SLOTrees, select_trees
from reasoner.specdec.tree import DraftTree

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CHAIN = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]  # a chain's path probabilities


def chain_parents(n: int) -> list[int]:
    return [-1] + list(range(n - 1))


def test_a_tight_row_gets_a_larger_tree_than_a_loose_one_under_the_same_budget():
    """Two rows with the same candidates; the tight one needs 2.5 expected accepted tokens (4 nodes: 0.9 + 0.8 +
    0.7 + 0.6), the loose one 0.5 (1 node); the budget's sixth node goes to the most probable candidate left, the
    loose row's 0.8. Without the minimum trees (leftover selection alone) both rows get 3."""
    kept = select_trees([CHAIN, CHAIN], [chain_parents(6)] * 2, needs=[2.5, 0.5], budget=6)
    assert kept == [[0, 1, 2, 3], [0, 1]]


def test_leftover_budget_goes_to_the_most_probable_nodes_of_any_row_keeping_trees_connected():
    """No row needs anything: the 4 nodes are the 4 most probable candidates of the whole batch, each with its
    parent; with room for all, all."""
    probs = [[0.9, 0.5, 0.45, 0.2], [0.6, 0.3, 0.25]]
    parents = [[-1, 0, -1, 1], [-1, -1, 1]]
    kept = select_trees(probs, parents, needs=[0.0, 0.0], budget=4)
    assert kept == [[0, 1, 2], [0]]  # 0.9, 0.6, 0.5, 0.45
    assert select_trees(probs, parents, needs=[0.0, 0.0], budget=7) == [[0, 1, 2, 3], [0, 1, 2]]


def test_leftover_nodes_that_cost_more_time_than_they_add_tokens_are_not_verified():
    """With each verified token costing as much as the rest of the step, no leftover node pays (0.9 more expected
    tokens for twice the time), yet a row's SLO minimum is still verified; with cheap tokens the budget is
    filled."""
    costly, cheap = (lambda n: 1.0 + n), (lambda n: 1 + 0.01 * n)
    chains = [CHAIN, CHAIN], [chain_parents(6)] * 2
    assert select_trees(*chains, needs=[0.0, 0.0], budget=8, step_seconds=costly) == [[], []]
    assert select_trees(*chains, needs=[2.5, 0.0], budget=8, step_seconds=costly) == [[0, 1, 2, 3], []]
    assert sum(map(len, select_trees(*chains, needs=[0.0, 0.0], budget=8, step_seconds=cheap))) == 8


def test_a_budget_too_small_for_every_minimum_serves_the_most_urgent_row_first():
    """Needs of 2.5 (row 1: 4 nodes) and 1.2 (row 0: 2 nodes) with 5 nodes: row 1 gets its 4, row 0 the one left;
    in row order row 0 would get its 2 and row 1 only 3 (missing its SLO)."""
    kept = select_trees([CHAIN, CHAIN], [chain_parents(6)] * 2, needs=[1.2, 2.5], budget=5)
    assert kept == [[0], [0, 1, 2, 3]]


def test_a_subtree_renumbers_nodes_and_keeps_distributions_and_scores():
    tree = DraftTree([5, 6, 7, 8], [-1, 0, -1, 1], {-1: {5: 0.6, 7: 0.3}, 0: {6: 1.0}}, [0.6, 0.6, 0.3, 0.1])
    sub = tree.subtree([0, 2])
    assert (sub.tokens, sub.parents, sub.scores) == ([5, 7], [-1, -1], [0.6, 0.3])
    assert set(sub.dists) == {-1, 0}  # node 0's distribution stays with it (it has no kept child: unused)


def test_needs_follow_each_rows_pace_against_its_tpot():
    """After a measured 100 ms step, a row of TPOT 10 ms that has emitted nothing needs ~9 draft tokens accepted
    this step (10 tokens by its end, the bonus token being one), a row of TPOT 1 s none, a row without an SLO
    none; once the first row has emitted 10 tokens it needs only this step's share again."""
    slo = SLOTrees(budget_per_row=4)
    slo.begin([10.0, 1000.0, None])
    slo.latency.record([4, 4, 4], [0, 0, 0], [4, 4, 4], 0.1)
    needs = slo.needs()
    assert 8.9 <= needs[0] < 9.5 and needs[1] == 0 and needs[2] == 0
    slo.emitted = [10, 0, 0]
    assert slo.needs()[0] < 0.5


def test_recipe_refuses_slo_trees_without_scored_trees():
    with pytest.raises(RecipeError, match="slo_trees.*tree: dynamic"):
        Recipe.load("toy-cot", ["token_speculation.method=draft_model", "token_speculation.slo_trees=true"])


def test_toy_pair_tight_request_gets_the_larger_trees_and_output_is_plain_greedy(toy_target, template):
    """One call, the same prompt twice: row 1 with a TPOT far below what the CPU can do, row 0 with none. Every
    step after the first (when the step time is first measured) gives row 1 its whole candidate tree and row 0 what
    is left; ties would favour row 0. The tokens are plain greedy decoding's."""
    from reasoner.toy import generate_problems

    target = toy_target
    prompt = template.prompt(target.tokenizer, generate_problems(1, seed=7)[0].question)
    plain = target.generate([prompt, prompt], SamplingParams(max_tokens=24))
    config = {"method": "draft_model", "draft": "toy:draft", "tree": "dynamic", "nodes": 8, "slo_trees": True}
    config["slo_budget"] = 4
    target.drafter = build_drafter(config, target)
    sizes = []
    select = target.drafter.slo_trees.select

    def spy(trees):
        out, kept = select(trees)
        sizes.append([len(t) for t in out])
        return out, kept

    target.drafter.slo_trees.select = spy
    try:
        spec = target.generate([prompt, prompt], SamplingParams(max_tokens=24, tpot_ms=(None, 0.01)))
    finally:
        target.drafter = None
    assert [[g.token_ids for g in row] for row in spec] == [[g.token_ids for g in row] for row in plain]
    two_rows = [s for s in sizes[1:] if len(s) == 2]
    assert two_rows and all(tight > loose for loose, tight in two_rows)


def test_calls_of_different_slos_share_one_generate_each_prompt_keeping_its_tpot():
    """The scheduler merges calls that differ only in their TPOT into one backend call (one verification batch, as
    AdaServe needs), passing each prompt's TPOT; other sampling differences still split calls."""
    from reasoner.core.lm import Output
    from reasoner.core.stats import Stats
    from reasoner.engine.scheduler import ModelWorker, _Call

    class Recorder:
        name, role, tokenizer, batch, stats = "fake", "target", None, None, Stats()
        calls = []

        def generate(self, prompts, params):
            self.calls.append((len(prompts), params.tpot_ms, params.temperature))
            return Output([[None] for _ in prompts])

    lm = Recorder()
    worker = ModelWorker(lm)
    try:
        calls = [
            _Call("generate", ([[1], [2]], SamplingParams(tpot_ms=20.0))),
            _Call("generate", ([[3]], SamplingParams())),
            _Call("generate", ([[4]], SamplingParams(tpot_ms=400.0))),
            _Call("generate", ([[5]], SamplingParams(temperature=0.5, tpot_ms=20.0))),
        ]
        worker._generate_whole(calls)
    finally:
        worker.close()
    assert lm.calls == [(4, (20.0, 20.0, None, 400.0), 0.0), (1, (20.0,), 0.5)]
    assert all(len(c.future.result()) == len(c.args[0]) for c in calls)


def test_serve_passes_a_requests_tpot_to_a_recipe_with_slo_trees():
    """``reasoner serve`` puts the request's TPOT in the sampling section where the recipe sizes trees by it (and
    nowhere else: other recipes keep their variants)."""
    from types import SimpleNamespace

    from evals.serve import ChatRequest, _reasoner_for

    def served(recipe):
        return SimpleNamespace(reasoner=SimpleNamespace(recipe=recipe), variant=lambda sections: sections)

    req = ChatRequest(model="m", messages=[{"role": "user", "content": "1+1"}])
    spec = ["token_speculation.method=draft_model", "token_speculation.tree=dynamic", "models.draft.path=toy:draft"]
    adaserve = Recipe.load("toy-cot", spec + ["token_speculation.slo_trees=true"])
    assert _reasoner_for(served(adaserve), req, None, 40.0)["sampling"] == {"tpot_ms": 40.0}
    assert "tpot_ms" not in _reasoner_for(served(Recipe.load("toy-cot", spec)), req, None, 40.0)["sampling"]
