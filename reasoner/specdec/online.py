"""Online Speculative Decoding (Liu et al. 2023, "Online Speculative Decoding", ICML 2024): the draft model is
distilled, while it serves, on the positions where the target rejected it.

The paper's Algorithm 2: during speculative decoding, every position where a drafted token is rejected goes into a
replay buffer together with the target's distribution there (the verifying forward computed it anyway); every ``I``
requests the draft takes gradient steps on a distillation loss between the target's and its own distribution at the
buffered positions, and the buffer is cleared. The draft thereby follows the query distribution it actually serves
(a shift from what it was trained on) at no extra target cost. ``OnlineDistiller`` is that buffer and update:
``record`` reads each row's verdict (the position after its accepted path, when a drafted child of it was
rejected; the context is the row's sequence up to the target's correction token), ``finished`` counts requests
(rows that finished decoding) and updates every ``update_every`` of them.

Losses: the paper studies forward KL, reverse KL, JSD (and TVD) and finds no single best; forward KL (the default)
is the plain distillation objective; all three are offered (``token_speculation.online.loss``).

Deviations: one request is one decoded sequence (a row; in an eval, one reasoning step or solution), not one
prompt. The buffer is bounded (``buffer``: the newest positions kept) since each entry holds a vocabulary-sized
distribution. The update runs in the decoding loop when a row finishes; rows still decoding keep the draft KV
computed with the old weights, which only changes what they draft next (verification stays lossless: the target
decides every emitted token). Distributions are the target's raw softmax (temperature 1), so the draft's tempered
distribution follows the target's tempered one at any sampling temperature; top-p truncation is not distilled.
Where the draft's vocabulary is narrower than the target's logits (padded embedding tables) the loss covers the
shared tokens. AdamW keeps no float32 master copy: on bfloat16 weights (the GPU default) updates smaller than
the weights' precision are lost; load the draft in float32 to train it online.

On the toy pair (``reasoner bench tokens --online-stream``, docs/benchmarks.md) it raises acceptance on a stream
where queries recur, not on one of new problems: the toy draft's mistakes are arithmetic results, which it
memorises but does not generalise from a few hundred positions.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import torch

from .config import OnlineDistillation
from .verify import Verdict

log = logging.getLogger(__name__)


def divergence(target_logp: torch.Tensor, draft_logp: torch.Tensor, loss: str) -> torch.Tensor:
    """Mean over positions of the distillation loss between the target's log-probabilities ``target_logp`` and the
    draft's ``draft_logp`` ([N, V] each): forward_kl KL(p||q), reverse_kl KL(q||p), jsd the Jensen-Shannon
    divergence (mixture 1/2)."""
    p, q = target_logp.exp(), draft_logp.exp()
    if loss == "forward_kl":
        per = (p * (target_logp - draft_logp)).sum(-1)
    elif loss == "reverse_kl":
        per = (q * (draft_logp - target_logp)).sum(-1)
    elif loss == "jsd":
        m = (0.5 * (p + q)).clamp_min(1e-30).log()
        per = 0.5 * (p * (target_logp - m)).sum(-1) + 0.5 * (q * (draft_logp - m)).sum(-1)
    else:
        raise ValueError(f"unknown token_speculation.online.loss {loss!r}: use forward_kl, reverse_kl or jsd")
    return per.mean()


class OnlineDistiller:
    """The replay buffer and the update of OSD for ``model`` (the draft ``nn.Module``, trained in place).
    ``tokenizer``: saved next to the weights when ``config.save`` is set (so the folder loads as a draft)."""

    def __init__(self, model, config: OnlineDistillation, tokenizer=None, stats=None):
        self.model, self.config, self.tokenizer, self.stats = model, config, tokenizer, stats
        self.buffer: deque[tuple[list[int], torch.Tensor]] = deque(maxlen=config.buffer)
        self.requests = 0  # finished since the last update
        self.updates = 0
        self.optimizer = None  # AdamW, made at the first update (kept across updates)
        self.pad_id = getattr(model.config, "pad_token_id", None) or 0

    def record(self, seqs: list[list[int]], verdicts: list[Verdict]) -> None:
        """Buffer each row whose drafted token was rejected: context ``seqs[b][:-1]`` (its sequence up to the
        target's correction, the last token) and the target's log-probabilities there. A row that stopped
        mid-verdict (its correction token not emitted) or whose whole tree was accepted has no mistake to learn."""
        for seq, v in zip(seqs, verdicts):
            at = v.path[-1] if v.path else -1
            if len(v.tokens) != len(v.path) + 1 or at not in v.tree.parents:
                continue
            target = torch.log_softmax(v.logits[at + 1].float(), dim=-1)
            self.buffer.append((list(seq[:-1]), target.detach().cpu()))

    def finished(self, rows: int) -> None:
        """``rows`` requests finished decoding; update every ``update_every`` of them (with anything buffered)."""
        self.requests += rows
        if self.requests >= self.config.update_every:
            self.requests = 0
            if self.buffer:
                self.update()

    def _batch(self):
        """The buffer as one training batch: contexts that are prefixes of a longer buffered context (the same
        row's earlier mistakes) share its forward. Returns left-padded ids and mask [S, L], the (sequence, column)
        of each position, and the target log-probabilities there [N, V]."""
        entries = sorted(self.buffer, key=lambda e: -len(e[0]))
        sequences: list[list[int]] = []
        at, targets = [], []
        for context, target in entries:
            home = next((i for i, s in enumerate(sequences) if s[: len(context)] == context), None)
            if home is None:
                home = len(sequences)
                sequences.append(context)
            at.append((home, len(context) - 1))
            targets.append(target)
        width = max(map(len, sequences))
        ids = torch.full((len(sequences), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):  # left padding: position j of sequence i is column width - len + j
            ids[i, width - len(s) :], mask[i, width - len(s) :] = torch.tensor(s), 1
        rows = torch.tensor([h for h, _ in at])
        columns = torch.tensor([width - len(sequences[h]) + j for h, j in at])
        return ids, mask, rows, columns, torch.stack([t.clone() for t in targets])

    def update(self) -> float:
        """``steps`` AdamW steps of the distillation loss over the whole buffer, then clear it (and save the draft
        when asked); returns the loss before the first step."""
        config, model = self.config, self.model
        with torch.inference_mode(False), torch.enable_grad():
            if self.optimizer is None:
                self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=0.0)
            ids, mask, rows, columns, target = (t.to(model.device) for t in self._batch())
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            first = None
            for _ in range(config.steps):
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[rows, columns]
                draft_logp = torch.log_softmax(logits.float(), dim=-1)
                shared = min(draft_logp.shape[-1], target.shape[-1])
                loss = divergence(target[:, :shared], draft_logp[:, :shared], config.loss)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                first = float(loss.detach()) if first is None else first
        log.info("online draft update %d: %d positions, loss %.4f", self.updates + 1, len(target), first)
        if self.stats is not None:
            self.stats.count("token_spec.online_updates")
            self.stats.count("token_spec.online_positions", len(target))
        self.buffer.clear()
        self.updates += 1
        if config.save:
            self.save(config.save)
        return first

    def save(self, path: str | Path) -> None:
        """Write the draft as it is now (``save_pretrained``, plus the tokenizer): loadable as a draft model."""
        self.model.save_pretrained(path)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(path)
