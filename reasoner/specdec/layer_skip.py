"""A decoder run with some of its sublayers skipped: the draft model of self-speculation (``drafters.swift``).

Generic over Hugging Face decoders laid out like Llama and Qwen2 (``model.model.embed_tokens``, ``.layers`` whose
members have ``input_layernorm``, ``self_attn``, ``post_attention_layernorm`` and ``mlp``, ``.norm``,
``.rotary_emb``; ``model.lm_head``). A sublayer is one layer's attention or its MLP; skipping it drops its
residual branch, so the hidden state passes through unchanged (Draft & Verify and SWIFT skip at this grain).

The skipped model reads the full model's KV cache of the committed tokens and never writes it (``DraftKV``): each
kept attention layer attends to the keys and values the full model computed there, plus those of the tokens the
skipped model itself ran (kept in the view, thrown away with it). Skipped attention layers have no keys or values
for those tokens; verification runs the full model over every drafted position anyway.
"""

from __future__ import annotations

import torch

from .cache import attention_mask

KINDS = ("attn", "mlp")
Sublayer = tuple[str, int]  # ("attn" | "mlp", layer index)


def check_layout(model) -> None:
    """Refuse a model this forward cannot run (one clear line naming what is missing)."""
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    parts = ("input_layernorm", "self_attn", "post_attention_layernorm", "mlp")
    if (
        layers is None
        or not len(layers)
        or not all(hasattr(layers[0], p) for p in parts)
        or not all(hasattr(inner, p) for p in ("embed_tokens", "norm", "rotary_emb"))
        or not hasattr(model, "lm_head")
    ):
        raise ValueError(
            f"token_speculation.method=swift skips layers of Llama/Qwen2-style decoders (model.model.layers with "
            f"self_attn and mlp); {type(model).__name__} is not one: use another token_speculation.method"
        )


class DraftKV:
    """A read-only view of a committed ``DynamicCache`` (``None``: nothing committed) that the skipped model's own
    tokens are appended to, per layer, without touching the cache underneath."""

    def __init__(self, committed=None):
        self.committed = committed
        self.own: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, keys: torch.Tensor, values: torch.Tensor, layer_idx: int, *args, **kwargs):
        if layer_idx in self.own:
            k, v = self.own[layer_idx]
            keys, values = torch.cat([k, keys], dim=-2), torch.cat([v, values], dim=-2)
        self.own[layer_idx] = (keys, values)
        layers = self.committed.layers if self.committed is not None else []
        if layer_idx < len(layers) and layers[layer_idx].is_initialized and layers[layer_idx].keys.numel():
            base = layers[layer_idx]
            return torch.cat([base.keys, keys], dim=-2), torch.cat([base.values, values], dim=-2)
        return keys, values


def skipped_forward(
    model,
    skipped: frozenset[Sublayer],
    ids: torch.Tensor,
    positions: torch.Tensor,
    visible: torch.Tensor,
    kv: DraftKV,
) -> torch.Tensor:
    """Float logits [B, Q, V] of ``ids`` [B, Q] at ``positions`` [B, Q] through every sublayer not in ``skipped``;
    ``visible`` [B, Q, K] says which of the K keys (the committed columns, then ``kv``'s own, then these Q) each
    query sees."""
    inner = model.model
    hidden = inner.embed_tokens(ids)
    rotary = inner.rotary_emb(hidden, position_ids=positions)
    mask = attention_mask(visible[:, None], model)
    for i, layer in enumerate(inner.layers[: model.config.num_hidden_layers]):
        if ("attn", i) not in skipped:
            out, _ = layer.self_attn(
                hidden_states=layer.input_layernorm(hidden),
                attention_mask=mask,
                position_embeddings=rotary,
                position_ids=positions,
                past_key_values=kv,
            )
            hidden = hidden + out
        if ("mlp", i) not in skipped:
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    return model.lm_head(inner.norm(hidden)).float()
