"""The speculative decoding loop: the transformers backend's ``generate`` with a drafter.

Same contract as plain decoding (``TransformersLM._generate_chunk``): one prefill per distinct prompt shared by
its ``n`` samples, per-row stop strings / EOS / ``max_tokens`` checked token by token (tokens accepted past the
end are discarded), the target's raw log-probability of every token, rows leaving the batch as they finish.
The difference: each target forward verifies every row's draft tree and emits 1 + (accepted drafts) tokens.

The prefill covers the prompt minus its last token, which becomes the first root: the first generated token
already comes out of a verified tree. With the backend's prefix cache on, the prefill takes each head's cached
prefix and runs only the rest (a head cached whole runs nothing), and stores the heads' KV; the KV of accepted
tokens is not stored back (it lives in a ragged cache with holes), so only prompts are shared between calls.
"""

from __future__ import annotations

import time
from dataclasses import replace

from .adaptive import prefix
from .cache import RaggedCache
from .drafters.base import Drafter
from .tree import DraftTree
from .verify import verify


def speculative_chunk(lm, prompts: list[list[int]], params, role, drafter: Drafter):
    """Yield ``(slot, Generation)`` as rows finish; slot ``i * n + j`` is sample ``j`` of prompt ``i``."""
    n, stats = params.n, lm.stats
    heads = [p[:-1] for p in prompts]
    matches = [lm._match(h) for h in heads]  # prefix cache (off: nothing cached); a row may be served whole
    batch = lm._batch(heads, [min(m, len(h)) for h, (_, m) in zip(heads, matches)], [e for e, _ in matches])
    if batch.mask.shape[1]:
        kv = lm._cache_for(batch)
        if batch.ids.shape[1]:
            _, kv = lm._forward(batch.ids, batch.mask, batch.positions, cache=kv)
            role.forward_passes += 1
            for r, (h, (entry, _)) in enumerate(zip(heads, matches)):
                lm._store(kv, batch.mask, r, h, lm._inherited(entry, batch.cached[r], len(h)))
        cache = RaggedCache.from_prefill(lm.model, kv, batch.mask)
    else:
        cache = RaggedCache(lm.model, len(prompts), lm.device)
    lm._book_prefill(role, sum(len(p) for p in prompts), batch)
    if n > 1:
        cache.repeat_rows(n)
    live = list(range(len(prompts) * n))  # output slot of each row still in the batch
    seqs = [list(prompts[s // n]) for s in live]
    out_ids: list[list[int]] = [[] for _ in live]
    out_lps: list[list[float]] = [[] for _ in live]
    drafter.begin(seqs, params.temperature, params.top_p)
    goodput = drafter.goodput
    while True:
        start = time.perf_counter()
        level = goodput.choose(len(live)) if goodput else None
        trees = drafter.draft(seqs) if level != 0 else [DraftTree() for _ in seqs]
        if level:
            trees = [prefix(t, level) for t in trees]
        verdicts = verify(
            cache, [s[-1] for s in seqs], trees, params.temperature, params.top_p, lm.generator, lm.pad_id
        )
        role.forward_passes += 1
        stats.count("token_spec.verify_forwards")
        stats.count("token_spec.drafted_tokens", sum(len(t) for t in trees))
        keep, finished = [], []
        used = []  # what each row took of its verdict: a row that finishes mid-verdict drops the rest
        for r, (slot, v) in enumerate(zip(live, verdicts)):
            finish, emitted = None, 0
            for tok, lp in zip(v.tokens, v.logprobs):
                out_ids[slot].append(tok)
                out_lps[slot].append(lp)
                seqs[r].append(tok)
                emitted += 1
                finish = lm._finished(out_ids[slot], tok, params)
                if finish:
                    break
            role.generated_tokens += emitted
            used.append(
                v
                if emitted == len(v.tokens)
                else replace(v, path=v.path[:emitted], tokens=v.tokens[:emitted], logprobs=v.logprobs[:emitted])
            )
            stats.count("token_spec.emitted_tokens", emitted)
            stats.count("token_spec.accepted_tokens", min(len(v.path), emitted))
            if finish:
                finished.append(out_ids[slot])
                yield (
                    slot,
                    lm._result(out_ids[slot], out_lps[slot], finish, len(prompts[slot // n]), batch.cached[slot // n]),
                )
            else:
                keep.append(r)
        drafter.update(seqs, used)  # drafters learn from the tokens that stayed, aligned with seqs
        if goodput:
            goodput.record(level, len(live), sum(len(v.tokens) for v in used), time.perf_counter() - start)
        if len(keep) < len(live):
            drafter.select_rows(keep, finished)
            if not keep:
                return
            cache.select_rows(keep)
            live, seqs = [live[r] for r in keep], [seqs[r] for r in keep]
