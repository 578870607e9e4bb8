"""The scheduler every step engine and search goes through: one worker per model serves that model's queue.

Searches run one thread per problem (``Reasoner.solve_many``), and speculative expansions one thread per node, so
every trajectory moves on as soon as its own work is done: an accepted row drafts its next step while other rows
are still being judged or rewritten. What they ask of a model arrives at its worker, which batches it:

- ``generate`` joins the model's running decode batch at the next step and leaves it when its rows finish
  (continuous batching at token granularity: ``backends.continuous``, or vLLM's own through ``VllmBatch``; remote
  servers batch their own requests: the calls that arrived together go as one call);
- ``score``, ``next_token_logprobs`` and ``hidden_states`` that arrived together are merged into one batched
  prefill per kind, run between two decode steps; with ``scheduler.mix_scores`` (the default) a merged ``score``
  goes to the decode batch instead (a transformers batch: vLLM's has no ``add_score``), whose next step runs its rows
  in the decode forward where the padding allows (``backends.continuous``: a score then costs no forward of its own).

The draft and the target run concurrently. A worker is a thread in this process (``ScheduledLM``) or, for a
transformers model with ``scheduler.model_workers: process``, a process of its own (``RemoteModel``), free of this
process's interpreter lock. Measured on the project's 2-core CPU (docs/benchmarks.md, ``reasoner bench steps``), a
process per model is the faster (likelihood acceptor 1.1-1.3x target CoT against 0.9x with threads): the searches'
Python and two models' kernel launches otherwise take turns on one interpreter lock; ``auto`` (the default) picks
processes on a CPU with two or more models, threads on GPUs. On a CPU the cores are split between the models.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from multiprocessing.connection import Connection

from ..backends import load_lm
from ..backends.continuous import GenerateRequest, ScoreRequest
from ..backends.sources import resolve_path
from ..core.errors import Cancelled
from ..core.lm import LM, Output, Prompt, SamplingParams, check_context
from ..core.logs import quiet_libraries
from ..core.stats import RoleStats, Stats
from ..core.types import OWNERS, abandoned


class _Call:
    __slots__ = ("kind", "args", "future", "submitted", "owners", "cancelled")

    def __init__(self, kind: str, args: tuple, owners: tuple = ()):
        self.kind, self.args, self.future, self.submitted = kind, args, Future(), time.perf_counter()
        self.owners = owners  # the trees it is made for (``core.types.OWNERS``): dropped once all are cancelled
        self.cancelled = False  # dropped on its caller's word (``ModelWorker.cancel``: a model process's caller)

    @property
    def dead(self) -> bool:
        return self.cancelled or abandoned(self.owners)


class ModelWorker:
    """One model's queue and the thread that serves it."""

    def __init__(self, lm: LM, lookahead_steps: int = 0, mix_scores: bool = True):
        self.lm, self.lookahead_steps, self.mix_scores = lm, lookahead_steps, mix_scores
        self.pending: list[_Call] = []
        self.running: dict[GenerateRequest, _Call] = {}
        self.scoring: dict[ScoreRequest, list[_Call]] = {}  # scores the decode batch runs at its next step
        self.wake = threading.Condition()
        self.closed = False
        self.calls: dict[Future, _Call] = {}  # the calls not settled yet, by their future (``cancel``)
        self.thread = threading.Thread(target=self._serve, name=f"model-{lm.role}", daemon=True)
        self.thread.start()

    def submit(self, kind: str, *args, owners: tuple = ()) -> Future:
        call = _Call(kind, args, owners)
        with self.wake:
            if self.closed:
                raise RuntimeError(f"the scheduler of {self.lm.name} is closed")
            self.pending.append(call)
            self.calls[call.future] = call
            self.wake.notify()
        call.future.add_done_callback(self._forget)
        return call.future

    def _forget(self, future: Future) -> None:
        with self.wake:
            self.calls.pop(future, None)

    def cancel(self, future: Future) -> None:
        """Drop the call behind ``future``: its sequences leave the batch at the worker's next step and it fails
        with ``Cancelled`` (a call already settled is left alone)."""
        with self.wake:
            call = self.calls.get(future)
            if call is not None:
                call.cancelled = True
                self.wake.notify()

    def _drop_dead(self, batch) -> None:
        """Calls whose trees were all cancelled (or that were cancelled) fail with ``Cancelled``; the sequences of
        those running leave the decode batch, those of calls still queued never join it (both counted:
        ``sequences_cancelled``)."""
        with self.wake:
            dead = [c for c in self.pending if c.dead]
            if dead:
                self.pending = [c for c in self.pending if not c.dead]
        for call in dead:
            if call.kind == "generate":
                self.lm.stats.count("sequences_cancelled", len(call.args[0]) * call.args[1].n)
        for request, call in list(self.running.items()):
            if call.dead:
                dropped = batch.cancel(request)
                self.lm.stats.count("sequences_cancelled", dropped)
                del self.running[request]
                dead.append(call)
        for call in dead:
            self.lm.stats.count("calls_cancelled")
            call.future.set_exception(Cancelled(f"{call.kind} call to {self.lm.name} cancelled"))

    def close(self) -> None:
        with self.wake:
            self.closed = True
            self.wake.notify()
        if threading.current_thread() is not self.thread:  # (a reasoner collected on this thread closes it too)
            self.thread.join()

    # -- the worker thread --------------------------------------------------------------------------------------

    def _serve(self) -> None:
        batch = self.lm.batch
        if batch is not None:
            batch.lookahead_steps = self.lookahead_steps  # this thread steps the batch while anything is in it
        while True:
            with self.wake:
                while not self.pending and not self.running and not (batch and batch.busy) and not self.closed:
                    self.wake.wait()
                if self.closed and not self.pending and not self.running:
                    return
            self._drop_dead(batch)
            with self.wake:
                calls, self.pending = self.pending, []
            prefills = [c for c in calls if c.kind in ("score", "next_token_logprobs", "hidden_states")]
            if self.mix_scores and hasattr(batch, "add_score"):  # vLLM's batch has no rows to share
                self._score_in_batch(batch, [c for c in prefills if c.kind == "score"])
                prefills = [c for c in prefills if c.kind != "score"]
            self._prefills(prefills)
            for call in calls:
                if call.kind == "clear":
                    self._settle(call, self.lm.clear_prefix_cache)
            generates = [c for c in calls if c.kind == "generate"]
            if batch is None:
                self._generate_whole(generates)
                continue
            for call in generates:
                request = GenerateRequest(*call.args)
                try:
                    batch.add(request)
                except Exception as e:  # a bad request fails alone
                    call.future.set_exception(e)
                    continue
                self.running[request] = call
            if self.running or batch.busy:
                self.lm.stats.count("batch_steps")  # with batch_requests: how many calls shared each step
                self.lm.stats.count("batch_requests", len(self.running))
                try:
                    done = batch.step()
                except BaseException as e:  # the batch is lost: every request in it fails
                    for call in [*self.running.values(), *(c for g in self.scoring.values() for c in g)]:
                        call.future.set_exception(e)
                    self.running.clear()
                    self.scoring.clear()
                    batch.reset()
                    continue
                for request in done:
                    if isinstance(request, ScoreRequest):
                        self._deliver(self.scoring.pop(request), request.results, request.usage)
                        continue
                    call = self.running.pop(request)
                    call.future.set_result(self._output(request.results, request.usage, call))

    def _prefills(self, calls: list[_Call]) -> None:
        """Calls of one kind (and, for judges, the same candidates) merged into one batched call, split back."""
        groups: dict[tuple, list[_Call]] = {}
        for call in calls:
            key = (call.kind, tuple(call.args[1])) if call.kind == "next_token_logprobs" else (call.kind,)
            groups.setdefault(key, []).append(call)
        for key, group in groups.items():
            prompts = [p for c in group for p in c.args[0]]
            if key[0] != "next_token_logprobs":  # score, hidden_states: (prompts, continuations)
                conts = [x for c in group for x in c.args[1]]
                self._split(group, getattr(self.lm, key[0]), prompts, conts)
            else:
                self._split(group, self.lm.next_token_logprobs, prompts, list(key[1]))

    def _score_in_batch(self, batch, calls: list[_Call]) -> None:
        """``score`` calls merged into one request of the decode batch: answered now, or after the next step where
        rows ride in its forward."""
        if not calls:
            return
        try:
            request = batch.add_score([p for c in calls for p in c.args[0]], [x for c in calls for x in c.args[1]])
        except Exception as e:
            for call in calls:
                call.future.set_exception(e)
            return
        if request.waiting:  # rows ride in the next decode forward
            self.scoring[request] = calls
        else:  # every forward ran already
            self._deliver(calls, request.results, request.usage)

    def _generate_whole(self, calls: list[_Call]) -> None:
        """For backends that batch their own requests: the calls with the same sampling go as one call (calls of
        different TPOT SLOs too, each prompt keeping its own: token speculation's ``slo_trees`` sizes each row's tree
        by it)."""
        groups: dict[str, list[_Call]] = {}
        for call in calls:
            groups.setdefault(repr(replace(call.args[1], tpot_ms=None)), []).append(call)
        for group in groups.values():
            prompts = [p for c in group for p in c.args[0]]
            params = group[0].args[1]
            if any(c.args[1].tpot_ms is not None for c in group):
                tpot_ms = tuple(t for c in group for t in c.args[1].row_tpot_ms(len(c.args[0])))
                params = replace(params, tpot_ms=tpot_ms)
            self._split(group, self.lm.generate, prompts, params)

    def _split(self, calls: list[_Call], method, *args) -> None:
        """One call of ``method`` for all of ``calls``; each gets its rows back (or the error)."""
        try:
            out = method(*args)
        except Exception as e:
            for call in calls:
                call.future.set_exception(e)
            return
        self._deliver(calls, out, out.usage)

    def _deliver(self, calls: list[_Call], rows: Sequence, usage: Sequence[RoleStats]) -> None:
        """Each of the merged ``calls`` gets its rows back."""
        start = 0
        for call in calls:
            n = len(call.args[0])
            call.future.set_result(self._output(rows[start : start + n], usage[start : start + n], call))
            start += n

    @staticmethod
    def _settle(call: _Call, method) -> None:
        try:
            call.future.set_result(method())
        except Exception as e:
            call.future.set_exception(e)

    @staticmethod
    def _output(rows: Sequence, usage: Sequence[RoleStats], call: _Call) -> Output:
        """A caller's rows with their usage; its total: their tokens, one call, and the seconds it waited (forward
        passes are shared with other callers: the model's own stats count them)."""
        total = RoleStats(calls=1, wall_s=time.perf_counter() - call.submitted)
        for u in usage:
            total.prefill_tokens += u.prefill_tokens
            total.prefix_cached_tokens += u.prefix_cached_tokens
            total.generated_tokens += u.generated_tokens
        return Output(list(rows), list(usage), total)


