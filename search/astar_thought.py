"""A*-Thought (arXiv 2505.24550): compress a finished long chain of thought into a short one.

This is a data-construction search, not inference-time search: it takes traces that already reached an answer
and keeps the fewest thought steps from which a validator LM still reaches that answer (the compressed traces
are then used for fine-tuning, or to see how much of a trace mattered).

1. **Importance.** Each thought step gets a bidirectional importance score (BIS) from a *scorer* LM::

       BIS_i = ((1-a)·attn(step_i | question + Q) + a·attn(step_i | solution + S)) / ((1-a)·ppl_q + a·ppl_s)

   with ``Q = "We can get the solution to this question in the given thought step."`` and
   ``S = "We can get this solution in the given thought step."`` (LongLLMLingua's restrictive statements). The
   step is put first and the question (or the solution) with its statement after it, so ``attn`` is the
   attention mass the question's (solution's) tokens give the step's tokens (mean over layers, heads and those
   tokens) and ``ppl`` is the perplexity of the question (solution) given the step: a step the question reads
   from, and that makes it predictable, ranks high. Steps sorted by BIS, descending, form the queue.
2. **A\\* over sets of step indices.** The start keeps the top step and its neighbours (±1). Expanding a node
   adds, for each of the next ``expand_size`` queue steps not yet kept, that step and its neighbours (one child
   each). Nodes are popped by the lowest ``f = g + h`` (a *validator* LM's log-probabilities, teacher-forced
   through the backend's batched ``score``): ``g = -β · mean log p(kept thought | question)``,
   ``h = -mean log p(solution | question, kept thought)``. From iteration ``min_search_steps`` on, a popped
   node is accepted when the validator, generating from the question and the kept thought, reaches the same
   final answer; after ``max_search_steps`` pops without that, the full trace is returned. Kept steps stay in
   their original order.

Traces are searched in lock step: each iteration pops one node of every unfinished trace, validates the ones
due in one ``generate`` call and scores all their children in one ``score`` call.

Deviations from the reference implementation (AI9Stars/AStar-Thought), and why:

- the scorer is any transformers causal LM (default: the same model as the validator) instead of GPT-2, so the
  toy world can run it; attention needs eager attention, which the scorer switches to only for that forward;
- the validator decodes greedily by default (the paper samples at T 0.6, top-p 0.95): the same input gives the
  same compression; ``temperature``/``top_p`` restore the paper's setting;
- a popped node that contains every step may be accepted too (then nothing was cut); when the open list runs
  out before ``min_search_steps`` pops (short traces have few step sets), the nodes popped so far are validated
  after all, lowest ``f`` first (reason ``validated-exhausted``), instead of returning the full trace unchecked.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from reasoner.core.lm import SamplingParams
from verifiers.importance import importance_scores
from verifiers.math import extract_answer, is_equivalent

log = logging.getLogger(__name__)

THINK_END = "</think>"


@dataclass
class Trace:
    """One finished trace: the thought (steps), the solution after it, and the answer it reached."""

    problem: str
    steps: list[str]  # the thought, split on the step delimiter
    solution: str  # what follows the thought: the step with the final answer (or the text after </think>)
    answer: str  # the trace's final answer, the one the compressed thought must still lead to
    reference: str | None = None  # the gold answer, when known
    id: str | None = None
    line: int | None = None  # line number in the input file


@dataclass
class CompressConfig:
    alpha: float = 0.5  # weight of the solution direction in BIS
    beta: float = 0.1  # weight of g (the thought's own likelihood) in f
    expand_size: int = 2  # children per expansion: the next queue steps
    neighbours: int = 1  # steps kept on each side of a chosen step
    min_search_steps: int = 5  # pops before a node may be accepted
    max_search_steps: int = 20  # pops before giving up (full trace)
    max_tokens: int = 1024  # validator generation budget
    temperature: float = 0.0  # validator sampling (paper: 0.6 / 0.95)
    top_p: float = 1.0
    attn_batch_size: int = 8  # sequences per attention forward (eager attention holds L·H·T² weights)
    seed: int = 0

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.expand_size < 1 or self.neighbours < 0 or self.attn_batch_size < 1 or self.max_tokens < 1:
            raise ValueError("expand_size, attn_batch_size and max_tokens must be >= 1 and neighbours >= 0")
        if not 1 <= self.min_search_steps <= self.max_search_steps:
            raise ValueError(
                f"need 1 <= min_search_steps <= max_search_steps, got {self.min_search_steps} and "
                f"{self.max_search_steps}"
            )


@dataclass
class Compressed:
    trace: Trace
    kept: list[int]  # indices of the kept thought steps, ascending
    iterations: int  # nodes popped
    validated: bool  # the search accepted a node (else: the full trace)
    reason: str  # validated | validated-exhausted | max_search_steps | exhausted | no thought
    validator_answer: str | None = None  # what the validator reached from the returned thought
    answer_holds: bool = False  # ... and whether it is the trace's answer
    correct: bool | None = None  # ... and whether it is the gold answer (None: no gold)
    tokens_before: int = 0  # thought + solution tokens (validator's tokenizer)
    tokens_after: int = 0
    thought_tokens_before: int = 0
    thought_tokens_after: int = 0
    importance: list[float] = field(default_factory=list)  # BIS per thought step

    @property
    def steps(self) -> list[str]:
        return [self.trace.steps[i] for i in self.kept]

    def to_dict(self, delimiter: str = "\n\n") -> dict:
        t = self.trace
        return {
            "id": t.id,
            "problem": t.problem,
            "reference": t.reference,
            "answer": t.answer,
            "text": delimiter.join(self.steps + [t.solution]),
            "steps": self.steps,
            "solution": t.solution,
            "kept": self.kept,
            "original_steps": len(t.steps),
            "validated": self.validated,
            "reason": self.reason,
            "iterations": self.iterations,
            "validator_answer": self.validator_answer,
            "answer_holds": self.answer_holds,
            "correct": self.correct,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "thought_tokens_before": self.thought_tokens_before,
            "thought_tokens_after": self.thought_tokens_after,
            "importance": [float(f"{x:.4g}") for x in self.importance],
        }


def split_trace(
    steps: list[str], answer: str | None = None, delimiter: str = "\n\n"
) -> tuple[list[str], str, str | None]:
    """``(thought, solution, answer)`` of a finished trace's steps. The solution is what follows ``</think>``
    when the trace has one, else the step with the last ``\\boxed{}`` and any after it; with neither, the last
    step. The answer is the solution's last boxed answer, else ``answer``."""
    text = delimiter.join(steps)
    if THINK_END in text:
        head, _, tail = text.partition(THINK_END)
        thought = [s for s in (x.strip() for x in head.replace("<think>", "", 1).split(delimiter)) if s]
        solution = THINK_END + tail
    else:
        boxed = [i for i, s in enumerate(steps) if extract_answer(s) is not None]
        cut = boxed[-1] if boxed else len(steps) - 1
        thought, solution = list(steps[:cut]), delimiter.join(steps[cut:])
    return thought, solution, extract_answer(solution) or extract_answer(text) or answer


