"""What a recipe's ``search`` section can say: one model per search, holding only that search's knobs, told apart
by ``method`` (a pydantic discriminated union). A knob of another search is an error naming both."""

from __future__ import annotations

import importlib
import json
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

import prompts
from reasoner.core.config import Section, at_most

from .astar import AStar
from .auto import AutoSearch
from .beam import DVTS, BeamSearch
from .best_of_n import BestOfN, ChainOfThought
from .ets import ETS, Rebase
from .fetch import Fetch, Merger
from .mcts import MCTS
from .probtree import ProbTree
from .rethink import RethinkMCTS

MAX_N = 1024  # trajectories (or iterations) per problem: past this a run needs more memory than one machine has
MAX_WIDTH = 64  # children per expansion
N_WHY = (
    "every trajectory of a problem is alive at once, with its own KV and step rows in the batch: past it one problem "
    "outgrows a machine's memory; spend more compute over several runs (suite.seed, seed) instead"
)
WIDTH_WHY = "a node's children are sampled in one batched call and each is scored: past it a level outgrows the batch"
WHOLE_WHY = (
    "write each trajectory in one request and split it into steps afterwards (no round trip per step; the same "
    "steps); false: one request per step. Step by step regardless under step speculation, with budget.stop_on_repeat, "
    "or when a caller streams the steps"
)
DEPTH_WHY = "each unit is a further full step (rollout or regeneration) per candidate: past it a problem takes hours"


class SearchBase(Section):
    """The knobs every search has."""

    vote: Literal["majority", "weighted", "best"] = Field(
        "majority", description="how the answer is chosen among finished trajectories"
    )
    policy: Literal["target", "draft"] = Field("target", description="the model role that writes the steps")

    def build(self, engine, verifier, aggregate: str, seed: int):
        """The search this section describes, over ``engine`` and ``verifier``."""
        raise NotImplementedError


class CoTConfig(SearchBase):
    """Chain of thought: one trajectory, greedy or sampled."""

    method: Literal["cot"] = Field("cot", description="the search")

    @property
    def n(self) -> int:
        """One trajectory (sampling several is best_of_n)."""
        return 1

    whole: bool = Field(True, description=WHOLE_WHY)

    def build(self, engine, verifier, aggregate, seed):
        return ChainOfThought(engine, self.whole)


class BestOfNConfig(SearchBase):
    """Best-of-N: n independent trajectories, then the vote."""

    method: Literal["best_of_n"] = Field("best_of_n", description="the search")
    n: int = Field(8, ge=1, **at_most(MAX_N, N_WHY), description="trajectories per problem")
    whole: bool = Field(True, description=WHOLE_WHY)

    def build(self, engine, verifier, aggregate, seed):
        return BestOfN(engine, self.n, self.whole)


class _Beams(SearchBase):
    n: int = Field(8, ge=1, **at_most(MAX_N, N_WHY), description="trajectories per problem")
    width: int = Field(
        4, ge=1, **at_most(MAX_WIDTH, WIDTH_WHY), description="children per kept beam (n / width beams are kept)"
    )

    @model_validator(mode="after")
    def _multiple(self):
        if self.n < self.width or self.n % self.width:
            raise ValueError(
                f"{self.method} keeps n/width beams: search.n ({self.n}) must be a positive multiple of "
                f"search.width ({self.width})"
            )
        return self


class BeamConfig(_Beams):
    """Beam search (search-and-learn): keep the best n/width paths each step, expand each width times."""

    method: Literal["beam"] = Field("beam", description="the search")
    filter_duplicates: bool = Field(False, description="drop candidates whose whole text repeats another's")
    lookahead: int = Field(
        0, ge=0, **at_most(16, DEPTH_WHY), description="rank each candidate by a rollout this many steps further"
    )
    merge: bool = Field(False, description="merge equivalent sibling states first (FETCH's state merging)")
    merge_distance: float = Field(0.15, ge=0, description="cosine distance under which sibling steps merge")

    def build(self, engine, verifier, aggregate, seed):
        merger = Merger(self.merge_distance) if self.merge else None
        return BeamSearch(
            engine, verifier, self.n, self.width, aggregate, self.filter_duplicates, self.lookahead, merger
        )


class DVTSConfig(_Beams):
    """DVTS: n/width independent subtrees, each moving greedily to its best-scored child."""

    method: Literal["dvts"] = Field("dvts", description="the search")

    def build(self, engine, verifier, aggregate, seed):
        return DVTS(engine, verifier, self.n, self.width, aggregate)


