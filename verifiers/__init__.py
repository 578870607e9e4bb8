"""Step verifiers (likelihood, PRM families, LLM judge, public tests, ensembles), the acceptors of step-level
speculation, and answer checking (math, code, the sandbox); ``build`` makes a verifier from a recipe."""

from __future__ import annotations

from .ensemble import EnsembleVerifier
from .execution import ExecutionVerifier
from .implicit_prm import ImplicitPRMVerifier, trained_beta
from .judge import JudgeVerifier
from .likelihood import LikelihoodVerifier
from .prm import PRMVerifier

LM_VERIFIERS = ("likelihood", "judge", "implicit_prm")  # verifier types that score with the recipe's LMs


def lm_roles(config) -> set[str]:
    """The model roles a verifier config scores with through an LM backend (a PRM loads its own model)."""
    if config.type == "ensemble":
        return set().union(*(lm_roles(m) for m in config.members))
    if config.type == "implicit_prm":
        return {config.model, config.reference}
    return {config.model} if config.type in LM_VERIFIERS else set()


def build(config, models: dict, template, model_specs):
    """The verifier a recipe's ``verifier`` section describes (``None`` for ``type: none``). ``models`` are
    the loaded LMs by role; ``model_specs`` the recipe's ``models`` section (a PRM is loaded from its spec)."""
    if config.type == "none":
        return None
    if config.type == "likelihood":
        return LikelihoodVerifier(models[config.model], template, config.reduce)
    if config.type == "implicit_prm":
        beta = config.beta or trained_beta(getattr(model_specs, config.model).path)
        return ImplicitPRMVerifier(models[config.model], models[config.reference], template, beta, config.reward)
    if config.type == "judge":
        return JudgeVerifier(models[config.model], template, config.judge_score)
    if config.type == "prm":
        spec = getattr(model_specs, config.model)
        return PRMVerifier(
            spec.path,
            config.family,
            config.step_token,
            role=config.model,
            dtype=spec.dtype,
            device=spec.device,
            max_batch_size=spec.max_batch_size,
        )
    if config.type == "tests":
        return ExecutionVerifier()
    if config.type == "ensemble":
        return EnsembleVerifier([build(m, models, template, model_specs) for m in config.members])
    raise ValueError(f"unknown verifier type {config.type!r}")


def own_models(verifier) -> list:
    """The models a verifier loaded itself (PRMs), each with its own running ``stats``; the others score with the
    recipe's LMs, whose costs their backends count."""
    if isinstance(verifier, EnsembleVerifier):
        return [m for member in verifier.members for m in own_models(member)]
    return [verifier] if isinstance(verifier, PRMVerifier) else []
