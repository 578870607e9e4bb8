"""Step importance for A*-Thought (arXiv 2505.24550): the bidirectional importance score (BIS) of each thought
step, from a scorer LM's attention and perplexity (LongLLMLingua's restrictive statements); see
``search.astar_thought`` for how the search uses it. The scorer must be a transformers model: attention weights
come from an eager-attention forward of its HF model."""

from __future__ import annotations

import math
from collections.abc import Sequence

Q_STATEMENT = "We can get the solution to this question in the given thought step."
S_STATEMENT = "We can get this solution in the given thought step."


def importance_scores(scorer, traces: Sequence, alpha: float = 0.5, batch_size: int = 8) -> list[list[float]]:
    """BIS of every thought step of every trace (``.problem``, ``.steps``, ``.solution``; see the module
    docstring), from ``scorer``, a
    ``TransformersLM`` (its HF model gives the attention weights)."""
    model = getattr(scorer, "model", None)
    if model is None or not hasattr(model, "set_attn_implementation"):
        raise ValueError(
            "the A*-Thought scorer needs attention weights: use a transformers model for it (--scorer PATH)"
        )
    tok = scorer.tokenizer
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []  # the attention sink, kept out of the step
    items: list[tuple[int, int, int, list[int], list[int]]] = []  # (trace, step, direction, step ids, query ids)
    for t, trace in enumerate(traces):
        queries = [scorer.encode(f"{trace.problem} {Q_STATEMENT}"), scorer.encode(f"{trace.solution} {S_STATEMENT}")]
        for i, step in enumerate(trace.steps):
            ids = scorer.encode(step + "\n\n")
            for d, q in enumerate(queries):
                items.append((t, i, d, bos + ids, q))
    attn = [[[0.0, 0.0] for _ in tr.steps] for tr in traces]
    ppl = [[[1.0, 1.0] for _ in tr.steps] for tr in traces]
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        for (t, i, d, _, _), a, p in zip(
            chunk, *_attention_and_perplexity(scorer, [(s, q) for *_, s, q in chunk], len(bos))
        ):
            attn[t][i][d], ppl[t][i][d] = a, p
    return [
        [((1 - alpha) * a[0] + alpha * a[1]) / ((1 - alpha) * p[0] + alpha * p[1]) for a, p in zip(attn[t], ppl[t])]
        for t in range(len(traces))
    ]


def _attention_and_perplexity(
    scorer, pairs: list[tuple[list[int], list[int]]], skip: int = 0
) -> tuple[list[float], list[float]]:
    """For each ``(step ids, query ids)``: the attention mass the query's tokens give the step's tokens (mean over
    layers, heads and query tokens; the first ``skip`` step ids, a BOS, left out) and the query's perplexity given
    the step; one eager-attention forward."""
    import torch

    model = scorer.model
    seqs = [s + q for s, q in pairs]
    width = max(len(x) for x in seqs)
    pad = scorer.tokenizer.pad_token_id if scorer.tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(x)) + x for x in seqs], device=model.device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in seqs], device=model.device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    previous = model.config._attn_implementation
    try:
        if previous != "eager":
            model.set_attn_implementation("eager")
        with torch.inference_mode():
            out = model(
                input_ids=ids, attention_mask=mask, position_ids=positions, output_attentions=True, use_cache=False
            )
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
    role = scorer.stats.role(scorer.role)
    role.prefill_tokens += int(mask.sum())
    role.forward_passes += 1
    weights = sum(a.float().mean(1) for a in out.attentions) / len(out.attentions)  # (batch, query pos, key pos)
    attn, ppl = [], []
    for r, (s, q) in enumerate(pairs):
        q0 = width - len(q)  # first query position
        first = q0 - len(s) + skip
        attn.append(float(weights[r, q0:, first:q0].sum(-1).mean()))
        logprobs = torch.log_softmax(out.logits[r, q0 - 1 : width - 1].float(), dim=-1)  # only the query's rows
        lp = logprobs.gather(-1, ids[r, q0:, None]).squeeze(-1)
        ppl.append(math.exp(min(700.0, -float(lp.mean()))))
    return attn, ppl
