"""ProbTree (Cao et al., EMNLP 2023, "Probabilistic Tree-of-thought Reasoning for Answering Knowledge-intensive
Complex Questions"; reference code THU-KEG/ProbTree): answer a question through a tree of sub-questions, and at every
node keep whichever way of answering the model is most confident in.

1. *Understanding*: the model decomposes the question into sub-questions (``prompts/probtree/*.yaml``,
   ``decompose``): numbered lines, where a sub-question may name an earlier sibling's answer as ``#1``, ``#2``, ...
   (the reference code's ``<1>`` is read too). Each sub-question is decomposed in turn, down to ``max_depth`` levels
   below the question; a question the model calls ``atomic``, or whose decomposition does not parse (no numbered
   lines, numbering out of order, fewer than two or more than ``max_children`` sub-questions, a reference to a
   sibling that is not earlier), is a leaf.
2. *Reasoning*, bottom-up: a node is answered once its children are, and a sub-question's ``#k`` is filled with its
   sibling's answer before it is decomposed or answered (so siblings go in order, and independent ones together).
   Each node gets up to three answers, each the ``\\boxed{}`` of one generation, with a confidence:

   - **closed-book**: the model answers the question directly; confidence = the generation's mean token
     log-probability;
   - **open-book**: only with a retriever (``search.retriever``): the model answers from the passages it returns;
     confidence as closed-book;
   - **child aggregation** (non-leaves): the model answers from the sub-questions and their chosen answers;
     confidence = the mean of this generation's mean log-probability, the decomposition's mean log-probability and
     every child's confidence (the reference code's ``calculate_score2``), so a doubtful sub-answer lowers it.

3. The node keeps the answer with the highest confidence (an answer with no ``\\boxed{}`` counts as no answer, as
   the reference code scores ``Unknown`` at -100); the question's kept answer is the solution's.

Every model call goes through the step engine (plain or speculative), one batched call per phase for all the
problems in flight: each call is a trajectory written for a *scratch tree* whose problem text is the filled prompt,
so the recipe's chat template and the engine's budget apply; what it cost, and its counters, are added to the
problem's tree. The problem's tree mirrors the question tree: one node per question, parents above children, whose
step is the kept generation (its tokens and log-probabilities), whose ``step.scores`` hold each method's confidence
(``probtree:closed_book`` ...) and whose ``notes`` the question, the decomposition's fate and text, every method's
answer and confidence, and the ``method`` that won. ``Stats`` counts ``probtree_questions``, ``probtree_decomposed``,
``probtree_atomic``, ``probtree_malformed``, ``probtree_depth_limit`` and ``probtree_won_<method>``.

Deviations from the paper, and why:

- *decomposition node by node*: the paper generates the whole hierarchical decomposition tree in one call (JSON);
  here each node is decomposed by its own call, after its references are filled, so depth is bounded by
  ``max_depth``, a malformed answer costs one node rather than the tree, and calls batch across problems.
- *confidence*: the paper scores the explanation's tokens before "So the answer is:"; here every generated token
  (explanation and answer), since answers are boxed wherever the model puts them.
- *retrieval*: the project ships no retriever (the paper uses BM25 over Wikipedia and web search). ``retriever`` is a
  callable ``question -> list of passages`` (recipe: ``search.retriever: "module:function"``); without one,
  open-book is skipped and nodes choose between closed-book and child aggregation.
- answers are sampled as the recipe's ``sampling`` says (the paper decodes greedily); a problem's cancellation is
  checked between phases, not inside a call; steps are not streamed (``Tree.on_step``): the question tree is built
  at the end. A node with an unanswered child is not aggregated (the reference code scores such answers -100).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prompts import ProbTreePrompts
from reasoner.core.types import Node, Problem, Step, Tree
from verifiers.math import extract_answer

from .best_of_n import ChainOfThought

REF = re.compile(r"#(\d+)|<(\d+)>")
ITEM = re.compile(r"^\s*(?:Q\s*)?(\d+)\s*[.):]\s*(\S.*?)\s*$")


def fill(template: str, **fields: str) -> str:
    """``template`` with each ``{name}`` replaced (no ``str.format``: a question's own braces stay as they are)."""
    for name, value in fields.items():
        template = template.replace("{" + name + "}", value)
    return template


def parse_decomposition(text: str, max_children: int) -> tuple[str, list[str]]:
    """``("decomposed", sub-questions)``, ``("atomic", [])`` or ``("malformed", [])`` for a decomposition's text."""
    items = []
    for line in text.splitlines():
        m = ITEM.match(line)
        if m:
            if int(m.group(1)) != len(items) + 1:
                return "malformed", []
            items.append(m.group(2))
    if not items:
        return ("atomic" if "atomic" in text.lower() else "malformed"), []
    if not 2 <= len(items) <= max_children:
        return "malformed", []
    for i, question in enumerate(items):
        if any(not 1 <= _ref(m) <= i for m in REF.finditer(question)):  # only earlier siblings
            return "malformed", []
    return "decomposed", items


def _ref(match: re.Match) -> int:
    return int(match.group(1) or match.group(2))


@dataclass
class Written:
    """One generation: its text (steps joined), tokens, log-probabilities, and the step it becomes in the tree."""

    step: Step

    @property
    def text(self) -> str:
        return self.step.text

    @property
    def confidence(self) -> float | None:
        """Mean token log-probability, ``None`` without tokens."""
        lps = self.step.logprobs
        return sum(lps) / len(lps) if lps else None


@dataclass
class Answer:
    method: str
    written: Written
    answer: str | None
    confidence: float | None  # None: no answer (it cannot win)


@dataclass
class Question:
    """A node of the question tree."""

    tree: Tree
    raw: str  # as its parent's decomposition wrote it (references unfilled)
    parent: Question | None = None
    index: int = 1  # its place among its siblings, from 1
    depth: int = 0  # the problem's question is 0
    question: str | None = None  # references filled
    fate: str | None = None  # decomposed | atomic | malformed | depth_limit
    decomposition: Written | None = None
    children: list[Question] | None = None  # None until decomposed
    answers: list[Answer] = field(default_factory=list)
    best: Answer | None = None

    def references_ready(self) -> bool:
        """Whether every sibling it names is answered (the problem's own question names none: a ``#5`` in it is
        text)."""
        if self.parent is None:
            return True
        return all(self.parent.children[_ref(m) - 1].best is not None for m in REF.finditer(self.raw))

    def resolve(self) -> str:
        """The question with each ``#k`` replaced by its sibling's answer (kept when the sibling has none)."""
        if self.parent is None:
            return self.raw
        sibs = self.parent.children

        def answer(m: re.Match) -> str:
            best = sibs[_ref(m) - 1].best
            return best.answer if best.answer is not None else m.group(0)

        return REF.sub(answer, self.raw)

    def walk(self):
        yield self
        for child in self.children or ():
            yield from child.walk()


class ProbTree:
    name = "probtree"

    def __init__(
        self,
        engine,
        prompts: ProbTreePrompts,
        max_depth: int = 2,
        max_children: int = 4,
        retriever: Callable[[str], Sequence[str]] | None = None,
        whole: bool = True,
    ):
        if max_depth < 0 or max_children < 2:
            raise ValueError(f"probtree needs max_depth >= 0 and max_children >= 2, got {max_depth}, {max_children}")
        self.engine, self.prompts, self.max_depth, self.max_children = engine, prompts, max_depth, max_children
        self.retriever = retriever
        self.writer = ChainOfThought(engine, whole)

    # -- model calls --------------------------------------------------------------------------------------

    def _write(self, calls: list[tuple[Tree, str]]) -> list[Written]:
        """One trajectory per ``(tree, prompt)``, all in one batched engine call; costs go to each ``tree``."""
        if not calls:
            return []
        scratch = [Tree(Problem(prompt, id=tree.problem.id)) for tree, prompt in calls]
        leaves = self.writer.run(scratch)
        out = []
        delimiter = self.engine.template.step_delimiter
        for (tree, _), sub, found in zip(calls, scratch, leaves):
            tree.stats.merge(sub.stats)
            steps = [n.step for n in found[0].path()] if found else []
            last = steps[-1] if steps else Step("")
            step = Step(
                delimiter.join(s.text for s in steps),
                [t for s in steps for t in s.token_ids],
                [lp for s in steps for lp in s.logprobs],
                source=last.source,
                finish_reason=last.finish_reason,
                seconds=sum(s.seconds for s in steps),
            )
            out.append(Written(step))
        return out

    # -- the search ---------------------------------------------------------------------------------------

    def run(self, trees: list[Tree]) -> list[list[Node]]:
        """Answer every tree's question through its question tree; returns each question's node (one per tree)."""
        roots = [Question(t, t.problem.text) for t in trees]
        while any(r.best is None for r in roots):
            for t in trees:
                t.check()
            open_ = [q for r in roots for q in r.walk() if q.best is None]
            self._decompose([q for q in open_ if q.children is None and q.references_ready()])
            self._answer([q for q in open_ if q.children is not None and all(c.best for c in q.children)])
        return [[self._grow(r, t.root)] for r, t in zip(roots, trees)]

    def _decompose(self, ready: list[Question]) -> None:
        for q in ready:
            q.question = q.resolve()
            q.tree.stats.count("probtree_questions")
        deep = [q for q in ready if q.depth < self.max_depth]
        for q in ready:
            if q.depth >= self.max_depth:
                q.fate, q.children = "depth_limit", []
        written = self._write([(q.tree, fill(self.prompts.decompose, question=q.question)) for q in deep])
        for q, w in zip(deep, written):
            q.decomposition = w
            q.fate, subs = parse_decomposition(w.text, self.max_children)
            q.children = [Question(q.tree, s, q, i + 1, q.depth + 1) for i, s in enumerate(subs)]
        for q in ready:
            q.tree.stats.count(f"probtree_{q.fate}")

    def _answer(self, due: list[Question]) -> None:
        calls: list[tuple[Question, str, str]] = []
        for q in due:
            calls.append((q, "closed_book", fill(self.prompts.closed_book, question=q.question)))
            if self.retriever is not None:
                passages = "\n".join(f"[{i + 1}] {p}" for i, p in enumerate(self.retriever(q.question)))
                calls.append((q, "open_book", fill(self.prompts.open_book, question=q.question, passages=passages)))
            if q.children and all(c.best.confidence is not None for c in q.children):  # else nothing to stand on
                context = "\n".join(f"Q{c.index}: {c.question}\nA{c.index}: {c.best.answer}" for c in q.children)
                calls.append(
                    (q, "child_aggregation", fill(self.prompts.aggregate, question=q.question, context=context))
                )
        for (q, method, _), w in zip(calls, self._write([(q.tree, prompt) for q, _, prompt in calls])):
            answer = extract_answer(w.text)
            q.answers.append(Answer(method, w, answer, self._confidence(q, method, w) if answer else None))
        for q in due:
            # max keeps the first of equal confidences: closed-book, then open-book, then child aggregation
            q.best = max(q.answers, key=lambda a: a.confidence if a.confidence is not None else float("-inf"))
            if q.best.confidence is not None:
                q.tree.stats.count(f"probtree_won_{q.best.method}")

    @staticmethod
    def _confidence(q: Question, method: str, w: Written) -> float | None:
        own = w.confidence
        if method != "child_aggregation" or own is None:
            return own
        parts = [own, q.decomposition.confidence if q.decomposition else None]
        parts += [c.best.confidence for c in q.children]
        if any(p is None for p in parts):
            return None
        return sum(parts) / len(parts)

    def _grow(self, q: Question, parent: Node) -> Node:
        """``q``'s node under ``parent`` in the problem's tree (then its children's): the kept generation as its
        step, every method's confidence in ``step.scores``, the rest in ``notes``."""
        step = q.best.written.step
        step.scores.update({f"probtree:{a.method}": a.confidence for a in q.answers if a.confidence is not None})
        node = parent.add_child(step, terminal=True)
        node.notes = {
            "question": q.question,
            "decomposition": q.fate,
            "decomposition_text": q.decomposition.text if q.decomposition else None,
            "method": q.best.method,
            "answers": {a.method: {"answer": a.answer, "confidence": a.confidence} for a in q.answers},
        }
        for child in q.children or ():
            self._grow(child, node)
        return node
