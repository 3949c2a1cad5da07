"""Ratings on one scale for the solver and every task: a 1-parameter IRT (Rasch) model, updated online.

    P(solver passes task) = σ(θ_kind − b_task)

A new task's difficulty comes from its first measurement:
b = θ_kind − logit((passes + ½)/(n + 1)) (the smoothed rate, so 0/8 and 8/8
stay finite). A task measured again (a replay, a held-out re-run) moves both
sides by the residual per attempt, r = (passes − n·P)/n, Elo-style:
θ_kind += K_θ·r and b −= K_b·r. The solver has one ability per kind (a topic),
starting from the mean of its kinds.
"""

from __future__ import annotations

import math

LOGIT_CLAMP = 4.0


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, x))))


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return max(-LOGIT_CLAMP, min(LOGIT_CLAMP, math.log(p / (1 - p))))


class Ratings:
    """θ per kind (the solver) and b per task; `state()`/`from_state` round-trip through JSON."""

    def __init__(self, k_theta: float = 0.3, k_task: float = 0.3):
        self.k_theta, self.k_task = k_theta, k_task
        self.theta: dict[str, float] = {}
        self.b: dict[str, float] = {}

    def ability(self, kind: str) -> float:
        if kind in self.theta:
            return self.theta[kind]
        return sum(self.theta.values()) / len(self.theta) if self.theta else 0.0

    def predict(self, task_id: str, kind: str) -> float | None:
        """Predicted success of the solver on a rated task (None when the task has no rating yet)."""
        if task_id not in self.b:
            return None
        return sigmoid(self.ability(kind) - self.b[task_id])

    def difficulty_for(self, kind: str, success: float) -> float:
        """The task difficulty b at which the solver's predicted success on `kind` is `success`."""
        return self.ability(kind) - logit(success)

    def observe(self, task_id: str, kind: str, passes: int, valid: int) -> float | None:
        """Record a measurement; returns the residual per attempt (None for a task rated just now or n = 0)."""
        if valid <= 0:
            return None
        theta = self.ability(kind)
        if task_id not in self.b:
            self.theta.setdefault(kind, theta)
            self.b[task_id] = theta - logit((passes + 0.5) / (valid + 1))
            return None
        residual = (passes - valid * sigmoid(theta - self.b[task_id])) / valid
        self.theta[kind] = theta + self.k_theta * residual
        self.b[task_id] -= self.k_task * residual
        return residual

    def state(self) -> dict:
        return {"k_theta": self.k_theta, "k_task": self.k_task, "theta": self.theta, "b": self.b}

    @classmethod
    def from_state(cls, data: dict) -> Ratings:
        r = cls(data.get("k_theta", 0.3), data.get("k_task", 0.3))
        r.theta, r.b = dict(data.get("theta", {})), dict(data.get("b", {}))
        return r
