"""Train a process reward model on ``reasoner prm label``'s MC labels: ``reasoner prm train``.

``head="surprise"`` (``--head surprise``) keeps the backbone frozen and fits ``verifiers.prm.SurpriseHead``
instead of a value head: a logistic regression, on the same soft labels, of features of the backbone's surprise
at each step's tokens (``train_surprise``; seconds on a CPU). The toy PRM is made this way (``evals.toy.prm``).

A causal LM backbone (the toy target's, or any transformers model path) gets a value head
(``AutoModelForTokenClassification``) read at the step separator, in one of the formats ``verifiers.prm`` loads:
``qwen`` (default; Qwen2.5-Math-PRM's: the tokenizer's chat template, the steps as the assistant's turn, each
followed by the step token, two labels, score = softmax(...)[1]) or ``skywork`` (``bos + problem + "\\n"``, one
label, score = sigmoid(value)). ``qwen`` puts the steps in the chat format the policy wrote them in (with the
prompt template's system prompt, none for the toy, instead of Qwen's math one), so a backbone that is the
policy, or its big sibling, reads them as it was trained to (the skywork format's bare ``problem + "\\n"`` cost
the toy PRM its body's arithmetic: see ``evals.toy.prm``). For a real model pick a step token that is one token
and never inside a step (Qwen's ``<extra_0>``); the toy world's ``"\\n\\n"`` is.

The loss is a binary cross-entropy on Math-Shepherd's soft labels (the fraction of completions that reached the
gold answer; Wang et al. 2024 train on hard labels, the soft ones carry more per step) at the step tokens.
Problems are split train / held out with a seed; the held-out step ROC-AUC and step accuracy (threshold 0.5,
against the hard labels) are printed (scikit-learn). The saved folder loads with ``verifiers.prm.PRMVerifier``
unchanged: its config records ``prm_family``, ``prm_step_token`` and ``prm_system``.

``objective="td"`` (``--objective td --lam 0.8``) trains the same head as a value verifier by temporal-difference
learning instead, FETCH's verifier variance reduction (Wang et al. 2025, "Don't Get Lost in the Trees"):
each step's target is its TD(lambda) return over its trajectory (``lambda_returns``): the terminal reward is
whether the trajectory's final answer is right, every earlier step bootstraps from the value of the step after
it, ``G_t = (1 - lam) * V(s_t+1) + lam * G_t+1`` (gamma 1, no reward before the end). A Monte-Carlo label is one
noisy draw of the outcome; the lambda-return averages in the model's value of the next state, which is shared
by near-identical states, so the targets and the verifier's scores of equivalent steps vary less. Only the
trajectories and their outcomes are used (``prm label --k 1`` suffices): the soft labels only score the result.
What we follow and where we deviate: the paper trains its value model on its policy's search trajectories with
lambda 0.8 and gamma 1 (we default to the same); its code warm-starts on the outcome (MC) and moves, over
training, to the lambda-returns of the model's own detached values in each batch, MSE on {-1, 1}. We train in
``td_iterations + 1`` equal rounds: round 0 fits the Monte-Carlo returns (the outcome at every step), and each
later round fits the lambda-returns bootstrapped on the values of the model as the previous round left it (frozen
for the round, one scoring pass over the training trajectories), BCE on [0, 1] targets so the saved head stays a
``prm`` verifier.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from pathlib import Path

from tqdm.auto import tqdm

import prompts
from reasoner.backends.sources import resolve_path, save_tokenizer
from verifiers.prm import SURPRISE_FEATURES, QwenPRM, SkyworkPRM, surprise_features, surprise_start

from .prm_label import LABELS, META


def read_rows(data: str | Path) -> tuple[list[dict], dict]:
    """The rows and meta of a ``prm label`` folder; a clear ``ValueError`` for what is missing or malformed."""
    data = Path(data)
    if not data.is_dir():
        raise ValueError(f"prm train: no data folder {data}; write one with `reasoner prm label --out {data}`")
    path = data / LABELS
    if not path.is_file():
        raise ValueError(f"prm train: {data} holds no {LABELS}; write it with `reasoner prm label --out {data}`")
    meta = json.loads((data / META).read_text()) if (data / META).is_file() else {}
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            steps, soft = row["steps"], [float(s) for s in row["soft"]]
            if len(steps) != len(soft) or not all(0.0 <= s <= 1.0 for s in soft):
                raise ValueError("steps and soft labels differ in length, or a label is outside [0, 1]")
            row["soft"], row["question"], row["problem"] = soft, str(row["question"]), row["problem"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(
                f"prm train: {path} line {i} is not a label row ({type(e).__name__}: {e}); write it with "
                "`reasoner prm label`"
            ) from None
        if steps:
            rows.append(row)
    if not rows:
        raise ValueError(f"prm train: {path} holds no labelled steps; label some problems with `reasoner prm label`")
    return rows, meta


def data_record(data, meta: dict, train_rows: list[dict], test_rows: list[dict]) -> dict:
    """What a trained model's ``training.json`` says of its data: the folder, how it was labelled, the split."""
    return {
        "data": str(data),
        "labels": {k: meta.get(k) for k in ("policy", "completer", "k", "samples")},
        "rows": {"train": len(train_rows), "heldout": len(test_rows)},
        "problems": {
            "train": len({r["problem"] for r in train_rows}),
            "heldout": len({r["problem"] for r in test_rows}),
        },
    }


