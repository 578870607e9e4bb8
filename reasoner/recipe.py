"""Recipes: everything a run needs, read from YAML with dotted overrides, validated with clear errors.

    reasoner eval --recipe recipes/toy-bon.yaml --set search.n=16 --set sampling.temperature=0.8

A bad recipe raises ``RecipeError`` naming the field, what was given and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

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
    backend: Literal["transformers", "vllm", "openai"] = "transformers"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = "auto"
    max_batch_size: int = Field(64, ge=1, description="rows decoded together")
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vllm: keyword arguments for vllm.LLM (gpu_memory_utilization, tensor_parallel_size, speculative_config, ...)",
    )
    base_url: list[str] = Field(
        default_factory=list,
        description="openai: server URLs (http://host:8000/v1); with several, requests spread over them",
    )
    prefix_cache_tokens: int = Field(
        32768,
        ge=0,
        description="transformers: capacity in tokens of the prefix KV cache shared by calls (0: off); holds "
        "kv_bytes_per_token (2 x layers x kv heads x head dim x dtype bytes) per token",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_url(cls, data):
        if isinstance(data, dict) and isinstance(data.get("base_url"), str):
            data = {**data, "base_url": [u.strip() for u in data["base_url"].split(",") if u.strip()]}
        return data

    @model_validator(mode="after")
    def _backend_options(self):
        if self.engine_args and self.backend != "vllm":
            raise ValueError(
                f"engine_args are vLLM's engine arguments: set backend: vllm (got backend: {self.backend})"
            )
        if (self.backend == "openai") != bool(self.base_url):
            raise ValueError(
                "backend: openai needs base_url (a server URL or a list), and base_url is only for backend: openai"
            )
        return self

    def backend_options(self) -> dict:
        """The keyword arguments ``load_lm`` passes on to this backend only."""
        return {
            "vllm": {"engine_args": self.engine_args},
            "openai": {"base_url": self.base_url},
            "transformers": {"prefix_cache_tokens": self.prefix_cache_tokens},
        }.get(self.backend, {})


class Models(Section):
    target: ModelConfig | None = ModelConfig(path="toy:target")
    draft: ModelConfig | None = None
    verifier: ModelConfig | None = None


class Sampling(Section):
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_step_tokens: int = Field(256, ge=1)


class SearchConfig(Section):
    method: Literal["cot", "best_of_n", "beam", "dvts", "mcts", "astar", "rebase", "ets", "fetch", "rethink_mcts"] = (
        "cot"
    )
    n: int = Field(
        1,
        ge=1,
        description="trajectories per problem (mcts: iterations; astar: finished candidates; rebase/ets: width)",
    )
    vote: Literal["majority", "weighted", "best"] = "majority"
    policy: Literal["target", "draft"] = Field("target", description="the model role that writes the steps")
    # tree searches (search/): the knobs each method reads; the others ignore them
    width: int = Field(
        4,
        ge=1,
        description="beam/dvts/fetch: children per kept beam (n/width beams kept); mcts/astar: children per expansion",
    )
    filter_duplicates: bool = Field(False, description="beam/fetch: drop candidates whose whole text repeats another's")
    lookahead: int = Field(
        0, ge=0, description="beam/fetch: rank each candidate by the score of a rollout this many steps further"
    )
    rollout: Literal["sample", "greedy"] = Field(
        "sample", description="mcts: one sampled step at a time, or follow the best-scored of width children"
    )
    select: Literal["vote", "value", "visits"] = Field(
        "vote", description="mcts: vote over all finished trajectories, or follow max mean value / max visits"
    )
    puct_base: float = Field(
        19652.0, gt=0, description="mcts: PUCT c_base (OpenR); rethink_mcts: var_p_uct's ucb_base (RethinkMCTS: 10)"
    )
    puct_init: float = Field(
        1.25, ge=0, description="mcts: PUCT c_init (OpenR); rethink_mcts: var_p_uct's ucb_constant (RethinkMCTS: 4)"
    )
    root_noise: bool = Field(False, description="mcts: Dirichlet noise (alpha 0.3, weight 0.25) on the root's priors")
    beta: float = Field(0.1, ge=0, description="astar: weight of the path's mean negative log-likelihood in g")
    max_expansions: int = Field(64, ge=1, description="astar: node expansions per problem at most")
    temperature: float = Field(0.2, gt=0, description="rebase/ets: softmax temperature of the width allocation")
    lambda_c: float = Field(1.0, ge=0, description="ets: weight of the retained KV cost")
    lambda_s: float = Field(1.5, ge=0, description="ets: weight of semantic coverage")
    cluster_distance: float = Field(0.05, ge=0, description="ets: cosine distance that cuts the step clusters")
    merge: bool = Field(False, description="beam/mcts: merge equivalent sibling states (FETCH); fetch always merges")
    merge_distance: float = Field(
        0.15, ge=0, description="fetch / merge: cosine distance under which sibling steps merge"
    )
    max_think_times: int = Field(
        2,
        ge=0,
        description="rethink_mcts: rethinks (regenerate a thought, roll out again) after a rollout fails the public tests",
    )
    rethink_pick: Literal["least_likely", "deepest"] = Field(
        "least_likely",
        description="rethink_mcts: the thought to regenerate: the one with the least likely token, or the deepest",
    )
    rethink_prompt: str | None = Field(
        None,
        description="rethink_mcts: for models that read feedback, the problem text while a thought is regenerated, with {problem} and {feedback}",
    )
    stop_on_pass: bool = Field(
        True, description="rethink_mcts: stop a problem's search once a program passes every public test"
    )


class VerifierConfig(Section):
    type: Literal["none", "likelihood", "prm", "judge", "ensemble", "tests"] = Field(
        "none", description="tests: the public-test pass rate of a finished program (verifiers/execution.py)"
    )
    model: Literal["target", "draft", "verifier"] = Field("target", description="the model role that scores")
    reduce: Literal["mean", "min"] = "mean"
    aggregate: Literal["last", "min", "prod", "mean"] = "min"
    family: Literal["auto", "qwen", "skywork", "math-shepherd", "rlhflow"] = Field(
        "auto", description="prm: the PRM's input format (auto: from its name)"
    )
    step_token: str | None = Field(
        None, description="prm: the step separator (default: the family's; toy:prm uses the toy delimiter)"
    )
    judge_score: Literal["expected", "greedy"] = Field(
        "expected", description="judge: the expected digit or the most likely one, over 9"
    )
    members: list[VerifierConfig] = Field(
        default_factory=list, description="ensemble: the verifiers whose step scores are averaged"
    )

    @model_validator(mode="before")
    @classmethod
    def _tests_score_last(cls, data):
        """``tests`` scores only the finished program (thoughts 0): it aggregates with ``last`` unless told otherwise."""
        if isinstance(data, dict) and data.get("type") == "tests" and "aggregate" not in data:
            data = {**data, "aggregate": "last"}
        return data

    @model_validator(mode="after")
    def _tests_aggregate(self):
        if self.type == "tests" and self.aggregate != "last":
            raise ValueError(
                f"verifier.type=tests scores only the finished program (thoughts score 0): use verifier.aggregate=last, not {self.aggregate}"
            )
        return self


class StepSpeculation(Section):
    """Step-level speculation: the draft writes each step, the target only judges it and rewrites rejected ones."""

    acceptor: Literal["judge", "prm", "likelihood", "router"] = Field(
        "judge",
        description="judge: SpecReason's 0-9 target judge; prm: the recipe's verifier (RSD); likelihood: the target's probability of the step; router: Arbitrage's learned router",
    )
    threshold: float | None = Field(
        None,
        description="accept at or above (router: escalate at or above); default per acceptor: judge 7, prm 0.7, likelihood 0.5, router 0.5",
    )
    judge_score: Literal["greedy", "expected"] = Field(
        "expected", description="judge: the argmax digit or the expected digit"
    )
    reduce: Literal["mean", "min"] = Field(
        "min", description="likelihood: the step's mean or weakest token probability"
    )
    router: str | None = Field(None, description="router: the file `reasoner router train` wrote")
    first_n_target_steps: int = Field(0, ge=0, description="the target writes the first n steps itself")


class TokenSpeculation(Section):
    """Token-level speculative decoding inside the backend: drafted token trees verified by the generating model,
    losslessly (greedy output identical, sampled output identically distributed). See ``reasoner/specdec``."""

    method: Literal["draft_model", "prompt_lookup", "ngram_pool", "suffix", "recycling", "goose"] = Field(
        description="draft_model: a smaller model; prompt_lookup: n-gram match in prompt + output; ngram_pool: n-grams with the "
        "target's own probabilities, shared by all rows (STAND); suffix: suffix trees over this and earlier outputs (SuffixDecoding); "
        "recycling: the target's top-k successor table (Token Recycling); goose: a context-match spine plus table branches"
    )
    draft: str | None = Field(None, description="draft_model: the draft model's path (default: models.draft)")
    tree: Literal["chain", "dynamic"] = Field(
        "chain", description="draft_model: a chain, or a tree grown best-first by draft probability"
    )
    num_tokens: int = Field(6, ge=1, le=64, description="longest draft (chain length, tree depth, spine length)")
    nodes: int = Field(24, ge=1, le=256, description="tree size budget in draft tokens per row and forward")
    top_k: int = Field(4, ge=1, le=32, description="most children per node (and successors kept per token)")
    ngram: int = Field(3, ge=1, le=8, description="longest n-gram context matched (prompt_lookup, ngram_pool, goose)")
    min_score: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="draft_model, suffix: stop growing a branch below this cumulative draft probability (default: draft_model 0, suffix 0.1)",
    )
    shared: bool = Field(
        True,
        description="ngram_pool: one pool for all rows and calls (false: one per row); suffix and recycling always share theirs",
    )
    cache_size: int = Field(1000, ge=0, description="suffix: earlier outputs kept in the global suffix tree")
    adaptive: bool = Field(
        False,
        description="size trees per step by measured goodput (SmartSpec), down to no speculation when it does not pay",
    )
    seed: int = 0


class AnswerConfig(Section):
    kind: Literal["math"] = "math"


class Budget(Section):
    max_steps: int = Field(32, ge=1, description="steps per trajectory")
    max_tokens: int = Field(4096, ge=1, description="generated tokens per trajectory")
    stop_on_repeat: bool = Field(
        False, description="end a trajectory whose last two steps are equal (SpecReason's guard)"
    )


class SuiteConfig(Section):
    name: str = Field(
        "toy",
        description="toy | toy-code | math500 | gsm8k | aime24 | aime25 | amc23 | humaneval | mbpp (evals/suites.py)",
    )
    seed: int = Field(1234, description="toy suites: the generator's seed")
    difficulty: str = Field("medium", description="toy: easy | medium | hard | ops=2-6,digits=2")
    size: int = Field(500, ge=1, description="toy suites: how many problems")
    data: str | None = Field(
        None, description="a local JSONL file with the suite's fields (else the package or the hub)"
    )

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
    step_speculation: StepSpeculation | None = None
    token_speculation: TokenSpeculation | None = None
    suite: SuiteConfig = SuiteConfig()
    seed: int = 0

    @model_validator(mode="after")
    def _consistent(self):
        if self.search.method == "cot" and self.search.n != 1:
            raise ValueError(
                f"search.n={self.search.n} with search.method=cot: chain of thought samples once; use search.method=best_of_n"
            )
        if getattr(self.models, self.search.policy) is None:
            raise ValueError(
                f"search.policy={self.search.policy} but models.{self.search.policy} is not set: add it or pick another policy"
            )
        if self.step_speculation is not None:
            spec = self.step_speculation
            for role in ("draft", "target"):
                if getattr(self.models, role) is None:
                    raise ValueError(
                        f"step_speculation needs models.{role}: the draft writes steps, the target judges them"
                    )
            if self.search.policy != "draft":
                raise ValueError("step_speculation drafts every step with models.draft: set search.policy=draft")
            if spec.acceptor == "prm" and self.verifier.type == "none":
                raise ValueError(
                    "step_speculation.acceptor=prm scores steps with the recipe's verifier: set verifier.type"
                )
            if spec.acceptor == "router" and not spec.router:
                raise ValueError(
                    "step_speculation.acceptor=router needs step_speculation.router: the file `reasoner router train` wrote"
                )
        if (
            self.token_speculation is not None
            and self.token_speculation.method == "draft_model"
            and not (self.token_speculation.draft or self.models.draft)
        ):
            raise ValueError(
                "token_speculation.method=draft_model needs a draft model: set models.draft or token_speculation.draft"
            )
        for v in [self.verifier, *self.verifier.members]:
            if v.type not in ("none", "ensemble", "tests") and getattr(self.models, v.model) is None:
                raise ValueError(f"verifier.model={v.model} but models.{v.model} is not set")
        if (self.verifier.type == "ensemble") != bool(self.verifier.members):
            raise ValueError("verifier.members is for verifier.type=ensemble (give it two or more verifiers)")
        if self.search.method == "rethink_mcts" and self.verifier.type != "tests":
            raise ValueError(
                "search.method=rethink_mcts rethinks programs that fail their public tests: set verifier.type=tests"
            )
        if self.search.method not in ("cot", "best_of_n") and self.verifier.type == "none":
            raise ValueError(
                f"search.method={self.search.method} ranks steps with a verifier: set verifier.type (prm, judge, likelihood or ensemble)"
            )
        if self.search.vote in ("weighted", "best") and self.verifier.type == "none":
            raise ValueError(
                f"search.vote={self.search.vote} needs scores: set verifier.type (e.g. likelihood) or use vote=majority"
            )
        return self

    # -- loading -------------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls, source: str | Path | dict | Recipe | None = None, overrides: list[str] | dict | None = None
    ) -> Recipe:
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
        pairs = (
            _flatten(overrides).items()
            if isinstance(overrides, dict)
            else [_split_override(o) for o in overrides or []]
        )
        for key, value in pairs:
            _set_dotted(data, key, value)
        return cls.validated(data)

    @classmethod
    def validated(cls, data: dict) -> Recipe:
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise RecipeError(format_errors(e)) from None

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


def find_recipe(name: str) -> Path:
    path = Path(name).expanduser()
    candidates = (
        [path]
        if path.suffix in (".yaml", ".yml")
        else [path, REPO_RECIPES / f"{name}.yaml", Path("recipes") / f"{name}.yaml"]
    )
    for p in candidates:
        if p.is_file():
            return p
    known = sorted(p.stem for p in REPO_RECIPES.glob("*.yaml")) if REPO_RECIPES.is_dir() else []
    raise RecipeError(
        f"recipe {name!r} not found: give a path to a YAML file" + (f" or one of {', '.join(known)}" if known else "")
    )


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
        raise RecipeError(
            f"recipe {path} must be a mapping of sections (models, search, ...), got {type(data).__name__}"
        )
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
            lines.append(
                f"unknown recipe field '{field}'" + (f": allowed here are {', '.join(allowed)}" if allowed else "")
            )
        elif e["type"] == "value_error":
            lines.append(f"recipe{' field ' + repr(field) if loc else ''}: {e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"recipe field '{field}': {e['msg']} (got {e.get('input')!r})")
    return "; ".join(lines)
