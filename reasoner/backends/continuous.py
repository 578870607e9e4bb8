"""Continuous batching in the transformers backend (Orca's iteration-level scheduling, as vLLM does it).

Sequences join the running decode batch as soon as their prompt is prefilled and leave as soon as they finish (a
stop string, EOS, their token budget), so no sequence waits for the slowest one of its call and a new call does not
wait for an old one. Each ``step`` admits the sequences that arrived (one batched prefill, prefix cache served) and
runs one forward of every live row. The KV cache is ragged (``specdec.cache.RaggedCache``): rows of different
lengths side by side, joined and dropped without recomputation.

Hot path: stop strings are found in a per-row tail of decoded token pieces (each token id decoded once per model),
not by detokenizing every row each step; rows are sampled together per distinct (temperature, top-p). Sampled rows
draw from their own generator, seeded from the prompt, the sample index and how often that prompt was asked for,
so a run samples the same whatever order its requests are batched in.

Lookahead: a greedy row that ends at a stop string, asked with ``SamplingParams.lookahead`` (a step engine writing
a trajectory step by step: its next call will continue this one), stays in the batch and writes on for up to
``lookahead_steps`` more steps, so a trajectory keeps its place in the decode batch between its step calls. A
request whose prompt is that row's prompt and tokens so far, with the same sampling, takes the row over (or, if
the row has finished that step, its result at once); rows no request claims give way when the batch needs room,
and their tokens are waste (counted: ``lookahead_tokens`` written, ``lookahead_claimed`` steps served). Greedy only
(a sampled row would draw from another generator than a fresh request's), ``n == 1``, and only while a worker keeps
stepping the batch (it sets ``lookahead_steps``). The tokens are those written without it; only their time moves.

Scores ride along: a ``score`` given to ``add_score`` (the scheduler's worker does, with ``scheduler.mix_scores``)
runs its rows' uncached tokens in the next step's decode forward where that pads at most ``MIX_PADDING`` positions
(``mixes``), as admitted prompts do, instead of a forward of its own between two decode steps (counted:
``score_rows_mixed``, and ``score_forwards_saved``: the score forwards that did not run). The chunks that cannot
ride run at once, so a score with none riding is answered before the step, as one alone would be. Riding rows leave
the batch after the forward; their log-probabilities and prefix-cache entries are those of ``TransformersLM.score``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..core.lm import Generation, SamplingParams, check_context
from ..core.stats import RoleStats
from ..specdec.cache import RaggedCache
from ..specdec.verify import sampling_probs

TAIL_CHARS = 64  # decoded text kept per row for stop strings (longer stops fall back to decoding the tail)
# Admitted prompts join the decode forward when padding the live rows to their uncached tokens adds at most this
# many positions (live rows x (longest uncached - 1)); past it a prefill forward of its own costs less. On the toy
# CPU models a forward costs ~5 ms plus ~0.06 ms a position, so the break-even is near 80.
MIX_PADDING = 64
READY_KEPT = 256  # finished lookahead steps kept for a claim (the oldest go first)


def padding(groups: Sequence[tuple[int, int]]) -> int:
    """Positions one shared forward pads when groups of rows that would each run a forward of their own, given as
    ``(rows, tokens each row runs)``, run together: every row runs as many positions as the longest. The decode
    batch is the group ``(live rows, 1)``; a group's rows are padded to its own longest before (each ``score``
    forward is one, each admission another), which is paid either way."""
    width = max((w for _, w in groups), default=0)
    return sum(rows * (width - w) for rows, w in groups)


def mixes(groups: Sequence[tuple[int, int]]) -> bool:
    """Whether ``groups`` (see ``padding``) share one forward: its padding costs less than the forwards it saves (on
    the toy CPU models a forward costs ~5 ms plus ~0.06 ms a position)."""
    return padding(groups) <= MIX_PADDING


@dataclass(eq=False)
class GenerateRequest:
    """One ``generate`` call's prompts; filled in as its sequences finish."""

    prompts: list[list[int]]
    params: SamplingParams
    results: list[list[Generation | None]] = field(init=False)
    usage: list[RoleStats] = field(init=False)
    remaining: int = field(init=False)
    asked: dict[tuple, int] = field(default_factory=dict)  # a seeded call's own count of repeated prompts

    def __post_init__(self):
        self.results = [[None] * self.params.n for _ in self.prompts]
        self.usage = [RoleStats() for _ in self.prompts]
        self.remaining = len(self.prompts) * self.params.n


