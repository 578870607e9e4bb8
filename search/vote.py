"""Choosing the final answer among candidates: majority vote, verifier-weighted vote, or the best-scored one.

Answers are grouped by mathematical equivalence (``verifiers.math.is_equivalent``), not by string, so
``1/2`` and ``\\frac{1}{2}`` vote together. Code answers have no math answer: when no candidate has one, they
group by the program they contain (the same code, whitespace aside, is the same answer), so majority and
verifier votes rank programs too. Ties go to the group seen first.
"""

from __future__ import annotations

from reasoner.core.types import Candidate
from verifiers.code import extract_code
from verifiers.math import is_equivalent

VOTES = ("majority", "weighted", "best")


def group_answers(candidates: list[Candidate]) -> list[list[Candidate]]:
    if all(c.answer is None for c in candidates):
        return group_programs(candidates)
    groups: list[list[Candidate]] = []
    for c in candidates:
        if c.answer is None:
            continue
        for g in groups:
            if is_equivalent(c.answer, g[0].answer):
                g.append(c)
                break
        else:
            groups.append([c])
    return groups


def group_programs(candidates: list[Candidate]) -> list[list[Candidate]]:
    """Candidates grouped by their extracted program, lines stripped of trailing spaces; those without one are
    left out."""
    groups: dict[str, list[Candidate]] = {}
    for c in candidates:
        program = extract_code(c.text)
        if program and program.strip():
            groups.setdefault("\n".join(line.rstrip() for line in program.strip().splitlines()), []).append(c)
    return list(groups.values())


def choose(candidates: list[Candidate], vote: str) -> Candidate | None:
    """The representative candidate of the winning answer (its best-scored member); ``None`` if no answer."""
    if vote not in VOTES:
        raise ValueError(f"unknown vote {vote!r}: use one of {', '.join(VOTES)}")
    groups = group_answers(candidates)
    if not groups:
        return candidates[0] if candidates else None
    score = lambda c: c.score if c.score is not None else 0.0  # noqa: E731
    if vote == "majority":
        weight = len
    elif vote == "weighted":
        weight = lambda g: sum(score(c) for c in g)  # noqa: E731
    else:
        weight = lambda g: max(score(c) for c in g)  # noqa: E731
    best = max(groups, key=weight)  # max keeps the first of equal weights
    return max(best, key=score)
