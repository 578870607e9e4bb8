"""``Reasoner``: a recipe built into models, an engine, a verifier and a search; ``solve`` and ``solve_many``."""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

import prompts
import search
import verifiers
from search.kv import book_bytes
from verifiers.acceptors import make_acceptor
from verifiers.base import aggregate
from verifiers.math import extract_answer, is_equivalent

from .core.errors import PromptTooLong
from .core.lm import LM, check_context
from .core.stats import Stats
from .core.types import Candidate, Node, Problem, Solution, Tree
from .engine import SpeculativeStepEngine, StepBudget, StepEngine, StepSampling
from .engine.scheduler import Scheduler
from .recipe import Recipe

DEFAULT = object()  # ``Reasoner()``: the default recipe (``None`` is refused: it is more likely a bug than a wish)


def token_speculation_options(recipe: Recipe, role: str) -> dict:
    """Backend options that make the model of ``role`` speculate as ``recipe.token_speculation`` asks, if it
    generates (the search policy; the target when step speculation regenerates with it). A draft model is never
    its own drafter. Only the transformers backend runs our drafters: other backends get the option too, so that
    ``load_lm`` refuses it with the fix rather than ignoring it."""
    spec = recipe.token_speculation
    generates = role == recipe.search.policy or (recipe.step_speculation is not None and role == "target")
    if spec is None or not generates:
        return {}
    if spec.uses_draft_model:
        draft = spec.draft or recipe.models.draft.path
        if role == "draft" or draft == getattr(recipe.models, role).path:
            return {}
        spec = spec.model_copy(update={"draft": draft})
    return {"token_speculation": spec}


def model_processes(recipe: Recipe, models: int) -> bool:
    """Whether the models run in processes of their own (``scheduler.model_workers``; auto: on a CPU, when two or
    more models compute at once: the interpreter lock would otherwise serialize their per-token work)."""
    choice = recipe.scheduler.model_workers
    if choice != "auto":
        return choice == "process"
    if models < 2:
        return False
    import torch  # to ask whether there is a GPU

    return not torch.cuda.is_available()