@dataclass(eq=False)
class ScoreRequest:
    """One ``score`` call's pairs, planned by ``TransformersLM._score_request``: ``chunks`` (pair indices) each
    about one forward's rows, ``plans[i]`` pair i's ``(prefix-cache entry, tokens cached, known log-probs)``;
    ``results`` and ``usage`` are filled in as its chunks run; ``waiting``: the chunks the batch's next step
    runs."""

    pairs: list[tuple[list[int], list[int]]]
    plans: dict[int, tuple]
    chunks: list[list[int]]
    results: list[list[float]] = field(init=False)
    usage: list[RoleStats] = field(init=False)
    waiting: list[list[int]] = field(default_factory=list)

    def __post_init__(self):
        self.results = [[] for _ in self.pairs]
        self.usage = [RoleStats() for _ in self.pairs]

    def fresh(self, i: int) -> int:
        """The tokens pair i runs (all but those its plan takes from the prefix cache)."""
        prompt, continuation = self.pairs[i]
        return len(prompt) + len(continuation) - self.plans[i][1]


@dataclass(eq=False)
class _Seq:
    request: GenerateRequest | None  # None: a lookahead row no request has claimed
    prompt_index: int
    sample: int
    generator: torch.Generator | None
    prompt: list[int]  # the tokens before ``ids[0]`` (its prompt when it was admitted)
    params: SamplingParams
    entry: object = None  # the prefix-cache entry its prompt's prefill started from, and how much of it
    cached: int = 0
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tail: str = ""
    start: int = 0  # ids[start:] are its request's; ids[:start] end that request's prompt (written by lookahead)
    ahead: int = 0  # steps written since the last claim


