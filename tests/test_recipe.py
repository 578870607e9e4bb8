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
        (["search.widht=3"], "unknown recipe field 'search.widht': allowed here are method, n, vote, policy"),
        (["sampling.temperature=-1"], "sampling.temperature.*greater than or equal to 0"),
        (["search.n=4"], "chain of thought samples once"),
        (["search.method=best_of_n", "search.n=4", "search.vote=weighted"], "vote=weighted needs scores"),
        (["search.policy=draft"], "models.draft is not set"),
        (["suite.difficulty=impossible"], "unknown difficulty"),
        (["search"], "not key=value"),
        (["search.n.x=3"], "search.n.*valid integer"),
        (["search.method.x=3"], "search.method is a value"),
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