class FetchConfig(_Beams):
    """FETCH: beam search whose equivalent sibling states merge, without refilling to n."""

    method: Literal["fetch"] = Field("fetch", description="the search")
    merge_distance: float = Field(0.15, ge=0, description="cosine distance under which sibling steps merge")
    filter_duplicates: bool = Field(False, description="drop candidates whose whole text repeats another's")
    lookahead: int = Field(
        0, ge=0, **at_most(16, DEPTH_WHY), description="rank each candidate by a rollout this many steps further"
    )

    def build(self, engine, verifier, aggregate, seed):
        return Fetch(
            engine, verifier, self.n, self.width, aggregate, self.merge_distance, self.filter_duplicates, self.lookahead
        )


class MCTSConfig(SearchBase):
    """Monte Carlo tree search with OpenR's PUCT and llm-reasoners' rollouts."""

    method: Literal["mcts"] = Field("mcts", description="the search")
    n: int = Field(8, ge=1, **at_most(MAX_N, N_WHY), description="iterations per problem")
    width: int = Field(4, ge=1, **at_most(MAX_WIDTH, WIDTH_WHY), description="children per expansion")
    rollout: Literal["sample", "greedy"] = Field(
        "sample", description="one sampled step at a time, or follow the best-scored of width children"
    )
    select: Literal["vote", "value", "visits"] = Field(
        "vote", description="vote over all finished trajectories, or follow max mean value / max visits"
    )
    puct_base: float = Field(19652.0, gt=0, description="PUCT c_base (OpenR's default)")
    puct_init: float = Field(1.25, ge=0, description="PUCT c_init (OpenR's default)")
    root_noise: bool = Field(False, description="Dirichlet noise (alpha 0.3, weight 0.25) on the root's priors")
    merge: bool = Field(False, description="merge equivalent sibling states (FETCH's state merging)")
    merge_distance: float = Field(0.15, ge=0, description="cosine distance under which sibling steps merge")

    def build(self, engine, verifier, aggregate, seed):
        merger = Merger(self.merge_distance) if self.merge else None
        return MCTS(
            engine,
            verifier,
            self.n,
            self.width,
            aggregate,
            self.rollout,
            self.select,
            self.puct_base,
            self.puct_init,
            self.root_noise,
            seed,
            merger,
        )


class RethinkMCTSConfig(SearchBase):
    """RethinkMCTS: MCTS over thoughts and code, guided by public tests; a failing rollout's thought is rethought."""

    method: Literal["rethink_mcts"] = Field("rethink_mcts", description="the search")
    n: int = Field(16, ge=1, **at_most(MAX_N, N_WHY), description="iterations per problem")
    width: int = Field(3, ge=1, **at_most(MAX_WIDTH, WIDTH_WHY), description="children per expansion")
    max_think_times: int = Field(
        2,
        ge=0,
        **at_most(16, DEPTH_WHY),
        description="rethinks (rewrite or regenerate a thought, roll out again) after a rollout fails the tests",
    )
    rethink_pick: Literal["least_likely", "deepest"] = Field(
        "least_likely", description="the thought to rethink: the one with the least likely token, or the deepest"
    )
    rethink: Literal["feedback", "resample"] = Field(
        "feedback",
        description="how a thought is rethought: feedback (RethinkMCTS: the model rewrites it from the rethink "
        "prompt, which carries the failing tests' execution feedback, and the rewrite replaces it) or resample "
        "(written again from the same prompt, no feedback, as a new sibling)",
    )
    stop_on_pass: bool = Field(True, description="stop a problem's search once a program passes every public test")
    puct_base: float = Field(10.0, gt=0, description="var_p_uct's ucb_base (RethinkMCTS: 10)")
    puct_init: float = Field(4.0, ge=0, description="var_p_uct's ucb_constant (RethinkMCTS: 4)")

    def build(self, engine, verifier, aggregate, seed):
        return RethinkMCTS(
            engine,
            verifier,
            self.n,
            self.width,
            self.max_think_times,
            self.rethink_pick,
            self.stop_on_pass,
            self.puct_base,
            self.puct_init,
            self.rethink,
            seed,
        )


class AStarConfig(SearchBase):
    """A* over steps: f = the path's mean negative log-likelihood (weighted) + the verifier's cost-to-go."""

    method: Literal["astar"] = Field("astar", description="the search")
    n: int = Field(1, ge=1, **at_most(MAX_N, N_WHY), description="finished candidates to collect")
    width: int = Field(4, ge=1, **at_most(MAX_WIDTH, WIDTH_WHY), description="children per expansion")
    beta: float = Field(0.1, ge=0, description="weight of the path's mean negative log-likelihood in g")
    max_expansions: int = Field(
        64,
        ge=1,
        **at_most(100_000, "each expansion is a batched model call on one problem: past it one problem takes days"),
        description="node expansions per problem at most",
    )

    def build(self, engine, verifier, aggregate, seed):
        return AStar(engine, verifier, self.n, self.width, aggregate, self.beta, self.max_expansions)


