"""The proposer's reward: learnability, a length penalty, a capped novelty bonus, and a repetition penalty.

    r     = 4·p̂·(1−p̂)  if 0 < passes < n  else 0        (n: valid attempts, truncated ones excluded)
    total = max(0, r·exp(−λ·d) + min(cap, β·(1 − s_max)) − |C|/B)   when r > 0, else 0

- 4·p̂(1−p̂) is R-Zero's uncertainty reward rescaled to peak at 1 at p̂ = 0.5
  and Absolute Zero's edges: 0 when the solver never or always succeeds (a 0%
  task is trivial to make; so is a 100% one).
- d = max(0, (L − median)/MAD): how far the task's length L sits above the
  running median of accepted tasks of its kind, in MADs (MAD floored at
  max(1, 5% of the median) so a kind of equal-length tasks does not divide by
  0; d = 0 until the kind has 5 accepted tasks). λ = 0.5: a task 2 MADs longer
  than usual keeps 37% of its reward, so padding to reach 50% does not pay.
- s_max: the task's highest shingle similarity to the archive (before it was
  added); the bonus is capped (cap 0.1, β 0.2) and paid only when r > 0, so a
  novel nonsense task earns nothing (OMNI: interesting, not merely new).
- |C|/B: the share of the round's batch in the task's cluster (R-Zero's
  repetition penalty; clusters by single-link on shingle similarity >= 0.5).
  Clipped at 0 as R-Zero does. Applied only when r > 0 so that the edges stay
  exactly 0 (the issue's "0 at p̄=0 and p̄=1"); a batch of near-copies of a
  good task still earns ~0 each.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

MIN_FOR_MEDIAN = 5
WINDOW = 200


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    length_lambda: float = Field(default=0.5, ge=0)
    novelty_weight: float = Field(default=0.2, ge=0)
    novelty_cap: float = Field(default=0.1, ge=0)
    cluster_similarity: float = Field(default=0.5, gt=0, le=1)


def learnability(passes: int, valid: int) -> float:
    """4·p̂·(1−p̂) when 0 < passes < valid, else 0 (also 0 with no valid attempt)."""
    if valid <= 0 or passes <= 0 or passes >= valid:
        return 0.0
    p = passes / valid
    return 4.0 * p * (1.0 - p)


class LengthStats:
    """Running median and MAD of accepted task lengths, per kind (the last 200 of each)."""

    def __init__(self, lengths: dict[str, list[int]] | None = None):
        self.lengths: dict[str, list[int]] = defaultdict(list, {k: list(v) for k, v in (lengths or {}).items()})

    def add(self, kind: str, length: int) -> None:
        values = self.lengths[kind]
        values.append(length)
        del values[:-WINDOW]

    def median(self, kind: str) -> float | None:
        values = self.lengths.get(kind) or []
        return statistics.median(values) if values else None

    def excess(self, kind: str, length: int) -> float:
        """d: MADs above the kind's running median (0 below it, and until the kind has 5 tasks)."""
        values = self.lengths.get(kind) or []
        if len(values) < MIN_FOR_MEDIAN:
            return 0.0
        med = statistics.median(values)
        mad = statistics.median(abs(v - med) for v in values)
        return max(0.0, (length - med) / max(mad, 1.0, 0.05 * med))

    def to_json(self) -> dict:
        return dict(self.lengths)


def clusters(sets: Sequence[frozenset[str]], threshold: float) -> list[int]:
    """Cluster label per item: single-link over Jaccard similarity >= threshold (union-find)."""
    parent = list(range(len(sets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            a, b = sets[i], sets[j]
            if a and b and len(a & b) / len(a | b) >= threshold:
                parent[find(i)] = find(j)
    roots: dict[int, int] = {}
    return [roots.setdefault(find(i), len(roots)) for i in range(len(sets))]


def total_reward(base: float, *, excess: float, novelty: float, cluster_share: float, cfg: RewardConfig) -> dict:
    """The parts and the total of one task's reward (see the module docstring)."""
    if base <= 0:
        return {"base": 0.0, "length_factor": 1.0, "novelty": 0.0, "repetition": 0.0, "total": 0.0}
    factor = math.exp(-cfg.length_lambda * excess)
    bonus = min(cfg.novelty_cap, cfg.novelty_weight * max(0.0, novelty))
    total = max(0.0, base * factor + bonus - cluster_share)
    return {"base": base, "length_factor": factor, "novelty": bonus, "repetition": cluster_share, "total": total}


def batch_rewards(items: Sequence[dict], lengths: LengthStats, cfg: RewardConfig,
                  others: Sequence[Sequence[str]] = ()) -> list[dict]:
    """Rewards of the new tasks of a measured batch; each item: passes, valid, kind, length, shingles,
    max_similarity. `others`: the shingles of the rest of the batch (replayed tasks), which share clusters too."""
    sets = [frozenset(it.get("shingles") or ()) for it in items] + [frozenset(o) for o in others]
    labels = clusters(sets, cfg.cluster_similarity)
    sizes: dict[int, int] = defaultdict(int)
    for label in labels:
        sizes[label] += 1
    out = []
    for it, label in zip(items, labels):
        base = learnability(it["passes"], it["valid"])
        parts = total_reward(base, excess=lengths.excess(it["kind"], it["length"]),
                             novelty=1.0 - it.get("max_similarity", 0.0), cluster_share=sizes[label] / len(sets),
                             cfg=cfg)
        out.append(parts | {"cluster": label})
    return out
