"""Problem suites. ``toy``: generated arithmetic chains from a fixed seed and difficulty."""
from __future__ import annotations

from reasoner.recipe import SuiteConfig
from reasoner.types import Problem

SUITES = ("toy",)


def load_suite(config: SuiteConfig) -> list[Problem]:
    if config.name == "toy":
        from reasoner.toy import generate_problems

        return [
            Problem(p.question, answer=str(p.answer), id=f"toy-{config.seed}-{i}", meta={"ops": len(p.operations)})
            for i, p in enumerate(generate_problems(config.size, seed=config.seed, difficulty=config.difficulty))
        ]
    raise ValueError(f"unknown suite {config.name!r}: use one of {', '.join(SUITES)}")