class Reasoner:
    """Solve problems with a recipe.

    ``Reasoner()`` uses the defaults (chain of thought with the toy target); ``Reasoner("recipes/toy-bon.yaml")``
    loads a recipe; keyword arguments override sections, e.g. ``Reasoner(search={"method": "best_of_n", "n": 8})``.
    """

    def __init__(self, recipe: Recipe | str | Path | dict = DEFAULT, overrides: list[str] | None = None, **sections):
        if recipe is None:
            raise TypeError(
                "Reasoner(None): give a recipe (a YAML path, a name in recipes/, a dict or a Recipe), or call "
                "Reasoner() for the default recipe"
            )
        self.recipe = Recipe.load(None if recipe is DEFAULT else recipe, overrides)
        if sections:
            self.recipe = Recipe.load(self.recipe, sections)
        r = self.recipe
        self.template = prompts.load(r.prompt)
        self.stats = Stats()  # everything this reasoner has spent, over all calls
        self.last_run = Stats()  # what the last solve/solve_many spent
        load_args = {}
        for role in ("target", "draft", "verifier"):
            spec = getattr(r.models, role)
            needed = role == r.search.policy or role in verifiers.lm_roles(r.verifier)
            needed = needed or (r.step_speculation is not None and role in ("draft", "target"))
            if spec is not None and needed:
                load_args[role] = dict(
                    backend=spec.backend,
                    path=spec.path,
                    gguf_file=spec.gguf_file,
                    role=role,
                    seed=r.seed,
                    dtype=spec.dtype,
                    device=spec.device,
                    max_batch_size=spec.max_batch_size,
                    **spec.backend_options(),
                    **token_speculation_options(r, role),
                )
        # every engine, verifier and search calls the models through the scheduler: one worker per model batches
        # what the problems (one thread each) ask of it
        self.scheduler = Scheduler(
            load_args,
            processes=model_processes(r, len(load_args)),
            lookahead_steps=r.scheduler.lookahead_steps,
            mix_scores=r.scheduler.mix_scores,
        )
        self._closer = weakref.finalize(self, self.scheduler.close)  # model workers and processes end with us
        self.models: dict[str, LM] = self.scheduler.models
        self.verifier = verifiers.build(r.verifier, self.scheduler.wrapped, self.template, r.models)
        self._assemble()
        # everything that counts its own costs: the backends and the models verifiers loaded themselves
        self._meters = [lm.stats for lm in self.models.values()] + [
            m.stats for m in verifiers.own_models(self.verifier)
        ]

    def _assemble(self) -> None:
        """The step engine and the search of ``self.recipe``, over the scheduler's models and the verifier."""
        r, lms = self.recipe, self.scheduler.wrapped
        sampling = StepSampling(
            r.sampling.temperature, r.sampling.top_p, r.sampling.max_step_tokens, r.sampling.tpot_ms
        )
        budget = StepBudget(r.budget.max_steps, r.budget.max_tokens, r.budget.stop_on_repeat)
        self.engine = StepEngine(lms[r.search.policy], self.template, sampling, budget)
        if r.step_speculation is not None:
            target = StepEngine(lms["target"], self.template, sampling, budget, lookahead=False)
            acceptor = make_acceptor(r.step_speculation, lms["target"], self.template, self.verifier, lms["draft"])
            spec = r.step_speculation
            self.engine = SpeculativeStepEngine(
                self.engine, target, acceptor, spec.first_n_target_steps, parallel=True, think_rule=spec.think_rule
            )
        # one search, run once per problem, each in its own thread
        self.search = search.build(r.search, self.engine, self.verifier, r.verifier.aggregate, r.seed)

    # the sections a variant may change (the models stay loaded); step_speculation only where the recipe has one
    VARIABLE = ("search", "budget", "sampling", "step_speculation")

    def variant(self, **sections) -> Reasoner:
        """This reasoner with other ``search``, ``budget``, ``sampling`` or ``step_speculation`` sections (nested
        dicts, merged into the recipe's): a reasoner that shares this one's models, scheduler and verifier, so that
        what both solve at once shares the models' batches. Raises ``RecipeError`` (a ``ValueError``) for an invalid
        section, and ``ValueError`` for a section it cannot change (``step_speculation`` where the recipe has none)
        or a search whose policy model is not loaded."""
        fixed = sorted(set(sections) - set(self.VARIABLE))
        if fixed:
            raise ValueError(f"a variant may change only {', '.join(self.VARIABLE)}, not {', '.join(fixed)}")
        if sections.get("step_speculation") and self.recipe.step_speculation is None:
            raise ValueError("step_speculation: this recipe has no step speculation (and no target model) to change")
        recipe = Recipe.load(self.recipe, {k: v for k, v in sections.items() if v is not None})
        if recipe.search.policy not in self.scheduler.wrapped:
            loaded = ", ".join(sorted(self.scheduler.wrapped))
            raise ValueError(f"search.policy {recipe.search.policy!r} is not a model this recipe loaded ({loaded})")
        other = object.__new__(Reasoner)
        other.__dict__.update(self.__dict__)
        other.recipe = recipe
        other.stats, other.last_run = Stats(), Stats()
        other._closer = None  # the models are this reasoner's: closing a variant closes nothing
        other._assemble()
        return other

    def close(self) -> None:
        """Stop the models' workers (and their processes); the reasoner cannot solve afterwards."""
        if self._closer is not None:
            self._closer()

    def __enter__(self) -> Reasoner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def solve(self, problem: str | Problem) -> Solution:
        """Solve one problem; its ``stats`` hold everything spent on it."""
        return self.solve_many([problem])[0]

    def solve_many(self, problems: Iterable[str | Problem]) -> list[Solution]:
        """Solve problems together: their trajectories share every batched model call. Each solution's stats
        count the tokens spent on it; the batch's wall time and forward passes are in ``last_run`` (and, for a
        single problem, in its solution's stats too). A problem too long for a model raises ``PromptTooLong``
        before anything is computed."""
        if isinstance(problems, (str, bytes, Problem)):
            raise TypeError("solve_many takes a list of problems; solve takes one")
        problems = [p if isinstance(p, Problem) else Problem(p) for p in problems]
        if not problems:
            return []
        self.check_prompts(problems)
        solutions: list = [None] * len(problems)
        for i, solution, _ in self.solve_stream(problems, window=len(problems)):
            if isinstance(solution, PromptTooLong):  # (a step ran past the context)
                raise solution
            solutions[i] = solution
        if len(solutions) == 1:  # the batch is this problem: its shared costs are its own
            own, run = solutions[0].stats, self.last_run
            for name, r in run.roles.items():
                own.role(name).calls, own.role(name).forward_passes, own.role(name).wall_s = (
                    r.calls,
                    r.forward_passes,
                    r.wall_s,
                )
            own.wall_s = run.wall_s
        return solutions

    def solve_stream(
        self, problems: Iterable[str | Problem], window: int = 16
    ) -> Iterator[tuple[int, Solution | PromptTooLong, Stats]]:
        """Solve problems with up to ``window`` of them in flight, yielding ``(index, solution, span)`` as each
        finishes; the next problem starts at once (a sliding window, not batches: no problem waits for the slowest
        one of a batch). A problem too long for a model yields its ``PromptTooLong`` in place of a solution.

        ``span`` is what the run spent since the previous yield (wall time, each model's forward passes and busy
        time): the spans add up to the whole run, which is then in ``last_run``. The prefix caches are cleared
        whenever no problem is in flight, so with ``window=1`` a problem's costs do not depend on what ran before
        it; with a wider window problems in flight together share cached prefixes, as they share forwards."""
        if window < 1:
            raise ValueError(f"window must be at least 1 (problems in flight), got {window}")
        queue = deque(enumerate(p if isinstance(p, Problem) else Problem(p) for p in problems))
        run, start = Stats(), time.perf_counter()
        before, last = [m.snapshot() for m in self._meters], start
        running: dict = {}
        with ThreadPoolExecutor(min(window, len(queue)) or 1, thread_name_prefix="problem") as pool:
            while queue or running:
                if not running:
                    for lm in self.models.values():
                        lm.clear_prefix_cache()
                while queue and len(running) < window:
                    i, problem = queue.popleft()
                    running[pool.submit(self._solve_one, problem)] = i
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    i = running.pop(future)
                    solution = future.result()
                    span, now = Stats(), time.perf_counter()
                    snapshots = [m.snapshot() for m in self._meters]
                    for snapshot, earlier in zip(snapshots, before):
                        span.merge(snapshot.since(earlier))
                    span.wall_s, before, last = now - last, snapshots, now
                    if not isinstance(solution, PromptTooLong):
                        for name, value in solution.stats.counters.items():
                            span.count(name, value)
                    run.merge(span)
                    yield i, solution, span
        run.wall_s = time.perf_counter() - start
        self.last_run = run
        self.stats.merge(run)

    def _solve_one(self, problem: Problem) -> Solution | PromptTooLong:
        """One problem, start to end (in a thread of ``solve_stream``)."""
        try:
            return self.solve_tree(Tree(problem))
        except PromptTooLong as e:
            return e

    def solve_tree(self, tree: Tree) -> Solution:
        """Solve ``tree``'s problem alongside whatever else this reasoner (or a ``variant``) is solving from other
        threads: many callers at once share the models' batches (a server's requests). The caller keeps the tree,
        to ``cancel`` it (this raises ``Cancelled`` then) or to hear of each final step (``Tree.on_step``). Its
        ``stats`` count the tokens spent on this problem and its wall time; prefix caches are left as they are."""
        self.check_prompts([tree.problem])
        start = time.perf_counter()
        leaves = self.search.run([tree])[0]
        book_bytes(tree.stats, self.models[self.recipe.search.policy].kv_bytes_per_token)
        solution = self._solution(tree, leaves)
        solution.stats.wall_s = time.perf_counter() - start
        return solution

    def check_prompts(self, problems: list[Problem]) -> None:
        """Raise ``PromptTooLong`` for the first problem whose prompt, with one step's tokens
        (``sampling.max_step_tokens``), does not fit in the context of a model that writes steps: before anything is
        computed, so a batch holding it fails at once (the eval runner then solves the batch problem by problem, and
        that problem's result is the error)."""
        r = self.recipe
        roles = {r.search.policy} | ({"target"} if r.step_speculation is not None else set())
        for problem in problems:
            for role in sorted(roles):
                lm = self.scheduler.wrapped[role]
                if lm.context_length is not None:
                    ids = lm.encode(self.template.prompt(lm.tokenizer, problem.text))
                    check_context(lm, ids, r.sampling.max_step_tokens)

    def _solution(self, tree: Tree, leaves: list[Node]) -> Solution:
        r = self.recipe
        scores = self.verifier.score_paths(leaves) if self.verifier else [None] * len(leaves)
        candidates = []
        for leaf, step_scores in zip(leaves, scores):
            steps = [n.step for n in leaf.path()]
            text = leaf.text(self.template.step_delimiter)
            score = aggregate(step_scores, r.verifier.aggregate) if step_scores is not None else None
            finished = leaf.step is not None and leaf.step.finish_reason == "eos"
            candidates.append(Candidate(steps, extract_answer(text), score, finished=finished))
        best = search.choose(candidates, r.search.vote)
        answer = best.answer if best else None
        problem = tree.problem
        correct = is_equivalent(answer, problem.answer) if problem.answer is not None else None
        text, steps = (best.text, best.steps) if best else ("", [])
        return Solution(problem, answer, text, steps, candidates, tree.stats, correct, tree)
