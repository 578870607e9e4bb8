"""The ground floor: the types every layer shares (problems, steps, the search tree, solutions), cost counters,
the ``LM`` protocol and its sampling parameters, and process-wide logging settings. Imports nothing of the
project and no heavy library."""

from .errors import PromptTooLong
from .lm import LM, Generation, Output, Prompt, SamplingParams, check_context
from .stats import RoleStats, Stats
from .types import Candidate, Node, Problem, Solution, Step, Tree

__all__ = [
    "LM",
    "Candidate",
    "Generation",
    "Node",
    "Output",
    "Problem",
    "Prompt",
    "PromptTooLong",
    "RoleStats",
    "SamplingParams",
    "Solution",
    "Stats",
    "Step",
    "Tree",
    "check_context",
]