class ContinuousBatch:
    """The running decode batch of one ``TransformersLM``: ``add`` queues a request, ``step`` admits what is queued
    (up to ``lm.max_batch_size`` live rows) and decodes one token for every live row, returning the requests that
    completed. Not thread-safe: one thread drives it (the scheduler's worker of this model, or ``generate``)."""

    def __init__(self, lm):
        self.lm = lm
        self.waiting: list[tuple[GenerateRequest, int]] = []  # (request, prompt index), in arrival order
        self.live: list[_Seq] = []
        self.cache: RaggedCache | None = None
        self.asked: dict[tuple, int] = {}  # (seed, prompt) -> times sampled: repeated prompts draw fresh samples
        self.pieces: dict[int, str] = {}  # token id -> its text, decoded once
        self.lookahead_steps = 0  # set by the one who keeps stepping the batch (the scheduler's worker)
        self.parked: dict[tuple[int, ...], _Seq] = {}  # live lookahead rows, by the prompt that would claim them
        self.ready: dict[tuple[int, ...], tuple] = {}  # finished lookahead steps, likewise
        self.completed: list[GenerateRequest] = []  # requests served by ``ready`` alone, returned by the next step
        self.scoring: list[ScoreRequest] = []  # scores with chunks to ride in the next step's forward
        self.context = lm.context_length  # a row ends ("length") when it fills the model's context

    def add(self, request: GenerateRequest) -> None:
        for i, prompt in enumerate(request.prompts):
            if not prompt:
                raise ValueError(f"prompt {i} is empty: give at least one token to continue")
            check_context(self.lm, prompt, 1)
        for i, prompt in enumerate(request.prompts):
            if not self._claim(request, i, prompt):
                self.waiting.append((request, i))

    def add_score(self, prompts, continuations) -> ScoreRequest:
        """A ``score`` call (bad input raises here): its chunks that would ride in the next decode forward (as the
        batch is now) wait for the step, which returns the request done; the others run now, in forwards of their
        own. ``request.waiting`` is empty when it is done already."""
        request = self.lm._score_request(prompts, continuations)
        groups = [(len(self.live), 1)] if self.live else []
        groups += [_group(r, c) for r in self.scoring for c in r.waiting]
        request.waiting, alone = _riding(groups, request, request.chunks)
        if alone:
            with self.lm._account() as call:
                for chunk in alone:
                    self.lm._score_alone(request, chunk, call)
        if request.waiting:
            self.scoring.append(request)
        return request

    def _claim(self, request: GenerateRequest, i: int, prompt: list[int]) -> bool:
        """Serve prompt ``i`` from a lookahead row (it takes the row over) or a finished lookahead step."""
        if not (self.parked or self.ready) or not _continues(request.params):
            return False
        key = tuple(prompt)
        seq = self.parked.get(key)
        if seq is not None and _same_sampling(seq.params, request.params):
            del self.parked[key]
            seq.request, seq.prompt_index, seq.sample, seq.ahead = request, i, 0, 0
            request.usage[i].prefix_cached_tokens += len(prompt)
            self.lm.stats.count("lookahead_claimed")
            return True
        ready = self.ready.get(key)
        if ready is not None and _same_sampling(ready[3], request.params):
            del self.ready[key]
            ids, logprobs, finish, _ = ready
            request.results[i][0] = self.lm._result(ids, logprobs, finish)
            request.usage[i].prefix_cached_tokens += len(prompt)
            request.usage[i].generated_tokens += len(ids)
            request.remaining -= 1
            if request.remaining == 0:
                self.completed.append(request)
            self.lm.stats.count("lookahead_claimed")
            return True
        return False

    def cancel(self, request: GenerateRequest) -> int:
        """Take ``request`` out of the batch: its waiting prompts and its live rows (their KV dropped). Returns the
        rows dropped, waiting or live."""
        waiting = len(self.waiting)
        self.waiting = [(r, i) for r, i in self.waiting if r is not request]
        keep = [row for row, seq in enumerate(self.live) if seq.request is not request]
        dropped = waiting - len(self.waiting) + len(self.live) - len(keep)
        self._after(keep)
        self.completed = [r for r in self.completed if r is not request]
        return dropped

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.live or self.completed or self.scoring)

    def reset(self) -> None:
        """Drop every sequence (after a failed step: their requests have failed)."""
        self.waiting, self.live, self.cache = [], [], None
        self.parked, self.ready, self.completed, self.scoring = {}, {}, [], []

    def step(self) -> list[GenerateRequest | ScoreRequest]:
        """Admit waiting prompts, then one decode forward of every live row, with the queued scores' rows where
        they fit; the requests now complete (every queued score is)."""
        call = RoleStats()
        start = time.perf_counter()
        done, self.completed = self.completed, []
        scores, self.scoring = self.scoring, []
        with torch.inference_mode():
            taken = self._take()
            prompts, batch = self._prefix(taken, call) if taken else ([], None)
            groups = [(len(self.live), 1)] if self.live else []  # the rows of the step's forward, as ``mixes`` wants
            if taken:
                # admitted prompts with few uncached tokens ride along in the decode forward; padding every live row
                # to a long prompt would cost more than a prefill forward of its own
                admitted = (sum(r.params.n for r, _ in taken), max(len(p) - c for p, c in zip(prompts, batch.cached)))
                if self.live and mixes([*groups, admitted]):
                    groups.append(admitted)
                else:
                    self._admit(taken, batch, call, done)
                    taken, groups = [], [(len(self.live), 1)] if self.live else []
            riding = []  # score chunks in the decode forward; those that no longer fit (after admission) run alone
            for request in scores:
                ride, alone = _riding(groups, request, request.waiting)
                riding += [(request, chunk) for chunk in ride]
                for chunk in alone:
                    self.lm._score_alone(request, chunk, call)
                request.waiting = []
            if riding or taken:
                self._mixed(taken, prompts, batch, riding, call, done)
            elif self.live:
                self._decode(call, done)
        done += scores
        call.wall_s = time.perf_counter() - start
        call.calls = len(done)
        self.lm.stats.book(self.lm.role, call)
        return done

    # -- admission ------------------------------------------------------------------------------------------------

    def _take(self) -> list[tuple[GenerateRequest, int]]:
        """The waiting prompts that fit in the batch (``lm.max_batch_size`` rows), in arrival order."""
        if self.parked and self.waiting:  # lookahead rows give way to requests
            self._drop_parked(len(self.live) + sum(r.params.n for r, _ in self.waiting) - self.lm.max_batch_size)
        room, taken = self.lm.max_batch_size - len(self.live), []
        while self.waiting and room >= self.waiting[0][0].params.n:
            request, i = self.waiting.pop(0)
            taken.append((request, i))
            room -= request.params.n
        if not taken and not self.live and self.waiting:  # n larger than the batch: admit it alone
            taken.append(self.waiting.pop(0))
        return taken

    def _drop_parked(self, rows: int) -> None:
        """Drop up to ``rows`` lookahead rows (the newest first: the oldest are the likeliest to be claimed soon)."""
        drop = {id(s) for s in [s for s in self.live if s.request is None][::-1][: max(0, rows)]}
        if drop:
            self.parked = {k: s for k, s in self.parked.items() if id(s) not in drop}
            self._after([r for r, s in enumerate(self.live) if id(s) not in drop])

    def _prefix(self, taken: list[tuple[GenerateRequest, int]], call: RoleStats):
        """The prompts, their prefix-cache matches and prefill batch (each keeps its last token uncached); their
        tokens are booked as prefilled or cached."""
        lm = self.lm
        prompts = [r.prompts[i] for r, i in taken]
        matches = [lm._match(p) for p in prompts]
        batch = lm._batch(prompts, [min(m, len(p) - 1) for p, (_, m) in zip(prompts, matches)], [e for e, _ in matches])
        lm._book_prefill(call, [r.usage[i] for r, i in taken], prompts, batch)
        return prompts, batch

    def _seqs(self, taken, batch) -> tuple[list[_Seq], list[int]]:
        """One row per sample (a prompt's prefill serves its ``n`` samples) and the prefill row of each."""
        seqs, rows = [], []
        for row, (request, i) in enumerate(taken):
            for j in range(request.params.n):
                prompt = request.prompts[i]
                generator = self._generator(request, prompt, j)
                entry, cached = batch.entries[row], batch.cached[row]
                seqs.append(_Seq(request, i, j, generator, prompt, request.params, entry, cached))
                rows.append(row)
        return seqs, rows

    def _admit(self, taken, batch, call: RoleStats, done: list[GenerateRequest]) -> None:
        """A prefill forward of its own for the admitted prompts; their first tokens come from it."""
        lm = self.lm
        logits, kv = lm._forward(batch.ids, batch.mask, batch.positions, cache=lm._cache_for(batch))
        call.forward_passes += 1
        seqs, rows = self._seqs(taken, batch)
        cache = RaggedCache.from_prefill(lm.model, kv, batch.mask)
        cache.select_rows(rows)
        keep = self._emit(seqs, logits[rows, -1, :], cache, call, done)
        if keep:
            cache.select_rows(keep)
            self._join(cache, [seqs[r] for r in keep])

    def _mixed(self, taken, prompts, batch, riding, call: RoleStats, done: list[GenerateRequest]) -> None:
        """One forward for everything (Orca's selective batching): every live row's next token, the admitted
        prompts' uncached tokens and the riding score chunks' (``(request, pair indices)``), each row its own
        causal chain at its own positions. Score rows leave the batch after it."""
        lm, device = self.lm, self.lm.device
        chains = [[s.ids[-1]] for s in self.live]
        if taken:
            seqs, rows = self._seqs(taken, batch)
            C = max(batch.cached, default=0)
            cache = RaggedCache.from_prefill(lm.model, lm._cache_for(batch), batch.mask[:, :C])  # the cached prefixes
            cache.select_rows(rows)
            self._join(cache, seqs)
            chains += [prompts[r][batch.cached[r] :] for r in rows]
        scored = []  # (request, pair index, row)
        for request, chunk in riding:
            seqs, scoring = lm._score_rows(request, chunk, call)
            self.cache.append_rows(
                [e.kv if c else None for e, c in zip(scoring.entries, scoring.cached)], scoring.cached
            )
            for i, seq, c in zip(chunk, seqs, scoring.cached):
                scored.append((request, i, len(chains)))
                chains.append(seq[c:])
        B, Q = len(chains), max(len(c) for c in chains)
        ids = torch.full((B, Q), lm.pad_id, dtype=torch.long)
        depth = torch.zeros((B, Q), dtype=torch.long)
        sees = torch.eye(Q, dtype=torch.bool).repeat(B, 1, 1)  # padding sees only itself
        for b, chain in enumerate(chains):
            q = len(chain)
            ids[b, :q] = torch.tensor(chain)
            depth[b, :q] = torch.arange(q)
            sees[b, :q, :q] = torch.tril(torch.ones((q, q), dtype=torch.bool))
        logits = self.cache.forward(ids.to(device), depth.to(device), sees.to(device))
        call.forward_passes += 1
        L = len(self.live)
        if scored:  # read, cached, then out of the batch before the commit (which then gathers the live rows only)
            written = torch.arange(Q)[None, :] < torch.tensor([len(c) for c in chains])[:, None]
            mask = torch.cat([self.cache.valid, written.to(device)], dim=1)  # every row's KV columns, in order
            for request, i, b in scored:
                q, k = len(chains[b]), len(request.pairs[i][1]) - len(request.plans[i][2])  # k: log-probs to compute
                lps = torch.log_softmax(logits[b, q - k - 1 : q - 1], dim=-1)  # position t predicts token t + 1
                target = torch.tensor(chains[b][q - k :], device=lps.device)[:, None]
                lm._scored(request, i, b, lps.gather(-1, target).squeeze(-1).tolist(), self.cache.cache, mask)
            self.cache.select_rows(list(range(L)))
            self.cache.trim()
            self.lm.stats.count("score_rows_mixed", len(scored))
            self.lm.stats.count("score_forwards_saved", len(riding))
        self.cache.commit([list(range(len(c))) for c in chains[:L]])
        last = torch.tensor([len(c) - 1 for c in chains[:L]], device=device)
        self._after(self._emit(self.live, logits[torch.arange(L, device=device), last], self.cache, call, done))

    def _join(self, cache: RaggedCache, seqs: list[_Seq]) -> None:
        """Rows (their cache and sequences) join the running batch."""
        if self.cache is None or not self.live:
            self.cache, self.live = cache, list(seqs)
        else:
            self.cache.extend(cache)
            self.live += seqs

    def _generator(self, request: GenerateRequest, prompt: list[int], sample: int) -> torch.Generator | None:
        """A sampled row's generator: seeded by the call's seed (else the backend's), the prompt, the sample index and
        how often that was asked before (by this call when it has a seed: a seeded call samples the same every
        time; else by this backend: asking again draws fresh samples)."""
        params = request.params
        if params.temperature == 0:
            return None
        key = (params.seed if params.seed is not None else self.lm.seed, tuple(prompt), sample)
        asked = request.asked if params.seed is not None else self.asked
        times = asked.get(key, 0)
        asked[key] = times + 1
        return torch.Generator(self.lm.device).manual_seed(hash((key, times)) & (2**63 - 1))

    # -- decoding ---------------------------------------------------------------------------------------------

    def _decode(self, call: RoleStats, done: list[GenerateRequest]) -> None:
        B = len(self.live)
        device = self.lm.device
        last = torch.tensor([[s.ids[-1]] for s in self.live], device=device)
        logits = self.cache.forward(
            last,
            torch.zeros((B, 1), dtype=torch.long, device=device),
            torch.ones((B, 1, 1), dtype=torch.bool, device=device),
        )
        self.cache.commit([[0]] * B)
        call.forward_passes += 1
        self._after(self._emit(self.live, logits[:, -1, :], self.cache, call, done))

    def _after(self, keep: list[int]) -> None:
        """Only the rows that go on stay in the batch."""
        if len(keep) < len(self.live):
            self.live = [self.live[r] for r in keep]
            if keep:
                self.cache.select_rows(keep)
            else:
                self.cache = None

    def _emit(self, seqs: list[_Seq], logits: torch.Tensor, cache: RaggedCache, call, done) -> list[int]:
        """Sample the next token of every row, append it, finish the rows that ended; the rows that go on."""
        tokens = self._sample(seqs, logits)
        ahead = sum(s.request is None for s in seqs)
        if ahead:
            self.lm.stats.count("lookahead_tokens", ahead)
        lps = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1).tolist()
        call.generated_tokens += len(seqs)
        keep = []
        for r, (seq, tok, lp) in enumerate(zip(seqs, tokens.tolist(), lps)):
            seq.ids.append(tok)
            seq.logprobs.append(lp)
            finish = self._finished(seq, tok)
            if not finish:
                keep.append(r)
                continue
            if self.lm.prefix_cache is not None:  # prompt + generated tokens but the last (not run yet)
                known = self.lm._inherited(seq.entry, seq.cached, len(seq.prompt)) + seq.logprobs[:-1]
                self.lm._store(cache.cache, cache.valid, r, seq.prompt + seq.ids[:-1], known)
            mine = seq.ids[seq.start :], seq.logprobs[seq.start :]
            request = seq.request
            if request is None:  # a lookahead row finished its step: kept for a claim; it may write one more
                key = tuple(seq.prompt + seq.ids[: seq.start])
                if self.parked.pop(key, None) is seq:
                    self.ready[key] = (*mine, finish, seq.params)
                    while len(self.ready) > READY_KEPT:
                        del self.ready[next(iter(self.ready))]
                    if finish[0] == "stop" and seq.ahead < self.lookahead_steps:
                        self._park(seq)
                        keep.append(r)
                continue
            request.results[seq.prompt_index][seq.sample] = self.lm._result(*mine, finish)
            request.usage[seq.prompt_index].generated_tokens += len(mine[0])
            request.remaining -= 1
            if request.remaining == 0:
                done.append(request)
            if self.lookahead_steps and finish[0] == "stop" and seq.params.lookahead and _continues(seq.params):
                self._park(seq)
                self.lm.stats.count("lookahead_rows")
                keep.append(r)
        return keep

    def _park(self, seq: _Seq) -> None:
        """The row writes on, unclaimed, from where its tokens end."""
        seq.request, seq.start, seq.tail, seq.ahead = None, len(seq.ids), "", seq.ahead + 1
        self.parked[tuple(seq.prompt + seq.ids)] = seq

    def _sample(self, seqs: list[_Seq], logits: torch.Tensor) -> torch.Tensor:
        """Greedy rows take the argmax; sampled rows, grouped by (temperature, top-p), draw from their own
        generator."""
        tokens = logits.argmax(-1)
        groups: dict[tuple[float, float], list[int]] = {}
        for r, seq in enumerate(seqs):
            p = seq.params
            if p.temperature > 0:
                groups.setdefault((p.temperature, p.top_p), []).append(r)
        for (temperature, top_p), rows in groups.items():
            probs = sampling_probs(logits[rows], temperature, top_p)
            for k, r in enumerate(rows):
                tokens[r] = torch.multinomial(probs[k], 1, generator=seqs[r].generator)[0]
        return tokens

    def _finished(self, seq: _Seq, tok: int) -> tuple[str, str | None] | None:
        params = seq.params
        if tok in self.lm.eos_ids and not params.ignore_eos:
            return "eos", None
        if params.stop:
            piece = self.pieces.get(tok)
            if piece is None:
                piece = self.pieces[tok] = self.lm.tokenizer.decode([tok], skip_special_tokens=False)
            seq.tail = (seq.tail + piece)[-TAIL_CHARS:]
            for s in params.stop:
                if stop_found(s, seq.tail, seq.ids, seq.start, self.lm.tokenizer.decode):
                    return "stop", s
        if len(seq.ids) - seq.start >= params.max_tokens:
            return "length", None
        if self.context is not None and len(seq.prompt) + len(seq.ids) >= self.context:
            return "length", None
        return None


