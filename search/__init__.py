"""Searches: each grows search trees through a ``StepEngine`` and leaves the choice of answer to ``vote``."""
from .best_of_n import BestOfN, ChainOfThought
from .vote import VOTES, choose, group_answers

SEARCHES = ("cot", "best_of_n")

__all__ = ["BestOfN", "ChainOfThought", "choose", "group_answers", "SEARCHES", "VOTES"]
