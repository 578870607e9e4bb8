"""Recipes: everything a run needs, read from YAML with dotted overrides, validated with clear errors.

    reasoner eval --recipe recipes/toy-bon.yaml --set search.n=16 --set sampling.temperature=0.8

A bad recipe raises ``RecipeError`` naming the field, what was given and what is allowed.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROLES = ("target", "draft", "verifier")
REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


class RecipeError(ValueError):
    """A recipe (file, field or override) a user wrote is wrong; the message says how to fix it."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    path: str = Field(description="toy:target, toy:draft, a local transformers folder or a hub id")
    backend: Literal["transformers"] = "transformers"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    max_batch_size: int = Field(64, ge=1, description="rows decoded together")


class Models(Section):
    target: Optional[ModelConfig] = ModelConfig(path="toy:target")
    draft: Optional[ModelConfig] = None
    verifier: Optional[ModelConfig] = None


class Sampling(Section):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_step_tokens: int = Field(256, ge=1)


class SearchConfig(Section):
    method: Literal["cot", "best_of_n"] = "cot"
    n: int = Field(1, ge=1, description="trajectories per problem")
    vote: Literal["majority", "weighted", "best"] = "majority"
    policy: Literal["target", "draft"] = Field("target", description="the model role that writes the steps")


class VerifierConfig(Section):
    type: Literal["none", "likelihood"] = "none"
    model: Literal["target", "draft", "verifier"] = Field("target", description="the model role that scores")
    reduce: Literal["mean", "min"] = "mean"
    aggregate: Literal["last", "min", "prod", "mean"] = "min"


class AnswerConfig(Section):
    kind: Literal["math"] = "math"


class Budget(Section):
    max_steps: int = Field(32, ge=1, description="steps per trajectory")
    max_tokens: int = Field(4096, ge=1, description="generated tokens per trajectory")


class SuiteConfig(Section):
    name: str = "toy"
    seed: int = 1234
    difficulty: str = "medium"
    size: int = Field(500, ge=1)

    @model_validator(mode="after")
    def _check(self):
        from .toy.problems import Difficulty

        try:
            Difficulty.parse(self.difficulty)
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self


class Recipe(Section):
    name: str = "toy-cot"
    description: str = ""
    models: Models = Models()
    sampling: Sampling = Sampling()
    search: SearchConfig = SearchConfig()
    verifier: VerifierConfig = VerifierConfig()
    prompt: str = Field("toy", description="a template in prompts/templates or a path to one")
    answer: AnswerConfig = AnswerConfig()
    budget: Budget = Budget()
    suite: SuiteConfig = SuiteConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self):
        if self.search.method == "cot" and self.search.n != 1:
            raise ValueError(f"search.n={self.search.n} with search.method=cot: chain of thought samples once; use search.method=best_of_n")
        if getattr(self.models, self.search.policy) is None:
            raise ValueError(f"search.policy={self.search.policy} but models.{self.search.policy} is not set: add it or pick another policy")
        if self.verifier.type != "none" and getattr(self.models, self.verifier.model) is None:
            raise ValueError(f"verifier.model={self.verifier.model} but models.{self.verifier.model} is not set")
        if self.search.vote in ("weighted", "best") and self.verifier.type == "none":
            raise ValueError(f"search.vote={self.search.vote} needs scores: set verifier.type (e.g. likelihood) or use vote=majority")
        return self

    # -- loading -------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, source: "str | Path | dict | Recipe | None" = None, overrides: "list[str] | dict | None" = None) -> "Recipe":
        """A recipe from a YAML path or a name in ``recipes/`` (``None``: the defaults), with overrides applied:
        a list of ``dotted.key=value`` strings or a (nested or dotted) dict."""
        if isinstance(source, Recipe):
            data = source.model_dump(exclude_unset=True)
        elif isinstance(source, dict):
            data = copy.deepcopy(source)
        elif source is None:
            data = {}
        else:
            data = _read_yaml(find_recipe(str(source)))
        pairs = _flatten(overrides).items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
        for key, value in pairs:
            _set_dotted(data, key, value)
        return cls.validated(data)

    @classmethod
    def validated(cls, data: dict) -> "Recipe":
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise RecipeError(format_errors(e)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


def find_recipe(name: str) -> Path:
    path = Path(name).expanduser()
    candidates = [path] if path.suffix in (".yaml", ".yml") else [path, REPO_RECIPES / f"{name}.yaml", Path("recipes") / f"{name}.yaml"]
    for p in candidates:
        if p.is_file():
            return p
    known = sorted(p.stem for p in REPO_RECIPES.glob("*.yaml")) if REPO_RECIPES.is_dir() else []
    raise RecipeError(f"recipe {name!r} not found: give a path to a YAML file" + (f" or one of {', '.join(known)}" if known else ""))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {path} must be a mapping of sections (models, search, ...), got {type(data).__name__}")
    return data


def _split_override(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {item!r} is not key=value: write e.g. --set search.n=8")
    return key.strip(), _parse_value(value)


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise RecipeError(f"override {key}: {'.'.join(parts[: i + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def _allowed_fields(loc: tuple) -> list[str]:
    model: Any = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", None)
        model = next((a for a in (args or (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


def format_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        loc = tuple(p for p in e["loc"] if not isinstance(p, int))
        field = ".".join(str(p) for p in loc) or "recipe"
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(loc)
            lines.append(f"unknown recipe field '{field}'" + (f": allowed here are {', '.join(allowed)}" if allowed else ""))
        elif e["type"] == "value_error":
            lines.append(f"recipe{' field ' + repr(field) if loc else ''}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"recipe field '{field}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)
