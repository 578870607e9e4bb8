"""Arbitrage's routers on the toy world: collect step pairs, train, route; the draft-side router predicts the
target's advantage without asking the target, and an accepted step costs the target nothing."""

import json

import pytest
from sklearn.metrics import roc_auc_score

from reasoner import Problem, Reasoner
from reasoner.cli import main
from reasoner.recipe import Recipe
from reasoner.toy import generate_problems
from verifiers.router import FEATURES, Router, vector

THREADS = "scheduler.model_workers=thread"  # no model processes to start: the test measures tokens, not time


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """Step pairs from problems no shipped router was trained on (those came from suite seed 99)."""
    out = tmp_path_factory.mktemp("router") / "pairs.jsonl"
    args = ["router", "collect", "--recipe", "toy-arbitrage", "--set", "suite.seed=5", "--set", "suite.size=32"]
    assert main(args + ["--limit", "32", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def rows(collected):
    return [json.loads(line) for line in collected.read_text().splitlines()]


def test_collect_writes_one_labelled_pair_per_prefix(rows):
    assert len({r["problem"] for r in rows}) == 32
    for r in rows:
        assert set(r["features"]) == set(FEATURES["target_router"]) and len(r["hidden"]) == 128  # toy:draft's width
        assert r["label"] == int(r["reward_target"] > r["reward_draft"])
        assert r["reward_target"] in (0.0, 1.0) and r["reward_draft"] in (0.0, 1.0)
    by_problem = {}
    for r in rows:
        by_problem.setdefault(r["problem"], []).append(r["depth"])
    assert all(depths == list(range(1, len(depths) + 1)) for depths in by_problem.values())
    # the draft errs at this difficulty, so some prefixes have a better target step
    assert 0 < sum(r["label"] for r in rows) < len(rows)


def heldout_auc(router: Router, rows: list[dict]) -> float:
    """The router's ROC-AUC against the oracle label on rows from problems it never saw."""
    probs = [
        router.probability(vector(router.weights, r["features"], r["hidden"][: router.weights["hidden_size"]]))
        for r in rows
    ]
    return roc_auc_score([r["label"] for r in rows], probs)


def test_draft_side_router_predicts_the_targets_advantage_and_a_constant_router_does_not(rows):
    shipped = Router.load("toy:router", "router", None, None)
    assert shipped.weights["hidden_size"] == 128  # it reads the draft's hidden state
    assert heldout_auc(shipped, rows) > 0.8
    constant = dict(shipped.weights, layers=[{"w": [[0.0] * len(shipped.weights["mean"])], "b": [0.3]}])
    assert not heldout_auc(Router(constant, None, None), rows) > 0.8  # the same check fails without the features
    # the target-feature router, for comparison, passes it too (at the cost of a target prefill per step)
    assert heldout_auc(Router.load("toy:target_router", "target_router", None, None), rows) > 0.8


@pytest.mark.parametrize("acceptor", ["router", "target_router"])
def test_trained_router_routes_steps(collected, acceptor, tmp_path, capsys):
    router = tmp_path / "router.json"
    args = ["router", "train", str(collected), "--acceptor", acceptor, "--out", str(router)]
    assert main(args + (["--hidden-units", "8"] if acceptor == "router" else [])) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows_train"] + info["rows_test"] == len(collected.read_text().splitlines())
    saved = json.loads(router.read_text())
    assert saved["acceptor"] == acceptor and saved["features"] == list(FEATURES[acceptor])
    assert saved["hidden_size"] == (128 if acceptor == "router" else 0)
    assert len(saved["layers"]) == (2 if acceptor == "router" else 1)
    recipe = "toy-arbitrage" if acceptor == "router" else "toy-target-router"
    solution = Reasoner(recipe, [f"step_speculation.router={router}", THREADS]).solve("Compute (17+25)*3-48.")
    assert solution.stats.counters["steps_total"] == len(solution.steps)
    for step in solution.steps:
        spec = step.speculation
        assert spec["acceptor"] == acceptor and 0.0 <= spec["score"] <= 1.0
        assert (step.source == "target") == (spec["score"] >= 0.5) == (not spec["accepted"])


def test_a_draft_side_router_needs_the_drafts_hidden_states(rows, tmp_path, capsys):
    """Rows collected from a draft whose backend gives no hidden states (vLLM, a server) train only a target_router."""
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(dict(r, hidden=[])) + "\n" for r in rows))
    assert main(["router", "train", str(data), "--out", str(tmp_path / "r.json")]) == 2
    assert "holds no draft hidden states" in capsys.readouterr().err
    assert main(["router", "train", str(data), "--acceptor", "target_router", "--out", str(tmp_path / "t.json")]) == 0


