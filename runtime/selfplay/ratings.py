"""Ratings on one scale for the solver and every task: a 1-parameter IRT (Rasch) model, updated online.

    P(solver passes task) = σ(θ_kind − b_task)

A new task's difficulty comes from its first measurement:
b = θ_kind − logit((passes + ½)/(n + 1)) (the smoothed rate, so 0/8 and 8/8
stay finite), shrunk toward the difficulty it was requested at when there is
one (precision-weighted, the request worth about 4 attempts: selecting tasks
by noisy 8-attempt estimates otherwise picks the ones that looked hardest —
the winner's curse). A task measured again (a replay, a held-out re-run) moves both
sides by the residual per attempt, r = (passes − n·P)/n, Elo-style:
θ_global += 0.5·r, θ_kind += 0.3·r and b −= 0.15·r. The solver's ability on a
kind (a topic) is a global θ plus the kind's offset (a new kind starts at the
mean offset): every replay informs the global part, so the rating follows a
learning solver (with per-kind θ alone and K = 0.3 on both sides the ratings
lagged the learning population by ~0.1 in predicted success; bench, 5 seeds).
"""

from __future__ import annotations

import math

LOGIT_CLAMP = 4.0
PRIOR_INFORMATION = 1.0  # a requested difficulty counts as much as ~4 attempts at p = 0.5


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-LOGIT_CLAMP, min(LOGIT_CLAMP, math.log(p / (1 - p))))


class Ratings:
    """θ (global + an offset per kind) for the solver and b per task; `state()`/`from_state` round-trip."""

    def __init__(self, k_theta: float = 0.3, k_task: float = 0.15, k_global: float = 0.5):
        self.k_theta, self.k_task, self.k_global = k_theta, k_task, k_global
        self.global_theta = 0.0
        self.theta: dict[str, float] = {}  # the per-kind offsets
        self.b: dict[str, float] = {}

    def ability(self, kind: str) -> float:
        if kind in self.theta:
            return self.global_theta + self.theta[kind]
        return self.global_theta + (sum(self.theta.values()) / len(self.theta) if self.theta else 0.0)

    def predict(self, task_id: str, kind: str) -> float | None:
        """Predicted success of the solver on a rated task (None when the task has no rating yet)."""
        if task_id not in self.b:
            return None
        return sigmoid(self.ability(kind) - self.b[task_id])

    def difficulty_for(self, kind: str, success: float) -> float:
        """The task difficulty b at which the solver's predicted success on `kind` is `success`."""
        return self.ability(kind) - logit(success)

    def observe(self, task_id: str, kind: str, passes: int, valid: int, *,
                prior: float | None = None) -> float | None:
        """Record a measurement; returns the residual per attempt (None for a task rated just now or n = 0).

        `prior`: for a new task, the success it was requested at; its difficulty is then the precision-weighted
        mean of the measured one (information n·p(1−p)) and the requested one (information PRIOR_INFORMATION).
        """
        if valid <= 0:
            return None
        theta = self.ability(kind)
        if task_id not in self.b:
            self.theta.setdefault(kind, theta - self.global_theta)
            p = (passes + 0.5) / (valid + 1)
            b = theta - logit(p)
            if prior is not None:
                info = valid * p * (1 - p)
                b = (info * b + PRIOR_INFORMATION * (theta - logit(prior))) / (info + PRIOR_INFORMATION)
            self.b[task_id] = b
            return None
        residual = (passes - valid * sigmoid(theta - self.b[task_id])) / valid
        self.global_theta += self.k_global * residual
        self.theta[kind] = self.theta.get(kind, theta - self.global_theta) + self.k_theta * residual
        self.b[task_id] -= self.k_task * residual
        return residual

    def abilities(self) -> dict[str, float]:
        return {k: self.ability(k) for k in sorted(self.theta)}

    def state(self) -> dict:
        return {"k_theta": self.k_theta, "k_task": self.k_task, "k_global": self.k_global,
                "global_theta": self.global_theta, "theta": self.theta, "b": self.b}

    @classmethod
    def from_state(cls, data: dict) -> Ratings:
        r = cls(data.get("k_theta", 0.3), data.get("k_task", 0.3), data.get("k_global", 0.0))
        r.global_theta = data.get("global_theta", 0.0)
        r.theta, r.b = dict(data.get("theta", {})), dict(data.get("b", {}))
        return r
