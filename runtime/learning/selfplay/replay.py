"""The replay buffer (PLR/ACCEL): measured tasks ranked by learning potential p̂(1−p̂), sampled with staleness.

Before sampling, the engine refreshes each p̂ with the ratings' current
prediction σ(θ − b) (ratings.py): with a learning solver the measured p̂ goes
stale between replays, and sampling by it replayed learned tasks — the batch
rate of the learning population sat 0.07 above target with 25% replays
(bench/selfplay.py, 5 seeds) — while the prediction moves with θ. The
measurement still enters through the rating (b is moved by every replay).

Sampling follows Prioritized Level Replay: P = (1−ρ)·P_score + ρ·P_stale, where
P_score ∝ (1/rank)^(1/β) over the scores and P_stale ∝ (now − last played)
(ρ = 0.3, β = 0.3), without replacement. A replayed task is re-estimated (its
p̂ replaced by the new measurement: the solver changes, old rates go stale);
after two consecutive re-estimates at 0 or at n (never or always solved) it is
evicted. A new task enters a full buffer only if it scores at least the
buffer's minimum (and then replaces that entry); below capacity any task with
a score above 0 enters (a task at 0 or n has nothing to teach and never does).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass


@dataclass
class Entry:
    task_id: str
    kind: str
    p: float
    valid: int
    added: int
    last_played: int
    replays: int = 0
    extremes: int = 0  # consecutive re-estimates at 0 or at n

    @property
    def score(self) -> float:
        return self.p * (1.0 - self.p)


class ReplayBuffer:
    def __init__(self, capacity: int = 64, *, rho: float = 0.3, beta: float = 0.3, evict_after: int = 2):
        self.capacity, self.rho, self.beta, self.evict_after = capacity, rho, beta, evict_after
        self.entries: dict[str, Entry] = {}
        self.evicted: list[str] = []

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, task_id: str) -> bool:
        return task_id in self.entries

    def minimum(self) -> float:
        return min((e.score for e in self.entries.values()), default=0.0)

    def offer(self, task_id: str, kind: str, passes: int, valid: int, round: int) -> bool:
        """A newly measured task asks to enter; returns whether it did."""
        if valid <= 0 or task_id in self.entries:
            return False
        entry = Entry(task_id, kind, passes / valid, valid, round, round)
        if entry.score <= 0:
            return False
        if len(self.entries) >= self.capacity:
            weakest = min(self.entries.values(), key=lambda e: (e.score, -e.last_played))
            if entry.score < weakest.score:
                return False
            del self.entries[weakest.task_id]
            self.evicted.append(weakest.task_id)
        self.entries[task_id] = entry
        return True

    def refresh(self, predicted: dict[str, float]) -> None:
        """Replace p̂ by the ratings' current prediction where there is one (see the module docstring)."""
        for tid, p in predicted.items():
            if tid in self.entries:
                self.entries[tid].p = p

    def probabilities(self, now: int) -> dict[str, float]:
        """Sampling probability of each entry: rank-based score mixed with staleness."""
        if not self.entries:
            return {}
        ranked = sorted(self.entries.values(), key=lambda e: -e.score)
        h = {e.task_id: (1.0 / (i + 1)) ** (1.0 / self.beta) for i, e in enumerate(ranked)}
        hs = sum(h.values())
        stale = {e.task_id: max(0, now - e.last_played) for e in ranked}
        ss = sum(stale.values())
        out = {}
        for e in ranked:
            p_stale = stale[e.task_id] / ss if ss else 1.0 / len(ranked)
            out[e.task_id] = (1 - self.rho) * h[e.task_id] / hs + self.rho * p_stale
        return out

    def sample(self, n: int, now: int, rng: random.Random, *, exclude: set[str] | frozenset[str] = frozenset()
               ) -> list[str]:
        """Up to n distinct task ids, drawn by `probabilities` without replacement (none of `exclude`: a later wave
        of a round does not replay what an earlier one did)."""
        probs = {t: p for t, p in self.probabilities(now).items() if t not in exclude}
        chosen: list[str] = []
        while probs and len(chosen) < n:
            total = sum(probs.values())
            x, acc = rng.random() * total, 0.0
            pick = next(iter(probs))
            for tid, p in probs.items():
                acc += p
                if x <= acc:
                    pick = tid
                    break
            chosen.append(pick)
            del probs[pick]
        return chosen

    def reestimate(self, task_id: str, passes: int, valid: int, round: int) -> bool:
        """Record a replay's measurement; returns True when the task was evicted by it."""
        e = self.entries.get(task_id)
        if e is None or valid <= 0:
            return False
        e.p, e.valid, e.last_played, e.replays = passes / valid, valid, round, e.replays + 1
        e.extremes = e.extremes + 1 if passes in (0, valid) else 0
        if e.extremes >= self.evict_after:
            del self.entries[task_id]
            self.evicted.append(task_id)
            return True
        return False

    def state(self) -> dict:
        return {"capacity": self.capacity, "rho": self.rho, "beta": self.beta, "evict_after": self.evict_after,
                "entries": [asdict(e) for e in self.entries.values()], "evicted": self.evicted[-1000:]}

    @classmethod
    def from_state(cls, data: dict) -> ReplayBuffer:
        b = cls(data.get("capacity", 64), rho=data.get("rho", 0.3), beta=data.get("beta", 0.3),
                evict_after=data.get("evict_after", 2))
        b.entries = {e["task_id"]: Entry(**e) for e in data.get("entries", [])}
        b.evicted = list(data.get("evicted", []))
        return b
