"""Process reward models (PRMs): one score per step, read from a model trained to grade reasoning steps.

Each family has its own input format and its own place to read the score; getting them exactly right is the
whole job, so each is one small class (formats as search-and-learn and the model cards implement them):

- ``qwen`` (Qwen2.5-Math-PRM): chat template with the Qwen math system prompt, steps joined and ended by
  ``<extra_0>``; two-label logits at every ``<extra_0>``, score = softmax(...)[1]. The toy PRM uses this format
  with the toy chat template, no system prompt and the step token ``"\n\n"`` (its config's ``prm_*`` fields).
- ``skywork`` (Skywork-o1-Open-PRM): ``bos + problem + "\\n"``, then each step's tokens followed by the step
  token (``"\\n"``); a scalar value head, score = sigmoid(value) at each step token. The toy PRM uses this
  format with the toy world's step token ``"\\n\\n"``.
- ``math-shepherd``: ``question + " " + steps`` with ``" ки"`` after every step; causal-LM logits of ``+`` and
  ``-`` at each tag, score = softmax over the two [+].
- ``rlhflow`` (RLHFlow Llama3.1-8B-PRM): a multi-turn chat, each step a user turn answered ``+`` by the
  assistant; score = softmax over {+, -} of the logits that predict each assistant ``+``.

A PRM's head is a value head at the step token (``token``), the LM's own next-token logits (``lm``), or, for a
PRM trained by ``reasoner prm train --head surprise``, a logistic head over the causal-LM backbone's surprise at
the path's tokens (``SurpriseHead``: our design, not a published PRM's; see there).

A step's score depends only on its path up to it (all heads read causal positions), so it is cached in
``step.scores[name]`` and a step shared by many trajectories is scored once.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from reasoner.backends.sources import resolve_dtype, resolve_path
from reasoner.core.stats import Stats
from reasoner.core.types import Node

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

QWEN_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


class PRMFormat:
    """How a family renders (problem, steps) into token ids, and where its step scores are read."""

    family = ""
    head = "token"  # "token": a token-classification / value head; "lm": next-token logits of a causal LM

    def __init__(self, tokenizer, step_token: str | None = None):
        self.tokenizer = tokenizer
        if step_token is not None:
            self.step_token = step_token

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def single_token(self, text: str) -> int:
        ids = self.encode(text)
        if len(ids) != 1:
            raise ValueError(
                f"{self.family} PRM: {text!r} must be one token of this tokenizer, got {len(ids)}: is this a "
                f"{self.family} model?"
            )
        return ids[0]

    def build(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """Input ids and, for each step, the position whose output holds its score."""
        raise NotImplementedError

    def prompt_ids(self, problem: str) -> list[int]:
        """The ids ``build`` puts before the first step's tokens (a surprise head reads the steps' own tokens
        only)."""
        raise ValueError(f"a surprise-head PRM needs the qwen or skywork format, not {self.family}")

    def read(self, output: torch.Tensor) -> torch.Tensor:
        """Scores in [0, 1] from the model's output rows at the score positions (``[k, labels]``)."""
        raise NotImplementedError


