"""Step verifiers: likelihood, PRM families, LLM judge, ensembles; ``build`` makes one from a recipe."""

from __future__ import annotations

LM_VERIFIERS = ("likelihood", "judge")  # verifier types that score with one of the recipe's LMs


def lm_roles(config) -> set[str]:
    """The model roles a verifier config scores with through an LM backend (a PRM loads its own model)."""
    if config.type == "ensemble":
        return set().union(*(lm_roles(m) for m in config.members))
    return {config.model} if config.type in LM_VERIFIERS else set()


def build(config, models: dict, template, model_specs):
    """The verifier a recipe's ``verifier`` section describes (``None`` for ``type: none``). ``models`` are
    the loaded LMs by role; ``model_specs`` the recipe's ``models`` section (a PRM is loaded from its spec)."""
    if config.type == "none":
        return None
    if config.type == "likelihood":
        from .likelihood import LikelihoodVerifier

        return LikelihoodVerifier(models[config.model], template, config.reduce)
    if config.type == "judge":
        from .judge import JudgeVerifier

        return JudgeVerifier(models[config.model], template, config.judge_score)
    if config.type == "prm":
        from .prm import PRMVerifier

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
        from .execution import ExecutionVerifier

        return ExecutionVerifier()
    if config.type == "ensemble":
        from .ensemble import EnsembleVerifier

        return EnsembleVerifier([build(m, models, template, model_specs) for m in config.members])
    raise ValueError(f"unknown verifier type {config.type!r}")


def costed(verifier) -> list:
    """The parts of a verifier that keep their own ``stats`` (PRMs), so a run can point them at its Stats."""
    if verifier is None:
        return []
    if hasattr(verifier, "members"):
        return [p for m in verifier.members for p in costed(m)]
    return [verifier] if hasattr(verifier, "stats") and not hasattr(verifier, "lm") else []