def stop_found(stop: str, tail: str, ids: list[int], start: int, decode) -> bool:
    """Whether the text a row wrote since ``ids[start]`` holds ``stop``, checked at each new token (so the token that
    completes it ends the row): in ``tail``, the last ``TAIL_CHARS`` of its tokens' texts each decoded alone, for a
    short ASCII stop; by decoding its last tokens for a long or non-ASCII one (pieces of multi-byte characters do
    not add up). Also how ``StepEngine.write_whole`` cuts a whole trajectory into steps."""
    if len(stop) > TAIL_CHARS // 2 or not stop.isascii():
        return stop in decode(ids[max(start, len(ids) - 8 - len(stop)) :])
    return stop in tail


def _group(request: ScoreRequest, chunk: list[int]) -> tuple[int, int]:
    """A score chunk as ``mixes`` sees it: its rows, padded to the longest."""
    return len(chunk), max(request.fresh(i) for i in chunk)


def _riding(groups: list[tuple[int, int]], request: ScoreRequest, chunks: list[list[int]]):
    """``(riding, alone)``: the chunks that join ``groups`` (the step's decode forward, live rows first: none
    without them), added to it one by one while ``mixes`` allows, and the others."""
    riding, alone = [], []
    for chunk in chunks:
        group = _group(request, chunk)
        if groups and mixes([*groups, group]):
            groups.append(group)
            riding.append(chunk)
        else:
            alone.append(chunk)
    return riding, alone


def _continues(params: SamplingParams) -> bool:
    """Whether a request's rows may write ahead or be served by rows that did (greedy, one sample)."""
    return params.temperature == 0 and params.n == 1


def _same_sampling(a: SamplingParams, b: SamplingParams) -> bool:
    return (a.stop, a.max_tokens, a.ignore_eos) == (b.stop, b.max_tokens, b.ignore_eos)
