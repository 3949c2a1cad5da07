"""A run's hard limits, and the checks made before every model call.

`BudgetConfig` is the `[budget]` section of the project config, defined here
because the loop enforces it. A run stops as `budget_exceeded` when its next
model call would cross a limit (turns, tokens, USD, active wall time), and
pauses when the fleet's budget (`runtime.fleet.budget.FleetBudget`, seen here
as a `FleetGate`) is spent.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from loopwright.harness.runlog import RunCounters


class BudgetConfig(BaseModel):
    """Hard limits per run, checked before every model call."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)  # as every section of the config

    max_turns: int = Field(default=200, gt=0)
    max_tokens: int = Field(default=5_000_000, gt=0)
    max_usd: float = Field(default=10.0, gt=0)
    max_wall_seconds: float = Field(default=4 * 3600, gt=0)


class FleetGate(Protocol):
    """The fleet-wide budget (runtime.fleet.budget.FleetBudget): which day spend goes to, and whether any is left."""

    def day(self) -> str: ...
    def exhausted(self) -> str | None: ...


class FleetBudgetSpent(Exception):
    """No model call may start anywhere until the fleet budget resets or is raised: the run pauses."""


class BudgetExceeded(Exception):
    """A hard limit (turns, tokens, USD, wall time) would be crossed by the next model call."""


def check_run_limits(run: RunCounters, budget: BudgetConfig) -> None:
    """BudgetExceeded when the run has used up its turns, tokens or USD."""
    if run.model_calls >= budget.max_turns:
        raise BudgetExceeded(f"turn limit reached ({run.model_calls} of {budget.max_turns})")
    if run.tokens >= budget.max_tokens:
        raise BudgetExceeded(f"token limit reached ({run.tokens:,} of {budget.max_tokens:,})")
    if run.cost_usd >= budget.max_usd:
        raise BudgetExceeded(f"cost limit reached (${run.cost_usd:.4f} of ${budget.max_usd:.2f})")


def check_wall_time(budget: BudgetConfig, elapsed: float) -> None:
    """BudgetExceeded when the run has been active (`elapsed` seconds, pauses left out) for its time limit."""
    if elapsed >= budget.max_wall_seconds:
        raise BudgetExceeded(f"time limit reached ({elapsed:.0f}s of {budget.max_wall_seconds:.0f}s)")
