"""Cost counters: every call that spends compute adds to a ``Stats``; speed claims are made from these."""

from __future__ import annotations

import copy
import threading
from collections import defaultdict
from dataclasses import asdict, dataclass, fields


@dataclass
class RoleStats:
    """What one model role (target, draft, verifier) spent: in one call (an ``Output``'s usage), on one problem,
    or over a run."""

    calls: int = 0
    prefill_tokens: int = 0  # prompt tokens run through the model
    prefix_cached_tokens: int = 0  # prompt tokens served from a prefix KV cache instead (not in prefill_tokens)
    generated_tokens: int = 0  # tokens sampled
    forward_passes: int = 0
    wall_s: float = 0.0

    def __iadd__(self, other: RoleStats) -> RoleStats:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

    def __sub__(self, other: RoleStats) -> RoleStats:
        return RoleStats(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


# One lock for every Stats: a model's counters are added to by its worker thread while a caller snapshots them
# mid-run (``Reasoner.solve_stream``, the server); each operation under it is a few dict updates.
_LOCK = threading.RLock()


class Stats:
    """Per-role ``RoleStats`` plus named counters (``steps_accepted``, ...) and the wall time of a whole run.
    ``book``, ``count``, ``merge``, ``replace`` and ``snapshot`` are safe to call from several threads."""

    def __init__(self):
        self.roles: dict[str, RoleStats] = defaultdict(RoleStats)
        self.counters: dict[str, float] = defaultdict(float)
        self.wall_s: float = 0.0

    def role(self, name: str) -> RoleStats:
        return self.roles[name]

    def count(self, name: str, value: float = 1) -> None:
        with _LOCK:
            self.counters[name] += value

    def book(self, role: str, usage: RoleStats) -> None:
        """Add what a call (or one prompt of it) cost to ``role``."""
        with _LOCK:
            self.roles[role] += usage

    def merge(self, other: Stats) -> Stats:
        with _LOCK:
            for name, r in other.roles.items():
                self.roles[name] += r
            for name, v in other.counters.items():
                self.counters[name] += v
            self.wall_s += other.wall_s
        return self

    def replace(self, other: Stats) -> None:
        """Become a copy of ``other`` in place (a mirror of stats kept elsewhere), atomically for ``snapshot``."""
        with _LOCK:
            self.roles.clear()
            self.roles.update(other.roles)
            self.counters.clear()
            self.counters.update(other.counters)
            self.wall_s = other.wall_s

    def snapshot(self) -> Stats:
        with _LOCK:
            return copy.deepcopy(self)

    def since(self, before: Stats) -> Stats:
        """What was spent after ``before`` (a ``snapshot`` of this object) was taken."""
        out = Stats()
        for name, r in self.roles.items():
            spent = r - before.roles[name] if name in before.roles else copy.copy(r)
            if spent != RoleStats():  # a role that did nothing since is left out, as in a fresh Stats
                out.roles[name] = spent
        for name, v in self.counters.items():
            if v != before.counters.get(name, 0):
                out.counters[name] = v - before.counters.get(name, 0)
        out.wall_s = self.wall_s - before.wall_s
        return out

    def tokens(self) -> dict[str, int]:
        """Generated tokens per role."""
        return {name: r.generated_tokens for name, r in sorted(self.roles.items())}

    def to_dict(self) -> dict:
        return {
            "wall_s": round(self.wall_s, 4),
            "roles": {
                name: {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()}
                for name, r in sorted(self.roles.items())
            },
            "counters": dict(sorted(self.counters.items())),
        }

    def __repr__(self) -> str:
        return f"Stats({self.to_dict()})"
