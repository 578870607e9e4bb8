"""Step-level speculation: the draft writes, the target judges and rewrites the rejected steps."""

import json

import pytest

from reasoner import Problem, Reasoner
from reasoner.cli import main
from reasoner.recipe import Recipe, RecipeError
from reasoner.toy import generate_problems

ALWAYS_ACCEPT = {"likelihood": 0.0, "judge": 0.0}
NEVER_ACCEPT = {"likelihood": 1.01, "judge": 9.01}


@pytest.fixture(scope="module")
def problems():
    return [Problem(p.question, answer=str(p.answer), id=str(i)) for i, p in enumerate(generate_problems(12, seed=7))]


@pytest.fixture(scope="module")
def plain(problems):
    """Chain of thought by each model alone (with the speculative recipes' repetition guard)."""
    return {
        role: Reasoner(
            "toy-cot", [f"search.policy={role}", "models.draft.path=toy:draft", "budget.stop_on_repeat=true"]
        ).solve_many(problems)
        for role in ("draft", "target")
    }


@pytest.mark.parametrize("acceptor", ["likelihood", "judge"])
@pytest.mark.parametrize("writer", ["draft", "target"])
def test_threshold_extremes_give_exactly_the_drafts_or_the_targets_output(acceptor, writer, problems, plain):
    threshold = {"draft": ALWAYS_ACCEPT, "target": NEVER_ACCEPT}[writer][acceptor]
    recipe = "toy-likelihood" if acceptor == "likelihood" else "toy-specreason"
    solutions = Reasoner(recipe, [f"step_speculation.threshold={threshold}"]).solve_many(problems)
    assert [s.text for s in solutions] == [s.text for s in plain[writer]]
    verdict = "steps_accepted" if writer == "draft" else "steps_rejected"
    for s in solutions:
        assert all(st.source == writer and st.speculation["accepted"] == (writer == "draft") for st in s.steps)
        assert s.stats.counters[verdict] == s.stats.counters["steps_total"] == len(s.steps)
        assert s.stats.role("target").prefill_tokens > 0 and s.stats.role("draft").generated_tokens >= len(s.steps)
        assert s.stats.role("target").generated_tokens == (
            0 if writer == "draft" else sum(len(st.token_ids) for st in s.steps)
        )


def test_likelihood_acceptance_keeps_the_targets_accuracy_with_fewer_target_tokens(problems, plain):
    solutions = Reasoner("toy-likelihood").solve_many(problems)
    target_correct = sum(s.correct for s in plain["target"])
    assert sum(s.correct for s in solutions) >= target_correct - 1
    spent = sum(s.stats.role("target").generated_tokens for s in solutions)
    alone = sum(s.stats.role("target").generated_tokens for s in plain["target"])
    assert spent < alone / 2
    for s in solutions:
        for st in s.steps:
            spec = st.speculation
            assert (st.source == "draft") == spec["accepted"] == (spec["score"] >= 0.5)
            assert ("draft" in spec) == (not spec["accepted"])


def test_first_steps_can_be_written_by_the_target(problems):
    solutions = Reasoner("toy-likelihood", ["step_speculation.first_n_target_steps=2"]).solve_many(problems[:4])
    for s in solutions:
        assert [st.source for st in s.steps[:2]] == ["target", "target"]
        assert all(st.speculation is None for st in s.steps[:2])
        assert s.stats.counters["steps_total"] == len(s.steps)


def test_the_recipes_think_rule_reaches_the_engine():
    reasoner = Reasoner("toy-likelihood")
    assert reasoner.engine.think_rule == "specreason"  # the default
    variant = reasoner.variant(step_speculation={"think_rule": "target_answers"})
    assert variant.engine.think_rule == "target_answers"


def test_best_of_n_speculates_every_trajectory(problems):
    reasoner = Reasoner(
        "toy-bon", ["search.n=4", "step_speculation.acceptor=likelihood", "step_speculation.threshold=0.9"]
    )
    solutions = reasoner.solve_many(problems[:3])
    for s in solutions:
        assert len(s.candidates) == 4
        steps = [st for c in s.candidates for st in c.steps]
        assert {st.source for st in steps} <= {"draft", "target"}
        assert all(st.speculation["accepted"] == (st.source == "draft") for st in steps)
        assert s.stats.counters["steps_total"] == len(steps)


def test_speculation_recipes_name_their_missing_pieces():
    with pytest.raises(RecipeError, match="needs models.draft"):
        Recipe.load(None, {"step_speculation": {"acceptor": "judge"}})
    with pytest.raises(RecipeError, match="search.policy=draft"):
        Recipe.load("toy-specreason", ["search.policy=target"])
    with pytest.raises(RecipeError, match="set verifier.type"):
        Recipe.load("toy-specreason", ["step_speculation.acceptor=prm"])
    with pytest.raises(RecipeError, match="needs step_speculation.router"):
        Recipe.load("toy-specreason", ["step_speculation.acceptor=router"])


def test_bench_steps_writes_its_table_json_and_plot(tmp_path):
    assert main(["bench", "steps", "--out", str(tmp_path), "--limit", "4", "--quick", "--no-progress"]) == 0
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [r["method"] for r in rows][:2] == ["target CoT", "draft CoT"]
    assert {r["acceptor"] for r in rows} == {None, "judge", "prm", "router", "target_router", "likelihood"}
    per_step = {r["method"]: r["target_prefill_per_step"] for r in rows}
    assert per_step["draft CoT"] == 0 and per_step["target router >= 0.5"] > 0  # the target judged every step
    assert rows[0]["speedup_vs_target"] == 1.0 and all(r["n"] == 4 for r in rows)
    for r in rows[2:]:
        assert r["steps_total"] > 0 and 0 <= r["accepted_fraction"] <= 1
        assert r["target_tokens"] + r["draft_tokens"] > 0
    table = [line for line in (tmp_path / "bench.md").read_text().splitlines() if line.startswith("| ")]
    assert len(table) == len(rows) + 1  # the header and a row per configuration
    assert (tmp_path / "bench.png").stat().st_size > 0


