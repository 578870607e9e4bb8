"""The toy PRM: a process reward model for the toy world, so PRM-guided search runs on a real trained model.

``python -m evals.toy.prm --out DIR`` (seeded, CPU, one thread; ``PRMTraining`` and ``training.json`` record
how and how long). Like real PRMs it starts from a policy model's weights (Qwen2.5-Math-PRM from
Qwen2.5-Math-Instruct): ``toy:target``'s body plus two fresh layers, with a scalar value head
(``LlamaForTokenClassification``, one label), in the Skywork-o1-Open-PRM input format with the toy step token
``"\\n\\n"`` (``verifiers.prm.SkyworkPRM``). Step labels come from the generator's exact answers: a step is
good while every step up to it equals the reference solution's (so every step after the first mistake is
bad, as in Math-Shepherd and Qwen's PRM data).

What the first version (step ROC-AUC 0.65 on the draft's samples) got wrong, and what this one does:

- The body does not do arithmetic in this format: ``toy:target`` was trained behind its chat template, and on
  the bare ``problem + "\\n"`` prefix its next-token loss on correct solutions is 1.08 nats/token (0.007 in
  its own format). An auxiliary next-token loss on correct steps, read after the body's own layers through
  the tied embeddings, brings that back within ~100 steps.
- Only synthetic mistakes: half of every batch is now the policy's own samples (``toy:draft`` at T 0.8-1.0,
  ``toy:target`` at T 1.0, on fresh mixed-difficulty problems), as in Math-Shepherd and Qwen's PRM data.
- A sparse, late signal: one label per step, while the mistake is one digit. A dense value loss at every
  solution token ("is the text so far a prefix of the reference?"; equal to the step label at step tokens)
  puts the signal at the wrong digit; two fresh layers on top (identity at the start) give the model depth
  to compare a digit with the body's prediction and carry the verdict to the step token.
- The body moves at a small learning rate (2e-4), the head and the new layers at a large one (3e-3).

The shipped model is three phases: ``--out A``, then ``--init A --seed 1 --steps 250 --pool-problems 500
--out B``, then ``--init B --seed 2 --steps 250 --pool-problems 500`` (the loss was still falling at the end of
each; there was no time for one longer run). It reaches step ROC-AUC 0.763 on the draft's samples (first
version 0.654; a step's index alone scores 0.672; the target's own likelihood, weakest token, 0.654 on the same
samples): better, still far from the 0.95 goal, and not yet good enough to beat majority vote when selecting among
samples.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

import prompts
from reasoner.backends import SamplingParams, load_lm
from reasoner.toy import model_path
from reasoner.toy.problems import ANSWER_TEMPLATE, Difficulty, ToyProblem, apply, generate_problem
from verifiers.base import aggregate
from verifiers.implicit_prm import ImplicitPRMVerifier, trained_beta
from verifiers.math import extract_answer
from verifiers.prm import PRMVerifier, SkyworkPRM

from .tokenizer import save_tokenizer
from .train import corrupt_step

log = logging.getLogger(__name__)

STEP_TOKEN = "\n\n"
SEED, BATCH = 0, 32
_OPERATION = re.compile(r"^(\d+)([-+*])(\d+)=(-?\d+)$")


@dataclass
class PRMTraining:
    """How the toy PRM is trained (recorded in ``training.json``)."""

    steps: int = 400
    body_lr: float = 2e-4  # the pre-trained body moves slowly, so it keeps its arithmetic ...
    head_lr: float = 3e-3  # ... while the fresh value head (and the new layers) learn fast
    extra_layers: int = 2  # fresh layers on top of the body (zero-initialised outputs: they start as identity)
    lm_weight: float = 0.5  # auxiliary next-token loss on correct steps, read after the body's own layers
    token_weight: float = 0.5  # dense value loss at every step token position: "is the path right so far?"
    on_policy: float = 0.5  # share of each batch from the pool of real model samples (the rest: synthetic)
    pool_problems: int = 1000  # problems sampled by toy:draft for the pool
    pool_samples: int = 4
    target_problems: int = 250  # problems sampled by toy:target (T = 1.0) for the pool
    target_samples: int = 2
    seed: int = SEED


def label_steps(problem: ToyProblem, steps: list[str]) -> list[int]:
    """1 for each step while the path still equals the reference solution, 0 from the first mistake on."""
    reference, labels, ok = problem.steps, [], True
    for i, step in enumerate(steps):
        ok = ok and i < len(reference) and step.strip() == reference[i]
        labels.append(int(ok))
    return labels


def trajectory(rng: random.Random, problem: ToyProblem) -> list[str]:
    """The reference solution, or (half the time) one with a corrupted step, continued from the wrong value."""

    steps = problem.steps
    if rng.random() < 0.5:
        return steps
    return wrong_from(rng, problem, rng.randrange(len(steps)))


def wrong_from(rng: random.Random, problem: ToyProblem, j: int) -> list[str]:
    """The reference steps before ``j``, a corrupted step ``j``, then the rest computed from its wrong value."""
    wrong = corrupt_step(rng, problem, j)
    out = problem.steps[:j] + [wrong]
    m = _OPERATION.match(wrong)
    if m is None:  # a (wrong or early) answer line ends the trajectory
        return out
    value = int(m.group(4))
    for o in problem.operations[j + 1 :]:
        nxt = apply(value, o.op, o.right)
        out.append(f"{value}{o.op}{o.right}={nxt}")
        value = nxt
    return out + [ANSWER_TEMPLATE.format(value)]


def _mixed_difficulty(rng: random.Random) -> Difficulty:
    """1-7 operations, mostly two-digit operands (``toy:target``'s training mix)."""
    n = rng.randint(1, 7)
    return Difficulty(n, n, rng.choices([1, 2], weights=[0.25, 0.75])[0])


def sample_pool(rng: random.Random, setup: PRMTraining) -> dict[Difficulty, list[tuple[ToyProblem, list[str]]]]:
    """On-policy trajectories: whole solutions sampled by ``toy:draft`` (T 0.8-1.0) and ``toy:target`` (T 1.0)
    on fresh problems, split at the step token, keyed by difficulty so a batch pads little. The PRM then
    learns from the mistakes the policy really makes, not only from synthetic ones (Math-Shepherd, Qwen PRM)."""

    template = prompts.load("toy")
    pool: dict[Difficulty, list[tuple[ToyProblem, list[str]]]] = {}
    for name, count, samples in (
        ("draft", setup.pool_problems, setup.pool_samples),
        ("target", setup.target_problems, setup.target_samples),
    ):
        lm = load_lm("transformers", f"toy:{name}", name, seed=rng.randrange(2**31))
        drawn = [_mixed_difficulty(rng) for _ in range(count)]
        problems = [generate_problem(rng, d) for d in drawn]
        for start in range(0, count, 100):
            chunk = problems[start : start + 100]
            temperature = 1.0 if name == "target" else rng.choice([0.8, 1.0])
            gens = lm.generate(
                [template.prompt(lm.tokenizer, p.question) for p in chunk],
                SamplingParams(n=samples, temperature=temperature, max_tokens=160),
            )
            for d, p, gs in zip(drawn[start:], chunk, gens):
                pool.setdefault(d, []).extend((p, g.text.split(STEP_TOKEN)) for g in gs)
    return pool


def encode_rows(fmt, rows: list[tuple[ToyProblem, list[str]]]):
    """Right-padded ``(ids, mask, step targets, LM weights, token targets)``: the step target sits at exactly the
    positions ``PRMVerifier`` reads (``fmt.build``); the LM weight marks the tokens of correct steps (and their
    step token), which the auxiliary next-token loss keeps predictable; the token target marks every solution
    token 1 while the text so far is a prefix of the reference solution (it agrees with the step targets at the
    step tokens, and flips at the first wrong digit: a dense signal right where the mistake is)."""
    pad = fmt.tokenizer.pad_token_id
    built = []
    for p, steps in rows:
        ids, positions = fmt.build(p.question, steps)
        labels = label_steps(p, steps)
        lm = [0.0] * len(ids)
        first = positions[0] - len(fmt.encode(steps[0])) if steps else len(ids)  # the first solution token
        for k, (pos, ok) in enumerate(zip(positions, labels)):
            if ok:
                begin = positions[k - 1] + 1 if k else first
                lm[begin : pos + 1] = [1.0] * (pos + 1 - begin)
        reference = fmt.build(p.question, p.steps)[0]
        same = first
        while same < len(ids) and same < len(reference) and ids[same] == reference[same]:
            same += 1
        dense = [-1.0] * first + [1.0] * (same - first) + [0.0] * (len(ids) - same)
        built.append((ids, positions, labels, lm, dense))
    width = max(len(b[0]) for b in built)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.full((len(rows), width), -1.0)
    lm_weight = torch.zeros((len(rows), width))
    tokens = torch.full((len(rows), width), -1.0)
    for i, (x, pos, lab, lm, dense) in enumerate(built):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
        target[i, pos] = torch.tensor(lab, dtype=torch.float)
        lm_weight[i, : len(x)] = torch.tensor(lm)
        tokens[i, : len(x)] = torch.tensor(dense)
    return ids, mask, target, lm_weight, tokens


def batches(fmt, rng: random.Random, pool=None, on_policy: float = 0.0):
    """Endless batches, one (operations, digits) combination per batch: ``on_policy`` of each from the pool of
    real samples, the rest synthetic (reference solutions, half with one corrupted step)."""
    while True:
        difficulty = _mixed_difficulty(rng)
        real = pool.get(difficulty, []) if pool else []
        k = round(BATCH * on_policy) if real else 0
        rows = [rng.choice(real) for _ in range(k)]
        for _ in range(BATCH - k):
            p = generate_problem(rng, difficulty)
            rows.append((p, trajectory(rng, p)))
        yield encode_rows(fmt, rows)


def _deepen(model, extra: int):
    """The same model with ``extra`` fresh decoder layers on top whose output projections start at zero, so the
    deeper model computes exactly what the body did until training moves them. Why: the 4-layer body spends
    its depth computing each digit; checking a step's result against it and carrying the verdict to the step
    token needs layers after that."""
    from transformers import LlamaForTokenClassification

    if extra == 0:
        return model
    config = model.config
    config.num_hidden_layers += extra
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types) + [config.layer_types[-1]] * extra
    deeper = LlamaForTokenClassification(config)
    missing, unexpected = deeper.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(".layers." in k for k in missing), (missing, unexpected)
    for layer in deeper.model.layers[-extra:]:
        torch.nn.init.zeros_(layer.self_attn.o_proj.weight)
        torch.nn.init.zeros_(layer.mlp.down_proj.weight)
    return deeper