class ScheduledLM:
    """A model whose calls go through its worker: the ``LM`` protocol, callable from any thread at once."""

    def __init__(self, lm: LM, worker: ModelWorker):
        self.lm, self.worker = lm, worker
        self.name, self.role, self.tokenizer = lm.name, lm.role, lm.tokenizer
        self.stats, self.kv_bytes_per_token, self.batch = lm.stats, lm.kv_bytes_per_token, None
        self.context_length = lm.context_length

    def encode(self, prompt: Prompt) -> list[int]:
        return self.lm.encode(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self.lm.decode(ids)

    # Each call's prompts are checked against the context here, in the caller's thread: the worker merges the calls
    # that arrived together into one, and one caller's prompt that is too long must fail that caller alone.

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        ids = [self.lm.encode(p) for p in prompts]
        for p in ids:
            check_context(self, p, 1)
        return self.worker.submit("generate", ids, params, owners=OWNERS.get()).result()

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        if self.context_length is not None:
            for p, c in zip(prompts, continuations):
                c = self.lm.encode(c)
                if c:  # as the backends: a pair without a continuation is not scored
                    check_context(self, self.lm.encode(p) + c)
        return self.worker.submit("score", list(prompts), list(continuations)).result()

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        if self.context_length is not None:
            for p in prompts:
                check_context(self, self.lm.encode(p), 1)
        return self.worker.submit("next_token_logprobs", list(prompts), list(candidates)).result()

    def hidden_states(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        """The transformers backend's last-token hidden states (a draft-side router's features)."""
        return self.worker.submit("hidden_states", list(prompts), list(continuations)).result()

    def clear_prefix_cache(self) -> None:
        self.worker.submit("clear").result()


class RemoteModel:
    """A transformers model in a process of its own, served there by a ``ModelWorker``: the ``LM`` protocol here,
    callable from any thread, with this process's tokenizer for ``encode``/``decode`` and a mirror of the model's
    running ``stats`` (each reply carries them). Requests and replies cross a pipe as token ids and results."""

    def __init__(self, load_args: dict, threads: int | None, lookahead_steps: int = 0, mix_scores: bool = True):
        # a fresh interpreter (not multiprocessing's spawn: it would re-run the user's main script) holding one end
        # of a socket pair; requests and replies are pickled over it
        ours, theirs = socket.socketpair()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "reasoner.engine.scheduler", str(theirs.fileno())], pass_fds=[theirs.fileno()]
        )
        theirs.close()
        self.conn = Connection(ours.detach())
        self.conn.send((load_args, threads, lookahead_steps, mix_scores))
        self.load_args = load_args

    def connect(self) -> RemoteModel:
        """Wait until the model is loaded in its process (started by the constructor, so that several load at
        once); its load error, if any, is raised here."""
        from transformers import AutoTokenizer

        try:
            status, info = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"the process of model {self.load_args['path']} exited while loading it") from None
        if status == "error":
            self.process.wait()
            raise info
        self.name, self.role, self.kv_bytes_per_token = info["name"], self.load_args["role"], info["kv_bytes_per_token"]
        self.context_length = info.get("context_length")
        self.tokenizer = AutoTokenizer.from_pretrained(
            resolve_path(self.load_args["path"], self.load_args.get("gguf_file"))
        )
        self.stats, self.batch = Stats(), None
        self.futures: dict[int, Future] = {}
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.reader = threading.Thread(target=self._read, name=f"replies-{self.role}", daemon=True)
        self.reader.start()
        return self

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return list(prompt)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def submit(self, kind: str, *args) -> Future:
        return self._submit(kind, *args)[1]

    def _submit(self, kind: str, *args) -> tuple[int, Future]:
        future: Future = Future()
        with self.lock:
            rid = next(self.ids)
            self.futures[rid] = future
            self.conn.send((rid, kind, args))
        return rid, future

    # Prompts are checked here, before they cross: the model's worker merges calls, as ScheduledLM's does.

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        ids = [self.encode(p) for p in prompts]
        for p in ids:
            check_context(self, p, 1)
        owners = OWNERS.get()
        rid, future = self._submit("generate", ids, params)
        while owners:  # the call's trees live here: when all are cancelled, the model's process drops the call
            try:
                return future.result(timeout=0.05)
            except FutureTimeout:
                if abandoned(owners):
                    with self.lock:
                        self.conn.send((rid, "cancel", ()))
                    return future.result()  # the process answers Cancelled (or the result, if it was done)
        return future.result()

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        ps, cs = [self.encode(p) for p in prompts], [self.encode(c) for c in continuations]
        for p, c in zip(ps, cs):
            if c:
                check_context(self, p + c)
        return self.submit("score", ps, cs).result()

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        ids = [self.encode(p) for p in prompts]
        for p in ids:
            check_context(self, p, 1)
        return self.submit("next_token_logprobs", ids, list(candidates)).result()

    def hidden_states(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        return self.submit(
            "hidden_states", [self.encode(p) for p in prompts], [self.encode(c) for c in continuations]
        ).result()

    def clear_prefix_cache(self) -> None:
        self.submit("clear").result()

    def close(self) -> None:
        try:
            with self.lock:
                self.conn.send(None)
            self.process.wait(10)
        except (OSError, subprocess.TimeoutExpired):  # gone already, or stuck
            self.process.kill()

    def _read(self) -> None:
        while True:
            try:
                rid, ok, value, stats = self.conn.recv()
            except (EOFError, OSError):  # the model's process ended: what it owed fails
                error = RuntimeError(f"the process of model {self.name} ({self.role}) ended")
                with self.lock:
                    for future in self.futures.values():
                        future.set_exception(error)
                    self.futures.clear()
                return
            self.stats.replace(stats)
            with self.lock:
                future = self.futures.pop(rid)
            (future.set_result if ok else future.set_exception)(value)


def _serve_process(conn: Connection) -> None:
    """A model process: load the model, then serve requests from the socket through a ``ModelWorker`` until told to
    stop (or the parent is gone)."""
    import torch

    load_args, threads, lookahead_steps, mix_scores = conn.recv()
    quiet_libraries()
    if threads:
        torch.set_num_threads(threads)
    try:
        lm = load_lm(**load_args)
    except BaseException as e:
        conn.send(("error", e))
        return
    conn.send(
        ("ready", {"name": lm.name, "kv_bytes_per_token": lm.kv_bytes_per_token, "context_length": lm.context_length})
    )
    worker, lock = ModelWorker(lm, lookahead_steps, mix_scores), threading.Lock()
    submitted: dict[int, Future] = {}  # the calls not answered yet, by request id (a "cancel" names one)

    def reply(rid: int, future: Future) -> None:
        error = future.exception()
        with lock:
            try:
                conn.send((rid, error is None, error if error is not None else future.result(), lm.stats))
            except Exception as e:  # an error that cannot be pickled still reaches the caller, as its text
                conn.send((rid, False, RuntimeError(f"{type(error or e).__name__}: {error or e}"), lm.stats))

    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            break
        if message is None:
            break
        rid, kind, args = message
        if kind == "cancel":
            future = submitted.get(rid)
            if future is not None:
                worker.cancel(future)
            continue
        submitted[rid] = future = worker.submit(kind, *args)
        future.add_done_callback(lambda future, rid=rid: (submitted.pop(rid, None), reply(rid, future)))
    worker.close()


class Scheduler:
    """Loads the models and serves each with a worker: a thread here (``ScheduledLM`` over the backend) or, with
    ``processes``, a process of its own (``RemoteModel``: a transformers model computes there, free of this
    process's interpreter lock; on a CPU that is what lets two models run at once). ``models``: by role, what was
    loaded (the backend, or its ``RemoteModel``); ``wrapped``: what every engine, verifier and search calls.
    ``lookahead_steps``: how far a row may write ahead of its trajectory; ``mix_scores``: whether ``score`` rows ride
    in the decode forward (both ``backends.continuous``)."""

    def __init__(
        self, load_args: dict[str, dict], processes: bool = False, lookahead_steps: int = 0, mix_scores: bool = True
    ):
        remote = {r for r, a in load_args.items() if processes and a["backend"] == "transformers"}
        self.threads = _split_cpu(len(load_args), in_process=not remote)
        self.models: dict[str, LM] = {
            r: RemoteModel(load_args[r], self.threads, lookahead_steps, mix_scores) for r in remote
        }
        self.workers: list[ModelWorker] = []
        self.wrapped: dict[str, LM] = {}
        for role, args in load_args.items():
            if role in remote:
                continue
            lm = self.models[role] = load_lm(**args)
            self.workers.append(ModelWorker(lm, lookahead_steps, mix_scores))
            self.wrapped[role] = ScheduledLM(lm, self.workers[-1])
        for role in remote:
            self.wrapped[role] = self.models[role].connect()

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        for model in self.models.values():
            if isinstance(model, RemoteModel):
                model.close()


def _split_cpu(models: int, in_process: bool) -> int | None:
    """On a CPU, the cores are shared among the models that compute at once: each model's kernels get at most
    ``cores // models`` threads, and never more than this process was given (``torch.set_num_threads``): set here
    for models in this process (whose intra-op pool is shared), and passed to each model process."""
    import torch

    if torch.cuda.is_available():
        return None
    threads = max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) // max(1, models)))
    if in_process:
        torch.set_num_threads(threads)
    return threads


if __name__ == "__main__":  # a model process (``RemoteModel``): its end of the socket pair is argv[1]
    import ctypes
    import signal

    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the process that started it
    _serve_process(Connection(int(sys.argv[1])))
