"""``reasoner serve``: recipes behind an OpenAI-compatible HTTP server (FastAPI + uvicorn), docs/serve.md.

Each ``--recipe`` is one model name (the file's stem); its ``Reasoner`` is built once and every request for it runs
through that reasoner's scheduler: a request's choices are problems solved each in a thread of their own
(``Reasoner.solve_tree``), so requests that arrive together share the models' continuous decode batches exactly as
``Reasoner.solve_many``'s problems do. A request's ``reasoner`` object may change the search, the budget (and
``temperature``/``top_p``/``max_tokens`` the sampling and budget): that is a ``Reasoner.variant`` over the same
models, so it batches with the rest.

Streaming sends each step when it is final (written, or drafted and accepted, or rewritten: ``Tree.on_step``), as a
chunk whose ``reasoner.step`` holds the step and its writer; a chain of thought's steps are also the content's
deltas, other searches send their chosen trajectory as content when they finish. A client that goes away has its
trees cancelled: the scheduler drops their sequences from the running batch (``sequences_cancelled`` in
``/metrics``). Admission is bounded: ``max_running`` requests run, ``max_queue`` more wait, the next gets 429.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import math
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from reasoner.api import Reasoner
from reasoner.core.errors import Cancelled, PromptTooLong
from reasoner.core.types import Node, Problem, Solution, Tree
from reasoner.recipe import Recipe

MAX_CHOICES = 64  # choices per request (n times the prompts): each is a problem solved in a thread
VARIANTS_KEPT = 32  # per recipe: the reasoners of recent request overrides, kept for the next request that asks
EXPECTED_TOKENS = 256  # completion tokens a choice is expected to write, before the served model has finished one


class APIError(Exception):
    """An error the client gets as OpenAI's error body, ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, **kind):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = kind.get("type") or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = kind.get("headers")

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


# -- requests ------------------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")  # OpenAI fields we do not use (user, seed, ...) pass


class ReasonerOptions(_Strict):
    """The request's ``reasoner`` object: recipe sections to change for this request, and what to send back."""

    model_config = ConfigDict(strict=True, extra="forbid")
    search: dict[str, Any] | None = None  # e.g. {"method": "best_of_n", "n": 8}
    budget: dict[str, Any] | None = None  # e.g. {"max_steps": 16, "max_tokens": 512}
    sampling: dict[str, Any] | None = None
    tree: bool = False  # send the whole search tree (every node tried) in the response


class SLO(_Strict):
    model_config = ConfigDict(strict=True, extra="forbid")
    tpot_ms: float = Field(gt=0)  # time per output token: request seconds / completion tokens


class _Common(_Strict):
    model: str
    n: int = Field(1, ge=1, le=16)
    stream: bool = False
    stop: str | list[str] | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream_options: dict[str, Any] | None = None
    reasoner: ReasonerOptions | None = None
    slo: SLO | str | None = None


class _Part(_Strict):
    type: str
    text: str | None = None


class _Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_Part] | None = None


class ChatRequest(_Common):
    messages: list[_Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Common):
    prompt: str | list[str]


def _problem_texts(req: ChatRequest | CompletionRequest) -> list[str]:
    """The problems a request asks: a chat's last user message; a completion's prompt(s)."""
    if isinstance(req, CompletionRequest):
        texts, param = ([req.prompt] if isinstance(req.prompt, str) else req.prompt), "prompt"
    else:
        users = [m for m in req.messages if m.role == "user"]
        if not users:
            raise APIError(400, "messages has no user message: the last user message is the problem", "messages")
        content = users[-1].content
        if isinstance(content, list):
            if any(p.type != "text" for p in content):
                raise APIError(400, "only text content parts are supported", "messages")
            content = "".join(p.text or "" for p in content)
        texts, param = [content or ""], "messages"
    if not texts:
        raise APIError(400, "prompt is empty: give the problem text", param)
    for text in texts:
        if not text.strip():
            raise APIError(400, "empty problem: give the problem text to solve", param)
    return texts