def train(out: Path, setup: PRMTraining | None = None, heldout: int = 40, init: str | None = None) -> dict:
    """Fine-tune ``toy:target``'s body (plus ``extra_layers`` fresh ones) with a value head on synthetic and
    on-policy trajectories, or continue training the PRM at ``init`` (a second phase, fresh data from its own
    seed); logs the step ROC-AUC on held-out draft samples as it goes."""
    import copy

    from transformers import AutoTokenizer, LlamaForTokenClassification

    setup = setup or PRMTraining()
    torch.manual_seed(setup.seed)
    rng = random.Random(setup.seed)
    start = time.time()
    source = model_path("target")
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = LlamaForTokenClassification.from_pretrained(source, num_labels=1, dtype=torch.float32)
    body_layers = model.config.num_hidden_layers
    body_norm = copy.deepcopy(model.model.norm).requires_grad_(False)  # the LM loss reads the body as the target did
    before = None
    if init:
        before = json.loads((Path(init) / "training.json").read_text())
        model = LlamaForTokenClassification.from_pretrained(init, dtype=torch.float32)
        setup = replace(setup, extra_layers=model.config.num_hidden_layers - body_layers)
    else:
        model = _deepen(model, setup.extra_layers)
    fmt = SkyworkPRM(tokenizer, STEP_TOKEN)
    pool = sample_pool(rng, setup) if setup.on_policy > 0 else None
    pool_secs = time.time() - start
    if pool:
        log.info("on-policy pool: %d trajectories in %.0fs", sum(len(v) for v in pool.values()), pool_secs)
    check = _heldout(heldout) if heldout else None
    captured: dict[str, torch.Tensor] = {}
    hook = model.model.layers[body_layers - 1].register_forward_hook(
        lambda m, i, o: captured.__setitem__("h", o[0] if isinstance(o, tuple) else o)
    )
    fresh = {
        n
        for n, _ in model.named_parameters()
        if n.startswith("score.")
        or any(f"layers.{i}." in n for i in range(body_layers, body_layers + setup.extra_layers))
    }
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if n not in fresh],
            "lr": setup.body_lr,
            "weight_decay": 0.1,
        },
        {"params": [p for n, p in model.named_parameters() if n in fresh], "lr": setup.head_lr, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    warm = 30
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: (
            min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, setup.steps) / setup.steps)))
        ),
    )
    data = batches(fmt, rng, pool, setup.on_policy)
    model.train()
    embed = model.model.embed_tokens.weight
    running: dict[str, float] = {}
    for step in range(1, setup.steps + 1):
        ids, mask, target, lm_weight, tokens = next(data)
        hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        values = model.score(hidden)[..., 0]
        keep = target >= 0
        loss = value_loss = F.binary_cross_entropy_with_logits(values[keep], target[keep])
        losses = {"value": value_loss.item()}
        if setup.token_weight > 0:
            dense = tokens >= 0
            token_loss = F.binary_cross_entropy_with_logits(values[dense], tokens[dense])
            loss = loss + setup.token_weight * token_loss
            losses["token"] = token_loss.item()
        if setup.lm_weight > 0:
            logits = body_norm(captured["h"])[:, :-1] @ embed.T
            w = lm_weight[:, 1:]
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none")
            lm_loss = (nll * w.reshape(-1)).sum() / w.sum().clamp(min=1)
            loss = loss + setup.lm_weight * lm_loss
            losses["lm"] = lm_loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        running = {k: v if k not in running else 0.95 * running[k] + 0.05 * v for k, v in losses.items()}
        if step % 50 == 0 or step == setup.steps:
            extra = ""
            if check and (step % 100 == 0 or step == setup.steps):
                model.eval()
                extra = f" held-out draft step AUC {check(model, fmt):.4f}"
                model.train()
            log.info(
                "prm step %d/%d loss %s %.0fs%s",
                step,
                setup.steps,
                {k: round(v, 4) for k, v in running.items()},
                time.time() - start,
                extra,
            )
    hook.remove()
    secs = time.time() - start
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    meta = {
        "init": "toy:target",
        "format": "skywork",
        "step_token": STEP_TOKEN,
        "recipe": asdict(setup),
        "batch": BATCH,
        "pool_trajectories": sum(len(v) for v in pool.values()) if pool else 0,
        "pool_seconds": round(pool_secs),
        "train_seconds": round(secs),
        "threads": torch.get_num_threads(),
    }
    if before:  # a continued run: keep the earlier phase's record
        before.pop("measured", None)
        meta = {**meta, "init": "a previous phase (below)", "previous": before}
    (out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def _heldout(n: int, seed: int = 777):
    """A small check set of draft samples on problems the measurement does not use (seed 777, not 4321)."""
    from sklearn.metrics import roc_auc_score

    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse("hard")) for _ in range(n)]
    draft = load_lm("transformers", "toy:draft", "draft", seed=seed)
    template = prompts.load("toy")
    gens = draft.generate(
        [template.prompt(draft.tokenizer, p.question) for p in problems],
        SamplingParams(n=4, temperature=0.8, max_tokens=160),
    )
    rows = [(p, g.text.split(STEP_TOKEN)) for p, gs in zip(problems, gens) for g in gs]

    @torch.no_grad()
    def check(model, fmt) -> float:
        ids, mask, target, _, _ = encode_rows(fmt, rows)
        values = model(input_ids=ids, attention_mask=mask).logits[..., 0]
        keep = target >= 0
        return float(roc_auc_score(target[keep].numpy(), values[keep].numpy()))

    return check


