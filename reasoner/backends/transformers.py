"""The transformers backend: our own batched decoding loop over a stock ``AutoModelForCausalLM``.

Why our own loop rather than ``model.generate``: we need per-row stop strings with exact finish reasons,
the model's raw log-probabilities of every sampled token, rows that leave the batch as soon as they finish
(their KV rows are dropped), one prefill per distinct prompt shared by its ``n`` samples, and token-level
speculative decoding (``reasoner.specdec``) in the same loop's place when a recipe asks for it.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Sequence

import torch

from ..specdec.verify import sampling_probs
from ..stats import Stats
from .base import Generation, Prompt, SamplingParams

log = logging.getLogger(__name__)


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, float16 or bfloat16") from None


class TransformersLM:
    """An ``LM`` over a Hugging Face causal LM. Prompts are fully rendered texts (chat templates add their own
    BOS) or token-id lists; ``max_batch_size`` bounds the rows decoded together. ``token_speculation`` (a recipe
    section) makes ``generate`` verify drafted token trees instead of decoding one token per forward; ``drafter``
    can also be set directly to any ``reasoner.specdec`` drafter (``None``: plain decoding)."""

    def __init__(
        self,
        path: str,
        role: str = "target",
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 64,
        seed: int = 0,
        stats: Stats | None = None,
        add_special_tokens: bool = False,
        token_speculation=None,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.name, self.role = str(path), role
        self.stats = stats if stats is not None else Stats()
        self.max_batch_size = max_batch_size
        self.add_special_tokens = add_special_tokens
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=resolve_dtype(dtype, self.device)).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        self.eos_ids = set(eos) | ({self.tokenizer.eos_token_id} if self.tokenizer.eos_token_id is not None else set())
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.drafter = None
        if token_speculation is not None:
            from ..specdec import build_drafter

            self.drafter = build_drafter(token_speculation, self)

    # -- helpers -------------------------------------------------------------------------------------------

    def encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=self.add_special_tokens)["input_ids"]
        return list(prompt)

    @contextmanager
    def _account(self):
        role = self.stats.role(self.role)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                yield role
        finally:
            role.calls += 1
            role.wall_s += time.perf_counter() - start

    def _left_pad(self, seqs: list[list[int]]):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    def _forward(self, ids, mask, positions, cache=None, keep: int = 1):
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=cache is not None, logits_to_keep=keep
        )
        return out.logits.float(), out.past_key_values

    def _sample(self, logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
        if params.temperature == 0:
            return logits.argmax(-1)
        probs = sampling_probs(logits, params.temperature, params.top_p)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)

    # -- LM protocol ---------------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[Prompt], params: SamplingParams) -> list[list[Generation]]:
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        encoded = [self.encode(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"prompt {i} is empty: give at least one token to continue")
        n = params.n
        results: list[list[Generation]] = [[None] * n for _ in prompts]  # type: ignore[list-item]
        per_chunk = max(1, self.max_batch_size // n)
        with self._account() as role:
            for start in range(0, len(encoded), per_chunk):
                for slot, gen in self._chunk(encoded[start : start + per_chunk], params, role):
                    results[start + slot // n][slot % n] = gen
        return results

    def _chunk(self, prompts: list[list[int]], params: SamplingParams, role):
        if self.drafter is None:
            return self._generate_chunk(prompts, params, role)
        from ..specdec.decode import speculative_chunk

        return speculative_chunk(self, prompts, params, role, self.drafter)

    def _generate_chunk(self, prompts: list[list[int]], params: SamplingParams, role):
        """Prefill each distinct prompt once, repeat its KV for the ``n`` samples, decode until every row ends.
        Yields ``(slot, generation)`` as rows finish; slot ``i * n + j`` is sample ``j`` of prompt ``i``."""
        ids, mask, positions = self._left_pad(prompts)
        logits, cache = self._forward(ids, mask, positions, cache=self._new_cache())
        role.prefill_tokens += sum(len(p) for p in prompts)
        role.forward_passes += 1
        n = params.n
        if n > 1:
            cache.batch_repeat_interleave(n)
            logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
            positions = positions.repeat_interleave(n, 0)
        slots = len(prompts) * n
        out_ids: list[list[int]] = [[] for _ in range(slots)]
        out_lps: list[list[float]] = [[] for _ in range(slots)]
        live = list(range(slots))  # output slot of each row still in the batch
        next_pos = positions[:, -1:] + 1
        while True:
            last = logits[:, -1, :]
            tokens = self._sample(last, params)
            lps = torch.log_softmax(last, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
            role.generated_tokens += len(live)
            keep = []
            for r, (slot, tok, lp) in enumerate(zip(live, tokens.tolist(), lps.tolist())):
                out_ids[slot].append(tok)
                out_lps[slot].append(lp)
                finish = self._finished(out_ids[slot], tok, params)
                if finish:
                    yield slot, self._result(out_ids[slot], out_lps[slot], finish, len(prompts[slot // n]))
                else:
                    keep.append(r)
            if not keep:
                return
            if len(keep) < len(live):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                tokens, mask, next_pos = tokens[index], mask[index], next_pos[index]
                live = [live[r] for r in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            logits, cache = self._forward(tokens[:, None], mask, next_pos, cache=cache)
            role.forward_passes += 1
            next_pos = next_pos + 1

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _finished(self, ids: list[int], tok: int, params: SamplingParams) -> tuple[str, str | None] | None:
        if tok in self.eos_ids and not params.ignore_eos:
            return "eos", None
        if params.stop:
            tail = self.tokenizer.decode(ids[-8:])
            for s in params.stop:
                if s in tail:
                    return "stop", s
        if len(ids) >= params.max_tokens:
            return "length", None
        return None

    def _result(self, ids: list[int], lps: list[float], finish: tuple[str, str | None], prompt_tokens: int) -> Generation:
        reason, stop = finish
        body = ids[:-1] if reason == "eos" else ids
        text = self.tokenizer.decode(body, skip_special_tokens=False)
        if stop is not None:
            text = text[: text.find(stop)]
        return Generation(text, ids, lps, reason, stop, prompt_tokens)

    def score(self, prompts: Sequence[Prompt], continuations: Sequence[Prompt]) -> list[list[float]]:
        if len(prompts) != len(continuations):
            raise ValueError(f"score needs one continuation per prompt, got {len(prompts)} prompts and {len(continuations)} continuations")
        pairs = [(self.encode(p), self.encode(c)) for p, c in zip(prompts, continuations)]
        out: list[list[float]] = [[] for _ in pairs]
        with self._account() as role:
            order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
            for start in range(0, len(order), self.max_batch_size):
                chunk = [i for i in order[start : start + self.max_batch_size] if pairs[i][1]]
                if not chunk:
                    continue
                if any(not pairs[i][0] for i in chunk):
                    raise ValueError("score needs a non-empty prompt before every continuation")
                ids, mask, positions = self._left_pad([pairs[i][0] + pairs[i][1] for i in chunk])
                keep = max(len(pairs[i][1]) for i in chunk) + 1
                logits, _ = self._forward(ids, mask, positions, keep=keep)
                logprobs = torch.log_softmax(logits[:, :-1], dim=-1)  # position t predicts token t+1
                targets = ids[:, -keep + 1 :]
                token_lps = logprobs.gather(-1, targets[..., None]).squeeze(-1)
                for r, i in enumerate(chunk):
                    k = len(pairs[i][1])
                    out[i] = token_lps[r, token_lps.shape[1] - k :].tolist()
                role.prefill_tokens += int(mask.sum())
                role.forward_passes += 1
        return out

    def next_token_logprobs(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[dict[str, float]]:
        cand_ids = {}
        for c in candidates:
            ids = self.tokenizer(c, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise ValueError(f"candidate {c!r} is {len(ids)} tokens for {self.name}; next_token_logprobs needs single-token candidates")
            cand_ids[c] = ids[0]
        encoded = [self.encode(p) for p in prompts]
        out: list[dict[str, float]] = []
        with self._account() as role:
            for start in range(0, len(encoded), self.max_batch_size):
                chunk = encoded[start : start + self.max_batch_size]
                ids, mask, positions = self._left_pad(chunk)
                logits, _ = self._forward(ids, mask, positions)
                lps = torch.log_softmax(logits[:, -1], dim=-1)
                out += [{c: float(lps[r, t]) for c, t in cand_ids.items()} for r in range(len(chunk))]
                role.prefill_tokens += sum(len(p) for p in chunk)
                role.forward_passes += 1
        return out
