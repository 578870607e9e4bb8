"""LM backends behind one protocol. ``load_lm`` builds one from a recipe's model spec."""

from __future__ import annotations

from pathlib import Path

from ..stats import Stats
from .base import LM, Generation, Prompt, SamplingParams

BACKENDS = ("transformers", "vllm", "openai")


def resolve_path(path: str) -> str:
    """``toy:NAME`` names a shipped toy model; a local folder must exist; anything else is a hub id."""
    if path.startswith("toy:"):
        from ..toy import model_path

        return str(model_path(path[4:]))
    local = Path(path).expanduser()
    if local.exists() or path.startswith((".", "/", "~")) or path.count("/") > 1:
        if not (local / "config.json").is_file():
            raise FileNotFoundError(
                f"model path {path!r} has no config.json: point it at a transformers model folder, a hub id, or toy:target / toy:draft"
            )
        return str(local)
    return path


def load_lm(backend: str, path: str, role: str, stats: Stats | None = None, seed: int = 0, **options) -> LM:
    """Build the backend ``backend`` for the model at ``path``, recording its costs under ``role``."""
    if backend in ("vllm", "openai") and options.pop("token_speculation", None) is not None:
        # our drafters need the model's logits and KV cache in this process; an engine speculates on its own
        raise ValueError(
            f"token_speculation runs in the transformers backend; for vLLM put speculative_config in models.{role}.engine_args"
            + (
                " (backend: openai: start the server with vllm serve --speculative-config)"
                if backend == "openai"
                else ""
            )
            + f", or set models.{role}.backend: transformers"
        )
    if backend == "transformers":
        from .transformers import TransformersLM

        resolved = resolve_path(path)
        try:
            return TransformersLM(resolved, role=role, stats=stats, seed=seed, **options)
        except OSError as e:
            raise FileNotFoundError(f"could not load model {path!r}: {e}".splitlines()[0]) from e
    if backend == "vllm":
        from .vllm import VllmLM

        return VllmLM(resolve_path(path), role=role, stats=stats, seed=seed, **options)
    if backend == "openai":
        from .openai import OpenAILM

        return OpenAILM(path, role=role, stats=stats, seed=seed, **options)
    raise ValueError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")


__all__ = ["LM", "Generation", "Prompt", "SamplingParams", "load_lm", "resolve_path", "BACKENDS"]
