"""Test doubles for self-play: the simulated population (from selfplay/simulation.py), a scripted proposer that
replays fixed replies, and a scripted solver that passes a task a fixed number of times out of k."""

from __future__ import annotations

import json

from loopwright.runtime.learning.selfplay.domain import Attempt, ProposalRequest
from loopwright.runtime.learning.selfplay.simulation import (  # noqa: F401
    SIMULATION_NOTE,
    Population,
    SimDomain,
    SimProposer,
    SimSolver,
    sim_engine_parts,
)


class ScriptedProposer:
    """Answers the n-th request with the n-th list of replies (then with nothing); records requests and prompts."""

    def __init__(self, replies: list[list[str | dict]]):
        self.replies = [[r if isinstance(r, str) else json.dumps(r) for r in batch] for batch in replies]
        self.requests: list[ProposalRequest] = []
        self.prompts: list[str] = []

    async def propose(self, request: ProposalRequest, prompt: str) -> list[str]:
        self.requests.append(request)
        self.prompts.append(prompt)
        return self.replies.pop(0) if self.replies else []


class ScriptedSolver:
    """Passes a task `passes[function name]` times out of k (default 0); `truncate` makes every attempt hit the
    token budget."""

    def __init__(self, passes: dict[str, int] | None = None, *, truncate: bool = False):
        self.passes, self.truncate = passes or {}, truncate
        self.calls: list[tuple[str, int, bool]] = []

    async def attempts(self, domain, task, k: int, *, learn: bool = True) -> list[Attempt]:
        name = task.payload.get("function", task.id)
        self.calls.append((name, k, learn))
        if self.truncate:
            return [Attempt(passed=False, truncated=True, tokens=1000) for _ in range(k)]
        n = min(k, self.passes.get(name, 0))
        return [Attempt(passed=i < n, tokens=100, cost_usd=0.01) for i in range(k)]


def function_task(name: str, statement: str, body: str, tests: str, kind: str = "general") -> dict:
    """A python-functions proposal as the proposer would send it."""
    return {"statement": statement, "function": name, "reference": body, "tests": tests, "kind": kind}
