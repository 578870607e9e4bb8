"""A fleet of OpenAI-compatible servers behind one client: the way to scale out over GPUs and machines.

Every request goes to the least-loaded live server (fewest requests in flight), except that a prompt extending
one sent before goes back to the same server while that server is not much busier than the others, so the
server's prefix cache keeps the trajectory's KV (a search's next step extends its previous prompt). A request
that fails for a reason another server can fix (connection refused or reset, timeout, 5xx, 429) is retried on
another server and the failed one is left out for ``cooldown`` seconds; a request the server rejects (4xx) is
the caller's error and raised at once. So a run survives servers dying mid-run as long as one is left.

HTTP is httpx: one client per fleet, so requests reuse kept-alive connections to each server instead of opening one
each (a search sends thousands of short requests); a connection that cannot be made in ``CONNECT_S`` fails over at
once, while a request may take ``timeout`` to answer. Failures are typed: ``Unavailable`` (try another server) and
``Rejected`` (the request's fault), both with the HTTP status when there was one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import httpx

log = logging.getLogger(__name__)
CONNECT_S = 10.0  # seconds to open a connection: a server that takes longer is down, another is tried
CONNECTIONS = 256  # open connections per fleet, all servers together (a search's problems request at once)

_MOD, _BASE = (1 << 61) - 1, 1_000_003
ROUTES_KEPT = 100_000  # prompts remembered for affinity (a few MB)


class ServerError(ConnectionError):
    """Every server of the fleet failed a request."""


class Unavailable(ConnectionError):
    """One server could not answer (connection refused or reset, timeout, HTTP 5xx or 429, a reply that is not
    JSON): another server may."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class Rejected(ValueError):
    """A server rejected the request itself (HTTP 4xx): retrying elsewhere would not help."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def normalize_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"base_url {url!r} is not an http(s) URL: write e.g. http://127.0.0.1:8000/v1")
    return url if url.endswith("/v1") else url + "/v1"


def prefix_hashes(tokens) -> list[int]:
    """Rolling hashes of every prefix of ``tokens`` (``out[i]`` covers ``tokens[: i + 1]``)."""
    out, h = [], 0
    for t in tokens:
        h = (h * _BASE + int(t) + 1) % _MOD
        out.append(h)
    return out


@dataclass
class Endpoint:
    url: str
    in_flight: int = 0
    served: int = 0  # requests answered
    failed: int = 0  # requests that failed here and went elsewhere
    down_until: float = 0.0
    last_error: str = ""

    def live(self, now: float) -> bool:
        return self.down_until <= now


@dataclass
class Fleet:
    urls: list[str]
    timeout: float = 600.0  # seconds one request may take (a long generation on a busy server)
    cooldown: float = 30.0  # seconds a failed server is left out
    api_key: str | None = None
    endpoints: list[Endpoint] = field(init=False)

    def __post_init__(self):
        if not self.urls:
            raise ValueError("a fleet needs at least one server URL")
        self.endpoints = [Endpoint(normalize_url(u)) for u in self.urls]
        self._lock = threading.Lock()
        self._routes: OrderedDict[int, Endpoint] = OrderedDict()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(self.timeout, connect=min(CONNECT_S, self.timeout)),
            limits=httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS),
        )

    def close(self) -> None:
        self._client.close()

    # -- routing -------------------------------------------------------------------------------------------

    def _pick(self, hashes: list[int], tried: set[int]) -> Endpoint | None:
        now = time.monotonic()
        live = [e for i, e in enumerate(self.endpoints) if e.live(now) and i not in tried]
        if not live:
            return None
        least = min(live, key=lambda e: (e.in_flight, e.served))
        for h in reversed(hashes):  # the longest prefix sent before
            e = self._routes.get(h)
            if e is not None:
                if e in live and e.in_flight <= 2 * least.in_flight + 1:
                    return e
                break
        return least

    def _remember(self, hashes: list[int], e: Endpoint) -> None:
        if hashes:
            self._routes[hashes[-1]] = e
            self._routes.move_to_end(hashes[-1])
            while len(self._routes) > ROUTES_KEPT:
                self._routes.popitem(last=False)

    # -- requests ------------------------------------------------------------------------------------------

    def post(self, path: str, body: dict, prompt_tokens=()) -> tuple[dict, str]:
        """POST ``body`` as JSON to ``path`` (e.g. ``/completions``) on one server, retried on the others;
        returns the reply and the URL of the server that gave it."""
        hashes = prefix_hashes(prompt_tokens)
        tried: set[int] = set()
        errors = []
        for _ in range(2 * len(self.endpoints) + 1):
            with self._lock:
                e = self._pick(hashes, tried)
                if e is None:  # every server failed this request or is cooling down: try the least recently failed
                    tried.clear()
                    e = min(self.endpoints, key=lambda x: x.down_until)
                    wait = min(max(0.0, e.down_until - time.monotonic()), 5.0)
                else:
                    wait = 0.0
                e.in_flight += 1
                self._remember(hashes, e)
            if wait:
                time.sleep(wait)
            try:
                out = self._send(e.url + path, body)
            except Rejected:
                with self._lock:  # the server is fine (it answered): it no longer carries this request
                    e.in_flight -= 1
                raise
            except Unavailable as err:
                with self._lock:
                    e.in_flight -= 1
                    e.failed += 1
                    e.down_until = time.monotonic() + self.cooldown
                    e.last_error = f"{type(err).__name__}: {err}"
                    tried.add(self.endpoints.index(e))
                errors.append(f"{e.url}: {e.last_error}")
                log.warning("server %s failed (%s); retrying on another", e.url, e.last_error)
                continue
            with self._lock:
                e.in_flight -= 1
                e.served += 1
                e.down_until = 0.0
            return out, e.url
        raise ServerError(f"no server could answer {path}: " + "; ".join(errors[-len(self.endpoints) :]))

    def get(self, path: str) -> dict:
        """GET ``path`` from the first server that answers."""
        errors = []
        for e in self.endpoints:
            try:
                return self._send(e.url + path, None)
            except Unavailable as err:
                errors.append(f"{e.url}: {type(err).__name__}: {err}")
        raise ServerError(f"no server answered {path}: " + "; ".join(errors))

    def _send(self, url: str, body: dict | None) -> dict:
        """One request to one server: its JSON reply, or ``Rejected`` (4xx but 429) or ``Unavailable``."""
        try:
            if body is None:
                response = self._client.get(url)
            else:
                response = self._client.post(url, json=body)
        except httpx.HTTPError as err:  # connection refused or reset, timeouts, broken replies
            raise Unavailable(f"{type(err).__name__}: {err}") from None
        status = response.status_code
        if status >= 400:
            detail = response.text[:500]
            if status < 500 and status != 429:
                try:
                    detail = json.loads(detail)["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    pass
                raise Rejected(f"{url} rejected the request (HTTP {status}): {detail}", status)
            raise Unavailable(f"HTTP {status}: {detail}", status)
        try:
            return response.json()
        except ValueError as err:
            raise Unavailable(f"HTTP {status} with a reply that is not JSON ({err})", status) from None


_FLEETS: dict[tuple[str, ...], Fleet] = {}


def fleet(urls, api_key: str | None = None) -> Fleet:
    """The process's fleet for these servers: every backend on them shares its view of load and health."""
    key = tuple(normalize_url(u) for u in urls)
    if key not in _FLEETS:
        _FLEETS[key] = Fleet(list(key), api_key=api_key)
    return _FLEETS[key]
