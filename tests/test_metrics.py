"""Metrics: unbiased pass@k against brute-force enumeration, votes, per-run aggregation, speedup."""

from itertools import combinations

import pytest

from evals.metrics import ks_for, pass_at_k, sample_metrics, speedup, vote_correct


@pytest.mark.parametrize("n, c", [(1, 0), (1, 1), (5, 2), (8, 3), (10, 0), (10, 10), (7, 6)])
def test_pass_at_k_is_the_fraction_of_k_subsets_holding_a_correct_sample(n, c):
    samples = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(combinations(samples, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)


def test_ks():
    assert ks_for(1) == [1] and ks_for(8) == [1, 2, 4, 8] and ks_for(6) == [1, 2, 4, 6]


def test_majority_and_weighted_votes_group_equivalent_answers():
    cands = [{"answer": "\\frac{1}{2}", "score": 0.1}, {"answer": "0.5", "score": 0.1}, {"answer": "3", "score": 0.9}]
    assert vote_correct(cands, "1/2", "majority") is True  # 1/2 and 0.5 vote together: 2 against 1
    assert vote_correct(cands, "1/2", "weighted") is False  # 0.2 against 0.9
    assert vote_correct(cands, "3", "weighted") is True
    assert vote_correct([{"answer": None}], "3", "majority") is False
    assert vote_correct(cands, None, "majority") is None


def test_sample_metrics_over_rows():
    rows = [
        {"n_samples": 4, "n_correct": 1, "maj_correct": False, "weighted_correct": True},
        {"n_samples": 4, "n_correct": 4, "maj_correct": True, "weighted_correct": True},
        {"n_samples": 4, "n_correct": 0, "maj_correct": False, "weighted_correct": False},
    ]
    m = sample_metrics(rows)
    assert m["samples"] == 4
    assert m["pass@1"] == pytest.approx((0.25 + 1 + 0) / 3, abs=1e-4)
    assert m["pass@4"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["maj@4"] == pytest.approx(1 / 3, abs=1e-4) and m["weighted@4"] == pytest.approx(2 / 3, abs=1e-4)
    assert sample_metrics([{"id": "x"}]) == {}


def test_speedup_is_baseline_cost_over_run_cost_per_problem():
    base = {
        "recipe": "cot",
        "n": 10,
        "s_per_problem": 2.0,
        "tokens": {"target": 1000},
        "forward_passes": {"target": 500},
    }
    run = {
        "recipe": "spec",
        "n": 20,
        "s_per_problem": 0.5,
        "tokens": {"target": 400, "draft": 3000},
        "forward_passes": {"target": 250},
    }
    assert speedup(run, base) == {"baseline": "cot", "wall": 4.0, "target_tokens": 5.0, "target_forward_passes": 4.0}
    assert speedup({"n": 5, "s_per_problem": 1.0, "tokens": {"draft": 9}}, base) == {"baseline": "cot", "wall": 2.0}
