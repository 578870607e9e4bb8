"""The transformers backend: our own batched decoding loop over a stock ``AutoModelForCausalLM``.

Why our own loop rather than ``model.generate``: we need per-row stop strings with exact finish reasons,
the model's raw log-probabilities of every sampled token, continuous batching (``continuous.ContinuousBatch``:
rows join and leave the running batch at any step, so concurrent callers share every forward), one prefill per
distinct prompt shared by its ``n`` samples, and token-level speculative decoding (``speculative``) in the
decoding loop's place when a recipe asks for it.

With ``prefix_cache_tokens > 0`` every call looks up the KV of the longest prefix of each prompt it has already
computed (``prefix_cache.PrefixCache``) and prefills only the rest: the batch cache holds each row's cached prefix
left-padded to the longest one (masked), then the uncached suffixes left-padded after it, with explicit positions
(cached length + offset), so mask holes are harmless. Each row keeps at least its last prompt token uncached, so
there are logits to sample from. What a call computed is stored back: a finished row's prompt + generated tokens
(children of a node reuse their parent's step), a scored prompt + continuation with its log-probabilities.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch

from ..core.lm import Generation, Output, Prompt, SamplingParams, check_context
from ..core.stats import RoleStats
from .common import Backend, make_generation, score_pairs, single_token_ids
from .continuous import ContinuousBatch, GenerateRequest, ScoreRequest, mixes
from .prefix_cache import Entry, PrefixCache
from .sources import make_resident, quantize_linear, resolve_dtype
from .speculative import SpeculativeDecoding, build_drafter

log = logging.getLogger(__name__)


class _Batch:
    """A prefill's batch: suffix ids/positions, the attention ``mask`` over [cached columns | suffix columns], the
    tokens each row took from the cache and the entries they came from."""

    def __init__(self, ids, mask, positions, cached: list[int], entries: list[Entry | None]):
        self.ids, self.mask, self.positions, self.cached, self.entries = ids, mask, positions, cached, entries


class TransformersLM(SpeculativeDecoding, Backend):
    """An ``LM`` over a Hugging Face causal LM. Prompts are fully rendered texts (chat templates add their own
    BOS) or token-id lists; ``max_batch_size`` bounds the rows decoded together. ``token_speculation`` (a recipe
    section) makes ``generate`` verify drafted token trees instead of decoding one token per forward; ``drafter``
    can also be set directly to any ``reasoner.specdec`` drafter (``None``: plain decoding). ``prefix_cache_tokens``
    (0: off) is the capacity in tokens of the prefix KV cache; it holds ``kv_bytes_per_token`` bytes per token."""

    def __init__(
        self,
        path: str,
        role: str = "target",
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        seed: int = 0,
        add_special_tokens: bool = False,
        token_speculation=None,
        prefix_cache_tokens: int = 0,
        quantize: str = "none",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.name, self.role = str(path), role
        super().__init__()
        self.max_batch_size = max_batch_size
        self.add_special_tokens = add_special_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = make_resident(
            AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, self.device)).to(self.device).eval(),
            self.device,
        )
        if quantize != "none":
            self.model = quantize_linear(self.model, quantize, self.device)
        self.pad_id = (
            self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        )
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = set(eos) | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())
        self.seed = seed
        self.generator = torch.Generator(self.device).manual_seed(seed)  # token speculation's sampler
        self._decoding = ContinuousBatch(self)
        self.prefix_cache = PrefixCache(prefix_cache_tokens) if prefix_cache_tokens > 0 and self._plain_kv() else None
        self.drafter = build_drafter(token_speculation, self) if token_speculation is not None else None

    # -- helpers -------------------------------------------------------------------------------------------

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes of KV one token holds: 2 (keys, values) x layers x kv heads x head dim x dtype bytes."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return 2 * cfg.num_hidden_layers * heads * head_dim * self.model.dtype.itemsize

    @property
    def context_length(self) -> int | None:
        """Positions the model was built for (its config's ``max_position_embeddings``, or the older names of it)."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(cfg, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def _plain_kv(self) -> bool:
        """The prefix cache copies whole per-token KV columns: only for caches of plain full-attention layers."""
        kinds = {type(layer).__name__ for layer in self._new_cache().layers}
        if kinds - {"DynamicLayer"}:
            log.warning(
                "prefix cache disabled for %s: its cache has %s layers (only full-attention DynamicLayer is supported)",
                self.name,
                sorted(kinds),
            )
            return False
        return True

    @property
    def batch(self) -> ContinuousBatch | None:
        """The running decode batch a scheduler may drive (None while token speculation decodes instead)."""
        return self._decoding if self.drafter is None else None

    def clear_prefix_cache(self) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.clear()

    @contextmanager
    def _account(self):
        with torch.inference_mode(), super()._account() as call:
            yield call

    def _match(self, seq: list[int]) -> tuple[Entry | None, int]:
        """The cached entry sharing the longest prefix with ``seq`` and that prefix's length (``(None, 0)``: none)."""
        return self.prefix_cache.lookup(seq) if self.prefix_cache is not None else (None, 0)

    def _batch(self, seqs: list[list[int]], cached: list[int], entries: list[Entry | None]) -> _Batch:
        """Left-padded suffixes ``seq[cached:]`` after the left-padded cached columns; positions continue each row's
        cached prefix. With nothing cached these are plain left-padded rows."""
        B, C = len(seqs), max(cached, default=0)
        suffixes = [s[c:] for s, c in zip(seqs, cached)]
        W = max((len(x) for x in suffixes), default=0)
        ids = torch.full((B, W), self.pad_id, dtype=torch.long)
        mask = torch.zeros((B, C + W), dtype=torch.long)
        positions = torch.zeros((B, W), dtype=torch.long)
        for i, (suf, c) in enumerate(zip(suffixes, cached)):
            mask[i, C - c : C] = 1
            if suf:
                ids[i, W - len(suf) :] = torch.tensor(suf)
                mask[i, C + W - len(suf) :] = 1
                positions[i, W - len(suf) :] = torch.arange(c, c + len(suf))
        if self.prefix_cache is not None:
            for c in cached:
                self.prefix_cache.record_hit(c)
        return _Batch(ids.to(self.device), mask.to(self.device), positions.to(self.device), list(cached), list(entries))

    def _cache_for(self, batch: _Batch):
        """A ``DynamicCache`` holding each row's cached prefix KV, left-padded to the longest (empty if none)."""
        cache = self._new_cache()
        C = max(batch.cached, default=0)
        if C == 0:
            return cache
        B = len(batch.cached)
        rows = [(i, e, c) for i, (e, c) in enumerate(zip(batch.entries, batch.cached)) if c]
        for layer, (k0, v0) in enumerate(rows[0][1].kv):
            keys = k0.new_zeros((B, k0.shape[0], C, k0.shape[2]))
            values = v0.new_zeros((B, v0.shape[0], C, v0.shape[2]))
            for i, e, c in rows:
                keys[i, :, C - c :] = e.kv[layer][0][:, :c]
                values[i, :, C - c :] = e.kv[layer][1][:, :c]
            cache.update(keys, values, layer)
        return cache

    @staticmethod
    def _book_prefill(call: RoleStats, usage: list[RoleStats], prompts: list[list[int]], batch: _Batch) -> None:
        """Each prompt's tokens as prefilled or served by the prefix cache, on its own usage and the call's."""
        for u, p, c in zip(usage, prompts, batch.cached):
            u.prefill_tokens += len(p) - c
            u.prefix_cached_tokens += c
            call.prefill_tokens += len(p) - c
            call.prefix_cached_tokens += c

    @staticmethod
    def _inherited(entry: Entry | None, cached: int, length: int) -> list[float | None]:
        """Per-token log-probabilities of a new entry of ``length`` tokens: those its cached prefix already knew."""
        lps: list[float | None] = [None] * length
        if entry is not None and cached:
            lps[:cached] = entry.logprobs[:cached]
        return lps

    def _store(self, cache, mask: torch.Tensor, row: int, tokens: list[int], logprobs: list[float | None]) -> None:
        """Copy row ``row``'s KV (its columns where ``mask`` is 1, in order) into the prefix cache under ``tokens``."""
        if self.prefix_cache is None or not tokens or self.prefix_cache.covers(tokens):
            return
        cols = mask[row].nonzero().squeeze(-1)
        if len(cols) != len(tokens):
            raise RuntimeError(f"prefix cache: row {row} holds {len(cols)} KV columns for {len(tokens)} tokens")
        kv = [(layer.keys[row][:, cols], layer.values[row][:, cols]) for layer in cache.layers]
        self.prefix_cache.insert(tokens, kv, logprobs)

    def _forward(self, ids, mask, positions, cache=None, keep: int = 1):
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
            logits_to_keep=keep,
        )
        return out.logits.float(), out.past_key_values

    # -- LM protocol ---------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty: give at least one token to continue")
        if self.drafter is not None:
            return self._speculative_generate(encoded, params)
        before = self.stats.snapshot()
        request = GenerateRequest(encoded, params)
        self._decoding.add(request)
        while request.remaining:
            self._decoding.step()
        return Output(request.results, request.usage, self.stats.since(before).roles.get(self.role, RoleStats()))

    def _speculative_generate(self, encoded: list[list[int]], params: SamplingParams) -> Output:
        """Token-level speculation: each forward verifies every row's drafted tree (``backends.speculative``)."""
        for ids in encoded:
            check_context(self, ids, 1)
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        n = params.n
        results: list[list[Generation]] = [[None] * n for _ in encoded]  # type: ignore[list-item]
        usage = [RoleStats() for _ in encoded]
        per_chunk = max(1, self.max_batch_size // n)
        tpot_ms = params.row_tpot_ms(len(encoded))
        with self._account() as call:
            for start in range(0, len(encoded), per_chunk):
                chunk, chunk_usage = encoded[start : start + per_chunk], usage[start : start + per_chunk]
                room = min(check_context(self, ids, 1) or params.max_tokens for ids in chunk)
                fit = replace(
                    params, max_tokens=min(room, params.max_tokens), tpot_ms=tuple(tpot_ms[start : start + per_chunk])
                )
                for slot, gen in self._speculative_chunk(chunk, fit, call, chunk_usage, self.drafter):
                    results[start + slot // n][slot % n] = gen
                    usage[start + slot // n].generated_tokens += len(gen.token_ids)
        return Output(results, usage, call)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _finished(self, ids: list[int], tok: int, params: SamplingParams) -> tuple[str, str | None] | None:
        if tok in self.eos_ids and not params.ignore_eos:
            return "eos", None
        if params.stop:
            tail = self.tokenizer.decode(
                ids[-(8 + max(len(x) for x in params.stop)) :]
            )  # a stop of L characters spans <= L tokens
            for s in params.stop:
                if s in tail:
                    return "stop", s
        if len(ids) >= params.max_tokens:
            return "length", None
        return None

    def _result(self, ids: list[int], lps: list[float], finish: tuple[str, str | None]) -> Generation:
        return make_generation(self.tokenizer, ids, lps, finish)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        request = self._score_request(prompts, continuations)
        with self._account() as call:
            for chunk in request.chunks:
                self._score_alone(request, chunk, call)
        return Output(request.results, request.usage, call)

    def _score_request(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> ScoreRequest:
        """``score``'s pairs as token ids, each one's plan (``_score_plan``) and the forwards they run in
        (``_score_chunks``); the decode batch runs it as well (``ContinuousBatch.add_score``)."""
        pairs, todo = score_pairs(self, prompts, continuations)
        plans = {i: self._score_plan(len(pairs[i][0]), pairs[i][0] + pairs[i][1]) for i in todo}
        request = ScoreRequest(pairs, plans, [])
        request.chunks = self._score_chunks(request, todo)
        return request

    def _score_rows(self, request: ScoreRequest, chunk: list[int], call: RoleStats) -> tuple[list[list[int]], _Batch]:
        """A chunk's sequences (prompt + continuation) and prefill batch; their tokens booked as prefilled or
        cached."""
        seqs = [request.pairs[i][0] + request.pairs[i][1] for i in chunk]
        plans = [request.plans[i] for i in chunk]
        batch = self._batch(seqs, [c for _, c, _ in plans], [e for e, _, _ in plans])
        self._book_prefill(call, [request.usage[i] for i in chunk], seqs, batch)
        return seqs, batch

    def _score_alone(self, request: ScoreRequest, chunk: list[int], call: RoleStats) -> None:
        """A chunk's forward of its own."""
        seqs, batch = self._score_rows(request, chunk, call)
        ids, mask, positions = batch.ids, batch.mask, batch.positions
        fresh = [len(request.pairs[i][1]) - len(request.plans[i][2]) for i in chunk]  # log-probs to compute
        keep = max(fresh) + 1
        cache = self._cache_for(batch) if self.prefix_cache is not None else None
        logits, cache = self._forward(ids, mask, positions, cache=cache, keep=keep)
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
        targets = ids[:, ids.shape[1] - keep + 1 :]
        token_lps = logprobs.gather(-1, targets[..., None]).squeeze(-1)
        for r, (i, k) in enumerate(zip(chunk, fresh)):
            self._scored(request, i, r, token_lps[r, token_lps.shape[1] - k :].tolist(), cache, mask)
        call.forward_passes += 1

    def _scored(self, request: ScoreRequest, i: int, row: int, lps: list[float], cache, mask: torch.Tensor) -> None:
        """Pair i's result: the log-probabilities its plan knew, then ``lps``; its KV (row ``row`` of ``cache``,
        the columns where ``mask`` is 1) offered to the prefix cache."""
        prompt, continuation = request.pairs[i]
        entry, cached, known = request.plans[i]
        request.results[i] = known + lps
        if self.prefix_cache is not None:
            seq = prompt + continuation
            logprobs = self._inherited(entry, cached, len(seq))
            logprobs[len(prompt) :] = request.results[i]
            self._store(cache, mask, row, seq, logprobs)

    def _score_chunks(self, request: ScoreRequest, todo: list[int]) -> list[list[int]]:
        """The pairs to score, in forwards of rows with about as many tokens to run (rows are padded to the longest):
        sorted by that count, a new forward starts where the current one's padding would pass ``MIX_PADDING``
        positions (``continuous.mixes``: about a forward's own cost), or at ``max_batch_size`` rows."""
        chunks: list[list[int]] = []
        for i in sorted(todo, key=request.fresh):
            if (
                not chunks
                or len(chunks[-1]) >= self.max_batch_size
                or not mixes([(1, request.fresh(j)) for j in [*chunks[-1], i]])
            ):
                chunks.append([])
            chunks[-1].append(i)
        return chunks

    def _score_plan(self, prompt_len: int, seq: list[int]) -> tuple[Entry | None, int, list[float]]:
        """``(entry, cached, known)`` for scoring ``seq[prompt_len:]``: the tokens to take from the cache and the
        continuation log-probabilities it already holds. Without known log-probabilities the cache may serve the
        prompt but its last token (whose logits score the first continuation token); with them it may reach into
        the continuation, up to the last token it knows, leaving at least one token to run."""
        entry, m = self._match(seq)
        j = prompt_len
        if entry is not None:
            while j <= min(m - 1, len(seq) - 1) and entry.logprobs[j] is not None:
                j += 1
        if j > prompt_len:
            return entry, j - 1, [float(x) for x in entry.logprobs[prompt_len:j]]  # type: ignore[arg-type]
        return entry, max(0, min(m, prompt_len - 1)), []

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        cand_ids = single_token_ids(self.tokenizer, candidates, self.name)
        out: list[dict[str, float]] = []

        def read(logits, hidden, chunk):
            lps = torch.log_softmax(logits[:, -1], dim=-1)
            out.extend({c: float(lps[r, t]) for c, t in cand_ids.items()} for r in range(len(chunk)))

        usage, call = self._last_positions([self.encode(p) for p in prompts], read, "next_token_logprobs")
        return Output(out, usage, call)

    def hidden_states(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        """The last layer's hidden state (a ``list[float]``) at the last token of each prompt + continuation: the
        draft-side features of Arbitrage's router (``verifiers.router``). The decoding loop keeps no hidden states,
        so this is a forward of its own; with the prefix cache it runs only the tokens the cache lacks (at least
        the last one), and the draft has just cached the step it wrote."""
        out: list[list[float]] = []

        def read(logits, hidden, chunk):
            out.extend(hidden[:, -1].float().tolist())

        seqs = [self.encode(p) + self.encode(c) for p, c in zip(prompts, continuations)]
        usage, call = self._last_positions(seqs, read, "hidden_states", hidden=True)
        return Output(out, usage, call)

    def _last_positions(self, encoded: list[list[int]], read, what: str, hidden: bool = False):
        """One prefill per chunk of ``encoded`` (the prefix cache serving all but each row's last token at most);
        ``read(logits, hidden_states, chunk)`` takes each chunk's last-position outputs. ``(usage, call)``."""
        for ids in encoded:
            check_context(self, ids, 1)
        usage = [RoleStats() for _ in encoded]
        with self._account() as call:
            for start in range(0, len(encoded), self.max_batch_size):
                chunk = encoded[start : start + self.max_batch_size]
                if any(not p for p in chunk):
                    raise ValueError(f"{what} needs a non-empty prompt: give at least one token to continue")
                matches = [self._match(p) for p in chunk]
                batch = self._batch(
                    chunk, [min(m, len(p) - 1) for p, (_, m) in zip(chunk, matches)], [e for e, _ in matches]
                )
                cache = self._cache_for(batch) if self.prefix_cache is not None else None
                result = self.model(
                    input_ids=batch.ids,
                    attention_mask=batch.mask,
                    position_ids=batch.positions,
                    past_key_values=cache,
                    use_cache=cache is not None,
                    logits_to_keep=1,
                    output_hidden_states=hidden,
                )
                read(result.logits.float(), result.hidden_states[-1] if hidden else None, chunk)
                if self.prefix_cache is not None:
                    for r, (p, (entry, _)) in enumerate(zip(chunk, matches)):
                        self._store(
                            result.past_key_values, batch.mask, r, p, self._inherited(entry, batch.cached[r], len(p))
                        )
                self._book_prefill(call, usage[start : start + len(chunk)], chunk, batch)
                call.forward_passes += 1
        return usage, call