class QwenPRM(PRMFormat):
    family = "qwen"
    step_token = "<extra_0>"
    system = QWEN_SYSTEM  # a PRM trained by `reasoner prm train` records its own (the toy's: none)

    def build(self, problem, steps):
        messages = self._turns(problem) + [
            {"role": "assistant", "content": self.step_token.join(steps) + self.step_token}
        ]
        ids = self.encode(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
        sep = self.single_token(self.step_token)
        return ids, [i for i, t in enumerate(ids) if t == sep]

    def prompt_ids(self, problem):
        prompt = self.tokenizer.apply_chat_template(self._turns(problem), tokenize=False, add_generation_prompt=True)
        return self.encode(prompt)

    def _turns(self, problem: str) -> list[dict]:
        """The system turn (if any) and the problem's user turn."""
        turns = [{"role": "system", "content": self.system}] if self.system else []
        return turns + [{"role": "user", "content": problem}]

    def read(self, output):
        return output[:, :2].float().softmax(dim=-1)[:, 1]


class SkyworkPRM(PRMFormat):
    family = "skywork"
    step_token = "\n"

    def build(self, problem, steps):
        ids = self.prompt_ids(problem)
        sep = self.encode(self.step_token)[-1]
        positions = []
        for step in steps:
            ids += self.encode(step) + [sep]
            positions.append(len(ids) - 1)
        return ids, positions

    def prompt_ids(self, problem):
        return self.encode((self.tokenizer.bos_token or "") + problem + "\n")

    def read(self, output):
        return output[:, 0].float().sigmoid()


class MathShepherdPRM(PRMFormat):
    family = "math-shepherd"
    head = "lm"
    step_token = " ки"

    def __init__(self, tokenizer, step_token=None):
        super().__init__(tokenizer, step_token)
        # the tag and the +/- labels as the model card tokenizes them (Mistral: "ки" is one token after a space)
        self.tag = self.encode(self.step_token)[-1]
        self.labels = [self.encode("+")[-1], self.encode("-")[-1]]

    def build(self, problem, steps):
        ids = self.encode(problem + " " + "\n\n".join(s + self.step_token for s in steps))
        return ids, [i for i, t in enumerate(ids) if t == self.tag]

    def read(self, output):
        return output[:, self.labels].float().softmax(dim=-1)[:, 0]


class RLHFlowPRM(PRMFormat):
    family = "rlhflow"
    head = "lm"

    def __init__(self, tokenizer, step_token=None):
        super().__init__(tokenizer, step_token)
        self.labels = [self.encode("+")[-1], self.encode("-")[-1]]

    def _chat(self, messages, add_generation_prompt):
        return self.encode(
            self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        )

    def build(self, problem, steps):
        messages: list[dict] = []
        positions = []
        for k, step in enumerate(steps):
            messages.append({"role": "user", "content": f"{problem} {step}" if k == 0 else step})
            positions.append(len(self._chat(messages, True)) - 1)  # this position predicts the assistant's "+"
            messages.append({"role": "assistant", "content": "+"})
        ids = self._chat(messages, False)
        for p in positions:
            if ids[p + 1] != self.labels[0]:
                raise ValueError(
                    "rlhflow PRM: the chat template does not put the assistant's '+' right after the generation prompt"
                )
        return ids, positions

    def read(self, output):
        return output[:, self.labels].float().softmax(dim=-1)[:, 0]


FAMILIES = {f.family: f for f in (QwenPRM, SkyworkPRM, MathShepherdPRM, RLHFlowPRM)}

SURPRISE_FEATURES = ("step_min", "step_mean", "path_min", "path_mean_min")


def surprise_features(
    logits: torch.Tensor, ids: Sequence[int], first: int, positions: Sequence[int]
) -> list[list[float]]:
    """Per step, from a causal LM's ``logits`` of one input (``[len(ids), vocab]``): the log-probability of the
    step's weakest token, its mean token log-probability, and the minima of both over the path so far. The step
    token that ends a step is not read (after a final answer the model would not write it). ``first`` is where the
    first step's tokens start (after ``PRMFormat.prompt_ids``)."""
    import torch

    n = len(ids)
    logp = logits[: n - 1].float().log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None].to(logits.device))[:, 0]
    token = [0.0] + logp.tolist()  # token[j]: log p(ids[j] | ids[:j])
    out, path_min, path_mean_min = [], 0.0, 0.0
    for k, end in enumerate(positions):
        start = first if k == 0 else positions[k - 1] + 1
        seg = token[start:end] or [0.0]
        low, mean = min(seg), sum(seg) / len(seg)
        path_min, path_mean_min = (low, mean) if k == 0 else (min(path_min, low), min(path_mean_min, mean))
        out.append([low, mean, path_min, path_mean_min])
    return out


def surprise_start(prompt: Sequence[int], ids: Sequence[int], family: str) -> int:
    """Where the first step's tokens start in ``ids`` (a format's ``build``): after ``prompt`` (its
    ``prompt_ids``), which must be their prefix (a chat template that renders the turn differently once it has
    content would break that)."""
    if list(ids[: len(prompt)]) != list(prompt):
        raise ValueError(
            f"{family} PRM: the prompt's ids are not a prefix of the rendered steps, so a surprise head cannot "
            "tell where the steps start; use the other format (--format)"
        )
    return len(prompt)


