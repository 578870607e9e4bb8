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
            mine, theirs = self._padded_layers(width, like), other._padded_layers(width, like)
            for layer, ((k1, v1), (k2, v2)) in zip(holder.layers, zip(mine, theirs)):
                layer.keys, layer.values = torch.cat([k1, k2]), torch.cat([v1, v2])
            self.cache = holder
        self.valid = torch.cat([self._pad_valid(width), other._pad_valid(width)])
        self.lengths = torch.cat([self.lengths, other.lengths])
        self.spec = torch.zeros((self.batch_size, 0, 0), dtype=torch.bool, device=self.device)

    def _filled(self) -> bool:
        """Whether the cache holds tensors (a batch whose rows have no column yet has none)."""
        return bool(self.cache.layers) and all(layer.is_initialized for layer in self.cache.layers)

    def _padded_layers(self, width: int, like: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each layer's keys and values with invalid (zero) columns added on the left up to ``width`` (``like``: a
        filled cache's keys per layer, the template for rows that have no tensors yet)."""
        pad = width - self.valid.shape[1]
        out = []
        for layer, template in zip(self.cache.layers if self._filled() else like, like):
            if self._filled():
                k, v = layer.keys, layer.values
            else:
                k = v = template.new_zeros((self.batch_size, template.shape[1], 0, template.shape[3]))
            if pad:
                zeros = k.new_zeros((k.shape[0], k.shape[1], pad, k.shape[3]))
                k, v = torch.cat([zeros, k], dim=2), torch.cat([zeros.to(v.dtype), v], dim=2)
            out.append((k, v))
        return out

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