def test_bench_steps_ab_runs_each_configuration_with_and_without_an_override(tmp_path):
    import yaml

    from evals.bench_steps import run

    configs = [("target CoT", "toy-cot", []), ("l", "toy-likelihood", [])]
    rows = run(
        tmp_path,
        2,
        batch_size=2,
        progress=False,
        model_workers="thread",
        configs=configs,
        only=["l"],
        ab=["scheduler.mix_scores=false"],
    )
    assert [r["method"] for r in rows] == ["l", "l [scheduler.mix_scores=false]"]
    for folder, mix in (("l", True), ("l_scheduler.mix_scores_false", False)):
        assert (
            yaml.safe_load((tmp_path / "runs" / folder / "recipe.yaml").read_text())["scheduler"]["mix_scores"] is mix
        )
    with pytest.raises(ValueError, match="no configuration"):
        run(tmp_path, 2, configs=configs, only=["nope"])


def test_calibrate_picks_the_fastest_threshold_within_the_accuracy_loss():
    from evals.calibrate import choose

    rows = [
        {"method": "target CoT", "accuracy": 0.90, "speedup_vs_target": 1.0},
        {"method": "draft CoT", "accuracy": 0.60, "speedup_vs_target": 3.0},  # the ceiling is never chosen
        {"method": "t=0.1", "accuracy": 0.85, "speedup_vs_target": 2.0},
        {"method": "t=0.3", "accuracy": 0.89, "speedup_vs_target": 1.5},
        {"method": "t=0.5", "accuracy": 0.90, "speedup_vs_target": 1.2},
    ]
    assert choose(rows, 2.0)["method"] == "t=0.3"
    assert choose(rows, 10.0)["method"] == "t=0.1"
    assert choose(rows, 0.0)["method"] == "t=0.5"
    assert choose(rows[:3], 2.0) is None


def test_calibrate_runs_the_target_alone_the_draft_alone_and_each_recipes_thresholds(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["calibrate", "-r", "toy-likelihood", "--thresholds", "0.5", "-r", "toy-specreason", "--thresholds", "5"]
    argv += [
        "--set",
        "sampling.max_step_tokens=96",
    ]  # reaches every run, the baselines' included, and the table says so
    assert (
        main([*argv, "--limit", "4", "--batch-size", "4", "--max-loss", "100", "--out", str(out), "--no-progress"]) == 0
    )
    result = json.loads((out / "calibrate.json").read_text())
    rows = {r["method"]: r for r in result["rows"]}
    for folder in (out / "runs").iterdir():
        assert "max_step_tokens: 96" in (folder / "recipe.yaml").read_text(), folder.name
    assert "in every row: sampling.max_step_tokens=96" in (out / "bench.md").read_text()
    assert list(rows) == ["target CoT", "draft CoT", "toy-likelihood: likelihood >= 0.5", "toy-specreason: judge >= 5"]
    assert rows["target CoT"]["draft_tokens"] == 0 < rows["target CoT"]["target_tokens"]  # the target alone
    assert rows["draft CoT"]["target_tokens"] == 0 < rows["draft CoT"]["draft_tokens"]  # the draft alone
    assert (
        rows["toy-specreason: judge >= 5"]["acceptor"] == "judge" and rows["toy-specreason: judge >= 5"]["steps_total"]
    )
    assert (
        result["chosen"]["toy-likelihood"]["threshold"] == 0.5 and result["chosen"]["toy-specreason"]["threshold"] == 5
    )
    printed = capsys.readouterr().out
    assert "toy-likelihood: step_speculation.threshold=0.5" in printed and "threshold=5 " in printed


def test_a_calibrated_recipe_is_written_to_a_new_file_only(tmp_path):
    from evals.calibrate import write_recipe

    path = tmp_path / "calibrated.yaml"
    write_recipe("toy-likelihood", ["step_speculation.reduce=mean"], 0.3, path, "calibrated on 4 problems")
    assert path.read_text().startswith("# calibrated on 4 problems\n")
    assert Recipe.load(str(path)).step_speculation.model_dump(include={"threshold", "reduce"}) == {
        "threshold": 0.3,
        "reduce": "mean",  # the overrides the sweep ran with
    }
    with pytest.raises(FileExistsError):
        write_recipe("toy-likelihood", [], 0.5, path, "again")
    assert Recipe.load(str(path)).step_speculation.threshold == 0.3


def test_bench_steps_quantize_applies_to_every_model_of_every_configuration(tmp_path):
    import yaml

    from evals.bench_steps import run

    configs = [("target CoT", "toy-cot", []), ("draft CoT", "toy-cot-draft", []), ("l", "toy-likelihood", [])]
    rows = run(tmp_path, 2, batch_size=2, progress=False, model_workers="thread", configs=configs, quantize="int8")
    assert [r["n"] for r in rows] == [2, 2, 2]
    for folder, roles in (("target_CoT", {"target"}), ("draft_CoT", {"draft"}), ("l", {"draft", "target"})):
        models = yaml.safe_load((tmp_path / "runs" / folder / "recipe.yaml").read_text())["models"]
        assert {r for r, m in models.items() if m and m.get("quantize") == "int8"} == roles
    assert "int8" in (tmp_path / "bench.md").read_text()