def _select(problems: list[ToyProblem], texts: list[list[str]], scores: list[list[list[float]]]) -> dict:
    """Accuracy of majority vote, the PRM's best sample (aggregate last / min), PRM-weighted vote, the oracle."""

    right = {k: 0 for k in ("majority", "best_last", "best_min", "weighted_last", "weighted_min", "oracle")}
    for p, ts, ss in zip(problems, texts, scores):
        answers = [extract_answer(t) for t in ts]
        truth = str(p.answer)
        right["oracle"] += truth in answers

        def vote(weights: list[float], answers: list = answers) -> str | None:
            totals: dict[str, float] = {}
            for a, w in zip(answers, weights):
                if a is not None:
                    totals[a] = totals.get(a, 0.0) + w
            return max(totals, key=totals.get) if totals else None  # max keeps the first of equal totals

        right["majority"] += vote([1.0] * len(ts)) == truth
        for how in ("last", "min"):
            agg = [aggregate(s, how) for s in ss]
            right[f"best_{how}"] += answers[max(range(len(ts)), key=agg.__getitem__)] == truth
            right[f"weighted_{how}"] += vote(agg) == truth
    return {k: round(v / len(problems), 4) for k, v in right.items()}


def policy_samples(policy: str, problems: list[ToyProblem], samples: int, seed: int, temperature: float = 0.8):
    """Whole solutions of ``toy:<policy>`` (``samples`` per problem at ``temperature``), split at the step token."""
    lm = load_lm("transformers", f"toy:{policy}", policy, seed=seed)
    template = prompts.load("toy")
    questions = [template.prompt(lm.tokenizer, p.question) for p in problems]
    gens = lm.generate(questions, SamplingParams(n=samples, temperature=temperature, max_tokens=160))
    return lm, questions, [(p, g.text.split(STEP_TOKEN)) for p, gs in zip(problems, gens) for g in gs]


