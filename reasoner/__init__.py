"""reasoner: test-time-scaling reasoning with speculative reasoning.

    from reasoner import Reasoner
    solution = Reasoner().solve("Compute (17+25)*3-48.")

The package root is lazy (PEP 562): ``import reasoner`` loads no model library; each name below is imported
from its module on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Reasoner": "reasoner.api",
    "Recipe": "reasoner.recipe",
    "RecipeError": "reasoner.recipe",
    "PromptTooLong": "reasoner.core.errors",
    "StepEngine": "reasoner.engine",
    "load_lm": "reasoner.backends",
    **dict.fromkeys(("LM", "Generation", "Output", "SamplingParams"), "reasoner.core.lm"),
    **dict.fromkeys(("RoleStats", "Stats"), "reasoner.core.stats"),
    **dict.fromkeys(("Candidate", "Node", "Problem", "Solution", "Step", "Tree"), "reasoner.core.types"),
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'reasoner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