def _validation_error(e: ValidationError) -> APIError:
    first = e.errors()[0]
    tag = lambda x: x in ("str", "int", "float", "bool") or "[" in x or x[:1].isupper() or x.startswith("function-")
    param = ".".join(str(x) for x in first["loc"] if not tag(str(x)))  # a union's member tags are not fields
    return APIError(400, f"{param}: {first['msg']} (got {first.get('input')!r:.60})", param or None, "invalid_type")


# -- the server's state ----------------------------------------------------------------------------------------------


@dataclass
class Choice:
    """One choice of a request: its problem's tree, what was streamed of it, and how it ended."""

    index: int
    tree: Tree
    chain: bool  # a chain of thought: its steps, in order, are the content
    delimiter: str
    stops: tuple[str, ...]
    content: str = ""  # chain: the content so far (cut at a stop string)
    steps: list[Node] = field(default_factory=list)  # the final steps heard, in order
    stopped: bool = False  # a stop string ended it
    solution: Solution | None = None
    error: BaseException | None = None
    done: bool = False

    def heard(self, node: Node) -> str | None:
        """Record a final step (the search's thread); for a chain, the content it adds (and the stop, if any)."""
        self.steps.append(node)
        if not self.chain or self.stopped:
            return None
        before = len(self.content)
        text = self.content + (self.delimiter if self.content else "") + node.step.text
        cut = _cut(text, self.stops)
        if cut is not None:
            text, self.stopped = text[:cut], True
            self.tree.cancel()  # the content is settled: nothing more to write
        self.content = text
        return text[before:]

    def final(self) -> tuple[str, str]:
        """(content, finish reason) once it ended."""
        if self.chain and (self.stopped or self.solution is None):
            return self.content, "stop" if self.stopped else "length"
        s = self.solution
        text = s.text if s else ""
        cut = _cut(text, self.stops)
        if cut is not None:
            return text[:cut], "stop"
        finished = bool(s and s.steps and s.steps[-1].finish_reason == "eos")
        return text, "stop" if finished else "length"


def _cut(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class Served:
    """One recipe behind the server: its reasoner and the variants requests asked for."""

    def __init__(self, name: str, reasoner: Reasoner):
        self.name, self.reasoner = name, reasoner
        self.variants: OrderedDict[str, Reasoner] = OrderedDict()
        self.lock = threading.Lock()
        self.created = int(time.time())

    def variant(self, sections: dict) -> Reasoner:
        sections = {k: v for k, v in sections.items() if v}
        if not sections:
            return self.reasoner
        key = json.dumps(sections, sort_keys=True, default=str)
        with self.lock:
            if key in self.variants:
                self.variants.move_to_end(key)
                return self.variants[key]
        reasoner = self.reasoner.variant(**sections)
        with self.lock:
            self.variants[key] = reasoner
            while len(self.variants) > VARIANTS_KEPT:
                self.variants.popitem(last=False)
        return reasoner


class Metrics:
    """The server's Prometheus metrics (one registry per app)."""

    def __init__(self, served: dict[str, Served]):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "reasoner_requests", "requests answered, by model, endpoint, HTTP status", ["model", "endpoint", "status"]
        )
        self.seconds = Histogram("reasoner_request_seconds", "seconds from admission to the last byte", ["model"])
        self.prompt_tokens = Counter("reasoner_prompt_tokens", "prompt tokens (usage)", ["model"])
        self.completion_tokens = Counter("reasoner_completion_tokens", "completion tokens returned (usage)", ["model"])
        self.generated = Counter(
            "reasoner_generated_tokens", "tokens the models generated for requests (cost)", ["model", "role"]
        )
        self.steps = Counter(
            "reasoner_steps", "final steps, by outcome: accepted or rejected drafts, written", ["model", "outcome"]
        )
        self.acceptance = Gauge("reasoner_step_acceptance_rate", "accepted of drafted steps, so far", ["model"])
        self.cancelled = Counter(
            "reasoner_requests_cancelled", "choices cancelled: client gone, stop string reached", ["model", "reason"]
        )
        self.running = Gauge("reasoner_requests_running", "requests being solved")
        self.queue = Gauge("reasoner_queue_depth", "requests admitted, waiting for a running slot")
        self.slo = Counter("reasoner_slo_requests", "requests with an SLO, by class and whether met", ["slo", "met"])
        self.attainment = Gauge("reasoner_slo_attainment", "share of a class's requests that met their SLO", ["slo"])
        for metric in (self.requests, self.seconds, self.prompt_tokens, self.completion_tokens, self.generated):
            r.register(metric)
        for metric in (self.steps, self.acceptance, self.cancelled, self.running, self.queue, self.slo):
            r.register(metric)
        r.register(self.attainment)
        r.register(_ModelCounters(served))
        self.drafted: dict[str, list[int]] = {}
        self.slo_counts: dict[str, list[int]] = {}

    def step_outcomes(self, model: str, accepted: int, rejected: int, written: int) -> None:
        for outcome, value in (("accepted", accepted), ("rejected", rejected), ("written", written)):
            if value:
                self.steps.labels(model, outcome).inc(value)
        a, t = self.drafted.setdefault(model, [0, 0])
        a, t = a + accepted, t + accepted + rejected
        self.drafted[model] = [a, t]
        if t:
            self.acceptance.labels(model).set(a / t)

    def slo_outcome(self, name: str, met: bool) -> None:
        self.slo.labels(name, str(met).lower()).inc()
        counts = self.slo_counts.setdefault(name, [0, 0])
        counts[0] += met
        counts[1] += 1
        self.attainment.labels(name).set(counts[0] / counts[1])