class RebaseConfig(SearchBase):
    """REBASE: level by level, the width split among the open leaves by a softmax of their scores."""

    method: Literal["rebase"] = Field("rebase", description="the search")
    n: int = Field(16, ge=1, **at_most(MAX_N, N_WHY), description="width: trajectories per problem")
    temperature: float = Field(0.2, gt=0, description="softmax temperature of the width allocation")

    def build(self, engine, verifier, aggregate, seed):
        return Rebase(engine, verifier, self.n, aggregate, self.temperature)


class ETSConfig(SearchBase):
    """ETS: REBASE after pruning by an integer program that trades reward, retained KV and semantic coverage."""

    method: Literal["ets"] = Field("ets", description="the search")
    n: int = Field(16, ge=1, **at_most(MAX_N, N_WHY), description="width: trajectories per problem")
    temperature: float = Field(0.2, gt=0, description="softmax temperature of the width allocation")
    lambda_c: float = Field(
        2.0,
        ge=0,
        description="weight of the retained KV cost (2: the largest that kept REBASE's accuracy within one "
        "standard error at n 8 and 16 on a calibration split of the toy; docs/benchmarks.md)",
    )
    lambda_s: float = Field(1.5, ge=0, description="weight of semantic coverage")
    cluster_distance: float = Field(0.05, ge=0, description="cosine distance that cuts the step clusters")

    def build(self, engine, verifier, aggregate, seed):
        return ETS(
            engine,
            verifier,
            self.n,
            aggregate,
            self.temperature,
            self.lambda_c,
            self.lambda_s,
            self.cluster_distance,
        )


class ProbTreeConfig(SearchBase):
    """ProbTree: decompose the question into a tree of sub-questions; at every node keep the most confident of the
    closed-book, open-book (with a retriever) and child-aggregation answers."""

    method: Literal["probtree"] = Field("probtree", description="the search")
    max_depth: int = Field(
        2,
        ge=0,
        **at_most(4, "each level multiplies the calls by up to max_children: past it one question takes hours"),
        description="levels of sub-questions below the question (0: closed-book only)",
    )
    max_children: int = Field(
        4,
        ge=2,
        **at_most(
            16, "each sub-question costs a decomposition and two or three answers: past it a tree outgrows a batch"
        ),
        description="sub-questions per question at most (more: not decomposed)",
    )
    prompts: str = Field(
        "default", description="ProbTree's prompt set: a name in prompts/probtree or the path of a YAML file"
    )
    retriever: str | None = Field(
        None,
        description="open-book answering: 'module:function', a function question -> list of passages (none ships; "
        "unset: closed-book and child aggregation only)",
    )
    whole: bool = Field(True, description=WHOLE_WHY)

    @property
    def n(self) -> int:
        """One answer per problem."""
        return 1

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: str) -> str:
        prompts.probtree(value)  # a ValueError naming the set and the fix
        return value

    @field_validator("retriever")
    @classmethod
    def _retriever(cls, value: str | None) -> str | None:
        if value is not None:
            _import(value)
        return value

    def build(self, engine, verifier, aggregate, seed):
        retriever = _import(self.retriever) if self.retriever else None
        return ProbTree(
            engine, prompts.probtree(self.prompts), self.max_depth, self.max_children, retriever, self.whole
        )


def _import(spec: str):
    """The callable ``module:function`` names."""
    module, _, name = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module), name) if module and name else None
    except (ImportError, AttributeError) as e:
        raise ValueError(f"search.retriever {spec!r} cannot be imported ({e}): give 'module:function'") from None
    if not callable(fn):
        raise ValueError(f"search.retriever {spec!r} is not a callable: give 'module:function'")
    return fn


FIXED_CONFIGS: tuple[type[SearchBase], ...] = (
    CoTConfig,
    BestOfNConfig,
    BeamConfig,
    DVTSConfig,
    MCTSConfig,
    AStarConfig,
    RebaseConfig,
    ETSConfig,
    FetchConfig,
    RethinkMCTSConfig,
    ProbTreeConfig,
)
FixedSearchConfig = Annotated[reduce(or_, FIXED_CONFIGS), Field(discriminator="method")]  # every search but auto
TABLE_FIX = (
    "give search.table as bins in increasing max_agreement, the last 1.0, e.g. [{max_agreement: 0.5, search: "
    "{method: best_of_n, n: 16}}, {max_agreement: 1.0, search: {method: best_of_n, n: 4}}], or the path of a JSON "
    "table written by reasoner bench search --fit-auto"
)


