"""reasoner: test-time-scaling reasoning with speculative reasoning.

from reasoner import Reasoner
solution = Reasoner().solve("Compute (17+25)*3-48.")
"""

from .api import Reasoner
from .backends import LM, Generation, SamplingParams, load_lm
from .engine import StepEngine
from .recipe import Recipe, RecipeError
from .stats import RoleStats, Stats
from .types import Candidate, Node, Problem, Solution, Step, Tree

__version__ = "0.1.0"

__all__ = [
    "Reasoner",
    "Recipe",
    "RecipeError",
    "Problem",
    "Solution",
    "Candidate",
    "Step",
    "Node",
    "Tree",
    "Stats",
    "RoleStats",
    "LM",
    "Generation",
    "SamplingParams",
    "load_lm",
    "StepEngine",
    "__version__",
]