class _ModelCounters:
    """The models' own counters, read at each scrape: the scheduler's cancelled calls and sequences, tokens."""

    def __init__(self, served: dict[str, Served]):
        self.served = served

    FAMILIES = (  # name, help, the model's counter (None: its generated tokens)
        ("reasoner_sequences_cancelled", "sequences the scheduler dropped from a running batch", "sequences_cancelled"),
        ("reasoner_calls_cancelled", "model calls the scheduler dropped", "calls_cancelled"),
        ("reasoner_model_generated_tokens", "tokens a model generated", None),
        ("reasoner_batch_steps", "decode steps of a model's running batch", "batch_steps"),
        (
            "reasoner_batch_requests",
            "calls in the batch at each decode step, summed (/ steps: per step)",
            "batch_requests",
        ),
    )

    def collect(self):
        for name, doc, counter in self.FAMILIES:
            family = CounterMetricFamily(name, doc, labels=["model", "role"])
            for model, s in self.served.items():
                for role, lm in s.reasoner.models.items():
                    stats = lm.stats
                    if counter is None:
                        value = sum(r.generated_tokens for r in stats.roles.values())
                    else:
                        value = stats.counters.get(counter, 0)
                    family.add_metric([model, role], value)
            yield family
        rows = GaugeMetricFamily(
            "reasoner_batch_rows",
            "live rows of a model's decode batch (models in the server's process)",
            labels=["model", "role"],
        )
        for model, s in self.served.items():
            for worker in s.reasoner.scheduler.workers:
                if worker.lm.batch is not None:
                    rows.add_metric([model, worker.lm.role], len(worker.lm.batch.live))
        yield rows


@dataclass
class ServerConfig:
    max_running: int = 32  # requests solved at once (their choices share the models' batches)
    max_queue: int = 64  # requests admitted to wait for a running slot; the next one gets 429
    retry_after_s: int = 1
    slo_classes: dict[str, float] = field(default_factory=dict)  # name -> TPOT in ms
    # name -> the step-speculation acceptance threshold of the class's requests (a documented extension: AdaServe,
    # 2025, sizes token trees per SLO; for step speculation a tight class may accept draft steps more freely)
    slo_thresholds: dict[str, float] = field(default_factory=dict)
    order: Literal["slo", "fifo"] = "slo"  # which waiting request takes a freed running slot (``_Slots``)