@pytest.fixture(scope="module")
def problems():
    return [Problem(p.question, answer=str(p.answer), id=str(i)) for i, p in enumerate(generate_problems(12, seed=3))]


def test_draft_side_router_costs_no_target_prefill_on_accepted_steps(problems):
    """Problems whose every step the router accepted never ran the target; the target-feature router prefilled the
    target on every problem, accepted steps included."""
    draft_side = Reasoner("toy-arbitrage", ["step_speculation.threshold=0.3", THREADS]).solve_many(problems)
    all_accepted = [s for s in draft_side if s.stats.counters["steps_accepted"] == s.stats.counters["steps_total"]]
    escalated = [s for s in draft_side if s.stats.counters.get("steps_rejected", 0)]
    assert all_accepted and escalated  # both kinds, so the check below is about the router, not the problems
    for s in all_accepted:
        assert s.stats.role("target").prefill_tokens == s.stats.role("target").calls == 0
        assert s.stats.role("draft").prefill_tokens > 0  # the router's features are the draft's
    for s in escalated:  # the target ran for the rewrite alone: it generated exactly the steps it wrote
        assert s.stats.role("target").prefill_tokens > 0
        assert s.stats.role("target").generated_tokens == sum(
            len(st.token_ids) for st in s.steps if st.source == "target"
        )
    with_target = Reasoner("toy-target-router", ["step_speculation.threshold=1.01", THREADS]).solve_many(problems)
    for s in with_target:
        assert s.stats.counters["steps_accepted"] == s.stats.counters["steps_total"] == len(s.steps)
        assert s.stats.role("target").prefill_tokens > 0 and s.stats.role("target").generated_tokens == 0


def test_shipped_routers_load_and_bad_files_are_named(tmp_path):
    assert Recipe.load("toy-arbitrage").step_speculation.router == "toy:router"
    assert Recipe.load("toy-target-router").step_speculation.router == "toy:target_router"
    bad = tmp_path / "router.json"
    bad.write_text("{}")
    with pytest.raises(ValueError, match="not a router"):
        Router.load(bad, "router", None, None)
    with pytest.raises(ValueError, match="cannot read router"):
        Router.load(tmp_path / "missing.json", "router", None, None)
    with pytest.raises(ValueError, match="set step_speculation.acceptor=target_router"):
        Router.load("toy:target_router", "router", None, None)
    with pytest.raises(ValueError, match="only the transformers backend"):
        Recipe.load("toy-arbitrage", ["models.draft.backend=vllm"])
    with pytest.raises(ValueError, match="needs step_speculation.router"):
        Recipe.load("toy-arbitrage", ["step_speculation.router=null"])
    assert main(["router", "train", str(tmp_path / "missing.jsonl"), "--out", str(bad)]) == 2
    assert main(["router", "train", str(bad), "--out", str(bad)]) == 2


@pytest.mark.usefixtures("one_torch_thread")
def test_draft_hidden_states_are_the_models_last_layer_at_the_last_token_with_or_without_the_prefix_cache(template):
    import torch

    from reasoner.backends import SamplingParams, load_lm

    models = [
        load_lm("transformers", "toy:draft", "draft", dtype="float32", prefix_cache_tokens=c) for c in (0, 100_000)
    ]
    tok = models[0].tokenizer
    prompts = [template.prompt(tok, p.question) for p in generate_problems(4, seed=2)]
    steps = [g[0].text + "\n\n" for g in models[1].generate(prompts, SamplingParams(max_tokens=40, stop=("\n\n",)))]
    plain, cached = (m.hidden_states(prompts, steps) for m in models)
    for p, s, a, b in zip(prompts, steps, plain, cached):
        ids = torch.tensor([models[0].encode(p) + models[0].encode(s)])
        with torch.inference_mode():
            want = models[0].model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1]
        assert len(a) == 128 and torch.allclose(torch.tensor(a), want, atol=1e-4)
        assert torch.allclose(torch.tensor(b), want, atol=1e-4)
    # the cached draft has just written these steps: only the last token of each runs again
    assert [u.prefill_tokens for u in cached.usage] == [1] * len(prompts)
    assert [u.prefill_tokens for u in plain.usage] == [
        len(models[0].encode(p) + models[0].encode(s)) for p, s in zip(prompts, steps)
    ]
