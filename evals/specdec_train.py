"""``reasoner specdec train``: SpecDec++'s acceptance-prediction head for a draft/target pair (``reasoner.specdec
.acceptance``; Huang et al. 2024). The shipped toy heads (``token_speculation.acceptance_head: toy``) are this
command's output with its defaults, ``--out reasoner/toy/models/specdec_head.safetensors``, and with ``--temperature
0.7 --out reasoner/toy/models/specdec_head_sampling.safetensors``.

Data: the target writes a response to each prompt (greedy, or sampled at ``--temperature``); both models then read
prompt + response in one forward each. At every response position the draft proposes a token (its argmax, or a
draw from its distribution), labelled by the verifier's rule: greedy, rejected unless it is the target's argmax;
sampling, rejected with probability ``1 - min(1, p(y) / q(y))`` (a soft label). Only drafted tokens whose earlier
draft tokens were all accepted matter at decoding time, and their context is then distributed as the target's own
output (greedy: it is the target's output), so we label on the target's responses (deviation: the paper's contexts
mix 15% target tokens into the draft's own, so it also learns from contexts past a rejection that decoding never
reaches before the next verification).
Training: the paper's weighted BCE (rejected tokens weighted ``--reject-weight``; the paper balances with 6), full
batch, prompts split train / held out, dropout on the hidden-state inputs (deviation: rejections are rare -- about
1% of the toy draft's greedy tokens -- and without it the head fits the training rejections through the 128 hidden
dimensions and ranks held-out ones worse than the draft's own probability does). Prints the held-out ROC-AUC beside
that of the draft's own probability (what the simplified stop rule used).
"""

from __future__ import annotations

import random
import time

import torch

from reasoner.backends import resolve_path
from reasoner.specdec.acceptance import FEATURES, AcceptanceHead, features
from reasoner.specdec.verify import sampling_probs


def load_pair(target: str, draft: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    models = []
    for path in (target, draft):
        try:
            resolved = resolve_path(path)
            model = AutoModelForCausalLM.from_pretrained(resolved, dtype=torch.float32).eval()
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load model {path!r}: {e}") from None
        models.append(model)
    tokenizer = AutoTokenizer.from_pretrained(resolve_path(target))
    if AutoTokenizer.from_pretrained(resolve_path(draft)).get_vocab() != tokenizer.get_vocab():
        raise ValueError(f"draft {draft!r} has a different tokenizer from target {target!r}")
    return models[0], models[1], tokenizer


@torch.inference_mode()
def collect(target, draft, tokenizer, prompts: list[list[int]], temperature: float, max_tokens: int, seed: int):
    """Per response position: the head's inputs for the draft's proposal there (``acceptance.features``), the
    rejection label, the prompt index and the position in the response; returns a dict of tensors."""
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    vocab = target.get_output_embeddings().out_features
    rows = {"x": [], "label": [], "prompt": [], "position": []}
    for i, prompt in enumerate(prompts):
        ids = torch.tensor([prompt])
        sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature else {"do_sample": False}
        out = target.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens, pad_token_id=pad, **sampling
        )
        seq = out[:, : len(prompt) + _response_length(out[0, len(prompt) :].tolist(), eos)]
        n = seq.shape[1] - len(prompt)
        if n == 0:
            continue
        p_logits = target(seq).logits[0, len(prompt) - 1 : -1, :vocab].float()
        d = draft(seq, output_hidden_states=True)
        q_logits, hidden = d.logits[0, len(prompt) - 1 : -1].float(), d.hidden_states[-1][0, len(prompt) - 1 : -1]
        if q_logits.shape[-1] != vocab:  # padded embedding tables (as the drafter does)
            q_logits = q_logits[:, :vocab] if q_logits.shape[-1] > vocab else _pad(q_logits, vocab)
        if temperature == 0:
            q = torch.softmax(q_logits, -1)
            y = q.argmax(-1)
            label = (y != p_logits.argmax(-1)).float()
        else:
            q, p = sampling_probs(q_logits, temperature, 1.0), sampling_probs(p_logits, temperature, 1.0)
            y = torch.multinomial(q, 1).squeeze(-1)
            qy, py = q.gather(-1, y[:, None]).squeeze(-1), p.gather(-1, y[:, None]).squeeze(-1)
            label = 1.0 - torch.clamp(py / qy.clamp(min=1e-20), max=1.0)
        rows["x"].append(features(hidden, q, y))
        rows["label"].append(label)
        rows["prompt"].append(torch.full((n,), i))
        rows["position"].append(torch.arange(n))
    if not rows["label"]:
        raise ValueError("the target wrote no response tokens: nothing to label")
    return {k: torch.cat(v) for k, v in rows.items()}


def _response_length(tokens: list[int], eos: int) -> int:
    return tokens.index(eos) + 1 if eos in tokens else len(tokens)


def _pad(logits: torch.Tensor, width: int) -> torch.Tensor:
    return torch.cat([logits, logits.new_full((logits.shape[0], width - logits.shape[-1]), float("-inf"))], -1)


