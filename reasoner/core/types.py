"""Core data types: problems, reasoning steps, the search tree and the solution handed back to users."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from .errors import Cancelled
from .stats import Stats


@dataclass
class Problem:
    text: str
    answer: str | None = None
    tests: str | None = None
    id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.text, bytes):
            raise TypeError("a problem's text is a str, not bytes: decode it first (e.g. data.decode('utf-8'))")
        if not isinstance(self.text, str):
            raise TypeError(
                f"a problem's text is a str, not {type(self.text).__name__}: give the problem text to solve (e.g. "
                "'Compute (17+25)*3-48.')"
            )
        if not self.text.strip():
            raise ValueError("empty problem: give the problem text to solve (e.g. 'Compute (17+25)*3-48.')")


@dataclass
class Step:
    """One reasoning step (text without the delimiter) and who wrote it."""

    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    source: str = "target"  # the role of the model that wrote it: "target" | "draft"
    finish_reason: str = "stop"  # "stop" (delimiter) | "eos" | "length"
    scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent writing (and judging) it: its share of the batched calls
    speculation: dict[str, Any] | None = (
        None  # step speculation's record: acceptor, score, accepted, the rejected draft and its tokens
    )
    phases: dict[str, float] | None = None  # step speculation: the seconds spent in draft, judge, rewrite

    def to_dict(self) -> dict:
        out = {
            "text": self.text,
            "source": self.source,
            "finish_reason": self.finish_reason,
            "tokens": len(self.token_ids),
            "scores": self.scores,
        }
        out["seconds"] = round(self.seconds, 5)
        if self.speculation is not None:
            out["speculation"] = self.speculation
        if self.phases is not None:
            out["phases"] = self.phases
        return out


class Node:
    """A node of a search tree: the root holds no step; every other node adds one step to its parent's path.
    Prefixes are shared by reference, so the tree is visible to KV reuse and cost accounting."""

    __slots__ = ("tree", "parent", "step", "depth", "children", "value", "visits", "terminal", "notes")

    def __init__(self, tree: Tree, parent: Node | None = None, step: Step | None = None, terminal: bool = False):
        self.tree = tree
        self.parent = parent
        self.step = step
        self.depth = 0 if parent is None else parent.depth + 1
        self.children: list[Node] = []
        self.value: float | None = None
        self.visits = 0
        self.terminal = terminal
        self.notes: dict | None = None  # what a search noted about this node (e.g. the thought a rethink replaced)

    def add_child(self, step: Step, terminal: bool) -> Node:
        child = Node(self.tree, self, step, terminal)
        self.children.append(child)
        return child

    def path(self) -> list[Node]:
        """Nodes from the first step down to this one (the root excluded)."""
        out, node = [], self
        while node.parent is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def steps(self) -> list[str]:
        return [n.step.text for n in self.path()]

    def text(self, delimiter: str = "\n\n") -> str:
        return delimiter.join(self.steps())

    def __repr__(self) -> str:
        return f"Node(depth={self.depth}, terminal={self.terminal}, step={self.step.text if self.step else None!r})"


class Tree:
    """The search tree of one problem, with the stats of the compute spent on it. ``prompt_ids`` is where step
    engines keep, per (model, node), the token ids that model continues from at that node."""

    def __init__(self, problem: Problem):
        self.problem = problem
        self.root = Node(self)
        self.stats = Stats()
        self.prompt_ids: dict[tuple[str, str, Node], list[int]] = {}
        self.cancelled = False  # set by ``cancel``: the search stops at its next model call
        self.on_step: Callable[[Node], None] | None = None  # told of every final step (``emit``), e.g. to stream it

    def cancel(self) -> None:
        """Stop the work on this problem: its search raises ``Cancelled`` at its next model call, and a scheduler
        drops the sequences of the calls it is serving for it (``owners``)."""
        self.cancelled = True

    def emit(self, node: Node) -> None:
        """A step engine's word that ``node``'s step is final (written, or drafted and accepted, or rewritten)."""
        if self.on_step is not None:
            self.on_step(node)

    def check(self) -> None:
        """Raise ``Cancelled`` if the tree was cancelled."""
        if self.cancelled:
            raise Cancelled(f"cancelled: {self.problem.text[:60]!r}")

    def to_dict(self, chosen: list[Step] | None = None, candidates: list[list[Step]] = ()) -> dict:
        """The whole search, not only the paths that became candidates, so a viewer can draw what was tried,
        pruned and merged: every node but the root, parents before children (``parent`` is an index into
        ``nodes``, ``None`` under the root), each with its step. ``chosen`` and ``candidates`` (paths of steps)
        become the index of their leaf; a note that names a node (``merged_into``, ``rethought``) names its
        index."""
        nodes: list[Node] = []
        stack = list(reversed(self.root.children))
        while stack:
            node = stack.pop()
            nodes.append(node)
            stack += reversed(node.children)
        index = {id(n): i for i, n in enumerate(nodes)}
        by_step = {id(n.step): i for i, n in enumerate(nodes)}
        leaf = lambda steps: by_step.get(id(steps[-1])) if steps else None  # noqa: E731
        rows = []
        for node in nodes:
            row = {"parent": index.get(id(node.parent)), **node.step.to_dict(), "terminal": node.terminal}
            if node.value is not None:
                row["value"] = round(float(node.value), 4)
            if node.visits:
                row["visits"] = node.visits
            if node.notes:
                row["notes"] = {k: index.get(id(v)) if isinstance(v, Node) else v for k, v in node.notes.items()}
            rows.append(row)
        return {"nodes": rows, "chosen": leaf(chosen), "candidates": [leaf(c) for c in candidates]}


# The trees a model call is made for, set by the step engine around the call (in the caller's thread): a scheduler
# reads it when the call is submitted, and drops the call's sequences once every one of its trees is cancelled.
OWNERS: ContextVar[tuple[Tree, ...]] = ContextVar("reasoner_call_owners", default=())


@contextmanager
def owned_by(trees: list[Tree]) -> Iterator[None]:
    """Model calls made inside are for ``trees``; raises ``Cancelled`` first if every one of them is cancelled."""
    trees = tuple({id(t): t for t in trees}.values())
    if trees and all(t.cancelled for t in trees):
        trees[0].check()
    token = OWNERS.set(trees)
    try:
        yield
    finally:
        OWNERS.reset(token)


def abandoned(owners: tuple[Tree, ...]) -> bool:
    """Whether a call made for ``owners`` may be dropped: it had owners and all of them are cancelled."""
    return bool(owners) and all(t.cancelled for t in owners)


@dataclass
class Candidate:
    """A finished trajectory with its extracted answer and aggregated verifier score."""

    steps: list[Step]
    answer: str | None
    score: float | None = None
    finished: bool = True

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.steps)

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "score": self.score,
            "finished": self.finished,
            "steps": [s.to_dict() for s in self.steps],
        }


@dataclass
class Solution:
    problem: Problem
    answer: str | None
    text: str
    steps: list[Step]
    candidates: list[Candidate]
    stats: Stats
    correct: bool | None = None  # set when the problem has a reference answer
    tree: Tree | None = field(default=None, repr=False, compare=False)  # the search tree behind it

    def to_dict(self) -> dict:
        return {
            "id": self.problem.id,
            "problem": self.problem.text,
            "reference": self.problem.answer,
            "answer": self.answer,
            "correct": self.correct,
            "text": self.text,
            "steps": [s.to_dict() for s in self.steps],
            "candidates": [c.to_dict() for c in self.candidates],
            "stats": self.stats.to_dict(),
        } | ({"tree": self.tree.to_dict(self.steps, [c.steps for c in self.candidates])} if self.tree else {})