class SurpriseHead:
    """A PRM head over the backbone's surprise (``SURPRISE_FEATURES``): score = sigmoid(weights . features + bias),
    fitted by ``reasoner prm train --head surprise`` on MC labels and kept in the model's config
    (``prm_surprise``). Why: a wrong step is one whose tokens the backbone did not expect, and Math-Shepherd's
    labels call every step after the first mistake wrong, which the path minima carry forward; a value head on the
    hidden state at the step token did not learn to check the toy's arithmetic from one label per step
    (docs/benchmarks.md, step ROC-AUC 0.72-0.80). Our design: the features are the likelihood verifier's
    (``verifiers.likelihood``) plus the running minima, with weights learnt from process labels."""

    def __init__(self, spec: dict):
        features, weights = list(spec.get("features", ())), [float(w) for w in spec.get("weights", ())]
        unknown = sorted(set(features) - set(SURPRISE_FEATURES))
        if unknown or not features or len(weights) != len(features):
            raise ValueError(
                f"prm_surprise in the PRM's config needs features from {', '.join(SURPRISE_FEATURES)} and one weight "
                f"each, got features {features} and {len(weights)} weights: retrain with `reasoner prm train --head "
                "surprise`"
            )
        self.columns = [SURPRISE_FEATURES.index(f) for f in features]
        self.weights, self.bias = weights, float(spec.get("bias", 0.0))

    def score(self, features: Sequence[Sequence[float]]) -> list[float]:
        out = []
        for row in features:
            z = self.bias + sum(w * row[c] for w, c in zip(self.weights, self.columns))
            out.append(1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z)))
        return out


def detect_family(path: str, config) -> str:
    """The family a PRM trained by ``reasoner prm train`` records in its config (``prm_family``), else the one its
    name or architecture tells; ``family:`` in the recipe overrides it."""
    recorded = getattr(config, "prm_family", None)
    if recorded in FAMILIES:
        return recorded
    name = path.lower()
    if path.startswith("toy:") or "skywork" in name:
        return "skywork"
    if "shepherd" in name:
        return "math-shepherd"
    if "rlhflow" in name:
        return "rlhflow"
    archs = " ".join(getattr(config, "architectures", None) or []).lower()
    if "processrewardmodel" in archs or "qwen2.5-math-prm" in name:
        return "qwen"
    raise ValueError(f"cannot tell which PRM family {path!r} is: set verifier.family to one of {', '.join(FAMILIES)}")


