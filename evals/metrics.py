"""Metrics over result lines: accuracy, maj@k, weighted@k, pass@k (unbiased), cost per problem, speedup.

Per problem the runner records how many of its ``n`` candidates are correct (``n_correct``) and whether the
majority and the verifier-weighted vote over all ``n`` pick a correct answer; this module turns those lines into
the summary numbers.
"""

from __future__ import annotations

from math import comb

from reasoner.core.types import Candidate
from search.vote import choose
from verifiers.math import is_equivalent


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k (Chen et al. 2021): the chance that at least one of ``k`` of the ``n`` samples, drawn
    without replacement, is correct when ``c`` of them are: ``1 - C(n-c, k) / C(n, k)``."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def ks_for(n: int) -> list[int]:
    """The k reported for ``n`` samples: 1, 2, 4, ... up to n (and n itself)."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n]


def vote_correct(candidates: list[dict], reference: str | None, vote: str) -> bool | None:
    """Whether ``vote`` (majority | weighted, as in ``search.vote``) over the candidates' answers picks the
    reference answer; ``None`` without a reference."""

    if reference is None:
        return None
    best = choose([Candidate([], c.get("answer"), c.get("score")) for c in candidates], vote)
    return best is not None and is_equivalent(best.answer, reference)


def sample_metrics(rows: list[dict], failed: int = 0) -> dict:
    """pass@k / maj@k / weighted@k over rows that recorded ``n_samples`` (rows of a one-sample run give pass@1
    = accuracy of that sample). ``failed``: problems that could not be attempted (result rows with an ``error``),
    counted as solved by none of their samples, so that pass@1 stays the accuracy; rows with an ``error`` among
    ``rows`` are counted so too."""
    failed += sum(1 for r in rows if r.get("error"))
    scored = [r for r in rows if r.get("n_samples") and not r.get("error")]
    if not scored:
        return {}
    n = min(r["n_samples"] for r in scored)
    total = len(scored) + failed
    out = {"samples": n}
    for k in ks_for(n):
        out[f"pass@{k}"] = round(sum(pass_at_k(r["n_samples"], r["n_correct"], k) for r in scored) / total, 4)
    if n > 1:
        for key in ("maj", "weighted"):
            votes = [r[f"{key}_correct"] for r in scored if r.get(f"{key}_correct") is not None]
            if votes:
                out[f"{key}@{n}"] = round(sum(votes) / (len(votes) + failed), 4)
    return out


def speedup(run: dict, baseline: dict) -> dict:
    """How much cheaper ``run`` is than ``baseline`` per problem (summary dicts): ratios > 1 mean faster /
    fewer. Wall time, target-model generated tokens, and target forward passes."""
    out = {"baseline": baseline.get("recipe")}
    pairs = {
        "wall": (baseline.get("s_per_problem"), run.get("s_per_problem")),
        "target_tokens": (_per(baseline, "tokens"), _per(run, "tokens")),
        "target_forward_passes": (_per(baseline, "forward_passes"), _per(run, "forward_passes")),
    }
    for name, (base, mine) in pairs.items():
        if base and mine:
            out[name] = round(base / mine, 3)
    return out


def _per(summary: dict, key: str) -> float | None:
    n = summary.get("n") or 0
    value = summary.get(key, {}).get("target")
    return value / n if n and value else None