# ----------------------------------------------------------------------------------------------------------
# the search


class _State:
    """One trace's A* search."""

    def __init__(self, trace: Trace, importance: list[float], cfg: CompressConfig):
        self.trace, self.importance, self.cfg = trace, importance, cfg
        self.queue = sorted(range(len(trace.steps)), key=lambda i: -importance[i])
        self.open: list = []
        self.seen: set[frozenset[int]] = set()
        self.tie = itertools.count()
        self.iterations = 0
        self.current: frozenset[int] | None = None
        self.early: list[tuple[float, frozenset[int]]] = []  # nodes popped before min_search_steps, with their f
        self.result: tuple[frozenset[int], bool, str] | None = None

    def span(self, i: int) -> set[int]:
        k, n = self.cfg.neighbours, len(self.trace.steps)
        return set(range(max(0, i - k), min(n, i + k + 1)))

    def start(self) -> frozenset[int]:
        return frozenset(self.span(self.queue[0]))

    def children(self, node: frozenset[int]) -> list[frozenset[int]]:
        out = []
        for i in self.queue:
            if len(out) == self.cfg.expand_size:
                break
            if i in node:
                continue
            child = node | self.span(i)
            if child not in self.seen:
                out.append(frozenset(child))
        return out

    def push(self, node: frozenset[int], f: float) -> None:
        self.seen.add(node)
        heapq.heappush(self.open, (f, next(self.tie), sorted(node)))

    def pop(self) -> frozenset[int]:
        self.iterations += 1
        f, _, node = heapq.heappop(self.open)
        self.current = frozenset(node)
        if self.iterations < self.cfg.min_search_steps:
            self.early.append((f, self.current))
        return self.current

    def finish(self, node: frozenset[int] | None, validated: bool, reason: str) -> None:
        self.result = (node if node is not None else frozenset(range(len(self.trace.steps))), validated, reason)


