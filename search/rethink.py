"""RethinkMCTS (Li et al. 2024, "RethinkMCTS: Refining Erroneous Thoughts in Monte Carlo Tree Search for Code
Generation", arXiv 2409.09584): MCTS over the thoughts before the code, guided by the public tests, where a
rollout whose program fails them is *rethought*: given verbal feedback from its execution, the model rewrites an
erroneous thought, the rewrite takes the thought's place in the tree, and it is rolled out again.

Each iteration, for every problem still searching:

1. *select* from the root with var_p_uct, ``Q + (ln((N_p + base + 1) / base) + c) * P * sqrt(ln N_p) / (1 + N)``
   (the paper's default; recipe knobs ``puct_base`` / ``puct_init``, set to its 10 and 4 in
   ``recipes/toy-code-rethink.yaml``); priors ``P`` as in ``search.mcts``;
2. *expand* ``width`` children and *roll out* the best of them, one sampled step at a time, to a finished
   program;
3. *evaluate*: the verifier (``verifier.type: tests``) runs the program on the problem's public tests in the
   sandbox; reward = pass rate, finished rollouts only (thoughts score 0);
4. *rethink*, up to ``max_think_times`` times while the program fails (``search.rethink``):

   - ``feedback`` (the default, the paper's mechanism): the execution trace of the failing run becomes verbal
     feedback (``ExecutionResult.feedback``: per failing test the assert, expected vs actual, the exception
     and the program line that raised it, the tail of its output; every piece bounded); the rethink prompt
     (``PromptTemplate.rethink_prompt``: the problem, the thoughts before the erroneous one, that thought, the
     failing code, the feedback) asks the model to rewrite the thought; the refined thought *replaces* the old
     one: it is written under the same parent, the old one is retired (selection never enters it again), and
     the new node notes ``rethought`` (the old node, kept with its subtree for the viewer and the trace) and
     ``feedback`` (the text the model read);
   - ``resample``: the thought is regenerated from the unchanged prompt (no feedback) as a new sibling; the old
     branch stays selectable;

   then the new thought is rolled out again and evaluated;
5. *back up* every rollout's reward (the failing ones too: each is a real evaluation), so
   ``root.visits`` = rollouts = iterations + rethinks.

With ``stop_on_pass`` a problem stops searching once one of its programs passes every public test
(LATS-style early exit; not part of RethinkMCTS, which spends its whole rollout budget:
``search.stop_on_pass=false`` does that). The answer is one program: the finished trajectory with the best
public pass rate, then the best mean value, then the most visits. Public tests only guide the search; the runner
scores the answer on the hidden tests.

Deviations from the paper, and why:

- *which thought to rethink*: the paper rewrites the thought its iteration expanded, after an LLM's block-level
  debugging of the trace (LDB) has said where the code goes wrong. Here the rollouts write several thoughts into
  the tree, and the rule is the policy's own doubt (``rethink_pick: least_likely``): of the thoughts this
  iteration wrote on the failing trajectory, the one holding the least likely token (mistakes in sampled
  reasoning sit at unlikely tokens); ``deepest`` picks the last one instead. When the iteration wrote no thought
  (the selected node was one step before the code), every thought of the path competes, and with none at all the
  code step itself is rewritten.
- *the feedback* is the execution trace itself (what failed, with which values, where it raised), not LDB's
  block-by-block debugging by the LLM (that needs a model able to judge code blocks, and a traced interpreter).
- *replace*: the paper resets the node in place; here the refined thought is a new node and the old one is
  retired, so the statistics already backed up through the failed branch stay true (every visit was a real
  rollout) and the viewer can show both.
- *dual evaluation* (an LLM self-evaluation score added when the public tests pass) is left out: the toy model
  cannot judge code. Passing programs score 1.
- *toy scale*: the toy code model was never trained on rethink prompts and cannot read feedback (the toy
  template's rethink request keeps its trained layout: the problem and the feedback, then the thoughts before
  the erroneous one), so on ``toy-code-rethink`` a rethink is, in effect, a resample from a perturbed prompt, and
  does worse than resampling (94 % against 98 % pass@1, docs/benchmarks.md). The mechanism is tested with a
  scripted model that fixes a thought only when the feedback names the bug (``tests/test_rethink_feedback.py``);
  its benefit with a model that reads feedback is unmeasured.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from functools import partial

from reasoner.core.types import Node, Tree

from .common import leaves, path_scores
from .kv import KVMeter
from .mcts import MCTS

log = logging.getLogger(__name__)
PICKS = ("least_likely", "deepest")
MODES = ("feedback", "resample")


def _rethink_prompt(template, tokenizer, fields) -> str:
    """The rethink prompt in the engine's own template and tokenizer (``StepEngine.propose_from`` calls it)."""
    return template.rethink_prompt(tokenizer, *fields)


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
        rethink: str = "feedback",
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
        if rethink not in MODES:
            raise ValueError(f"unknown search.rethink {rethink!r}: use {' or '.join(MODES)}")
        if rethink == "feedback" and not hasattr(engine, "propose_from"):
            raise ValueError("search.rethink=feedback needs a step engine that writes from a prompt of its own")
        self.max_think_times, self.pick, self.stop_on_pass, self.mode = max_think_times, pick, stop_on_pass, rethink

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

    def _best_child(self, node: Node) -> Node:
        """var_p_uct's best child, never a retired one (a thought its rethink replaced) while others are left."""
        live = [c for c in node.children if c not in self.retired] or node.children
        return max(live, key=lambda ch: self._puct(node, ch))

    def _resample(self, targets: list[Node]) -> list[Node]:
        """``rethink: resample``: each target's thought written again from the same prompt, as a sibling."""
        return [g[0] for g in self._expand([(t.parent, 1) for t in targets])]

    def _refine(self, targets: list[Node], ends: list[Node]) -> list[Node]:
        """``rethink: feedback``: each target's thought rewritten from the rethink prompt, which carries the
        execution feedback of its failing rollout ``end``; the rewrite takes the target's place."""
        prompts, feedback = [], []
        for target, end in zip(targets, ends):
            outcome = self.verifier.outcome(end)
            feedback.append(outcome.feedback())
            before = [n.step.text for n in target.path()[:-1]]
            fields = (target.tree.problem.text, before, target.step.text, outcome.program or "", feedback[-1])
            prompts.append(partial(_rethink_prompt, fields=fields))
        new = []
        for target, step, text in zip(targets, self.engine.propose_from(targets, prompts), feedback):
            if not target.terminal:  # a thought stays a thought, however the reply ended (a chat turn ends at EOS)
                step = replace(step, text=step.text.strip(), token_ids=[], finish_reason="stop")
            parent = target.parent
            node = parent.add_child(step, self.engine.is_terminal(parent, step))
            node.tree.emit(node)
            node.notes = {"rethought": target, "feedback": text}
            self.retired.add(target)
            new.append(node)
        for node, v in zip(new, path_scores(self.verifier, new, "last")):
            node.value, self.reward[node] = v, v
        for parent in {n.parent for n in new}:
            self.expanded.add(parent)
            self._priors(parent)
        return new

    def _run(self, trees: list[Tree]) -> list[list[Node]]:
        self._begin()
        self.retired: set[Node] = set()
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
                if self.mode == "feedback":
                    new = self._refine(targets, [end for end, _ in failing])
                else:
                    new = self._resample(targets)
                    for old, node in zip(targets, new):
                        node.notes = {"rethought": old}  # the thought this sibling was regenerated for
                fresh.update(new)
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