def write_samples(out: Path, n: int, seed: int, difficulty: str, samples: int = 4) -> int:
    """``samples`` ``toy:draft`` solutions (T 0.8) of ``n`` problems (generator seed ``seed``) as ``reasoner prm
    label`` rows, each step labelled exactly (``label_steps``) and each trajectory's outcome from its answer: data
    for ``reasoner prm train`` that needs no completions (the implicit PRM trains on the outcomes alone)."""
    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse(difficulty)) for _ in range(n)]
    _, _, pairs = policy_samples("draft", problems, samples, seed)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "labels.jsonl").open("w") as sink:
        for p, steps in pairs:
            labels = label_steps(p, steps)
            answer = extract_answer(STEP_TOKEN.join(steps))
            row = {"problem": p.question, "question": p.question, "answer": str(p.answer), "steps": steps,
                   "soft": [float(x) for x in labels], "hard": labels, "correct": answer == str(p.answer)}  # fmt: skip
            sink.write(json.dumps(row) + "\n")
    meta = {"prompt": "toy", "step_delimiter": STEP_TOKEN, "policy": "toy:draft", "samples": samples}
    (out / "meta.json").write_text(json.dumps(meta) + "\n")
    return len(pairs)


def step_auc(prm: PRMVerifier, pairs) -> dict:
    """Step ROC-AUC of ``prm`` against the exact labels (``label_steps``), and of a step's index alone."""
    from sklearn.metrics import roc_auc_score

    scores = prm.score_steps([p.question for p, _ in pairs], [s for _, s in pairs])
    labels = [lab for p, s in pairs for lab in label_steps(p, s)]
    flat = [x for row in scores for x in row]
    # the bar to clear: scoring a step by its index alone (later steps are more often bad)
    position = [-k for _, s in pairs for k in range(len(s))]
    return {
        "trajectories": len(pairs),
        "steps": len(labels),
        "bad_steps": labels.count(0),
        "roc_auc": round(float(roc_auc_score(labels, flat)), 4),
        "step_index_roc_auc": round(float(roc_auc_score(labels, position)), 4),
    }


