"""Recipes: everything a run needs, read from YAML with dotted overrides, validated with clear errors.

    reasoner eval --recipe recipes/toy-bon.yaml --set search.n=16 --set sampling.temperature=0.8

A bad recipe raises ``RecipeError`` naming the field, what was given and what is allowed.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from search.config import BY_METHOD, SEARCHES, TREE_SEARCHES, CoTConfig, SearchConfig, knob_owners

from .core.config import SEED_WHY, WHY, Quantize, Section, at_most
from .specdec.config import TokenSpeculation
from .toy.problems import Difficulty

ROLES = ("target", "draft", "verifier")
MAX_STEPS = 4096  # steps per trajectory
STEPS_WHY = "a trajectory of more steps holds more tokens than any model's context"
CONTEXT_WHY = "no model's context holds more tokens"
REPO_RECIPES = Path(__file__).resolve().parent.parent / "recipes"


class RecipeError(ValueError):
    """A recipe (file, field or override) a user wrote is wrong; the message says how to fix it."""


class ModelConfig(Section):
    """One model: where its weights are and which backend runs it."""

    path: str = Field(
        description="toy:target, toy:draft, a model of `reasoner models list` (installed with `reasoner models "
        "install NAME`), a .gguf file, a local transformers folder or a hub id"
    )
    gguf_file: str | None = Field(
        None,
        description="transformers: a GGUF file in the folder `path`, dequantized once into a cache of safetensors "
        "keyed by its sha256 (as `path: folder/file.gguf`)",
    )
    backend: Literal["transformers", "vllm", "openai"] = Field(
        "transformers", description="transformers (this process), vllm (an engine in this process) or openai (servers)"
    )
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="weights and compute dtype (auto: bfloat16 on a GPU, float32 on a CPU)"
    )
    device: str = Field("auto", description="transformers: cuda, cuda:1, cpu, ... (auto: a GPU if there is one)")
    max_batch_size: int = Field(
        64,
        ge=1,
        **at_most(4096, "rows decoded together share one KV cache: past it the cache outgrows any GPU"),
        description="rows decoded together",
    )
    engine_args: dict[str, Any] = Field(
        default_factory=dict,
        description="vllm: keyword arguments for vllm.LLM (gpu_memory_utilization, tensor_parallel_size, "
        "speculative_config, ...)",
    )
    base_url: list[str] = Field(
        default_factory=list,
        description="openai: server URLs (http://host:8000/v1); with several, requests spread over them",
    )
    context_length: int | None = Field(
        None,
        ge=1,
        description="openai: the served model's context in tokens, prompts checked against it (default: the "
        "max_model_len the server's /v1/models reports; unknown: prompts go unchecked)",
    )
    quantize: Quantize = Field(
        "none",
        description="transformers on a CPU: every linear layer's weights stored as int8 (activations quantized on the "
        "fly; fastest, lossy: tokens may differ from float32) or fp16 (float32's next tokens at 1.9-2.6x its speed on "
        "the real pair); torch dynamic quantization, see docs/benchmarks.md for speed and fidelity",
    )
    prefix_cache_tokens: int = Field(
        32768,
        ge=0,
        **at_most(
            1 << 22, "the cache keeps kv_bytes_per_token in memory per token: 4M tokens of a 7B model are 224 GiB"
        ),
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
        if self.quantize != "none" and self.backend != "transformers":
            raise ValueError(f"quantize is a transformers backend option (got backend: {self.backend})")
        if self.gguf_file is not None and self.backend != "transformers":
            raise ValueError(f"gguf_file is read by the transformers backend (got backend: {self.backend})")
        if (self.backend == "openai") != bool(self.base_url):
            raise ValueError(
                "backend: openai needs base_url (a server URL or a list), and base_url is only for backend: openai"
            )
        if self.context_length is not None and self.backend != "openai":
            raise ValueError(
                "context_length is for backend: openai (a server's model); the transformers and vllm backends read "
                "it from the model (vllm: cap it with engine_args.max_model_len)"
            )
        return self

    def backend_options(self) -> dict:
        """The keyword arguments ``load_lm`` passes on to this backend only."""
        return {
            "vllm": {"engine_args": self.engine_args},
            "openai": {
                "base_url": self.base_url,
                **({"context_length": self.context_length} if self.context_length is not None else {}),
            },
            "transformers": {"prefix_cache_tokens": self.prefix_cache_tokens, "quantize": self.quantize},
        }.get(self.backend, {})


class Models(Section):
    """The models by role; a recipe loads only the roles its search, verifier and speculation use."""

    target: ModelConfig | None = Field(
        ModelConfig(path="toy:target"), description="the large model: writes, judges or rewrites steps"
    )
    draft: ModelConfig | None = Field(None, description="the small model: drafts steps (step speculation) or tokens")
    verifier: ModelConfig | None = Field(None, description="a model only for scoring (a PRM)")


class Sampling(Section):
    """How each step is sampled."""

    temperature: float = Field(
        0.0, ge=0.0, **at_most(100.0, "past it every token is about as likely as any other"), description="0: greedy"
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling's probability mass")
    max_step_tokens: int = Field(
        256, ge=1, **at_most(131072, CONTEXT_WHY), description="tokens one step may take at most"
    )
    tpot_ms: float | None = Field(
        None,
        gt=0.0,
        description="a TPOT SLO (ms per generated token) that token_speculation.slo_trees sizes each row's tree to "
        "meet; reasoner serve sets it from a request's slo",
    )


class VerifierConfig(Section):
    """What scores steps (searches rank by it, votes weigh by it)."""

    type: Literal["none", "likelihood", "prm", "implicit_prm", "judge", "ensemble", "tests"] = Field(
        "none",
        description="tests: the public-test pass rate of a finished program (verifiers/execution.py); implicit_prm: "
        "a model trained by `reasoner prm train --objective implicit` (verifier.model) against its reference",
    )
    model: Literal["target", "draft", "verifier"] = Field("target", description="the model role that scores")
    reduce: Literal["mean", "min"] = Field(
        "mean", description="likelihood: a step's score is its mean or its weakest token probability"
    )
    aggregate: Literal["last", "min", "prod", "mean"] = Field(
        "min", description="how a trajectory's step scores make its score"
    )
    family: Literal["auto", "qwen", "skywork", "math-shepherd", "rlhflow"] = Field(
        "auto", description="prm: the PRM's input format (auto: from its name)"
    )
    step_token: str | None = Field(
        None, description="prm: the step separator (default: the family's; toy:prm uses the toy delimiter)"
    )
    judge_score: Literal["expected", "greedy"] = Field(
        "expected", description="judge: the expected digit or the most likely one, over 9"
    )
    reference: Literal["target", "draft", "verifier"] = Field(
        "target", description="implicit_prm: the model role that is pi_ref (the model pi_theta was trained from)"
    )
    beta: float | None = Field(
        None,
        gt=0,
        le=100,
        description="implicit_prm: the reward's scale beta (default: the one the model was trained with, "
        "from its config)",
    )
    reward: Literal["value", "step"] = Field(
        "value",
        description="implicit_prm: a step's score is sigmoid(q_t), the path's log-ratio up to it (value), or "
        "sigmoid(q_t - q_t-1), its own (step)",
    )
    members: list[VerifierConfig] = Field(
        default_factory=list, description="ensemble: the verifiers whose step scores are averaged"
    )

    @model_validator(mode="before")
    @classmethod
    def _tests_score_last(cls, data):
        """``tests`` scores only the finished program (thoughts 0): it aggregates with ``last`` unless told
        otherwise."""
        if isinstance(data, dict) and data.get("type") == "tests" and "aggregate" not in data:
            data = {**data, "aggregate": "last"}
        return data

    @model_validator(mode="after")
    def _tests_aggregate(self):
        if self.type == "tests" and self.aggregate != "last":
            raise ValueError(
                "verifier.type=tests scores only the finished program (thoughts score 0): use "
                f"verifier.aggregate=last, not {self.aggregate}"
            )
        return self


class StepSpeculation(Section):
    """Step-level speculation: the draft writes each step, the target only judges it and rewrites rejected ones."""

    acceptor: Literal["judge", "prm", "likelihood", "router", "target_router"] = Field(
        "judge",
        description="judge: SpecReason's 0-9 target judge; prm: the recipe's verifier (reward-guided speculation, "
        "RSD); likelihood: the target's probability of the step; router: Arbitrage's learned router, from the "
        "draft's side (hidden state, log-probs: no target forward on accepted steps); target_router: a learned "
        "router that also reads the target's log-probs of the step (a target prefill per step)",
    )
    threshold: float | None = Field(
        None,
        description="accept at or above (router, target_router: escalate at or above); default per acceptor: "
        "judge 7, prm 0.7, likelihood 0.5, router 0.5, target_router 0.5",
    )
    judge_score: Literal["greedy", "expected"] = Field(
        "expected", description="judge: the argmax digit or the expected digit"
    )
    reduce: Literal["mean", "min"] = Field(
        "min", description="likelihood: the step's mean or weakest token probability"
    )
    router: str | None = Field(
        None, description="router, target_router: the file `reasoner router train --acceptor ...` wrote"
    )
    first_n_target_steps: int = Field(
        0, ge=0, **at_most(MAX_STEPS, STEPS_WHY), description="the target writes the first n steps itself"
    )
    think_rule: Literal["specreason", "target_answers"] = Field(
        "specreason",
        description="reasoning models' <think> block. specreason (SpecReason's code): every step is speculated; a "
        "trajectory ends at the first kept step containing boxed, Answer: or ANSWER:, and a kept step with </think> "
        "but no answer loses the tag (thinking goes on). target_answers: after a kept step with </think> the target "
        "writes the rest (the answer) with no draft and no judge",
    )


class SchedulerConfig(Section):
    """How the models are served: each by a worker that batches what every problem asks of it, continuously."""

    model_workers: Literal["auto", "thread", "process"] = Field(
        "auto",
        description="where each model's worker runs: a thread of this process, or a process of its own (transformers "
        "models); auto: processes on a CPU when two or more models compute at once, else threads",
    )
    lookahead_steps: int = Field(
        3,
        ge=0,
        **at_most(16, "steps written ahead are thrown away when a step is rejected"),
        description="steps a trajectory's row may write ahead of the search between its step calls (0: off); it "
        "keeps its place in the decode batch instead of leaving at every step (greedy steps)",
    )
    mix_scores: bool = Field(
        True,
        description="a score's rows (the likelihood acceptor's prefills) run in the decode forward of the model's "
        "running batch where padding the batch to them costs less than a forward of their own (transformers)",
    )


class AnswerConfig(Section):
    """How answers are read."""

    kind: Literal["math"] = Field("math", description="math: the last \\boxed{} answer, compared by math-verify")


class Budget(Section):
    """How long a trajectory may grow."""

    max_steps: int = Field(32, ge=1, **at_most(MAX_STEPS, STEPS_WHY), description="steps per trajectory")
    max_tokens: int = Field(4096, ge=1, **at_most(1 << 20, CONTEXT_WHY), description="generated tokens per trajectory")
    stop_on_repeat: bool = Field(
        False, description="end a trajectory whose last two steps are equal (SpecReason's guard)"
    )


class SuiteConfig(Section):
    """The problems ``reasoner eval`` runs."""

    name: str = Field(
        "toy",
        description="toy | toy-code | math500 | gsm8k | aime24 | aime25 | amc23 | humaneval | mbpp (evals/suites.py)",
    )
    seed: int = Field(1234, ge=0, **at_most(2**63 - 1, SEED_WHY), description="toy suites: the generator's seed")
    difficulty: str = Field("medium", description="toy: easy | medium | hard | ops=2-6,digits=2")
    size: int = Field(
        500,
        ge=1,
        **at_most(100_000, "the toy generator makes every problem before the run starts"),
        description="toy suites: how many problems",
    )
    data: str | None = Field(
        None, description="a local JSONL file with the suite's fields (else the package or the hub)"
    )

    @model_validator(mode="after")
    def _check(self):

        try:
            Difficulty.parse(self.difficulty)
        except ValueError as e:
            raise ValueError(str(e)) from None
        return self


RAY_ADDRESS = re.compile(r"(auto|local|(ray://)?[A-Za-z0-9_.\-\[\]:]+:[0-9]{1,5})")
VLLM_PLACEMENT = ("tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend")


class VLLMPlacement(Section):
    """vLLM's own parallelism inside one replica, for its models with backend: vllm (merged into their
    engine_args): the GPUs a replica's engine spans."""

    tensor_parallel_size: int = Field(
        1,
        ge=1,
        **at_most(64, "no node has more GPUs to split a layer over"),
        description="GPUs each layer is split over",
    )
    pipeline_parallel_size: int = Field(
        1,
        ge=1,
        **at_most(64, "stages past the model's layer count are empty"),
        description="GPUs (or nodes) the layers are staged over",
    )
    distributed_executor_backend: Literal["mp", "ray"] | None = Field(
        None,
        description="mp: the engine's workers are processes of the replica, on its GPUs (scale.num_gpus); ray: Ray "
        "tasks in a placement group of one GPU bundle per worker (may span nodes); default: vLLM's choice",
    )

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size

    def engine_args(self) -> dict:
        """What goes into each vllm model's engine_args."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ScaleConfig(Section):
    """Where `reasoner eval` solves: in this process (local), or on Ray: replicas (Ray actors, each with its own
    models) take problems from one queue. docs/scale.md."""

    engine: Literal["local", "ray"] = Field(
        "local", description="local: this machine (--workers); ray: replicas on a Ray cluster (reasoner eval --ray)"
    )
    address: str | None = Field(
        None,
        description="ray: the cluster to join: HOST:PORT of its head (`ray start --head` prints it), "
        "ray://HOST:10001 or auto; none: a Ray started here for the run",
    )
    replicas: int = Field(
        2, ge=1, **at_most(1024, "each replica loads its own models"), description="ray: actors, each a Reasoner"
    )
    num_cpus: float = Field(
        1.0, gt=0, **at_most(1024, "no node has more CPUs"), description="ray: CPUs each replica reserves"
    )
    num_gpus: float = Field(
        0.0,
        ge=0,
        **at_most(64, "no node has more GPUs"),
        description="ray: GPUs each replica reserves (a fraction shares one GPU between replicas)",
    )
    torch_threads: int = Field(
        0,
        ge=0,
        **at_most(1024, "no node has more CPUs"),
        description="ray: torch threads in each replica (0: num_cpus, at least 1)",
    )
    vllm: VLLMPlacement | None = Field(
        None, description="ray: tensor / pipeline parallelism of each replica's vLLM engine (backend: vllm models)"
    )

    @model_validator(mode="after")
    def _check(self):
        if self.address is not None and not RAY_ADDRESS.fullmatch(self.address):
            raise ValueError(
                f"scale.address {self.address!r} is not a Ray address: give HOST:PORT of the cluster's head "
                "(`ray start --head` prints it), ray://HOST:10001 or auto, or leave it out for a Ray started here"
            )
        v = self.vllm
        if v is not None and v.distributed_executor_backend != "ray" and v.world_size > 1:
            if self.num_gpus < v.world_size:
                raise ValueError(
                    f"scale.vllm: tensor_parallel_size x pipeline_parallel_size = {v.world_size} GPUs, run by the "
                    f"replica's own processes: set scale.num_gpus={v.world_size} (got {self.num_gpus:g}), or "
                    "scale.vllm.distributed_executor_backend=ray to place them as Ray tasks"
                )
        return self

    @property
    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus))


class Recipe(Section):
    """Everything a run needs."""

    name: str = Field("toy-cot", description="the recipe's name (results and reports show it)")
    description: str = Field("", description="what the recipe runs, for people")
    models: Models = Models()
    sampling: Sampling = Sampling()
    search: SearchConfig = CoTConfig()
    verifier: VerifierConfig = VerifierConfig()
    prompt: str = Field("toy", description="a template in prompts/templates or a path to one")
    answer: AnswerConfig = AnswerConfig()
    budget: Budget = Budget()
    step_speculation: StepSpeculation | None = None
    token_speculation: TokenSpeculation | None = None
    suite: SuiteConfig = SuiteConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    scale: ScaleConfig = ScaleConfig()
    seed: int = Field(
        0, ge=0, **at_most(2**63 - 1, SEED_WHY), description="seeds the models' samplers and the searches' randomness"
    )

    @model_validator(mode="before")
    @classmethod
    def _default_search(cls, data):
        """A search section without ``method`` is chain of thought's."""
        if isinstance(data, dict) and isinstance(data.get("search"), dict) and "method" not in data["search"]:
            data = {**data, "search": {"method": "cot", **data["search"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if getattr(self.models, self.search.policy) is None:
            raise ValueError(
                f"search.policy={self.search.policy} but models.{self.search.policy} is not set: add it or pick "
                "another policy"
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
            if spec.acceptor in ("router", "target_router") and not spec.router:
                raise ValueError(
                    f"step_speculation.acceptor={spec.acceptor} needs step_speculation.router: the file `reasoner "
                    f"router train --acceptor {spec.acceptor}` wrote"
                )
            if spec.acceptor == "router" and self.models.draft.backend != "transformers":
                raise ValueError(
                    "step_speculation.acceptor=router reads the draft's hidden states, which only the transformers "
                    f"backend gives (models.draft.backend is {self.models.draft.backend}): use "
                    "acceptor=target_router or a transformers draft"
                )
        if (
            self.token_speculation is not None
            and self.token_speculation.uses_draft_model
            and not (self.token_speculation.draft or self.models.draft)
        ):
            raise ValueError(
                f"token_speculation.method={self.token_speculation.method} needs a draft model: set models.draft or "
                "token_speculation.draft"
            )
        for v in [self.verifier, *self.verifier.members]:
            if v.type not in ("none", "ensemble", "tests") and getattr(self.models, v.model) is None:
                raise ValueError(f"verifier.model={v.model} but models.{v.model} is not set")
            if v.type == "implicit_prm" and getattr(self.models, v.reference) is None:
                raise ValueError(
                    f"verifier.reference={v.reference} but models.{v.reference} is not set: set it to the model the "
                    "implicit PRM was trained from"
                )
        if (self.verifier.type == "ensemble") != bool(self.verifier.members):
            raise ValueError("verifier.members is for verifier.type=ensemble (give it two or more verifiers)")
        methods = getattr(self.search, "methods", [self.search.method])  # auto: every search of its table
        if self.search.method == "auto" and len(methods) > 1 and self.sampling.temperature == 0:
            raise ValueError(
                "search.method=auto with sampling.temperature=0: greedy probes always agree, so only the last row of "
                "search.table would run; set sampling.temperature > 0 (e.g. 0.8) or give a table of one row"
            )
        if "rethink_mcts" in methods and self.verifier.type != "tests":
            raise ValueError(
                "search.method=rethink_mcts rethinks programs that fail their public tests: set verifier.type=tests"
            )
        tree = [m for m in methods if m in TREE_SEARCHES]
        if tree and self.verifier.type == "none":
            raise ValueError(
                f"search.method={tree[0]} ranks steps with a verifier: set verifier.type (prm, judge, "
                "likelihood or ensemble)"
            )
        if self.scale.vllm is not None:
            engines = [m for m in (self.models.target, self.models.draft, self.models.verifier) if m is not None]
            if not any(m.backend == "vllm" for m in engines):
                raise ValueError("scale.vllm places vLLM engines: it needs a model with backend: vllm")
            both = sorted({k for m in engines for k in m.engine_args if k in VLLM_PLACEMENT})
            if both:
                raise ValueError(
                    f"{', '.join(both)}: set in scale.vllm or in the models' engine_args, not both (scale.vllm "
                    "applies to every vllm model)"
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
        a list of ``dotted.key=value`` strings or a (nested or dotted) dict. An override of ``search.method`` keeps
        the recipe's knobs the new search shares (n, vote, policy, ...) and drops the old search's own."""
        origin = None
        if not isinstance(source, (str, Path, dict, Recipe, type(None))):
            raise TypeError(
                f"a recipe is a YAML path, a name in recipes/, a dict or a Recipe, not {type(source).__name__}"
            )
        if isinstance(source, Recipe):
            data = source.model_dump(exclude_unset=True)
        elif isinstance(source, dict):
            data = copy.deepcopy(source)
        elif source is None:
            data = {}
        else:
            path = find_recipe(str(source))
            data, origin = _read_yaml(path), str(path)
        pairs = list(
            _flatten(overrides).items()
            if isinstance(overrides, dict)
            else [_split_override(o) for o in overrides or []]
        )
        method = next((v for k, v in pairs if k == "search.method"), None)
        base = data.get("search")
        if method in BY_METHOD and isinstance(base, dict) and base.get("method", "cot") != method:
            data["search"] = {k: v for k, v in base.items() if k in BY_METHOD[method].model_fields}
        for key, value in pairs:
            _set_dotted(data, key, value)
        return cls.validated(data, origin)

    @classmethod
    def validated(cls, data: dict, origin: str | None = None) -> Recipe:
        """``data`` as a Recipe; errors name ``origin`` (the recipe file), the field and the fix."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise RecipeError((f"recipe {origin}: " if origin else "") + format_errors(e)) from None

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
    if path.is_dir():
        raise RecipeError(f"recipe {name} is a directory: give a recipe YAML file (or a name in recipes/)")
    known = sorted(p.stem for p in REPO_RECIPES.glob("*.yaml")) if REPO_RECIPES.is_dir() else []
    raise RecipeError(
        f"recipe {name!r} not found: give a path to a YAML file" + (f" or one of {', '.join(known)}" if known else "")
    )


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise RecipeError(f"recipe {path} is not UTF-8 text ({e.reason}): give a YAML file") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {path} is not valid YAML: {e}".replace("\n", " ")) from None
    if data is None:  # an empty file is more likely a mistake than a wish for the defaults, which need no file
        raise RecipeError(
            f"recipe {path} is empty: write its sections (models, search, ...) in it, or leave the recipe out for the "
            "default recipe"
        )
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


def _section_of(annotation: Any) -> type[BaseModel] | None:
    """The section model a field holds (``X``, ``X | None`` or ``list[X]``), if any."""
    for a in getattr(annotation, "__args__", None) or (annotation,):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _field_info(loc: tuple) -> Any:
    """The pydantic ``FieldInfo`` of the recipe field at an error's ``loc`` (None where there is none)."""
    parts = [p for p in loc if isinstance(p, str)]
    model: Any = Recipe
    info = None
    i = 0
    while i < len(parts):
        info = model.model_fields.get(parts[i]) if model is not None else None
        if info is None:
            return None
        if model is Recipe and parts[i] == "search" and i + 1 < len(parts):  # the union's tag comes next
            model, i = BY_METHOD.get(parts[i + 1]), i + 2
        else:
            model, i = _section_of(info.annotation), i + 1
    return info


def _over_bound(e: dict) -> str | None:
    """For a number over a field's ``at_most`` bound: the bound, what was given and why the bound is there."""
    if e["type"] != "less_than_equal":
        return None
    info = _field_info(e["loc"])
    extra = getattr(info, "json_schema_extra", None)
    why = extra.get(WHY) if isinstance(extra, dict) else None
    if why is None:
        return None
    return f"at most {e['ctx']['le']}, got {e.get('input')!r}: {why}"


def _search_error(e: dict) -> str | None:
    """The line for an error inside the ``search`` section (a union told apart by ``method``), if it is one."""
    loc = e["loc"]
    if e["type"] == "union_tag_invalid" and loc == ("search",):
        return f"search.method={e['ctx']['tag']!r} is not a search: use one of {', '.join(SEARCHES)}"
    if len(loc) < 3 or loc[0] != "search" or loc[1] not in BY_METHOD:
        return None
    method, knob = loc[1], ".".join(str(p) for p in loc[2:])
    if e["type"] == "extra_forbidden":
        owners = knob_owners(knob)
        where = f"; {knob} is a knob of {', '.join(owners)}" if owners else ""
        return (
            f"search.{knob} is not a knob of search.method={method} "
            f"(it takes {', '.join(BY_METHOD[method].model_fields)}){where}"
        )
    if e["type"] == "value_error":
        return f"search ({method}): {e['msg'].removeprefix('Value error, ')}"
    bound = _over_bound(e)
    if bound is not None:
        return f"search.{knob} ({method}): {bound}"
    return f"search.{knob} ({method}): {e['msg']} (got {e.get('input')!r})"


def format_errors(error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        search_line = _search_error(e)
        if search_line is not None:
            lines.append(search_line)
            continue
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
            bound = _over_bound(e)
            lines.append(f"recipe field '{field}': {bound or e['msg'] + ' (got ' + repr(e.get('input')) + ')'}")
    return "; ".join(lines)


# -- documentation ---------------------------------------------------------------------------------------------


def schema() -> dict:
    """The JSON schema of a recipe (``reasoner recipe schema``)."""
    return Recipe.model_json_schema()


def schema_markdown() -> str:
    """docs/recipes.md: every recipe section and field, generated from ``schema()`` (a test keeps it current)."""
    s = schema()
    defs = s["$defs"]

    def target(prop: dict) -> str | None:
        for option in [prop, *prop.get("anyOf", [])]:
            if "$ref" in option:
                return option["$ref"].rsplit("/", 1)[-1]
        return None

    def kind(prop: dict) -> str:
        if "const" in prop:
            return f"`{prop['const']}`"
        if "enum" in prop:
            return " \\| ".join(f"`{v}`" for v in prop["enum"])
        options = [o for o in prop.get("anyOf", []) if o.get("type") != "null"]
        if options:
            return " or ".join(kind(o) for o in options) + (" (optional)" if len(options) < len(prop["anyOf"]) else "")
        if "$ref" in prop:
            return "section"
        if prop.get("type") == "array":
            return f"list of {kind(prop.get('items', {}))}"
        bounds = [f">= {prop['minimum']}"] if "minimum" in prop else []
        bounds += [f"> {prop['exclusiveMinimum']}"] if "exclusiveMinimum" in prop else []
        bounds += [f"<= {prop['maximum']}"] if "maximum" in prop else []
        return prop.get("type", "any") + (f" ({', '.join(bounds)})" if bounds else "")

    def table(title: str, model: dict, skip: tuple[str, ...] = ()) -> list[str]:
        out = [f"### `{title}`", "", model.get("description", "").replace("\n", " "), ""]
        out += ["| field | type | default | what it is |", "|---|---|---|---|"]
        for name, prop in model["properties"].items():
            if name in skip:
                continue
            default = json.dumps(prop["default"]) if "default" in prop and not isinstance(prop["default"], dict) else ""
            text = prop.get("description", "") + (f" (at most {prop['maximum']}: {prop[WHY]})" if WHY in prop else "")
            text = text.replace("|", "\\|").replace("\n", " ")
            out.append(f"| `{name}` | {kind(prop)} | {default} | {text} |")
        return out + [""]

    lines = [
        "# Recipes",
        "",
        "<!-- generated by `reasoner recipe schema --markdown`; tests/test_recipe.py fails when it is stale -->",
        "",
        "A recipe is a YAML file of the sections below (all optional; `recipes/` holds ready ones). Any field can be",
        "overridden on the command line with `--set section.field=value`. Unknown fields are errors that name the",
        "field and what is allowed; a knob of another search is an error naming the search it belongs to. The JSON",
        "schema: `reasoner recipe schema`.",
        "",
        "## Top level",
        "",
        "| field | type | default | what it is |",
        "|---|---|---|---|",
    ]
    for name, prop in s["properties"].items():
        ref = target(prop)
        if name == "search":
            lines.append(
                "| `search` | section | cot | the search: one of the sections under `search` below, by `method` |"
            )
        elif ref is None:
            default = json.dumps(prop.get("default")) if "default" in prop else ""
            text = prop.get("description", "") + (f" (at most {prop['maximum']}: {prop[WHY]})" if WHY in prop else "")
            lines.append(f"| `{name}` | {kind(prop)} | {default} | {text} |")
        else:
            first = " ".join(defs[ref].get("description", "").split()).split(". ")[0].rstrip(".")
            lines.append(f"| `{name}` | section | | {first}. |")
    lines += ["", "## Sections", ""]
    for name, prop in s["properties"].items():
        ref = target(prop)
        if name == "search":
            lines += ["### `search`", "", "One of these, chosen by `method` (default `cot`):", ""]
            for method, path in prop["discriminator"]["mapping"].items():
                lines += table(f"search.method: {method}", defs[path.rsplit("/", 1)[-1]], skip=("method",))[0:]
        elif name == "models":
            lines += table("models", defs[ref])
            lines += table("models.<role>", defs["ModelConfig"])
        elif ref is not None:
            lines += table(name, defs[ref])
            for field, sub in defs[ref]["properties"].items():  # a section inside a section (scale.vllm)
                if target(sub) is not None:
                    lines += table(f"{name}.{field}", defs[target(sub)])
    return "\n".join(lines).rstrip() + "\n"
