"""The OpenAI-compatible backend: ``vllm serve`` (or another server speaking vLLM's completions API) over HTTP,
one server or a fleet of them (``reasoner.backends.fleet``).

Prompts are rendered here by the model's own chat template (the tokenizer is loaded from ``path``) and sent as
token ids to ``/v1/completions``: the open assistant turn is continued exactly (what chat completions'
``continue_final_message`` would do), both backends see the same ids, and a step's prompt extends the previous
one token for token, so the server's prefix cache hits. Beyond the OpenAI API it uses vLLM's extensions:
``return_token_ids`` (steps carry token ids), ``prompt_logprobs`` (``score``) and ``logprob_token_ids``
(``next_token_logprobs``); a server without them gets a clear error naming what is missing.

Costs: prompt and generated tokens come from the server's ``usage`` (prefix-cache hits from
``prompt_tokens_details`` when the server reports them, e.g. ``vllm serve --enable-prompt-tokens-details``);
forward passes happen on the server and are not reported, so they stay 0 here.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from ..core.lm import Output, Prompt, SamplingParams, check_context
from ..core.stats import RoleStats
from .common import Backend, RequestSeeds, finish_of, make_generation, score_pairs, single_token_ids
from .fleet import fleet
from .sources import resolve_path


class OpenAILM(Backend):
    """An ``LM`` over OpenAI-compatible servers at ``base_url`` (one URL or several). ``max_batch_size`` bounds the
    requests in flight from this client; the server batches them. ``path`` is the model as the servers name it
    (``vllm serve``'s default: the path or hub id it was started with; ``toy:*`` resolved), and the tokenizer's."""

    def __init__(
        self,
        path: str,
        role: str = "target",
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        seed: int = 0,
        add_special_tokens: bool = False,
        base_url: str | Sequence[str] = (),
        context_length: int | None = None,
    ):
        from transformers import AutoTokenizer

        if dtype != "auto" or device != "auto":
            raise ValueError(
                "dtype and device are the server's with backend openai: set them where the server starts (vllm "
                "serve --dtype ...) and leave them auto here"
            )
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError(
                "backend openai needs base_url: the server's URL, e.g. http://127.0.0.1:8000/v1 (or a list of them)"
            )
        local = resolve_path(path)
        self.role, self.max_batch_size, self.add_special_tokens = role, max_batch_size, add_special_tokens
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(local)
        self.fleet = fleet(urls, api_key=os.environ.get("OPENAI_API_KEY"))
        models = [m for m in self.fleet.get("/models").get("data", []) if isinstance(m, dict)]
        served = [m.get("id") for m in models]
        if path not in served and local not in served:
            raise ValueError(
                f"the servers at {', '.join(urls)} serve {served}, not {path!r}: point the model's path at the "
                "model they serve"
            )
        self.name = path if path in served else local
        reported = next((m.get("max_model_len") for m in models if m.get("id") == self.name), None)
        # the context: as configured, else as vLLM's /models reports it, else unknown (prompts go unchecked)
        self.context_length = context_length or (reported if isinstance(reported, int) and reported > 0 else None)
        self.seeds = RequestSeeds(seed)

    def _complete(self, bodies: list[dict], call: RoleStats) -> tuple[list[dict], list[RoleStats]]:
        """Send one completion request per body, concurrently, over the fleet; each reply's prompt tokens as the
        server counted them (prefix-cache hits apart), also added to ``call``. Each reply names the server that
        gave it (``reply["server"]``)."""
        if not bodies:
            return [], []
        with ThreadPoolExecutor(min(len(bodies), self.max_batch_size)) as pool:
            answered = list(
                pool.map(lambda b: self.fleet.post("/completions", {"model": self.name, **b}, b["prompt"]), bodies)
            )
        replies = [reply | {"server": url} for reply, url in answered]
        usage = []
        for reply in replies:
            counted = reply.get("usage") or {}
            cached = ((counted.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
            usage.append(self._served(call, counted.get("prompt_tokens", 0), cached))
        return replies, usage

    def _finish(self, choice: dict, params: SamplingParams) -> tuple[str, str | None]:
        """The choice's finish reason as ours. vLLM names the stop string that ended it (``stop_reason``), SGLang
        too (``matched_stop``); a server naming none only says "stop": which stop string, if any, is then read
        from the tokens (they end with the one that completed it), rather than taking it for EOS (which would
        cut a real token and leave the stop string in the text)."""
        reason = choice.get("finish_reason")
        stop = choice.get("stop_reason", choice.get("matched_stop"))
        if reason == "stop" and "stop_reason" not in choice and "matched_stop" not in choice and params.stop:
            text = self.tokenizer.decode(choice["token_ids"], skip_special_tokens=False)
            stop = min((s for s in params.stop if s in text), key=text.find, default=None)
        return finish_of(reason, stop)

    def _missing(self, what: str, needed_by: str) -> ValueError:
        return ValueError(
            f"the server at {self.fleet.urls[0]} returned no {what}, which {needed_by} needs: use a vLLM server "
            "(vllm serve) or the vllm / transformers backend"
        )

    # -- LM protocol ---------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> Output:
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty: give at least one token to continue")
        rooms = [check_context(self, ids, 1) or params.max_tokens for ids in encoded]  # a row ends in the context
        greedy = params.temperature == 0  # servers refuse n > 1 when greedy: the samples are one sample, copied
        bodies = [
            {
                "prompt": ids,
                "n": 1 if greedy else params.n,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "max_tokens": min(params.max_tokens, room),
                "stop": list(params.stop) or None,
                "seed": seed,
                "ignore_eos": params.ignore_eos,
                "logprobs": 0,
                "return_token_ids": True,
                "skip_special_tokens": False,
            }
            for ids, seed, room in zip(encoded, self.seeds.draw(params, len(encoded)), rooms)
        ]
        with self._account() as call:
            replies, usage = self._complete(bodies, call)
            results = []
            for reply, used in zip(replies, usage):
                gens = []
                for c in sorted(reply["choices"], key=lambda c: c["index"]):
                    if c.get("token_ids") is None:
                        raise self._missing("token ids (vLLM's return_token_ids)", "a step")
                    lps = (c.get("logprobs") or {}).get("token_logprobs") or []
                    if len(lps) != len(c["token_ids"]) or None in lps:  # steps, likelihood verifiers and ETS read them
                        raise self._missing("log-probabilities of the generated tokens (logprobs)", "a step")
                    used.generated_tokens += len(c["token_ids"])
                    gen = make_generation(self.tokenizer, c["token_ids"], lps, self._finish(c, params))
                    gen.extra["server"] = reply["server"]
                    gens.append(gen)
                if greedy and params.n > 1:
                    gens = [copy.deepcopy(gens[0]) for _ in range(params.n)]
                results.append(gens)
            call.generated_tokens += sum(u.generated_tokens for u in usage)
        return Output(results, usage, call)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> Output:
        pairs, todo = score_pairs(self, prompts, continuations, reserve=1)  # scored through a 1-token request
        out: list[list[float]] = [[] for _ in pairs]
        bodies = [
            {"prompt": pairs[i][0] + pairs[i][1], "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0}
            for i in todo
        ]
        usage = [RoleStats() for _ in pairs]
        with self._account() as call:
            replies, served = self._complete(bodies, call)
            for i, body, reply, used in zip(todo, bodies, replies, served):
                usage[i] = used
                rows = reply["choices"][0].get("prompt_logprobs")
                if not rows:
                    raise self._missing("prompt log-probabilities (vLLM's prompt_logprobs)", "score")
                ids, start = body["prompt"], len(pairs[i][0])
                out[i] = [rows[t][str(ids[t])]["logprob"] for t in range(start, len(ids))]
        return Output(out, usage, call)

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> Output:
        cand_ids = single_token_ids(self.tokenizer, candidates, self.name)
        encoded = [self.encode(p) for p in prompts]
        for ids in encoded:
            check_context(self, ids, 1)
        bodies = [
            {
                "prompt": ids,
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": 0,
                "logprob_token_ids": list(cand_ids.values()),
                "return_tokens_as_token_ids": True,
            }
            for ids in encoded
        ]
        out = []
        with self._account() as call:
            replies, usage = self._complete(bodies, call)
            for reply in replies:
                top = (((reply["choices"][0].get("logprobs") or {}).get("top_logprobs")) or [{}])[0] or {}
                try:
                    out.append({c: top[f"token_id:{t}"] for c, t in cand_ids.items()})
                except KeyError:
                    raise self._missing(
                        "log-probabilities of the candidate tokens (vLLM's logprob_token_ids)", "next_token_logprobs"
                    ) from None
        return Output(out, usage, call)