def implicit_prm(path: str, reference: str, beta: float | None = None) -> ImplicitPRMVerifier:
    """An implicit PRM verifier on ``path`` (pi_theta) over ``reference`` (pi_ref), the toy chat format."""
    return ImplicitPRMVerifier(
        load_lm("transformers", path, "verifier"),
        load_lm("transformers", reference, "reference"),
        prompts.load("toy"),
        beta or trained_beta(path),
    )


def measure(
    path: str = "toy:prm",
    n: int = 100,
    samples: int = 4,
    difficulty: str = "hard",
    seed: int = 4321,
    select_samples: int = 8,
    reference: str | None = None,
    beta: float | None = None,
) -> dict:
    """Step-level ROC-AUC of the PRM on real ``toy:draft`` samples (T = 0.8) of ``n`` problems, labelled from
    the exact answers, on ``toy:target``'s samples of the same problems (T = 0.8, reported apart: the target
    errs less, and differently) and on synthetic trajectories (reference solutions with one corrupted step);
    then what a search user sees: on the same problems, ``select_samples`` more draft samples each, the
    accuracy of majority vote, of the PRM's best sample, of the PRM-weighted vote and of the oracle. The seed
    (4321) is one no training set uses (``reasoner prm label`` for the shipped PRM: suite seed 2026). With
    ``reference``, ``path`` is an implicit PRM (``verifiers.implicit_prm``) against that reference model, its beta
    the one it was trained with unless ``beta`` is given (an untrained pair such as toy:target over toy:draft
    needs it)."""
    if reference:
        prm = implicit_prm(path, reference, beta)
    else:  # family and step token: the model's config (toy:prm's older format: skywork, "\n\n")
        prm = PRMVerifier(path)
    rng = random.Random(seed)
    problems = [generate_problem(rng, Difficulty.parse(difficulty)) for _ in range(n)]
    draft, questions, real = policy_samples("draft", problems, samples, seed)
    _, _, target = policy_samples("target", problems, samples, seed)
    synthetic = [(p, trajectory(rng, p)) for p in problems]
    family = f"implicit over {reference}, beta {prm.beta:g}" if reference else prm.format.family
    result: dict = {"path": path, "difficulty": difficulty, "problems": n, "family": family}
    for name, pairs in (("draft_samples", real), ("target_samples", target), ("synthetic", synthetic)):
        result[name] = step_auc(prm, pairs)
    if select_samples:  # drawn after the AUC samples, so those stay what they were
        gens = draft.generate(questions, SamplingParams(n=select_samples, temperature=0.8, max_tokens=160))
        texts = [[g.text for g in gs] for gs in gens]
        flat_scores = prm.score_steps(
            [p.question for p, ts in zip(problems, texts) for _ in ts],
            [t.split(STEP_TOKEN) for ts in texts for t in ts],
        )
        scores = [flat_scores[i * select_samples : (i + 1) * select_samples] for i in range(n)]
        result["selection"] = {"samples": select_samples, "temperature": 0.8, **_select(problems, texts, scores)}
    return result