class AStarThought:
    """Compress finished traces with A*-Thought. ``validator`` is any ``LM`` backend (its ``score`` gives g and
    h, its ``generate`` validates); ``scorer`` (default: the validator) must be a transformers model, for the
    attention weights of the importance scores; ``template`` renders the question and thought as the validator
    expects (a ``prompts`` template)."""

    def __init__(self, validator, template, config: CompressConfig | None = None, scorer=None):
        self.validator, self.template = validator, template
        self.scorer = scorer if scorer is not None else validator
        self.cfg = config or CompressConfig()

    # -- model calls --------------------------------------------------------------------------------------

    def _prompt(self, trace: Trace, kept: Iterable[int] = ()) -> str:
        return self.template.prompt(self.validator.tokenizer, trace.problem, [trace.steps[i] for i in sorted(kept)])

    def costs(self, items: list[tuple[Trace, frozenset[int]]]) -> list[float]:
        """``f = g + h`` of each (trace, kept steps), from one batched ``score`` call."""
        if not items:
            return []
        prompts, conts = [], []
        for trace, kept in items:
            thought = self.template.steps_text([trace.steps[i] for i in sorted(kept)], open_step=False)
            prompts += [self._prompt(trace), self._prompt(trace, kept)]
            conts += [thought, trace.solution]
        lps = self.validator.score(prompts, conts)
        mean = lambda xs: sum(xs) / len(xs) if xs else 0.0
        return [-self.cfg.beta * mean(lps[2 * k]) - mean(lps[2 * k + 1]) for k in range(len(items))]

    def answers(self, items: list[tuple[Trace, Iterable[int]]]) -> list[str | None]:
        """The validator's final answer when it continues from each (trace, kept steps), one ``generate`` call."""
        if not items:
            return []
        cfg = self.cfg
        params = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=cfg.seed)
        gens = self.validator.generate([self._prompt(t, k) for t, k in items], params)
        return [extract_answer(g[0].text) for g in gens]

    # -- search -------------------------------------------------------------------------------------------

    def compress(self, traces: Sequence[Trace], progress=None) -> list[Compressed]:
        """Compress ``traces`` together (lock step); ``progress`` (a tqdm bar) advances as each one finishes."""
        traces = list(traces)
        searchable = [t for t in traces if t.steps]
        scores = (
            importance_scores(self.scorer, searchable, self.cfg.alpha, self.cfg.attn_batch_size) if searchable else []
        )
        by_id = {id(t): s for t, s in zip(searchable, scores)}
        states = [_State(t, by_id.get(id(t), []), self.cfg) for t in traces]
        for s in states:
            if not s.trace.steps:
                s.finish(frozenset(), False, "no thought")
                _advance(progress)
        live = [s for s in states if s.result is None]
        for s, f in zip(live, self.costs([(s.trace, s.start()) for s in live])):
            s.push(s.start(), f)
        while live:
            nodes = [s.pop() for s in live]
            due = [(s, n) for s, n in zip(live, nodes) if s.iterations >= self.cfg.min_search_steps]
            for (s, n), answer in zip(due, self.answers([(s.trace, n) for s, n in due])):
                if is_equivalent(answer, s.trace.answer):
                    s.finish(n, True, "validated")
            for s in live:
                if s.result is None and s.iterations >= self.cfg.max_search_steps:
                    s.finish(None, False, "max_search_steps")
            expand = [(s, c) for s in live if s.result is None for c in s.children(s.current)]
            for (s, c), f in zip(expand, self.costs([(s.trace, c) for s, c in expand])):
                if c not in s.seen:  # two parents of one round may reach the same child
                    s.push(c, f)
            self._exhausted([s for s in live if s.result is None and not s.open])
            for s in live:
                if s.result is not None:
                    _advance(progress)
            live = [s for s in live if s.result is None]
        return self._results(states)

    def _exhausted(self, states: list[_State]) -> None:
        """Searches whose open list ran out (short traces have few step sets): the nodes popped before
        ``min_search_steps`` were never validated; accept the lowest-f one the validator reaches the answer from
        (one ``generate`` call for all), else the full trace."""
        items = [(s, f, n) for s in states for f, n in sorted(s.early, key=lambda e: e[0])]
        answers = self.answers([(s.trace, n) for s, _, n in items])
        for (s, _, n), answer in zip(items, answers):
            if s.result is None and is_equivalent(answer, s.trace.answer):
                s.finish(n, True, "validated-exhausted")
        for s in states:
            if s.result is None:
                s.finish(None, False, "exhausted")

    def _results(self, states: list[_State]) -> list[Compressed]:
        """Check every returned thought with the validator (the accepted ones were; the full traces are checked
        here, one batch) and count tokens."""
        results = []
        for s in states:
            kept, validated, reason = s.result
            results.append(Compressed(s.trace, sorted(kept), s.iterations, validated, reason, importance=s.importance))
        check = [r for r in results if not r.validated]
        for r, answer in zip(check, self.answers([(r.trace, r.kept) for r in check])):
            r.validator_answer = answer
        accepted = [r for r in results if r.validated]
        # accepted nodes were validated during the search; their validator answer is the trace's answer
        for r in accepted:
            r.validator_answer = r.trace.answer
        tok = self.validator.tokenizer
        count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) if text else 0
        join = self.template.step_delimiter.join
        for r in results:
            t = r.trace
            r.answer_holds = is_equivalent(r.validator_answer, t.answer)
            r.correct = is_equivalent(r.validator_answer, t.reference) if t.reference is not None else None
            r.thought_tokens_before, r.thought_tokens_after = count(join(t.steps)), count(join(r.steps))
            r.tokens_before, r.tokens_after = count(join(t.steps + [t.solution])), count(join(r.steps + [t.solution]))
        return results


def _advance(progress) -> None:
    if progress is not None:
        progress.update(1)
