"""SpecDec++'s acceptance-prediction head (Huang et al. 2024, "SpecDec++: Boosting Speculative Decoding via
Adaptive Candidate Lengths"): a small residual MLP on the draft model's last hidden state that predicts whether the
target will reject the token the draft proposes there. While drafting a chain, the draft stops as soon as the
predicted probability that at least one token drafted so far is rejected, ``1 - prod_i (1 - p_reject_i)``, crosses
a threshold (the paper's stopping rule, from its Markov-decision-process view of candidate length); the chain then
goes to the target. Verification is unchanged and the stop depends on the draft's side only, so greedy output is
exactly plain greedy output and sampled output keeps the target's distribution.

Deviations, each with its reason:
- inputs: the paper's head reads the hidden state at the candidate token's own position (the draft has run on it);
  ours reads the hidden state that produced the token's distribution ``q_i``, plus ``log q_i(y_i)`` and the entropy
  of ``q_i``. The decision then comes before the draft forward on ``y_i``, so a stopped chain costs no forward
  past its last token, and ``log q_i(y_i)`` tells the head which token was drawn when sampling;
- architecture: the paper's residual SiLU blocks at the draft's hidden size and a 2-class output; ours projects the
  standardised inputs to ``width`` first (the toy draft's hidden size is 128: a narrower head overfits less on the
  few rejections there are) and outputs one logit;
- training (``evals/specdec_train.py``): the paper's weighted BCE (rejections weighted up; the paper's soft label
  when sampling), but on contexts of the target's own output rather than the paper's mix of target and draft
  tokens, and with dropout on the hidden-state inputs (see there).

A head file is one safetensors file: the weights, and in its metadata the architecture and the draft it reads
(``hidden_size``, ``draft``) plus the training summary. ``toy``: the shipped heads for toy:draft against
toy:target, one trained on greedy verdicts and one on sampling's at T = 0.7 (``toy-sampling``), each used where
the decoding matches; a head file of one's own serves both.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

FEATURES = 2  # inputs beside the hidden state: log q(y), the entropy of q
TOY_HEADS = {  # trained by `reasoner specdec train` with its defaults, and with --temperature 0.7
    "toy": Path(__file__).parents[1] / "toy" / "models" / "specdec_head.safetensors",
    "toy-sampling": Path(__file__).parents[1] / "toy" / "models" / "specdec_head_sampling.safetensors",
}


def features(hidden: torch.Tensor, q: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The head's raw inputs [N, hidden_size + 2]: the draft's hidden states [N, hidden_size] that drew tokens
    ``y`` [N] from its distributions ``q`` [N, V], then ``log q(y)`` and the entropy of ``q``."""
    logq = q.gather(-1, y[:, None]).clamp(min=1e-30).log()
    entropy = -(q * q.clamp(min=1e-30).log()).sum(-1, keepdim=True)
    return torch.cat([hidden.float(), logq.float(), entropy.float()], dim=-1)


class AcceptanceHead(nn.Module):
    """``p_reject = sigmoid(head(h, log q(y)))``: an input projection, ``blocks`` residual SiLU blocks (the paper's
    ResNet head), one output logit."""

    def __init__(self, hidden_size: int, width: int = 128, blocks: int = 2):
        super().__init__()
        self.hidden_size, self.width, self.blocks = hidden_size, width, blocks
        # the inputs' training mean and spread (set by the trainer): the head sees standardised inputs
        self.register_buffer("mean", torch.zeros(hidden_size + FEATURES))
        self.register_buffer("scale", torch.ones(hidden_size + FEATURES))
        self.proj = nn.Linear(hidden_size + FEATURES, width)
        self.res = nn.ModuleList(nn.Linear(width, width) for _ in range(blocks))
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rejection logits [N] for raw inputs [N, hidden_size + 2] (``features``)."""
        x = self.proj((x - self.mean) / self.scale)
        for layer in self.res:
            x = x + nn.functional.silu(layer(x))
        return self.out(nn.functional.silu(x)).squeeze(-1)

    @torch.inference_mode()
    def reject_probability(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self(x))

    def save(self, path: str | Path, info: dict) -> None:
        from safetensors.torch import save_file

        meta = {"hidden_size": self.hidden_size, "width": self.width, "blocks": self.blocks} | info
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().to(torch.float16) for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"specdec_head": json.dumps(meta)})


def head_info(path: str | Path) -> dict:
    """A head file's metadata: architecture, the draft it was trained for, training summary."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return json.loads((f.metadata() or {})["specdec_head"])


def load_head(path: str, hidden_size: int | None = None, device="cpu") -> AcceptanceHead:
    """The head file ``path`` (``toy`` / ``toy-sampling``: the shipped heads for toy:draft, trained on greedy /
    sampling verdicts); ``hidden_size``: the draft's, checked."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = TOY_HEADS.get(path, Path(path))
    try:
        meta = head_info(file)
        state = load_file(str(file))
    except (OSError, KeyError, ValueError, SafetensorError) as e:
        raise ValueError(
            f"token_speculation.acceptance_head {path!r} is not a head file ({type(e).__name__}: {e}); train one "
            "with `reasoner specdec train`"
        ) from None
    if hidden_size is not None and meta["hidden_size"] != hidden_size:
        raise ValueError(
            f"token_speculation.acceptance_head {path!r} reads hidden states of size {meta['hidden_size']} (trained "
            f"for {meta.get('draft', 'another draft')}), the draft's are {hidden_size}: train a head for this draft"
        )
    head = AcceptanceHead(meta["hidden_size"], meta["width"], meta["blocks"])
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head.eval().to(device)


class StopRule:
    """The SpecDec++ stopping rule for a batch of chains: each row's probability that some token drafted so far is
    rejected, ``1 - prod(1 - p_reject)``; a row stops once it exceeds ``threshold``."""

    def __init__(self, head: AcceptanceHead, threshold: float, rows: int):
        self.head, self.threshold = head, threshold
        self.survive = [1.0] * rows  # prod(1 - p_reject) per row

    def stops(self, rows: list[int], hidden: torch.Tensor, q: torch.Tensor, y: torch.Tensor) -> list[bool]:
        """Add drafted tokens ``y`` (one per entry of ``rows``, with the hidden state and distribution that drew
        each); returns, per entry, whether its row stops after that token."""
        if not rows:
            return []
        p = self.head.reject_probability(features(hidden, q, y)).tolist()
        out = []
        for r, pr in zip(rows, p):
            self.survive[r] *= 1.0 - pr
            out.append(1.0 - self.survive[r] > self.threshold)
        return out