class _Slots:
    """The running slots, handed to waiting requests earliest deadline first.

    AdaServe (2025) serves each request by its own TPOT SLO; here the SLO orders admission (and, with
    ``token_speculation.slo_trees``, sizes the request's token trees in the batch: ``_reasoner_for``). A request meets
    its SLO when its seconds from arrival over its completion tokens are at most its TPOT, so its deadline is its
    arrival plus its TPOT times the completion tokens it is expected to write (the served model's recent mean per
    choice, ``EXPECTED_TOKENS`` before any has finished): a tight request passes loose ones that came well before it,
    and one without an SLO waits behind every request with one. (Keyed on the first token's due time alone, a tight
    request passed only loose ones that came within one TPOT of it: under a long queue that was first come, first
    served; ``reasoner bench serve`` measured it.) Without ``slo_trees`` all sequences of the running batch are
    decoded alike. ``fifo`` keys on arrival alone (the baseline). A request that gives up
    while waiting leaves the line.
    """

    def __init__(self, size: int, order: str):
        self.free, self.order = size, order
        self.waiting: list[tuple[float, int, asyncio.Future]] = []  # a heap of (deadline, arrival number, wakeup)
        self.arrivals = itertools.count()

    def key(self, arrived: float, tpot_ms: float | None, tokens: float = 1.0) -> float:
        """The request's place in line: its arrival (``fifo``), else its deadline for ``tokens`` completion tokens."""
        if self.order == "fifo":
            return arrived
        return arrived + tpot_ms * tokens / 1000 if tpot_ms is not None else math.inf

    async def acquire(self, key: float) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        wakeup = asyncio.get_running_loop().create_future()
        heapq.heappush(self.waiting, (key, next(self.arrivals), wakeup))
        try:
            await wakeup
        except BaseException:
            if wakeup.done() and not wakeup.cancelled():  # handed a slot just as it gave up: pass the slot on
                self.release()
            raise

    def release(self) -> None:
        while self.waiting:
            _, _, wakeup = heapq.heappop(self.waiting)
            if not wakeup.done():  # a cancelled waiter's future is done: skip it
                wakeup.set_result(None)
                return
        self.free += 1


# -- the app ----------------------------------------------------------------------------------------------------------


