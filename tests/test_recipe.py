from pathlib import Path

import pytest

from reasoner.recipe import Recipe, RecipeError

RECIPES = sorted((Path(__file__).parent.parent / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_are_valid_and_named_after_their_file(path):
    assert Recipe.load(path).name == path.stem


def test_the_recipes_others_rely_on_exist():
    names = {p.stem for p in RECIPES}
    assert {"toy-cot", "toy-cot-draft", "toy-bon"} <= names
    bon = Recipe.load("toy-bon")
    assert (bon.search.method, bon.search.n, bon.search.vote, bon.search.policy) == (
        "best_of_n",
        8,
        "weighted",
        "draft",
    )
    assert bon.models.draft.path == "toy:draft"


def test_dotted_overrides_parse_values():
    r = Recipe.load("toy-bon", ["search.n=16", "sampling.temperature=0.5", "suite.seed=7", "suite.difficulty=hard"])
    assert (r.search.n, r.sampling.temperature, r.suite.seed, r.suite.difficulty) == (16, 0.5, 7, "hard")
    r = Recipe.load(None, {"search": {"method": "best_of_n", "n": 4}})
    assert r.search.n == 4


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["search.vote=plurality"], "search.vote.*'majority', 'weighted' or 'best'.*plurality"),
        (
            ["search.widht=3"],
            r"search.widht is not a knob of search.method=cot \(it takes vote, policy, method, whole\)$",
        ),
        (["sampling.temperature=-1"], "sampling.temperature.*greater than or equal to 0"),
        (["search.n=4"], "search.n is not a knob of search.method=cot .*; n is a knob of best_of_n, beam"),
        (["search.method=best_of_n", "search.n=4", "search.vote=weighted"], "vote=weighted needs scores"),
        (["search.policy=draft"], "models.draft is not set"),
        (["suite.difficulty=impossible"], "unknown difficulty"),
        (["search"], "not key=value"),
        (["search.method=best_of_n", "search.n.x=3"], "search.n .*valid integer"),
        (
            ["search.method=beam", "search.width=3"],
            "search.n \\(8\\) must be a positive multiple of search.width \\(3\\)",
        ),
        (["search.method=tree"], "search.method='tree' is not a search: use one of cot, best_of_n, beam"),
        (["search.method.x=3"], "search.method is a value"),
        (["token_speculation.method=rasd"], "method=rasd needs a draft model: set models.draft"),
        (
            ["token_speculation.method=rasd", "token_speculation.adaptive=true"],
            "use adaptive: false with method: rasd",
        ),
    ],
)
def test_bad_recipes_name_the_field_and_the_fix(overrides, message):
    with pytest.raises(RecipeError, match=message):
        Recipe.load("toy-cot", overrides)


def test_bad_files(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        Recipe.load("no-such-recipe")
    bad = tmp_path / "bad.yaml"
    bad.write_text("search: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        Recipe.load(bad)
    bad.write_text("- a list\n")
    with pytest.raises(RecipeError, match="mapping"):
        Recipe.load(bad)


def test_roundtrip_through_yaml(tmp_path):
    r = Recipe.load("toy-bon", ["search.n=3"])
    (tmp_path / "r.yaml").write_text(r.to_yaml())
    assert Recipe.load(tmp_path / "r.yaml") == r


def test_a_knob_of_another_search_is_one_line_naming_the_file_the_knob_and_the_search(tmp_path):
    recipe = tmp_path / "beam-with-mcts-knob.yaml"
    recipe.write_text("search: {method: beam, n: 8, width: 4, puct_init: 2.0}\nverifier: {type: likelihood}\n")
    with pytest.raises(RecipeError) as e:
        Recipe.load(recipe)
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"recipe {recipe}: search.puct_init is not a knob of search.method=beam")
    assert message.endswith("puct_init is a knob of mcts, rethink_mcts")


def test_switching_the_search_keeps_the_shared_knobs_and_drops_the_old_ones():
    ets = Recipe.load("toy-ets")
    rebase = Recipe.load("toy-ets", ["search.method=rebase"])  # lambda_c, lambda_s, cluster_distance are ETS's
    assert (rebase.search.method, rebase.search.n, rebase.search.vote) == ("rebase", ets.search.n, "weighted")
    assert "lambda_c" not in type(rebase.search).model_fields
    with pytest.raises(RecipeError, match="search.lambda_c is not a knob of search.method=rebase"):
        Recipe.load("toy-ets", ["search.method=rebase", "search.lambda_c=2"])  # asked for: an error


def test_docs_recipes_md_is_generated_from_the_current_schema():
    from reasoner.recipe import schema_markdown

    docs = Path(__file__).parent.parent / "docs" / "recipes.md"
    assert docs.read_text() == schema_markdown(), (
        "docs/recipes.md is stale: reasoner recipe schema --markdown > docs/recipes.md"
    )
