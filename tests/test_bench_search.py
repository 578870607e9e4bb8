"""``reasoner bench search``'s grid: every run's recipe loads, and each verifier is the one it names."""

import pytest

from evals.bench_search import BASE_RECIPE, METHODS, VERIFIERS, overrides
from reasoner.recipe import Recipe


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
def test_every_run_of_the_grid_is_a_valid_recipe(verifier):
    for method in METHODS:
        for budget in (4, 16):
            recipe = Recipe.load(BASE_RECIPE, overrides(method, budget) + VERIFIERS[verifier][0])
            assert recipe.search.method == method
            assert recipe.verifier.type == verifier


def test_every_fit_candidate_is_a_valid_row_of_autos_table():
    from evals.bench_search import _section

    for method in METHODS[1:]:
        table = [{"max_agreement": 1.0, "search": _section(method, 8)}]
        recipe = Recipe.load(BASE_RECIPE, {"search": {"method": "auto", "table": table}})
        assert recipe.search.table[0].search.method == method