def create_app(served: dict[str, Served], config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app serving ``served`` (model name -> recipe); the caller owns the reasoners (closes them)."""
    config = config or ServerConfig()
    metrics = Metrics(served)
    app = FastAPI(title="reasoner", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served, app.state.metrics, app.state.config = served, metrics, config
    slots = _Slots(config.max_running, config.order)
    expected: dict[str, float] = {}  # model -> recent mean completion tokens per choice (a deadline's estimate)
    admitted = [0]  # requests running or waiting (the event loop's thread alone changes it)

    @app.exception_handler(APIError)
    async def _api_error(request: Request, e: APIError):
        return e.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException):
        return APIError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception):  # a bug: the client still gets an error body
        return APIError(500, f"internal error: {type(e).__name__}: {e}").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(served)}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(s) for s in served.values()]}

    @app.get("/v1/models/{name}")
    async def model(name: str):
        if name not in served:
            raise _unknown_model(name, served)
        return _model_card(served[name])

    async def _endpoint(request: Request, kind: type[_Common], endpoint: str):
        status, name = 500, "?"
        try:
            req = await _parse(request, kind)
            name = req.model
            response = await _handle(request, req, endpoint)
            status = response.status_code
            return response
        except APIError as e:
            status = e.status
            raise
        finally:
            metrics.requests.labels(name if name in served else "?", endpoint, str(status)).inc()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _endpoint(request, ChatRequest, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _endpoint(request, CompletionRequest, "completions")

    async def _handle(request: Request, req: _Common, endpoint: str) -> Response:
        if req.model not in served:
            raise _unknown_model(req.model, served)
        s = served[req.model]
        texts = _problem_texts(req)
        if len(texts) * req.n > MAX_CHOICES:
            raise APIError(400, f"n times the prompts is {len(texts) * req.n}, above {MAX_CHOICES}", "n")
        slo_name, slo_ms = _slo(req.slo, config)
        reasoner = _reasoner_for(s, req, config.slo_thresholds.get(slo_name), slo_ms)
        lm = reasoner.scheduler.wrapped[reasoner.recipe.search.policy]
        try:  # before anything is admitted or streamed: a prompt too long is the client's error
            problems = [Problem(t) for t in texts]
            await asyncio.to_thread(reasoner.check_prompts, problems)
            prompt_tokens = sum(len(lm.encode(reasoner.template.prompt(lm.tokenizer, t))) for t in texts)
        except PromptTooLong as e:
            param = "messages" if endpoint == "chat" else "prompt"
            raise APIError(400, str(e), param, "context_length_exceeded") from None
        if admitted[0] >= config.max_running + config.max_queue:
            raise APIError(
                429,
                f"the server is full ({config.max_running} requests running, {config.max_queue} waiting): retry "
                f"after {config.retry_after_s}s",
                code="queue_full",
                type="rate_limit_error",
                headers={"Retry-After": str(config.retry_after_s)},
            )
        stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        stops = tuple(x for x in stops if x)
        chain = reasoner.recipe.search.method == "cot"
        new = lambda i, p: Choice(i, Tree(p), chain, reasoner.template.step_delimiter, stops)
        choices = [new(i * req.n + j, p) for i, p in enumerate(problems) for j in range(req.n)]
        job = _Job(s.name, reasoner, choices, prompt_tokens, endpoint, metrics)
        admitted[0] += 1
        metrics.queue.inc()
        try:
            tokens = expected.get(s.name, EXPECTED_TOKENS) * len(choices)
            await slots.acquire(slots.key(job.started, slo_ms, tokens))
        except BaseException:
            admitted[0] -= 1
            metrics.queue.dec()
            raise
        metrics.queue.dec()
        metrics.running.inc()

        def release():
            admitted[0] -= 1
            metrics.running.dec()
            slots.release()

        events = job.start(asyncio.get_running_loop())
        if req.stream:
            include_usage = True  # usage in every response: the last chunk carries it
            gen = _stream(request, job, events, req, include_usage, release, (slo_name, slo_ms))
            return StreamingResponse(gen, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            while job.pending:
                event = await _next_event(request, events)
                if event is None:
                    return Response(status_code=499)  # nobody reads it: the client is gone (its work is cancelled)
                job.take(event)
            body = job.body(req)
            _account(job, body["usage"], (slo_name, slo_ms))
            return JSONResponse(body)
        finally:
            if job.pending:
                job.cancel("disconnected")
            release()

    async def _stream(request, job, events, req, include_usage, release, slo) -> AsyncIterator[str]:
        try:
            for chunk in job.opening(req):
                yield _sse(chunk)
            while job.pending:
                event = await _next_event(request, events)
                if event is None:  # the client is gone
                    return
                try:
                    chunks = job.take(event, req)
                except APIError as e:  # after the stream began: the error is its last event
                    job.cancel("error")
                    yield _sse({"error": json.loads(e.response().body)["error"]})
                    yield "data: [DONE]\n\n"
                    return
                for chunk in chunks:
                    yield _sse(chunk)
            usage = job.usage()
            _account(job, usage, slo)
            if include_usage:
                yield _sse(job.chunk(req, [], usage=usage))
            yield "data: [DONE]\n\n"
        finally:
            if job.pending:  # the client went away (or the server is stopping): its work goes too
                job.cancel("disconnected")
            release()

    def _account(job: _Job, usage: dict, slo: tuple[str | None, float | None]) -> None:
        model = job.model
        metrics.prompt_tokens.labels(model).inc(usage["prompt_tokens"])
        metrics.completion_tokens.labels(model).inc(usage["completion_tokens"])
        elapsed = time.perf_counter() - job.started
        metrics.seconds.labels(model).observe(elapsed)
        accepted = rejected = written = 0
        for c in job.choices:
            counters = c.tree.stats.counters
            accepted += counters.get("steps_accepted", 0)
            rejected += counters.get("steps_rejected", 0)
            written += len(c.steps) if not counters.get("steps_total") else 0
            for role, r in c.tree.stats.roles.items():
                if r.generated_tokens:
                    metrics.generated.labels(model, role).inc(r.generated_tokens)
        metrics.step_outcomes(model, int(accepted), int(rejected), written)
        per_choice = usage["completion_tokens"] / max(1, len(job.choices))
        expected[model] = per_choice if model not in expected else 0.9 * expected[model] + 0.1 * per_choice
        name, tpot_ms = slo
        if name is not None:
            per_token = 1000 * elapsed / max(1, usage["completion_tokens"])
            metrics.slo_outcome(name, per_token <= tpot_ms)

    return app


async def _next_event(request: Request, events: asyncio.Queue, poll_s: float = 0.1):
    """The next event of a job, or None once the client has disconnected (checked every ``poll_s`` while waiting:
    a stream learns of it no sooner than its next write otherwise)."""
    getter = asyncio.ensure_future(events.get())
    try:
        while True:
            done, _ = await asyncio.wait({getter}, timeout=poll_s)
            if done:
                return getter.result()
            if await request.is_disconnected():
                return None
    finally:
        getter.cancel()


async def _parse(request: Request, kind: type[_Common]) -> _Common:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise APIError(400, f"the body is not valid JSON ({e})", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"the body is a JSON {type(data).__name__}, not an object", code="invalid_json")
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        raise _validation_error(e) from None


def _unknown_model(name: str, served: dict[str, Served]) -> APIError:
    return APIError(404, f"model {name!r} not found: this server has {', '.join(sorted(served))}", "model",
                    "model_not_found")  # fmt: skip


def _model_card(s: Served) -> dict:
    r = s.reasoner.recipe
    return {
        "id": s.name,
        "object": "model",
        "created": s.created,
        "owned_by": "reasoner",
        "reasoner": {"description": r.description, "search": r.search.method, "models": sorted(s.reasoner.models)},
    }


def _slo(slo: SLO | str | None, config: ServerConfig) -> tuple[str | None, float | None]:
    if slo is None:
        return None, None
    if isinstance(slo, SLO):
        return "custom", slo.tpot_ms
    if slo not in config.slo_classes:
        known = ", ".join(sorted(config.slo_classes)) or "none configured (--slo-class NAME=TPOT_MS)"
        raise APIError(400, f"unknown SLO class {slo!r}: known classes: {known}", "slo", "unknown_slo_class")
    return slo, config.slo_classes[slo]


def _reasoner_for(s: Served, req: _Common, threshold: float | None = None, tpot_ms: float | None = None) -> Reasoner:
    """The reasoner of the request's overrides: its ``reasoner`` object's sections, over the OpenAI fields, its
    SLO class's step-acceptance ``threshold`` (where the recipe speculates steps; ignored elsewhere) and its TPOT
    (``sampling.tpot_ms``, where token speculation sizes trees by it: AdaServe's ``slo_trees``)."""
    ext = req.reasoner or ReasonerOptions()
    sampling = {k: v for k, v in (("temperature", req.temperature), ("top_p", req.top_p)) if v is not None}
    budget = {}
    max_tokens = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if max_tokens is not None:
        budget["max_tokens"] = max_tokens
    sections = {
        "search": ext.search,
        "budget": {**budget, **(ext.budget or {})},
        "sampling": {**sampling, **(ext.sampling or {})},
    }
    spec = s.reasoner.recipe.token_speculation
    if tpot_ms is not None and spec is not None and spec.slo_trees:
        sections["sampling"]["tpot_ms"] = tpot_ms
    if threshold is not None and s.reasoner.recipe.step_speculation is not None:
        sections["step_speculation"] = {"threshold": threshold}
    try:
        return s.variant(sections)
    except ValueError as e:  # RecipeError among them: the field and the fix
        message = str(e)
        section = next((k for k in ("search", "budget", "sampling") if k in message), None)
        raise APIError(400, message, f"reasoner.{section}" if section else "reasoner", "invalid_reasoner") from None


def _sse(chunk: dict) -> str:
    return f"data: {json.dumps(chunk)}\n\n"


def _step_record(node: Node) -> dict:
    step = node.step
    out = {"text": step.text, "model": step.source, "tokens": len(step.token_ids), "depth": node.depth}
    if step.speculation is not None:
        out["speculation"] = {k: v for k, v in step.speculation.items() if k != "draft_tokens"}
    return out


class _Job:
    """One request's choices, solved in threads; their events come to the event loop through a queue."""

    def __init__(self, model: str, reasoner: Reasoner, choices: list[Choice], prompt_tokens: int, endpoint, metrics):
        self.model, self.reasoner, self.choices, self.metrics = model, reasoner, choices, metrics
        started = time.perf_counter()
        self.prompt_tokens, self.endpoint, self.started = prompt_tokens, endpoint, started
        self.pending = len(choices)
        self.id = ("chatcmpl-" if endpoint == "chat" else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        self.lm = reasoner.scheduler.wrapped[reasoner.recipe.search.policy]

    def start(self, loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
        events: asyncio.Queue = asyncio.Queue()
        put = lambda event: loop.call_soon_threadsafe(events.put_nowait, event)
        for choice in self.choices:

            def heard(node: Node, choice=choice) -> None:
                put(("step", choice, node, choice.heard(node)))

            choice.tree.on_step = heard

            def solve(choice=choice) -> None:
                try:
                    choice.solution = self.reasoner.solve_tree(choice.tree)
                except Cancelled:
                    pass
                except BaseException as e:  # the request fails, the worker lives on
                    choice.error = e
                put(("done", choice, None, None))

            threading.Thread(target=solve, name=f"request-{self.id}-{choice.index}", daemon=True).start()
        return events

    def cancel(self, reason: str) -> None:
        for choice in self.choices:
            if not choice.done and not choice.tree.cancelled:
                choice.tree.cancel()
                self.metrics.cancelled.labels(self.model, reason).inc()

    def take(self, event, req: _Common | None = None) -> list[dict]:
        """Book an event; the chunks it streams (``req`` given)."""
        kind, choice, node, delta = event
        if kind == "done":
            choice.done = True
            self.pending -= 1
            if choice.stopped:
                self.metrics.cancelled.labels(self.model, "stop").inc()
            if choice.error is not None:  # the request fails: its other choices stop
                self.cancel("error")
                self.pending = 0
                raise _solve_error(choice.error)
            if req is None:
                return []
            content, finish = choice.final()
            delta = content if not choice.chain else ""
            return [self.chunk(req, [(choice, delta, finish)], extra=self._choice_ext(choice))]
        if req is None:
            return []
        ext = {"step": {"choice": choice.index, **_step_record(node)}}
        return [self.chunk(req, [(choice, delta or "", None)], reasoner=ext)]

    def opening(self, req: _Common) -> list[dict]:
        if self.endpoint != "chat":
            return []
        return [self.chunk(req, [(c, None, None) for c in self.choices], role=True)]

    def chunk(self, req, rows, usage=None, reasoner=None, role=False, extra=None) -> dict:
        chat = self.endpoint == "chat"
        choices = []
        for choice, text, finish in rows:
            if chat:
                delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
                row = {"index": choice.index, "delta": delta, "logprobs": None, "finish_reason": finish}
            else:
                row = {"index": choice.index, "text": text or "", "logprobs": None, "finish_reason": finish}
            if extra is not None:
                row["reasoner"] = extra
            choices.append(row)
        out = {
            "id": self.id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            out["usage"] = usage
        if reasoner is not None:
            out["reasoner"] = reasoner
        elif usage is not None:
            out["reasoner"] = self._request_ext()
        return out

    def usage(self) -> dict:
        completion = sum(len(self.lm.encode(c.final()[0])) for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def _choice_ext(self, choice: Choice, tree: bool = False) -> dict:
        s = choice.solution
        steps = [_step_record(n) for n in (_chosen_nodes(s) if s is not None else choice.steps)]
        out = {"answer": s.answer if s else None, "steps": steps, "cost": choice.tree.stats.to_dict()}
        if tree and s is not None and s.tree is not None:
            out["tree"] = s.tree.to_dict(s.steps, [c.steps for c in s.candidates])
        return out

    def _request_ext(self) -> dict:
        total: dict[str, dict[str, float]] = {}
        for c in self.choices:
            for role, r in c.tree.stats.roles.items():
                row = total.setdefault(role, {"prefill_tokens": 0, "generated_tokens": 0})
                row["prefill_tokens"] += r.prefill_tokens
                row["generated_tokens"] += r.generated_tokens
        r = self.reasoner.recipe
        return {
            "recipe": self.model,
            "search": r.search.model_dump(mode="json"),
            "budget": r.budget.model_dump(mode="json"),
            "cost": {"roles": total, "seconds": round(time.perf_counter() - self.started, 4)},
        }

    def body(self, req: _Common) -> dict:
        chat = self.endpoint == "chat"
        want_tree = bool(req.reasoner and req.reasoner.tree)
        rows = []
        for c in self.choices:
            content, finish = c.final()
            if chat:
                row = {"index": c.index, "message": {"role": "assistant", "content": content}}
            else:
                row = {"index": c.index, "text": content}
            rows.append(row | {"logprobs": None, "finish_reason": finish, "reasoner": self._choice_ext(c, want_tree)})
        return {
            "id": self.id,
            "object": "chat.completion" if chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": rows,
            "usage": self.usage(),
            "reasoner": self._request_ext(),
        }


def _chosen_nodes(s: Solution) -> list[Node]:
    """The nodes of the chosen trajectory's steps (each step's node in the tree)."""
    by_step: dict[int, Node] = {}
    stack = list(s.tree.root.children)
    while stack:
        node = stack.pop()
        by_step[id(node.step)] = node
        stack += node.children
    return [by_step[id(st)] for st in s.steps if id(st) in by_step]


def _solve_error(e: BaseException) -> APIError:
    if isinstance(e, PromptTooLong):
        return APIError(400, str(e), "prompt", "context_length_exceeded")
    if isinstance(e, ValueError):
        return APIError(400, str(e))
    return APIError(500, f"the solve failed: {type(e).__name__}: {e}")


# -- running it -------------------------------------------------------------------------------------------------------


def load_recipes(sources: list[str]) -> dict[str, Recipe]:
    """The recipes by model name (a file's stem, or the name given for one in recipes/); duplicate names refused."""
    recipes: dict[str, Recipe] = {}
    for source in sources:
        recipe = Recipe.load(source)
        name = Path(source).stem
        if name in recipes:
            raise ValueError(f"two recipes named {name!r}: give each --recipe a file with a different name")
        recipes[name] = recipe
    return recipes


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the models load (a port in use fails at once)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _server_class():
    import contextlib
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, whose SIGTERM/SIGINT drain the requests in flight and then return (uvicorn re-raises
        the signal after its shutdown, which would end the process by that signal: the models must close first,
        and a drained stop is a clean exit)."""

        @contextlib.contextmanager
        def capture_signals(self):
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handlers = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in handlers.items():
                    signal.signal(sig, handler)

    return Server


def serve(
    recipes: dict[str, Recipe], host: str, port: int, config: ServerConfig, drain_s: float = 30.0, log=print
) -> None:
    """Bind, load every recipe's models, serve until SIGTERM/SIGINT; in-flight requests are drained (up to
    ``drain_s`` seconds) before the models are closed."""
    import uvicorn

    _Server = _server_class()
    sock = bind(host, port)
    served: dict[str, Served] = {}
    try:
        for name, recipe in recipes.items():
            served[name] = Served(name, Reasoner(recipe))
        app = create_app(served, config)
        bound = sock.getsockname()[1]
        log(f"reasoner serve: {', '.join(served)} on http://{host}:{bound}/v1 (metrics at /metrics)")
        uv = uvicorn.Config(
            app,
            log_level="warning",
            timeout_graceful_shutdown=max(1, math.ceil(drain_s)),
            lifespan="off",
            access_log=False,
        )
        _Server(uv).run(sockets=[sock])
        log("reasoner serve: drained, stopped")
    finally:
        sock.close()
        for s in served.values():
            s.reasoner.close()
