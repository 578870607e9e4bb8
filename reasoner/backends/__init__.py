"""LM backends behind one protocol (``reasoner.core.lm.LM``). ``load_lm`` builds one from a recipe's model spec.

Backends are loaded by name on first use: each pulls a heavy library (torch and transformers, vLLM, an HTTP
client pool), and a process uses one or two of them.
"""

from __future__ import annotations

import importlib

from ..core.lm import LM, Generation, Output, SamplingParams
from .sources import resolve_path

BACKENDS = {
    "transformers": "reasoner.backends.transformers:TransformersLM",
    "vllm": "reasoner.backends.vllm:VllmLM",
    "openai": "reasoner.backends.openai:OpenAILM",
}


def backend_class(name: str) -> type:
    """The class of backend ``name``, its module imported now."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_lm(backend: str, path: str, role: str, seed: int = 0, gguf_file: str | None = None, **options) -> LM:
    """Build the backend ``backend`` for the model at ``path`` (``gguf_file``: a GGUF in that folder), its calls'
    costs booked under ``role``."""
    if backend in ("vllm", "openai") and options.pop("token_speculation", None) is not None:
        # our drafters need the model's logits and KV cache in this process; an engine speculates on its own
        raise ValueError(
            "token_speculation runs in the transformers backend; for vLLM put speculative_config in "
            f"models.{role}.engine_args"
            + (
                " (backend: openai: start the server with vllm serve --speculative-config)"
                if backend == "openai"
                else ""
            )
            + f", or set models.{role}.backend: transformers"
        )
    cls = backend_class(backend)
    if backend == "openai":  # the server holds the weights: the path is the served model's name
        if gguf_file is not None:
            raise ValueError("gguf_file is for the transformers backend: a server loads its own weights")
        return cls(path, role=role, seed=seed, **options)
    resolved = resolve_path(path, gguf_file)
    if backend == "vllm":
        return cls(resolved, role=role, seed=seed, **options)
    try:
        return cls(resolved, role=role, seed=seed, **options)
    except OSError as e:
        raise FileNotFoundError(f"could not load model {path!r}: {e}".splitlines()[0]) from e


__all__ = ["BACKENDS", "LM", "Generation", "Output", "SamplingParams", "backend_class", "load_lm", "resolve_path"]