def main(argv=None) -> None:
    defaults = PRMTraining()
    parser = argparse.ArgumentParser(
        prog="python -m evals.toy.prm", description="Train (seeded) and measure the toy PRM."
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "models" / "prm"))
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--body-lr", type=float, default=defaults.body_lr)
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr)
    parser.add_argument("--extra-layers", type=int, default=defaults.extra_layers)
    parser.add_argument("--lm-weight", type=float, default=defaults.lm_weight)
    parser.add_argument("--token-weight", type=float, default=defaults.token_weight)
    parser.add_argument(
        "--on-policy",
        type=float,
        default=defaults.on_policy,
        help="share of each batch from real model samples (0: synthetic only)",
    )
    parser.add_argument("--pool-problems", type=int, default=defaults.pool_problems)
    parser.add_argument(
        "--init", help="continue training the PRM in this folder (a second phase; use another --seed for fresh data)"
    )
    parser.add_argument("--measure-only", action="store_true", help="only measure the PRM at --out")
    parser.add_argument("--n", type=int, default=100, help="problems for the measurement")
    parser.add_argument(
        "--implicit-reference",
        help="measure --out as an implicit PRM over this reference model (`prm train --objective implicit`)",
    )
    parser.add_argument("--beta", type=float, help="the implicit PRM's beta (default: the one it was trained with)")
    parser.add_argument(
        "--write-samples",
        metavar="DIR",
        help="only write 4 toy:draft samples of --n problems (--seed, --difficulty), exactly labelled, as "
        "`reasoner prm label` data in DIR",
    )
    parser.add_argument("--difficulty", default="hard", help="--write-samples: the problems' difficulty")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(1)
    if args.write_samples:
        rows = write_samples(Path(args.write_samples), args.n, args.seed, args.difficulty)
        print(f"wrote {rows} trajectories to {args.write_samples}")
        return
    if not args.measure_only:
        setup = PRMTraining(
            steps=args.steps,
            body_lr=args.body_lr,
            head_lr=args.head_lr,
            extra_layers=args.extra_layers,
            lm_weight=args.lm_weight,
            token_weight=args.token_weight,
            on_policy=args.on_policy,
            pool_problems=args.pool_problems,
            seed=args.seed,
        )
        train(Path(args.out), setup, init=args.init)
    result = measure(args.out, n=args.n, reference=args.implicit_reference, beta=args.beta)
    print(json.dumps(result, indent=2))
    meta_path = Path(args.out) / "training.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        meta["measured"] = result
        meta_path.write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
