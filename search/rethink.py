"""RethinkMCTS (arXiv 2409.09584): MCTS over the thoughts before the code, guided by the public tests, where
a rollout whose program fails them is *rethought*: a thought of it is regenerated and rolled out again.

Each iteration, for every problem still searching:

1. *select* from the root with var_p_uct, ``Q + (ln((N_p + base + 1) / base) + c) * P * sqrt(ln N_p) / (1 + N)``
   (the paper's default; recipe knobs ``puct_base`` / ``puct_init``, set to its 10 and 4 in
   ``recipes/toy-code-rethink.yaml``); priors ``P`` as in ``search.mcts``;
2. *expand* ``width`` children and *roll out* the best of them, one sampled step at a time, to a finished
   program;
3. *evaluate*: the verifier (``verifier.type: tests``) runs the program on the problem's public tests;
   reward = pass rate, finished rollouts only (thoughts score 0);
4. *rethink*, up to ``max_think_times`` times while the program fails: pick a thought of the failing
   trajectory, write a new sibling for it and roll that out again; the new branch stays in the tree;
5. *back up* every rollout's reward (the failing ones too: each is a real evaluation), so
   ``root.visits`` = rollouts = iterations + rethinks.

With ``stop_on_pass`` a problem stops searching once one of its programs passes every public test
(LATS-style early exit; not part of RethinkMCTS as the research notes describe it, which spends its whole
rollout budget: ``search.stop_on_pass=false`` does that). The answer is one program: the finished trajectory
with the best public pass rate, then the best mean value, then the most visits. Public tests only guide the
search; the runner scores the answer on the hidden tests.

Deviations from the paper, and why:

- *which thought to rethink*: the paper asks the LLM, shown a block-level execution trace, which thought is
  wrong. A small policy cannot, so the rule is the policy's own doubt (``rethink_pick: least_likely``): of the
  thoughts this iteration wrote on the failing trajectory, the one holding the least likely token (mistakes
  in sampled reasoning sit at unlikely tokens); ``deepest`` picks the last one instead. When the iteration
  wrote no thought (the selected node was one step before the code), every thought of the path competes,
  and with none at all the code step itself is rewritten.
- *regenerate in place*: the paper replaces the thought's text; here the new thought is a sibling, so the
  tree keeps both and the failed branch's statistics stay true.
- *feedback*: the paper's refinement prompt carries verbal feedback from the execution. ``feedback_prompt``
  (recipe ``search.rethink_prompt``) is the hook for models that read it: a template with ``{problem}`` and
  ``{feedback}`` (the failing test's reason) that replaces the problem text while the thought is regenerated.
  The toy model cannot read feedback, so ``toy-code-rethink`` leaves it unset (rethinking is resampling).
- *dual evaluation* (an LLM self-evaluation score added when the public tests pass) is left out: the toy model
  cannot judge code. Passing programs score 1.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from reasoner.core.types import Node, Tree

from .common import leaves, path_scores
from .kv import KVMeter
from .mcts import MCTS

log = logging.getLogger(__name__)
PICKS = ("least_likely", "deepest")


class RethinkMCTS(MCTS):
    name = "rethink_mcts"

    def __init__(
        self,
        engine,
        verifier,
        n: int = 16,
        width: int = 3,
        max_think_times: int = 2,
        pick: str = "least_likely",
        stop_on_pass: bool = True,
        ucb_base: float = 10.0,
        ucb_constant: float = 4.0,
        feedback_prompt: str | None = None,
        seed: int = 0,
    ):
        super().__init__(engine, verifier, n, width, "last", "sample", "value", ucb_base, ucb_constant, False, seed)
        if not hasattr(verifier, "outcome"):
            raise ValueError(
                "search.method=rethink_mcts rethinks programs that fail their public tests: set verifier.type=tests"
            )
        if pick not in PICKS:
            raise ValueError(f"unknown search.rethink_pick {pick!r}: use {' or '.join(PICKS)}")
        if max_think_times < 0:
            raise ValueError(f"search.max_think_times must be >= 0, got {max_think_times}")
        if feedback_prompt is not None and "{feedback}" not in feedback_prompt:
            raise ValueError(
                "search.rethink_prompt must contain {feedback} (and may contain {problem}): it is the regeneration "
                "prompt's problem text"
            )
        self.max_think_times, self.pick, self.stop_on_pass, self.feedback_prompt = (
            max_think_times,
            pick,
            stop_on_pass,
            feedback_prompt,
        )

    def _puct(self, parent: Node, child: Node) -> float:
        """RethinkMCTS's var_p_uct: exploration grows with sqrt(ln N_parent) rather than sqrt(N_parent)."""
        c = math.log((parent.visits + self.base + 1) / self.base) + self.init
        return self._q(child) + c * self.prior[child] * math.sqrt(math.log(max(1, parent.visits))) / (1 + child.visits)

    # -- one rollout: from a start node down to a finished program, remembering the nodes it wrote

    def _rollout(self, starts: list[Node], fresh: set[Node]) -> list[Node]:
        """MCTS's sampled rollout; the nodes it wrote (each end's path below its start) join ``fresh``."""
        ends = self._roll_out(starts)
        for start, node in zip(starts, ends):
            while node is not start:
                fresh.add(node)
                node = node.parent
        return ends

    def _evaluate(self, ends: list[Node]) -> list[float]:
        """Run the finished programs on the public tests and back up each pass rate."""
        rewards = path_scores(self.verifier, ends, "last")
        for end, v in zip(ends, rewards):
            self._back_up(end, v)
            end.tree.stats.count("rollouts")
        return rewards

    def _thought_to_rethink(self, end: Node, fresh: set[Node]) -> Node:
        """The node whose step is regenerated (see the module docstring for the rule)."""
        path = end.path()
        thoughts = [n for n in path if not n.terminal]
        pool = [n for n in thoughts if n in fresh] or thoughts
        if not pool:
            return end  # the answer is the code alone: rewrite it
        if self.pick == "deepest":
            return pool[-1]
        return min(pool, key=lambda n: (min(n.step.logprobs, default=0.0), -n.depth))

    @contextmanager
    def _feedback(self, trees_feedback: list[tuple[Tree, str]]) -> Iterator[None]:
        """While regenerating: each tree's problem text becomes ``feedback_prompt`` filled in (engines read the
        problem from ``node.tree.problem``); restored afterwards."""
        if self.feedback_prompt is None:
            yield
            return
        saved = [(t, t.problem) for t, _ in trees_feedback]
        try:
            for t, reason in trees_feedback:
                t.problem = replace(
                    t.problem, text=self.feedback_prompt.format(problem=t.problem.text, feedback=reason)
                )
            yield
        finally:
            for t, p in saved:
                t.problem = p

    def _run(self, trees: list[Tree]) -> list[list[Node]]:
        self._begin()
        meter = KVMeter()
        active = list(trees)
        for _ in range(self.n):
            if not active:
                break
            fresh: set[Node] = set()
            # 1. select, 2. expand and roll out
            picked = [self._select(t) for t in active]
            groups = self._expand(
                [(node, max(1, self.width - len(node.children))) for node in picked if not node.terminal]
            )
            fresh.update(c for g in groups for c in g)
            starts = [node if node.terminal else self._best_child(node) for node in picked]
            ends = self._rollout(starts, fresh)
            for t in active:
                t.stats.count("iterations")
            # 3. evaluate and back up
            rewards = self._evaluate(ends)
            # 4. rethink the failures
            for _think in range(self.max_think_times):
                failing = [(end, r) for end, r in zip(ends, rewards) if r < 1.0]
                if not failing:
                    break
                targets = [self._thought_to_rethink(end, fresh) for end, _ in failing]
                feedback = [(end.tree, self.verifier.outcome(end).reason) for end, _ in failing]
                with self._feedback(feedback):
                    groups = self._expand([(t.parent, 1) for t in targets])
                new = [g[0] for g in groups]
                fresh.update(new)
                for old, node in zip(targets, new):
                    node.notes = {"rethought": old}  # the thought this sibling was regenerated for
                ends = self._rollout(new, fresh)
                rewards = self._evaluate(ends)
                for (old, r_old), r in zip(failing, rewards):
                    old.tree.stats.count("rethinks")
                    if r > r_old:
                        old.tree.stats.count("rethinks_improved")
                    log.debug("rethink: public pass rate %.2f -> %.2f", r_old, r)
            for t in active:  # MCTS keeps its whole tree: any node may be selected again
                meter.observe(t, leaves(t.root))
            if self.stop_on_pass:
                active = [
                    t for t in active if not any(self.reward.get(x, 0.0) >= 1.0 for x in leaves(t.root) if x.terminal)
                ]
        meter.book()
        return [self._answer(t) for t in trees]

    def _answer(self, tree: Tree) -> list[Node]:
        """The best program: best public pass rate, then mean value, then visits (first found wins ties)."""
        finished = [leaf for leaf in leaves(tree.root) if leaf.terminal and leaf.visits > 0]
        if not finished:
            return []
        return [max(finished, key=lambda x: (self.reward.get(x, 0.0), self._q(x), x.visits))]
