"""Token-level speculative decoding in the transformers backend: the decoding loop that verifies drafted trees,
and the drafter a ``token_speculation`` section asks for (a draft model is loaded here, on the target's device).

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

from ..specdec import drafters
from ..specdec.adaptive import prefix
from ..specdec.cache import RaggedCache
from ..specdec.config import TokenSpeculation
from ..specdec.drafters.base import Drafter
from ..specdec.tree import DraftTree
from ..specdec.verify import verify
from .sources import make_resident, quantize_linear, resolve_path


def build_drafter(config: TokenSpeculation | dict, lm) -> Drafter:
    """The drafter ``config`` names for the transformers backend ``lm`` (for ``draft_model``: the draft model
    loaded on ``lm``'s device and dtype; its tokenizer must be ``lm``'s)."""
    config = config if isinstance(config, TokenSpeculation) else TokenSpeculation(**config)
    model = None
    if config.uses_draft_model and config.draft:
        model = load_draft_model(config.draft, lm)
        if config.draft_quantize != "none":
            model = quantize_linear(model, config.draft_quantize, lm.device)
    return drafters.build(
        config, model, lm.model.get_output_embeddings().out_features, lm.stats, lm.tokenizer, target=lm.model
    )


def load_draft_model(path: str, lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    resolved = resolve_path(path)
    model = make_resident(
        AutoModelForCausalLM.from_pretrained(resolved, dtype=lm.model.dtype).eval().to(lm.device), lm.device
    )
    if AutoTokenizer.from_pretrained(resolved).get_vocab() != lm.tokenizer.get_vocab():
        raise ValueError(
            f"token_speculation.draft {path!r} has a different tokenizer from {lm.name}: "
            "a draft model must share the target's vocabulary"
        )
    return model


class SpeculativeDecoding:
    """The decoding loop ``TransformersLM`` runs when it has a drafter (mixed into it: it drives the backend's
    batches, prefix cache and sampler)."""

    def _speculative_chunk(self, prompts: list[list[int]], params, call, usage, drafter: Drafter):
        """Yield ``(slot, Generation)`` as rows finish; slot ``i * n + j`` is sample ``j`` of prompt ``i``."""
        n, stats = params.n, self.stats
        heads = [p[:-1] for p in prompts]
        matches = [self._match(h) for h in heads]  # prefix cache (off: nothing cached); a row may be served whole
        batch = self._batch(heads, [min(m, len(h)) for h, (_, m) in zip(heads, matches)], [e for e, _ in matches])
        if batch.mask.shape[1]:
            kv = self._cache_for(batch)
            if batch.ids.shape[1]:
                _, kv = self._forward(batch.ids, batch.mask, batch.positions, cache=kv)
                call.forward_passes += 1
                for r, (h, (entry, _)) in enumerate(zip(heads, matches)):
                    self._store(kv, batch.mask, r, h, self._inherited(entry, batch.cached[r], len(h)))
            cache = RaggedCache.from_prefill(self.model, kv, batch.mask)
        else:
            cache = RaggedCache(self.model, len(prompts), self.device)
        self._book_prefill(call, usage, prompts, batch)
        if n > 1:
            cache.repeat_rows(n)
        live = list(range(len(prompts) * n))  # output slot of each row still in the batch
        seqs = [list(prompts[s // n]) for s in live]
        out_ids: list[list[int]] = [[] for _ in live]
        out_lps: list[list[float]] = [[] for _ in live]
        drafter.target_cache = cache  # self-speculation drafts on the target's own KV (SWIFT)
        drafter.begin(seqs, params.temperature, params.top_p)
        goodput, slo = drafter.goodput, drafter.slo_trees
        if goodput:
            goodput.begin(len(seqs))
        if slo:  # AdaServe: each row's tree cut to its TPOT SLO
            slo.begin([t for t in params.row_tpot_ms(len(prompts)) for _ in range(n)])
        while True:
            start = time.perf_counter()
            lengths = goodput.lengths() if goodput else None  # SmartSpec: a draft length per row
            drafter.limit = max(lengths) if lengths else None
            trees = drafter.draft(seqs) if lengths is None or any(lengths) else [DraftTree() for _ in seqs]
            if lengths is not None:
                trees = [prefix(t, k) for t, k in zip(trees, lengths)]
            candidates = None
            if slo:
                trees, candidates = slo.select(trees)
            verdicts = verify(
                cache,
                [s[-1] for s in seqs],
                trees,
                params.temperature,
                params.top_p,
                self.generator,
                self.pad_id,
                traversal=drafter.verification == "traversal",
                judge=drafter.judge,
            )
            call.forward_passes += 1
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
                    finish = self._finished(out_ids[slot], tok, params)
                    if finish:
                        break
                call.generated_tokens += emitted
                used.append(
                    v
                    if emitted == len(v.tokens)
                    else replace(v, path=v.path[:emitted], tokens=v.tokens[:emitted], logprobs=v.logprobs[:emitted])
                )
                stats.count("token_spec.emitted_tokens", emitted)
                stats.count("token_spec.accepted_tokens", min(len(v.path), emitted))
                if drafter.judge is not None:  # Judge Decoding: accepted by the judge alone vs by the standard rule
                    judged = sum(i < emitted for i in v.judged)
                    stats.count("token_spec.judge_accepted", judged)
                    stats.count("token_spec.rule_accepted", min(len(v.path), emitted) - judged)
                if finish:
                    finished.append(out_ids[slot])
                    yield (
                        slot,
                        self._result(out_ids[slot], out_lps[slot], finish),
                    )
                else:
                    keep.append(r)
            if candidates is not None:  # the drafter numbers its candidate trees' nodes
                drafter.update(seqs, [replace(v, path=[k[i] for i in v.path]) for v, k in zip(used, candidates)])
            else:
                drafter.update(seqs, used)  # drafters learn from the tokens that stayed, aligned with seqs
            if slo:
                slo.record(
                    trees, [len(v.tokens) for v in used], [len(v.path) for v in used], time.perf_counter() - start
                )
            if goodput:
                depths = [max(t.depths(), default=0) for t in trees]
                goodput.record(lengths, [len(v.path) for v in used], depths, time.perf_counter() - start)
            if len(keep) < len(live):
                drafter.select_rows(keep, finished)
                if goodput:
                    goodput.select_rows(keep)
                if slo:
                    slo.select_rows(keep)
                if not keep:
                    return
                cache.select_rows(keep)
                live, seqs = [live[r] for r in keep], [seqs[r] for r in keep]
