"""The remote backends and backend loading: token_speculation on an engine backend is a clear error (not silently
ignored),
the fleet's load count survives rejected requests, its HTTP keeps connections alive, times out and types its errors,
and a server that returns no log-probabilities is named.

The servers here are small real HTTP servers on loopback speaking just enough of the completions API (the vLLM
server tests live in tests/test_openai.py and need the vllm package)."""

import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reasoner import Reasoner
from reasoner.backends import SamplingParams, load_lm, resolve_path
from reasoner.backends.fleet import Fleet, Rejected, ServerError, Unavailable
from reasoner.recipe import TokenSpeculation

ENGINE_ERROR = (
    "token_speculation runs in the transformers backend; for vLLM put speculative_config in models.target.engine_args"
)


# -- token_speculation on vllm / openai --------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, options", [("vllm", {"engine_args": {}}), ("openai", {"base_url": ["http://127.0.0.1:9/v1"]})]
)
def test_token_speculation_on_an_engine_backend_is_a_clear_error_before_the_engine_loads(backend, options):
    had_vllm = "vllm" in sys.modules
    with pytest.raises(ValueError) as e:
        load_lm(backend, "toy:target", "target", token_speculation=TokenSpeculation(method="prompt_lookup"), **options)
    assert ENGINE_ERROR in str(e.value) and "backend: transformers" in str(e.value)
    assert ("vllm" in sys.modules) == had_vllm  # refused before vllm was imported (or a server contacted)


def test_token_speculation_none_passes_the_check_and_reaches_the_backend():
    # no token_speculation section: the openai backend goes on to ask the (here absent) server for its models
    with pytest.raises(ServerError, match="no server answered /models"):
        load_lm(
            "openai", "toy:target", "target", token_speculation=None, base_url=[f"http://127.0.0.1:{free_port()}/v1"]
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_recipe_with_token_speculation_and_a_vllm_model_fails_clearly():
    recipe = {
        "models": {"target": {"path": "toy:target", "backend": "vllm"}},
        "token_speculation": {"method": "prompt_lookup"},
    }
    with pytest.raises(ValueError, match="token_speculation runs in the transformers backend"):
        Reasoner(recipe)


# -- small loopback servers ---------------------------------------------------------------------------------


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that gave up waiting is no error here
            super().handle_error(request, client_address)


class Server:
    """A threaded HTTP server on a free loopback port; ``reply(path, body) -> (status, json)`` answers."""

    def __init__(self, reply):
        peers = self.peers = []  # the client's (host, port) of each request: one per connection it opened

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

            def _answer(self, body):
                peers.append(self.client_address)
                status, payload = reply(self.path, body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._answer(None)

            def do_POST(self):
                self._answer(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))

            def log_message(self, *args):
                pass

        self.httpd = QuietServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def servers():
    made = []

    def make(reply):
        made.append(Server(reply))
        return made[-1]

    yield make
    for s in made:
        s.close()


def completions(path, body):
    """Rejects a request marked ``bad`` (a caller's error, HTTP 400), answers the others."""
    if body.get("bad"):
        return 400, {"error": {"message": "bad request"}}
    return 200, {"choices": [{"index": 0, "text": "x"}]}


def test_a_rejected_request_no_longer_counts_as_in_flight_and_the_server_keeps_its_share(servers):
    a, b = servers(completions), servers(completions)
    fleet = Fleet([a.url, b.url])
    with pytest.raises(Rejected, match="HTTP 400"):
        fleet.post("/completions", {"bad": True}, [1, 2, 3])
    assert [e.in_flight for e in fleet.endpoints] == [0, 0]
    # with the rejected request still counted on server a, every later request went to b
    for prompt in ([4, 5], [6, 7], [8, 9], [10, 11]):
        fleet.post("/completions", {}, prompt)
    assert [e.served for e in fleet.endpoints] == [2, 2]
    assert [e.in_flight for e in fleet.endpoints] == [0, 0]


def test_a_server_without_logprobs_is_named_instead_of_giving_steps_without_them(servers):
    target = resolve_path("toy:target")

    def reply(path, body):
        if path.endswith("/models"):
            return 200, {"data": [{"id": target}]}
        # an OpenAI-compatible server that returns token ids but ignores ``logprobs``
        return 200, {
            "choices": [{"index": 0, "text": "1", "token_ids": [5, 6], "finish_reason": "length", "logprobs": None}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2},
        }

    server = servers(reply)
    lm = load_lm("openai", "toy:target", "target", base_url=[server.url])
    with pytest.raises(ValueError, match="returned no log-probabilities of the generated tokens"):
        lm.generate([[1, 2, 3]], SamplingParams(max_tokens=2))


def test_a_server_that_does_not_name_the_stop_string_still_gets_the_step_cut_at_it(servers):
    target = resolve_path("toy:target")
    from transformers import AutoTokenizer

    lm_ids = AutoTokenizer.from_pretrained(target)("=5\n\n", add_special_tokens=False)["input_ids"]

    def reply(path, body):
        if path.endswith("/models"):
            return 200, {"data": [{"id": target}]}
        # finish_reason "stop" without vLLM's stop_reason (or SGLang's matched_stop), as plain OpenAI servers answer
        return 200, {
            "choices": [
                {
                    "index": 0,
                    "text": "=5",
                    "token_ids": lm_ids,
                    "finish_reason": "stop",
                    "logprobs": {"token_logprobs": [-0.1] * len(lm_ids)},
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(lm_ids)},
        }

    lm = load_lm("openai", "toy:target", "target", base_url=[servers(reply).url])
    gen = lm.generate([[1, 2, 3]], SamplingParams(max_tokens=8, stop=("\n\n",)))[0][0]
    # was: taken for EOS, so the last token was cut from the text and the stop string left in it
    assert (gen.finish_reason, gen.stop_reason, gen.text, gen.token_ids) == ("stop", "\n\n", "=5", lm_ids)


# -- the fleet's HTTP -----------------------------------------------------------------------------------------


def test_requests_reuse_one_kept_alive_connection_per_server(servers):
    server = servers(completions)
    fleet = Fleet([server.url])
    for prompt in ([1], [2], [3], [4], [5]):
        fleet.post("/completions", {}, prompt)
    assert len(server.peers) == 5 and len(set(server.peers)) == 1  # was: a connection (and a port) per request
    fleet.close()


def test_errors_are_typed_with_their_status_and_only_the_server_side_ones_go_elsewhere(servers):
    busy = servers(lambda path, body: (503, {"error": {"message": "overloaded"}}))
    fine = servers(completions)
    fleet = Fleet([busy.url, fine.url])
    with pytest.raises(Unavailable) as unavailable:
        fleet._send(busy.url + "/completions", {})
    with pytest.raises(Rejected) as rejected:
        fleet._send(fine.url + "/completions", {"bad": True})
    assert (unavailable.value.status, rejected.value.status) == (503, 400)
    reply, url = fleet.post("/completions", {}, [1, 2])  # the 503 sends it to the other server
    assert url == fine.url and reply["choices"][0]["text"] == "x"
    assert "HTTP 503" in fleet.endpoints[0].last_error and fleet.endpoints[0].failed == 1


def test_a_server_slower_than_the_timeout_is_left_for_another(servers):
    def slow(path, body):
        time.sleep(3)
        return completions(path, body)

    slow_server, fine = servers(slow), servers(completions)
    fleet = Fleet([slow_server.url, fine.url], timeout=0.5)
    start = time.monotonic()
    _, url = fleet.post("/completions", {}, [1])
    assert url == fine.url and time.monotonic() - start < 2.5
    assert "Timeout" in fleet.endpoints[0].last_error
