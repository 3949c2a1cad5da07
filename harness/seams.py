"""What the agent loop leaves to whoever runs it: three seams, each with the local implementation as the default.

- a `CallPermit`: whether the next model call may start (the fleet budget, the run's hard limits), the
  fleet's rate-limit gate the call waits at, and the budget day its spend is counted on;
- a `CommandSource`: the commands for this run (a message, a rollback, pause, kill), taken at model boundaries;
- a `CheckpointSink`: where a turn's checkpoint goes and a rollback happens (locally: the run's `Workspace`).

The local defaults read and write the run's `RunLog` (the store). The ray backend (`runtime.backends.ray`)
supplies its own: the head gives permission and commands in one round trip, and checkpoints are pushed to the
git remote every node reaches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from loopwright.harness.budget import BudgetConfig, FleetBudgetSpent, FleetGate, check_run_limits, check_wall_time
from loopwright.harness.retry import QuotaGate
from loopwright.harness.runlog import RunCommand, RunLog
from loopwright.workspaces.git import Checkpoint


class CallPermit(Protocol):
    """What gates each model call of a run."""

    @property
    def quota_gate(self) -> QuotaGate | None:
        """The fleet's rate-limit gate for this provider and model: every attempt of the call waits at it."""

    async def check(self, active_seconds: Callable[[], float]) -> None:
        """Raise `FleetBudgetSpent` or `BudgetExceeded` when the next model call may not start.

        `active_seconds` gives the run's active time so far (pauses left out), for the time limit."""

    def day(self) -> str | None:
        """The budget day the call's spend is counted on (None: it is counted on no day)."""


class CommandSource(Protocol):
    """Where the commands for a run come from; the loop applies them at model boundaries and reports each."""

    async def take(self) -> Sequence[RunCommand]:
        """The commands for this run not taken yet, oldest first; each is taken once."""

    def finish(self, command_id: int, *, ok: bool, result: str) -> None:
        """Report what became of a command (applied, or why not)."""


class CheckpointSink(Protocol):
    """Where a turn's checkpoint goes and a rollback happens. Blocking: the loop calls both in a thread."""

    def checkpoint(self, message: str, *, step: int) -> Checkpoint | None:
        """Commit the worktree as this step's checkpoint; None when nothing changed."""

    def reset_to(self, sha: str) -> None:
        """Move the worktree back to the checkpoint `sha` (a rollback)."""


class BudgetPermit:
    """The local `CallPermit`: the fleet budget, then the run's limits on its counters in the store."""

    def __init__(self, log: RunLog, run_id: str, budget: BudgetConfig, fleet: FleetGate | None = None,
                 quota_gate: QuotaGate | None = None):
        self.log, self.run_id, self.budget, self.fleet = log, run_id, budget, fleet
        self.quota_gate = quota_gate

    async def check(self, active_seconds: Callable[[], float]) -> None:
        if self.fleet is not None and (why := self.fleet.exhausted()):
            raise FleetBudgetSpent(why)
        check_run_limits(self.log.run(self.run_id), self.budget)
        check_wall_time(self.budget, active_seconds())

    def day(self) -> str | None:
        return self.fleet.day() if self.fleet is not None else None


class LoggedCommands:
    """The local `CommandSource`: the commands the CLI, the TUI or the daemon queued in the store for this run."""

    def __init__(self, log: RunLog, run_id: str):
        self.log, self.run_id = log, run_id

    async def take(self) -> Sequence[RunCommand]:
        return self.log.take_commands(self.run_id)

    def finish(self, command_id: int, *, ok: bool, result: str) -> None:
        self.log.finish_command(command_id, ok=ok, result=result)