def split(rows: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Train / held-out rows, split by problem (a problem's trajectories stay together), seeded."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"prm train: --holdout must be a fraction in (0, 1), got {holdout}")
    problems = sorted({str(r["problem"]) for r in rows})
    if len(problems) < 2:
        raise ValueError("prm train: need labels of at least 2 problems (one to train on, one to hold out)")
    random.Random(seed).shuffle(problems)
    held = set(problems[: max(1, round(len(problems) * holdout))])
    return [r for r in rows if str(r["problem"]) not in held], [r for r in rows if str(r["problem"]) in held]


FORMATS = {"qwen": (QwenPRM, 2), "skywork": (SkyworkPRM, 1)}  # the ``verifiers.prm`` family and its head's labels
OBJECTIVES = ("mc", "td", "implicit")
HEADS = ("value", "surprise")  # a value head at the step token (fine-tunes the backbone), or verifiers.prm.SurpriseHead


def lambda_returns(values: list[float], reward: float, lam: float) -> list[float]:
    """TD(lambda) targets of a trajectory's steps (Sutton & Barto ch. 12, gamma 1, reward only at the end):
    ``values[t]`` is the model's value of the state after step ``t``; the last step's return is ``reward``, each
    earlier one ``(1 - lam) * values[t + 1] + lam * return[t + 1]``. ``lam`` 1 gives the Monte-Carlo return
    (the outcome at every step), ``lam`` 0 the one-step bootstrap (the next state's value)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"prm train: --lam must be in [0, 1], got {lam}")
    out = [float(reward)] * len(values)
    for t in range(len(values) - 2, -1, -1):
        out[t] = (1.0 - lam) * values[t + 1] + lam * out[t + 1]
    return out


def outcome(row: dict) -> float:
    """A trajectory's terminal reward: whether its final answer is right (``prm label``'s ``correct``; rows
    without it: the last step's label, which ``prm label`` sets to the finished answer's own outcome)."""
    return float(row["correct"]) if "correct" in row else float(row["soft"][-1])


def td_rows(rows: list[dict], lam: float, values: list[float] | None = None) -> list[dict]:
    """``rows`` with their λ-returns as the training targets (``soft``); ``values`` are the bootstrap values of
    every step, flattened in row order (``None``: the Monte-Carlo returns, the outcome at every step)."""
    out, at = [], 0
    for r in rows:
        n = len(r["steps"])
        v = values[at : at + n] if values is not None else [0.0] * n
        at += n
        out.append(r | {"soft": lambda_returns(v, outcome(r), lam if values is not None else 1.0)})
    return out


def values(model, ids, mask):
    """The step value whose sigmoid is the ``prm`` verifier's score: ``logit[1] - logit[0]`` of a two-label head
    (``qwen``: softmax(...)[1]), the logit of a one-label head (``skywork``: sigmoid(value))."""
    logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return logits[..., 1] - logits[..., 0] if logits.size(-1) == 2 else logits[..., 0]


def encode(fmt, rows: list[dict], pad: int, solution: bool = False):
    """Right-padded ids, mask, and the soft label at each step token (-1 elsewhere); with ``solution``, also the
    mask of the steps' own tokens (the solution, step tokens excluded)."""
    import torch

    built = [fmt.build(r["question"], r["steps"]) for r in rows]
    width = max(len(ids) for ids, _ in built)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.full((len(rows), width), -1.0)
    inside = torch.zeros_like(ids, dtype=torch.bool)
    for i, ((x, positions), r) in enumerate(zip(built, rows)):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
        target[i, positions] = torch.tensor(r["soft"])
        first = max(0, positions[0] - len(fmt.encode(r["steps"][0])))
        inside[i, first : positions[-1]] = True
        inside[i, positions] = False
    return (ids, mask, target, inside) if solution else (ids, mask, target)


def token_likelihood(reference, ids, mask):
    """The frozen backbone's probability of each token given the ones before it (0 at the first position)."""
    import torch

    with torch.no_grad():
        logits = reference(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        p = logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0].exp()
    return torch.cat([torch.zeros_like(p[:, :1]), p], dim=1)


def scores(model, fmt, rows: list[dict], pad: int, batch: int = 64) -> list[float]:
    """The model's step scores (sigmoid of the value at each step token), flattened in row order."""
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            ids, mask, target = encode(fmt, rows[start : start + batch], pad)
            v = values(model, ids, mask).sigmoid()
            for r in range(len(ids)):
                out += v[r][target[r] >= 0].tolist()
    return out


def evaluate(model, fmt, rows: list[dict], pad: int) -> dict:
    """``step_metrics`` of the model's step scores."""
    return step_metrics(scores(model, fmt, rows, pad), rows)


def step_metrics(s: list[float], rows: list[dict]) -> dict:
    """Step ROC-AUC and accuracy (score >= 0.5) of step scores ``s`` (flattened in row order) against the hard
    labels, and the soft labels' Brier score."""
    from sklearn.metrics import roc_auc_score

    soft = [x for r in rows for x in r["soft"]]
    hard = [int(x > 0) for x in soft]
    auc = float(roc_auc_score(hard, s)) if len(set(hard)) == 2 else None
    return {
        "steps": len(hard),
        "bad_steps": hard.count(0),
        "roc_auc": None if auc is None else round(auc, 4),
        "step_accuracy": round(sum((p >= 0.5) == bool(y) for p, y in zip(s, hard)) / len(hard), 4),
        "brier_soft": round(sum((p - y) ** 2 for p, y in zip(s, soft)) / len(soft), 4),
    }


def prm_format(family: str, tokenizer, step_token: str | None, meta: dict):
    """The ``verifiers.prm`` format a PRM is trained in: ``step_token`` (default: the data's step delimiter) and, for
    ``qwen``, the policy's own system prompt (the toy's: none), not Qwen's math one."""
    fmt = FORMATS[family][0](tokenizer, step_token or meta.get("step_delimiter") or "\n\n")
    if family == "qwen":
        fmt.system = (prompts.load(meta["prompt"]).system if meta.get("prompt") else None) or ""
    return fmt


def save_prm(model, tokenizer, fmt, out, save_dtype: str) -> Path:
    """Write a trained PRM to ``out`` as ``verifiers.prm.PRMVerifier`` loads it: its config records the format
    (``prm_family``, ``prm_step_token``, ``prm_system``)."""
    import torch

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.prm_family, model.config.prm_step_token = fmt.family, fmt.step_token
    if fmt.family == "qwen":
        model.config.prm_system = fmt.system
    model.to(getattr(torch, save_dtype)).save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    return out


def surprise_table(model, fmt, rows: list[dict], pad: int, batch: int = 32):
    """Every step's surprise features (``verifiers.prm.surprise_features``) under the frozen causal LM ``model``,
    flattened in row order, as a ``[steps, features]`` tensor."""
    import torch

    out = []
    built_all = [fmt.build(r["question"], r["steps"]) for r in rows]
    width = max(len(x) for x, _ in built_all)
    batch = max(1, min(batch, 2**27 // (width * model.config.vocab_size)))  # logits of a batch: at most 512 MB
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            chunk, built = rows[start : start + batch], built_all[start : start + batch]
            ids = torch.full((len(chunk), max(len(x) for x, _ in built)), pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, (x, _) in enumerate(built):
                ids[i, : len(x)], mask[i, : len(x)] = torch.tensor(x), 1
            logits = model(input_ids=ids, attention_mask=mask).logits
            for i, ((x, positions), r) in enumerate(zip(built, chunk)):
                start = surprise_start(fmt.prompt_ids(r["question"]), x, fmt.family)
                out += surprise_features(logits[i], x, start, positions)
    return torch.tensor(out, dtype=torch.float64)


def fit_logistic(x, y, l2: float = 1e-3, iterations: int = 200) -> tuple[list[float], float]:
    """Weights and bias of a logistic regression of the soft labels ``y`` on ``x`` (BCE, L2 on the standardized
    weights, L-BFGS), returned for the raw features (the standardization folded in)."""
    import torch
    import torch.nn.functional as F

    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / scale
    w = torch.zeros(x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros((), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(z @ w + b, y) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weights = (w / scale).detach()
    return weights.tolist(), float(b.detach() - (weights * mean).sum())


def train_surprise(data, out, base, family, step_token, holdout, seed, save_dtype) -> dict:
    """A surprise-head PRM (``verifiers.prm.SurpriseHead``): ``base``, frozen, reads each step's tokens; a
    logistic regression on its surprise features fits the soft labels. The backbone is saved unchanged beside
    the head, so the folder is a whole ``prm`` verifier model."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    rows, meta = read_rows(data)
    train_rows, test_rows = split(rows, holdout, seed)
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(base))
    model = AutoModelForCausalLM.from_pretrained(resolve_path(base), dtype=torch.float32).eval()
    fmt = prm_format(family, tokenizer, step_token, meta)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    x = surprise_table(model, fmt, train_rows, pad)
    weights, bias = fit_logistic(x, torch.tensor([v for r in train_rows for v in r["soft"]], dtype=x.dtype))
    train_seconds = time.time() - start

    def scored(table) -> list[float]:
        return (table @ torch.tensor(weights, dtype=table.dtype) + bias).sigmoid().tolist()

    result = {
        "train": step_metrics(scored(x), train_rows),
        "heldout": step_metrics(scored(surprise_table(model, fmt, test_rows, pad)), test_rows) if test_rows else None,
    }
    model.config.prm_surprise = {"features": list(SURPRISE_FEATURES), "weights": weights, "bias": bias}
    out = save_prm(model, tokenizer, fmt, out, save_dtype)
    info = {
        "method": "surprise head (verifiers.prm.SurpriseHead): logistic regression on the frozen backbone's token "
        "surprise, on Math-Shepherd MC labels (Wang et al. 2024), BCE on soft labels",
        "format": family,
        "step_token": fmt.step_token,
        "base": base,
        **data_record(data, meta, train_rows, test_rows),
        "recipe": {"head": "surprise", "objective": "mc", "holdout": holdout, "seed": seed},
        "head": model.config.prm_surprise,
        "train_seconds": round(train_seconds),
        "threads": torch.get_num_threads(),
        **result,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info | {"out": str(out)}


def load_backbone(base: str, dtype, labels: int):
    """A token-classification model on ``base``'s body: a causal LM gets a fresh head."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    path = resolve_path(base)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForTokenClassification.from_pretrained(path, num_labels=labels, dtype=dtype)
    return model, tokenizer


def warmup_cosine(opt, steps: int):
    """The learning-rate schedule of every PRM objective: linear warm-up over the first tenth (at most 30 steps),
    then a cosine from 1 down to 0.1 of the base rate."""
    import torch

    warm = max(1, min(30, steps // 10))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    )


def optimizer_step(loss, model, opt, sched, running: float | None) -> float:
    """One update from ``loss`` (gradients clipped to norm 1); returns the running mean of the loss."""
    import torch

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss.item() if running is None else 0.95 * running + 0.05 * loss.item()


def train(
    data: str | Path,
    out: str | Path,
    base: str = "toy:target",
    family: str = "qwen",
    step_token: str | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    steps: int = 300,
    batch: int = 32,
    lr: float = 1e-3,
    head_lr: float = 3e-3,
    likelihood_weight: float = 0.0,
    objective: str = "mc",
    lam: float = 0.8,
    td_iterations: int = 2,
    reference: str | None = None,
    beta: float = 0.05,
    head: str = "value",
    save_dtype: str = "float16",
    progress: bool = True,
) -> dict:
    """Fine-tune ``base`` with a value head on the soft labels; report held-out metrics; save a ``prm`` model.
    ``objective="implicit"`` trains an implicit PRM instead (``train_implicit``: no head, outcome labels only);
    ``head="surprise"`` fits a surprise head on the frozen backbone instead (``train_surprise``; the optimizer
    settings do not apply).

    ``likelihood_weight`` > 0 adds a dense auxiliary loss (our deviation from Math-Shepherd, whose labels are one
    per step): at every token of a step the head also predicts the frozen backbone's own probability of that
    token. A step is wrong where a token is one the backbone did not expect; this teaches the head to see that
    token by token, which one label per step teaches slowly (the toy PRM: step ROC-AUC 0.77-0.80 without it)."""
    import torch
    import torch.nn.functional as F

    if steps < 1 or batch < 1:
        raise ValueError(f"prm train: --steps and --batch must be >= 1, got {steps} and {batch}")
    if family not in FORMATS:
        raise ValueError(f"prm train: unknown format {family!r}: use one of {', '.join(FORMATS)}")
    if objective not in OBJECTIVES:
        raise ValueError(f"prm train: unknown objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    if head not in HEADS:
        raise ValueError(f"prm train: unknown head {head!r}: use one of {', '.join(HEADS)}")
    if head == "surprise":
        if objective != "mc":
            raise ValueError(f"prm train: --head surprise fits the MC labels: drop --objective {objective}")
        return train_surprise(data, out, base, family, step_token, holdout, seed, save_dtype)
    if objective == "implicit":
        return train_implicit(data, out, base, reference, beta, holdout, seed, steps, batch, lr, save_dtype, progress)
    if objective == "td":
        lambda_returns([], 0.0, lam)  # a bad --lam fails before any loading
        if not isinstance(td_iterations, int) or not 0 <= td_iterations < steps:
            raise ValueError(f"prm train: --td-iterations must be in 0..{steps - 1} (< --steps), got {td_iterations}")
    rows, meta = read_rows(data)
    train_rows, test_rows = split(rows, holdout, seed)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    start = time.time()
    cls, labels = FORMATS[family]
    model, tokenizer = load_backbone(base, torch.float32, labels)
    reference = None
    if likelihood_weight > 0:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(resolve_path(base), dtype=torch.float32).eval()
    fmt = prm_format(family, tokenizer, step_token, meta)
    fmt.build(train_rows[0]["question"], train_rows[0]["steps"])  # a step token the tokenizer cannot use fails here
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    head = {n for n, _ in model.named_parameters() if n.startswith(("score.", "classifier."))}
    groups = [
        {"params": [p for n, p in model.named_parameters() if n not in head], "lr": lr, "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if n in head], "lr": head_lr, "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.98))
    sched = warmup_cosine(opt, steps)
    model.train()
    running = None
    targets = train_rows
    # TD: the first step of each round -> its index (round 0 fits the Monte-Carlo returns, later rounds the
    # λ-returns bootstrapped on the values of the model as the previous round left it)
    rounds = {steps * i // (td_iterations + 1): i for i in range(td_iterations + 1)} if objective == "td" else {}
    bar = tqdm(range(steps), desc="prm train", unit="step", disable=not progress, dynamic_ncols=True)
    for step in bar:
        if step in rounds:
            targets = td_rows(train_rows, lam, scores(model, fmt, train_rows, pad) if rounds[step] else None)
            model.train()
        ids, mask, target, inside = encode(fmt, [rng.choice(targets) for _ in range(batch)], pad, solution=True)
        keep = target >= 0
        v = values(model, ids, mask)
        loss = F.binary_cross_entropy_with_logits(v[keep], target[keep])
        if reference is not None:
            dense = F.binary_cross_entropy_with_logits(v[inside], token_likelihood(reference, ids, mask)[inside])
            loss = loss + likelihood_weight * dense
        running = optimizer_step(loss, model, opt, sched, running)
        bar.set_postfix(loss=f"{running:.4f}")
    bar.close()
    train_seconds = time.time() - start
    result = {
        "train": evaluate(model, fmt, train_rows[:2000], pad),
        "heldout": evaluate(model, fmt, test_rows, pad) if test_rows else None,
    }
    out = save_prm(model, tokenizer, fmt, out, save_dtype)
    info = {
        "method": "value head on Math-Shepherd MC labels (Wang et al. 2024), BCE on soft labels"
        if objective == "mc"
        else f"value head by TD(lambda) (FETCH, Wang et al. 2025): lambda-returns, {td_iterations} bootstrap rounds",
        "format": family,
        "step_token": fmt.step_token,
        "base": base,
        **data_record(data, meta, train_rows, test_rows),
        "recipe": {
            "steps": steps,
            "batch": batch,
            "lr": lr,
            "head_lr": head_lr,
            "likelihood_weight": likelihood_weight,
            "objective": objective,
            **({"lam": lam, "td_iterations": td_iterations} if objective == "td" else {}),
            "holdout": holdout,
            "seed": seed,
        },
        "train_seconds": round(train_seconds),
        "threads": torch.get_num_threads(),
        **result,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info | {"out": str(out)}


def implicit_encode(tokenizer, template, rows: list[dict], pad: int):
    """Right-padded ids and mask of each row's prompt (the policy's template) and steps, each step's tokens
    ``step + delimiter`` (the last: ``step + EOS``, a finished solution), as ``verifiers.implicit_prm`` reads a
    path given as text; and for every token, the index of the step it belongs to (-1: prompt or padding)."""
    import torch

    eos = tokenizer.eos_token_id
    seqs, owners = [], []
    for r in rows:
        ids = tokenizer(template.prompt(tokenizer, r["question"]), add_special_tokens=False)["input_ids"]
        owner = [-1] * len(ids)
        for k, step in enumerate(r["steps"]):
            last = k == len(r["steps"]) - 1
            piece = tokenizer(step + ("" if last else template.step_delimiter), add_special_tokens=False)["input_ids"]
            piece += [eos] if last and eos is not None else []
            ids += piece
            owner += [k] * len(piece)
        seqs.append(ids)
        owners.append(owner)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    step_of = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, (s, o) in enumerate(zip(seqs, owners)):
        ids[i, : len(s)], mask[i, : len(s)], step_of[i, : len(s)] = torch.tensor(s), 1, torch.tensor(o)
    return ids, mask, step_of


def token_log_ratios(model, reference, ids, mask, step_of):
    """``log pi_theta(y_t) - log pi_ref(y_t)`` of every step token (0 at prompt and padding positions)."""
    import torch

    def logprobs(lm):
        logits = lm(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]

    with torch.no_grad():
        ref = logprobs(reference)
    return (logprobs(model) - ref) * (step_of[:, 1:] >= 0)


def implicit_scores(model, reference, tokenizer, template, rows, pad, beta, batch: int = 64):
    """Each step's ``q_t`` (``beta`` times the summed log-ratio up to its end) and its own reward ``q_t - q_(t-1)``,
    flattened in row order."""
    import torch

    q_all, r_all = [], []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            ids, mask, step_of = implicit_encode(tokenizer, template, chunk, pad)
            ratio = token_log_ratios(model, reference, ids, mask, step_of)
            owner = step_of[:, 1:]
            for i, r in enumerate(chunk):
                per_step = [beta * float(ratio[i][owner[i] == k].sum()) for k in range(len(r["steps"]))]
                q = [sum(per_step[: k + 1]) for k in range(len(per_step))]
                q_all += q
                r_all += per_step
    return q_all, r_all


def implicit_evaluate(model, reference, tokenizer, template, rows, pad, beta) -> dict:
    """Step ROC-AUC of ``q_t`` (``roc_auc``) and of the step reward (``step_reward_roc_auc``) against the hard
    labels, and step accuracy of ``sigmoid(q_t) >= 0.5``."""
    from sklearn.metrics import roc_auc_score

    q, r = implicit_scores(model, reference, tokenizer, template, rows, pad, beta)
    hard = [int(x > 0) for row in rows for x in row["soft"]]
    both = len(set(hard)) == 2
    return {
        "steps": len(hard),
        "bad_steps": hard.count(0),
        "roc_auc": round(float(roc_auc_score(hard, q)), 4) if both else None,
        "step_reward_roc_auc": round(float(roc_auc_score(hard, r)), 4) if both else None,
        "step_accuracy": round(sum((v >= 0) == bool(y) for v, y in zip(q, hard)) / len(hard), 4),
    }


def train_implicit(
    data: str | Path,
    out: str | Path,
    base: str = "toy:target",
    reference: str | None = None,
    beta: float = 0.05,
    holdout: float = 0.2,
    seed: int = 0,
    steps: int = 300,
    batch: int = 32,
    lr: float = 1e-3,
    save_dtype: str = "float16",
    progress: bool = True,
) -> dict:
    """The implicit PRM (Yuan et al. 2024; ``verifiers.implicit_prm``): fine-tune the causal LM ``base`` so that
    ``beta * log(pi_theta(y) / pi_ref(y))`` summed over a whole trajectory is the logit of its outcome (the
    paper's cross-entropy objective), with ``pi_ref`` frozen (``reference``, default ``base``: the paper's
    setting). Only the trajectories' outcomes are used; the step labels only score the result. Deviation: the
    paper trains on many responses per instruction in one pass; here ``steps`` batches drawn with replacement."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if steps < 1 or batch < 1:
        raise ValueError(f"prm train: --steps and --batch must be >= 1, got {steps} and {batch}")
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"prm train: --beta must be a positive number (the reward's scale), got {beta}")
    rows, meta = read_rows(data)
    train_rows, test_rows = split(rows, holdout, seed)
    reference = reference or base
    torch.manual_seed(seed)
    rng = random.Random(seed)
    start = time.time()
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(base))
    model = AutoModelForCausalLM.from_pretrained(resolve_path(base), dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(resolve_path(reference), dtype=torch.float32).eval()
    ref.requires_grad_(False)
    if ref.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"prm train: --reference {reference} has another vocabulary than --base {base}: pick one "
                         "with the same tokenizer")  # fmt: skip
    template = prompts.load(meta.get("prompt") or "toy")
    if meta.get("step_delimiter"):
        template = dataclasses.replace(template, step_delimiter=meta["step_delimiter"])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    model.train()
    running = None
    bar = tqdm(range(steps), desc="prm train (implicit)", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        chosen = [rng.choice(train_rows) for _ in range(batch)]
        ids, mask, step_of = implicit_encode(tokenizer, template, chosen, pad)
        reward = beta * token_log_ratios(model, ref, ids, mask, step_of).sum(dim=1)
        loss = F.binary_cross_entropy_with_logits(reward, torch.tensor([outcome(r) for r in chosen]))
        running = optimizer_step(loss, model, opt, sched, running)
        bar.set_postfix(loss=f"{running:.4f}")
    bar.close()
    train_seconds = time.time() - start
    args = (model, ref, tokenizer, template)
    result = {
        "train": implicit_evaluate(*args, train_rows[:2000], pad, beta),
        "heldout": implicit_evaluate(*args, test_rows, pad, beta) if test_rows else None,
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.implicit_prm = {"reference": reference, "beta": beta}
    model.to(getattr(torch, save_dtype)).save_pretrained(out, safe_serialization=True)
    save_tokenizer(tokenizer, out)
    info = {
        "method": "implicit PRM (Yuan et al. 2024): outcome cross-entropy on beta * log(pi_theta / pi_ref)",
        "base": base,
        "reference": reference,
        "beta": beta,
        **data_record(data, meta, train_rows, test_rows),
        "recipe": {"steps": steps, "batch": batch, "lr": lr, "objective": "implicit", "holdout": holdout, "seed": seed},
        "train_seconds": round(train_seconds),
        "threads": torch.get_num_threads(),
        **result,
    }
    (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
    return info | {"out": str(out)}
