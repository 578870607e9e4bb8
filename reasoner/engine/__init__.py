"""Step engines: the only way a search gets new reasoning steps. ``StepEngine`` (one model writes every step) and
``SpeculativeStepEngine`` (the draft writes, an acceptor judges, the target rewrites the rejected)."""

from .speculative import SpeculativeStepEngine
from .step import StepBudget, StepEngine, StepSampling, path_tokens

__all__ = ["SpeculativeStepEngine", "StepBudget", "StepEngine", "StepSampling", "path_tokens"]