def fit(
    data: dict,
    reject_weight: float,
    steps: int,
    holdout: float,
    seed: int,
    width: int,
    blocks: int,
    weight_decay: float = 1e-2,
    hidden_dropout: float = 0.9,
):
    """Train the head on the prompts not held out; returns (head, info with the held-out ROC-AUCs)."""
    from sklearn.metrics import roc_auc_score

    prompts = sorted(set(data["prompt"].tolist()))
    random.Random(seed).shuffle(prompts)
    held = torch.tensor(prompts[: max(1, int(len(prompts) * holdout))])
    test = torch.isin(data["prompt"], held)
    train = ~test
    y = data["label"]
    if len(set((y[train] > 0.5).tolist())) < 2:
        raise ValueError("every training token has the same verdict: use more prompts (or another pair)")
    torch.manual_seed(seed)
    x, yt = data["x"][train], y[train]
    head = AcceptanceHead(x.shape[-1] - FEATURES, width, blocks)
    head.mean.copy_(x.mean(0))
    head.scale.copy_(x.std(0).clamp(min=1e-6))
    optimizer = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=weight_decay)
    weight = 1.0 + (reject_weight - 1.0) * yt  # the paper's weighted BCE: rejections are rare
    hidden, mean = x[:, :-FEATURES], head.mean[:-FEATURES]
    for _ in range(steps):
        optimizer.zero_grad()
        keep = torch.bernoulli(torch.full_like(hidden, 1.0 - hidden_dropout)) / (1.0 - hidden_dropout)
        loss = nn_bce(head(torch.cat([mean + (hidden - mean) * keep, x[:, -FEATURES:]], -1)), yt, weight)
        loss.backward()
        optimizer.step()
    head.eval()
    truth = (y[test] > 0.5).int().tolist()
    info = {
        "tokens_train": int(train.sum()),
        "tokens_test": int(test.sum()),
        "reject_rate_train": round(float(yt.mean()), 4),
        "reject_rate_test": round(float(y[test].mean()), 4),
    }
    if len(set(truth)) == 2:
        p = head.reject_probability(data["x"][test])
        info["heldout_roc_auc"] = round(float(roc_auc_score(truth, p.tolist())), 4)
        logq = data["x"][test][:, -FEATURES]
        info["heldout_roc_auc_draft_prob"] = round(float(roc_auc_score(truth, (-logq).tolist())), 4)
    else:
        info["heldout_roc_auc"] = info["heldout_roc_auc_draft_prob"] = None
    return head, info


def nn_bce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, weight=weight)


def train(
    out: str,
    target: str = "toy:target",
    draft: str = "toy:draft",
    prompts: list[str] | None = None,
    problems: int = 240,
    difficulty: str = "ops=2-7",
    temperature: float = 0.0,
    max_tokens: int = 200,
    reject_weight: float = 3.0,
    steps: int = 300,
    holdout: float = 0.25,
    seed: int = 0,
    width: int = 64,
    blocks: int = 1,
    hidden_dropout: float = 0.9,
) -> dict:
    """Collect labels for ``draft`` against ``target`` on ``prompts`` (rendered prompt texts; default: ``problems``
    toy problems of ``difficulty`` in the toy template), train the head, save it to ``out``; returns the training
    summary."""
    start = time.time()
    target_model, draft_model, tokenizer = load_pair(target, draft)
    source = "prompts given" if prompts else f"toy problems, {difficulty}"
    if prompts is None:
        import prompts as templates
        from reasoner.toy import Difficulty, generate_problems

        template = templates.load("toy")
        toy = generate_problems(problems, seed=seed + 1, difficulty=Difficulty.parse(difficulty))
        prompts = [template.prompt(tokenizer, p.question) for p in toy]
    ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    data = collect(target_model, draft_model, tokenizer, ids, temperature, max_tokens, seed)
    head, info = fit(data, reject_weight, steps, holdout, seed, width, blocks, hidden_dropout=hidden_dropout)
    info = {
        "draft": draft,
        "target": target,
        "prompts": f"{len(ids)} {source}",
        "temperature": temperature,
        "reject_weight": reject_weight,
        "steps": steps,
        "seed": seed,
    } | info
    info["train_seconds"] = round(time.time() - start, 1)
    head.save(out, info)
    return info | {"out": str(out)}


def read_prompts(path: str) -> list[str]:
    """``--prompts``: one JSON object per line with the rendered prompt text under ``prompt``."""
    import json
    from pathlib import Path

    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ValueError(f"cannot read prompts {path}: {e.strerror}") from None
    out = []
    for i, line in enumerate(lines, 1):
        if line.strip():
            try:
                out.append(str(json.loads(line)["prompt"]))
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f'{path} line {i} is not {{"prompt": text}} ({type(e).__name__}: {e})') from None
    if len(out) < 2:
        raise ValueError(f"{path} holds {len(out)} prompt(s): the split needs at least 2")
    return out