def load_prm_model(path: str, head: str, dtype: torch.dtype, device: str):
    """A causal LM for ``lm`` heads; for ``token`` heads a token-classification model (the toy PRM, a test
    model) or, for a remote-code PRM such as Qwen2.5-Math-PRM, ``AutoModel`` with ``trust_remote_code``."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    archs = getattr(config, "architectures", None) or []
    if head == "lm":
        cls = AutoModelForCausalLM
    elif any(a.endswith("ForTokenClassification") for a in archs):
        cls = AutoModelForTokenClassification
    else:
        cls = AutoModel
    return cls.from_pretrained(path, dtype=dtype, trust_remote_code=True).to(device).eval()


class PRMVerifier:
    """Scores steps with a PRM of any supported family; batched, one forward pass per batch of paths."""

    def __init__(
        self,
        path: str,
        family: str = "auto",
        step_token: str | None = None,
        role: str = "verifier",
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
    ):
        import torch  # not at the top: the code checker's judge process imports this package and needs no torch
        from transformers import AutoConfig, AutoTokenizer

        resolved = resolve_path(path)
        config = AutoConfig.from_pretrained(resolved, trust_remote_code=True)
        if family == "auto":
            family = detect_family(path, config)
        if family not in FAMILIES:
            raise ValueError(f"unknown PRM family {family!r}: use one of {', '.join(FAMILIES)} (or auto)")
        if step_token is None:  # the step token a PRM trained by `reasoner prm train` records (the toy's "\n\n")
            step_token = getattr(config, "prm_step_token", None) or ("\n\n" if path.startswith("toy:") else None)
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.tokenizer = AutoTokenizer.from_pretrained(resolved)
        self.format = FAMILIES[family](self.tokenizer, step_token)
        if hasattr(config, "prm_system"):  # the system prompt a PRM trained by `reasoner prm train` was trained with
            self.format.system = config.prm_system
        spec = getattr(config, "prm_surprise", None)
        self.surprise = SurpriseHead(spec) if spec is not None else None
        if self.surprise is not None:
            self.format.prompt_ids("")  # a family whose steps are not one span of the input fails here, at load
        # a problem's prompt ids, rendered once (a surprise head checks every path scored against them)
        self._prompt_ids = functools.lru_cache(maxsize=1024)(self.format.prompt_ids)
        head = "lm" if self.surprise is not None else self.format.head
        self.model = load_prm_model(resolved, head, resolve_dtype(dtype, self.device), self.device)
        self.role, self.max_batch_size = role, max_batch_size
        self.name = f"prm:{Path(path).name}"
        self.stats = Stats()
        self.lock = threading.Lock()  # problems are searched in threads; the model runs one batch at a time
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def score_steps(self, problems: Sequence[str], paths: Sequence[Sequence[str]]) -> list[list[float]]:
        """The score of every step of each (problem, steps) pair: one forward pass per batch."""
        return self._run([self._build(p, s) for p, s in zip(problems, paths)], [len(s) for s in paths])

    def _build(self, problem: str, steps: Sequence[str]) -> tuple[list[int], list[int], int]:
        """``format.build``'s ids and score positions, and where the steps start (read by a surprise head)."""
        ids, positions = self.format.build(problem, steps)
        if self.surprise is None:
            return ids, positions, 0
        return ids, positions, surprise_start(self._prompt_ids(problem), ids, self.format.family)

    def _run(self, built: list[tuple[list[int], list[int], int]], n_steps: list[int]) -> list[list[float]]:
        with self.lock:
            return self._forward(built, n_steps)

    def _forward(self, built: list[tuple[list[int], list[int], int]], n_steps: list[int]) -> list[list[float]]:
        import torch

        out: list[list[float]] = [[] for _ in built]
        order = sorted(range(len(built)), key=lambda i: len(built[i][0]))
        role = self.stats.role(self.role)
        start_time = time.perf_counter()
        with torch.inference_mode():
            for start in range(0, len(order), self.max_batch_size):
                chunk = order[start : start + self.max_batch_size]
                width = max(len(built[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for r, i in enumerate(chunk):  # right padding: positions stay those of the unpadded input
                    ids[r, : len(built[i][0])] = torch.tensor(built[i][0])
                    mask[r, : len(built[i][0])] = 1
                output = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                logits = output.logits if hasattr(output, "logits") else output[0]
                for r, i in enumerate(chunk):
                    positions = built[i][1]
                    if len(positions) != n_steps[i]:
                        raise ValueError(
                            f"{self.format.family} PRM: found {len(positions)} score positions for {n_steps[i]} "
                            "steps (does a step contain the step token?)"
                        )
                    if not positions:
                        out[i] = []
                    elif self.surprise is not None:
                        feats = surprise_features(logits[r], built[i][0], built[i][2], positions)
                        out[i] = self.surprise.score(feats)
                    else:
                        out[i] = self.format.read(logits[r, positions]).tolist()
                role.prefill_tokens += int(mask.sum())
                role.forward_passes += 1
        role.calls += 1
        role.wall_s += time.perf_counter() - start_time
        return out

    def score_paths(self, nodes: Sequence[Node]) -> list[list[float]]:
        todo = [n for n in nodes if any(self.name not in p.step.scores for p in n.path())]
        if todo:
            built = [self._build(n.tree.problem.text, n.steps()) for n in todo]
            scores = self._run(built, [n.depth for n in todo])
            for node, step_scores, (ids, _, _) in zip(todo, scores, built):
                node.tree.stats.role(self.role).prefill_tokens += len(ids)
                for p, s in zip(node.path(), step_scores):
                    p.step.scores.setdefault(self.name, s)
        return [[p.step.scores[self.name] for p in n.path()] for n in nodes]
