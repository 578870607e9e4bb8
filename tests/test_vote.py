import pytest

from reasoner.core.types import Candidate
from search.vote import choose, group_answers


def cand(answer, score=None):
    return Candidate(steps=[], answer=answer, score=score)


def test_groups_by_mathematical_equivalence():
    groups = group_answers([cand("1/2"), cand("0.5"), cand("3"), cand(None)])
    assert [len(g) for g in groups] == [2, 1]


def test_majority_weighted_and_best_can_disagree():
    cs = [cand("1", 0.1), cand("1", 0.1), cand("1", 0.1), cand("2", 0.9), cand("2", 0.05), cand("3", 0.95)]
    assert choose(cs, "majority").answer == "1"
    assert choose(cs, "weighted").answer == "2"
    assert choose(cs, "best").answer == "3"


def test_representative_is_the_best_scored_member_and_no_answers_fall_back():
    cs = [cand("7", 0.2), cand("7", 0.8)]
    assert choose(cs, "majority").score == 0.8
    assert choose([cand(None)], "majority").answer is None
    assert choose([], "majority") is None
    with pytest.raises(ValueError, match="vote"):
        choose(cs, "plurality")


def program(body, score):
    from reasoner.core.types import Step

    text = f"x+3\n\n```python\ndef f(x):\n    return {body}\n```"
    return Candidate(steps=[Step(text, [], [], source="target")], answer=None, score=score)


def test_code_candidates_vote_by_their_program():
    cs = [program("x+3", 0.1), program("x+3  ", 0.2), program("x*3", 0.9), program("x-3", 0.3)]
    assert [len(g) for g in group_answers(cs)] == [2, 1, 1]  # trailing spaces do not make another program
    assert "x+3" in choose(cs, "majority").text
    assert "x*3" in choose(cs, "best").text
    assert "x*3" in choose(cs, "weighted").text
