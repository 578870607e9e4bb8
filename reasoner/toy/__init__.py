"""The embedded toy world: step-wise arithmetic problems and small trained models shipped in the package,
so that everything real (loading, generation, speculation, search, eval) runs on a laptop CPU."""

from __future__ import annotations

from pathlib import Path

from .problems import (
    DEFAULT_DIFFICULTY,
    Difficulty,
    ToyProblem,
    evaluate_expression,
    generate_problem,
    generate_problems,
)

MODELS_DIR = Path(__file__).parent / "models"
# code: the toy code task's model (the task: reasoner/toy/code.py); prm: the toy PRM (trained by evals/toy/prm.py)
MODELS = ("target", "draft", "code", "prm")


def model_path(name: str) -> Path:
    """Folder of the shipped toy model ``name`` (``target``, ``draft``, ``code`` or ``prm``), loadable with
    ``from_pretrained``."""
    if name not in MODELS:
        raise ValueError(f"unknown toy model {name!r}: use one of {', '.join('toy:' + m for m in MODELS)}")
    path = MODELS_DIR / name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"toy model {name!r} is missing from {path}: reinstall the package or rebuild it with `reasoner toy train`"
        )
    return path


__all__ = [
    "Difficulty",
    "DEFAULT_DIFFICULTY",
    "ToyProblem",
    "generate_problem",
    "generate_problems",
    "evaluate_expression",
    "model_path",
    "MODELS",
]
