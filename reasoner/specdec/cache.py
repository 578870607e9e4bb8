"""A KV cache for rows that hold different numbers of tokens, with speculative columns that can be kept or dropped.

Stock ``DynamicCache`` rows all have the same length. Token trees make rows diverge: each row keeps only its
accepted path. ``RaggedCache`` keeps one ``DynamicCache`` plus, per row, which columns are real (``valid``) and
how many tokens the row holds (``lengths``, the position of its next token). A forward appends speculative
columns; ``commit`` keeps, per row, the chosen ones and drops the rest by gathering the cached keys and values
(no recomputation). Attention does not care about the order of key columns (positions are already rotated into
the keys), so kept columns are packed to the left and shorter rows are padded with invalid columns.
"""

from __future__ import annotations

import torch


def attention_mask(visible: torch.Tensor, model) -> torch.Tensor:
    """A boolean mask [B, 1, Q, K] (True: query sees key) as ``model``'s attention implementation wants it: sdpa
    takes booleans, eager an additive float mask."""
    if model.config._attn_implementation == "sdpa":
        return visible
    return torch.zeros(visible.shape, dtype=model.dtype, device=visible.device).masked_fill_(
        ~visible, torch.finfo(model.dtype).min
    )


class RaggedCache:
    def __init__(self, model, batch_size: int, device):
        from transformers import DynamicCache

        self.model = model
        self.cache = DynamicCache(config=model.config)
        self.device = device
        self.valid = torch.zeros((batch_size, 0), dtype=torch.bool, device=device)  # committed columns each row sees
        self.lengths = torch.zeros(batch_size, dtype=torch.long, device=device)  # tokens per row
        self.spec = torch.zeros(
            (batch_size, 0, 0), dtype=torch.bool, device=device
        )  # speculative columns: who sees whom

    @classmethod
    def from_prefill(cls, model, cache, mask: torch.Tensor) -> RaggedCache:
        """Wrap a cache filled by an ordinary left-padded prefill with attention ``mask`` [batch, width]."""
        self = cls(model, mask.shape[0], mask.device)
        self.cache, self.valid, self.lengths = cache, mask.bool(), mask.sum(-1)
        return self

    @property
    def batch_size(self) -> int:
        return self.valid.shape[0]

    def forward(
        self, ids: torch.Tensor, depth: torch.Tensor, sees: torch.Tensor, logits_to_keep: int = 0, hidden: bool = False
    ):
        """Run ``ids`` [B, Q] at positions ``lengths + depth``; query i sees the committed columns and the speculative
        columns (earlier ones, then these Q) marked in ``sees`` [B, Q, S + Q]. Returns float logits [B, Q, V], and
        with ``hidden`` also the last hidden states [B, Q, H] (``(logits, hidden)``)."""
        B, Q = ids.shape
        spec = self.spec.shape[-1]
        visible = torch.cat([self.valid[:, None, :].expand(B, Q, -1), sees], dim=-1)[:, None]
        out = self.model(
            input_ids=ids,
            attention_mask=attention_mask(visible, self.model),
            position_ids=self.lengths[:, None] + depth,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=logits_to_keep,
            output_hidden_states=hidden,
        )
        grown = torch.zeros((B, spec + Q, spec + Q), dtype=torch.bool, device=self.device)
        grown[:, :spec, :spec] = self.spec
        grown[:, spec:, :] = sees
        self.spec = grown
        return (out.logits.float(), out.hidden_states[-1]) if hidden else out.logits.float()

    def commit(self, keep: list[list[int]]) -> None:
        """Make, per row, the speculative columns ``keep[b]`` (indices in order of appending, a root-to-node path in
        sequence order) part of the row's tokens, and drop every other speculative column."""
        B, spec = self.batch_size, self.spec.shape[-1]
        committed = self.valid.shape[1]
        counts = [len(k) for k in keep]
        new_valid = torch.cat([self.valid, torch.zeros((B, spec), dtype=torch.bool, device=self.device)], dim=1)
        for b, k in enumerate(keep):
            if k:
                new_valid[b, committed + torch.tensor(k, device=self.device)] = True
        self.lengths = self.lengths + torch.tensor(counts, device=self.device)
        self.spec = torch.zeros((B, 0, 0), dtype=torch.bool, device=self.device)
        width = int(new_valid.sum(-1).max())
        if all(k == list(range(len(k))) for k in keep) and counts == [counts[0]] * B:  # one shared prefix: crop
            self._set(lambda t: t[:, :, : committed + counts[0]])
            self.valid = new_valid[:, : committed + counts[0]]
            return
        # pack every row's valid columns to the left (stable order), pad with invalid columns
        order = torch.sort((~new_valid).to(torch.int8), dim=1, stable=True).indices[:, :width]
        self.valid = new_valid.gather(1, order)
        index = order[:, None, :, None]
        self._set(lambda t: t.gather(2, index.expand(t.shape[0], t.shape[1], width, t.shape[3])))

    def select_rows(self, rows: list[int]) -> None:
        """Keep only these rows (finished rows leave the batch); a row may be repeated."""
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        if self._filled():
            self.cache.batch_select_indices(index)
        self.valid, self.lengths, self.spec = self.valid[index], self.lengths[index], self.spec[index]

    def extend(self, other: RaggedCache) -> None:
        """Append ``other``'s rows (sequences that join a running batch): the narrower of the two gets invalid
        columns on the left, so both hold the same number of columns; no speculative columns may be pending."""
        if self.spec.shape[-1] or other.spec.shape[-1]:
            raise RuntimeError("RaggedCache.extend: commit speculative columns first")
        if not self.batch_size:
            self.cache, self.valid, self.lengths, self.spec = other.cache, other.valid, other.lengths, other.spec
            return
        width = max(self.valid.shape[1], other.valid.shape[1])
        holder = self.cache if self._filled() else other.cache if other._filled() else None
        if holder is not None:  # (a cache of rows that hold no column yet has no tensors to pad)
            like = [layer.keys for layer in holder.layers]
            for layer, mine, theirs in zip(holder.layers, self._layers(like), other._layers(like)):
                layer.keys, layer.values = (_right_aligned([a, b], width) for a, b in zip(mine, theirs))
            self.cache = holder
        self.valid = torch.cat([self._pad_valid(width), other._pad_valid(width)])
        self.lengths = torch.cat([self.lengths, other.lengths])
        self.spec = torch.zeros((self.batch_size, 0, 0), dtype=torch.bool, device=self.device)

    def append_rows(self, kv: list[list[tuple[torch.Tensor, torch.Tensor]] | None], counts: list[int]) -> None:
        """Append rows of ``counts[r]`` tokens each, row r's keys and values per layer the first ``counts[r]``
        columns of ``kv[r]`` (``[kv heads, tokens, head dim]``, a prefix cache's entry; None for a row of none):
        ``extend`` with rows copied once into the batch, with no cache of their own built first. The batch must
        hold tensors already."""
        if self.spec.shape[-1]:
            raise RuntimeError("RaggedCache.append_rows: commit speculative columns first")
        if not self._filled():
            raise RuntimeError("RaggedCache.append_rows: the batch holds no KV to append to")
        width = max([self.valid.shape[1], *counts])
        for i, layer in enumerate(self.cache.layers):
            for j, name in enumerate(("keys", "values")):
                mine = getattr(layer, name)
                none = mine.new_zeros((1, mine.shape[1], 0, mine.shape[3]))
                rows = [row[i][j][None, :, :c] if c else none for row, c in zip(kv, counts)]
                setattr(layer, name, _right_aligned([mine, *rows], width))
        counts_t = torch.tensor(counts, dtype=torch.long, device=self.device)
        valid = torch.arange(width, device=self.device)[None, :] >= width - counts_t[:, None]
        self.valid = torch.cat([self._pad_valid(width), valid])
        self.lengths = torch.cat([self.lengths, counts_t])
        self.spec = torch.zeros((self.batch_size, 0, 0), dtype=torch.bool, device=self.device)

    def trim(self) -> None:
        """Drop the leading columns no row uses (left by rows that left: a score's rows padded the batch to their
        prefixes), so the rows that stay do not attend over and copy them at every later step."""
        used = self.valid.any(0).nonzero()
        first = int(used[0]) if len(used) else self.valid.shape[1]
        if first and self._filled():
            self._set(lambda t: t[:, :, first:])
            self.valid = self.valid[:, first:]

    def _filled(self) -> bool:
        """Whether the cache holds tensors (a batch whose rows have no column yet has none)."""
        return bool(self.cache.layers) and all(layer.is_initialized for layer in self.cache.layers)

    def _layers(self, like: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values (``like``: a filled cache's keys per layer, the template for rows that have
        no tensors yet: they get no columns)."""
        if self._filled():
            return [(layer.keys, layer.values) for layer in self.cache.layers]
        empty = [t.new_zeros((self.batch_size, t.shape[1], 0, t.shape[3])) for t in like]
        return [(k, k) for k in empty]

    def _pad_valid(self, width: int) -> torch.Tensor:
        pad = width - self.valid.shape[1]
        if not pad:
            return self.valid
        return torch.cat([self.valid.new_zeros((self.batch_size, pad)), self.valid], dim=1)

    def repeat_rows(self, n: int) -> None:
        self.cache.batch_repeat_interleave(n)
        self.valid, self.lengths = self.valid.repeat_interleave(n, 0), self.lengths.repeat_interleave(n, 0)
        self.spec = self.spec.repeat_interleave(n, 0)

    def _set(self, fn) -> None:
        for layer in self.cache.layers:
            if layer.is_initialized and layer.keys.numel():
                layer.keys, layer.values = fn(layer.keys), fn(layer.values)


def _right_aligned(parts: list[torch.Tensor], width: int) -> torch.Tensor:
    """``parts`` ([rows, heads, columns, dim] each) stacked on rows, each right-aligned in ``width`` columns with
    zeros on its left (invalid columns: masked, but zeros so that no stale NaN meets a zero weight). One allocation,
    each part copied once."""
    first = parts[0]
    rows = sum(p.shape[0] for p in parts)
    out = first.new_empty((rows, first.shape[1], width, first.shape[3]))
    r = 0
    for p in parts:
        n, w = p.shape[0], p.shape[2]
        if n:
            out[r : r + n, :, width - w :] = p
            out[r : r + n, :, : width - w] = 0
        r += n
    return out