class AutoBin(Section):
    """One row of auto's table: problems whose probe agreement is at most ``max_agreement`` (and above the previous
    row's) run ``search``."""

    max_agreement: float = Field(ge=0, le=1, description="the highest probe agreement this bin takes")
    search: FixedSearchConfig = Field(description="the search (any but auto) for the problems in this bin")


class AutoConfig(SearchBase):
    """Compute-optimal search (Snell et al. 2024): per problem, the agreement of ``probe`` sampled trajectories
    picks a row of ``table`` and that row's search runs. Every row's search answers by this section's ``vote`` and
    writes with its ``policy`` (one engine, one vote per recipe)."""

    method: Literal["auto"] = Field("auto", description="the search")
    probe: int = Field(
        4, ge=1, **at_most(MAX_WIDTH, WIDTH_WHY), description="sampled trajectories that measure the agreement"
    )
    whole: bool = Field(True, description=WHOLE_WHY)
    table: list[AutoBin] = Field(
        default_factory=lambda: [
            AutoBin(max_agreement=0.5, search=BestOfNConfig(n=16)),
            AutoBin(max_agreement=1.0, search=BestOfNConfig(n=4)),
        ],
        description="rows {max_agreement: the highest probe agreement the row takes, search: any search section "
        "but auto}, in increasing max_agreement, the last 1.0; or the path of a JSON table (reasoner bench search "
        "--fit-auto writes one)",
    )

    @field_validator("table", mode="before")
    @classmethod
    def _load(cls, value):
        if isinstance(value, (str, Path)):
            path = Path(value)
            try:
                value = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ValueError(f"search.table {str(path)!r} is not a readable JSON table ({e}): {TABLE_FIX}") from e
            if isinstance(value, dict):
                value = value.get("table")
        if not isinstance(value, list) or not value:
            raise ValueError(f"search.table is empty or not a list: {TABLE_FIX}")
        return value

    @model_validator(mode="after")
    def _check(self):
        tops = [b.max_agreement for b in self.table]
        if any(b <= a for a, b in zip(tops, tops[1:])) or tops[-1] != 1.0:
            raise ValueError(f"search.table's max_agreement values {tops} must increase and end at 1.0: {TABLE_FIX}")
        for i, row in enumerate(self.table):
            for knob in ("vote", "policy"):
                mine, theirs = getattr(self, knob), getattr(row.search, knob)
                if knob in row.search.model_fields_set and theirs != mine:
                    raise ValueError(
                        f"search.table[{i}].search.{knob}={theirs} but search.{knob}={mine}: every bin shares auto's "
                        f"{knob}; set it once, as search.{knob}"
                    )
                if theirs != mine:
                    row.search = row.search.model_copy(update={knob: mine})
        return self

    @property
    def n(self) -> int:
        """The most trajectories (or iterations) any bin spends, or the probes if more."""
        return max([self.probe] + [row.search.n for row in self.table])

    @property
    def methods(self) -> list[str]:
        """The searches the table can run."""
        return [row.search.method for row in self.table]

    def build(self, engine, verifier, aggregate, seed):
        bins = []
        for row in self.table:
            if row.search.method in TREE_SEARCHES and verifier is None:
                raise ValueError(
                    f"search.table runs {row.search.method}, which ranks steps with a verifier: set verifier.type"
                )
            bins.append((row.max_agreement, row.search, row.search.build(engine, verifier, aggregate, seed)))
        return AutoSearch(engine, self.probe, bins, self.whole)


SEARCH_CONFIGS = (*FIXED_CONFIGS, AutoConfig)
BY_METHOD: dict[str, type[SearchBase]] = {c.model_fields["method"].default: c for c in SEARCH_CONFIGS}
SEARCHES = tuple(BY_METHOD)
# they rank steps with a verifier (probtree ranks answers by the model's own confidence)
TREE_SEARCHES = tuple(m for m in SEARCHES if m not in ("cot", "best_of_n", "auto", "probtree"))
SearchConfig = Annotated[reduce(or_, SEARCH_CONFIGS), Field(discriminator="method")]


def knob_owners(knob: str) -> list[str]:
    """The searches that have ``knob``."""
    return [m for m, c in BY_METHOD.items() if knob in c.model_fields]
