"""The runner's seam: where a run's loop executes.

`runtime.runner.Runner` keeps what is the same for every backend: a task's attempts (loop-until-done), the
run's rows and events, its final status, the progress file and reflection. An `Executor` does the rest: it
gets a task's work placed (a branch and a worktree), starts a fresh run of it or takes a stopped one back,
and hands the runner an `Execution` to drive. The local backend's executor (`backends.local.InProcess`, the
default) runs the loop in this process; the ray backend's (`backends.ray.executor.RayExecutor`) runs it on a
Ray worker and merges on the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from loopwright.harness.commands import CommandResult
from loopwright.harness.loop import FinishVerdict, LoopOutcome
from loopwright.harness.statuses import RunStatus
from loopwright.memory.store import Run, Task
from loopwright.runtime.config import Config

if TYPE_CHECKING:
    from loopwright.runtime.runner import Runner


@dataclass
class Placement:
    """Where a task's attempts work: `branch`, made from `base_commit` of `target_branch`, and its worktree on
    this machine (for the ray backend: where the head checks it out for a person to review)."""

    worktree: Path
    branch: str
    base_commit: str
    target_branch: str


P = TypeVar("P", bound=Placement)


class Execution(Protocol):
    """One run's loop as the runner drives it, wherever it executes."""

    @property
    def run_id(self) -> str: ...

    def request_stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        """Stop at the next safe point as `status` (paused or killed); with `interrupt` the command a tool is
        running is ended now instead of waited for."""

    async def run(self) -> LoopOutcome:
        """The run until it ends (accepted, failed, paused, out of budget...); whatever it holds is released."""


class Executor(Protocol[P]):
    """Where a run's loop executes (see the module docstring)."""

    async def place(self, runner: Runner, task: Task, config: Config, run_id: str) -> P:
        """Get a new task's first attempt (run `run_id`) ready: its branch and worktree. A failure here fails the
        task."""

    async def next_attempt(self, runner: Runner, task: Task, config: Config, placement: P) -> P:
        """Loop-until-done: what the task's next attempt needs, in the same placement."""

    async def start(self, runner: Runner, run: Run, task: Task, config: Config, placement: P) -> Execution:
        """A fresh run of the task (its row is made); `runner.attach` it as soon as it exists."""

    async def resume(self, runner: Runner, run: Run, task: Task, config: Config,
                     claim: Callable[[], None]) -> tuple[Execution, P]:
        """Take a stopped run back (`runner.attach` it as soon as it exists), and where it works.

        `claim()` makes this process the run's owner (a StoreError when another process took it): call it once
        whatever may fail without changing the run has been done."""


def unchecked_verdict(branch: str) -> FinishVerdict:
    """A finished run with no acceptance check: kept for review (the agent saying it is done is not evidence)."""
    return FinishVerdict(RunStatus.NEEDS_REVIEW, "Finished. No acceptance check is configured; kept for review.",
                         reason=f"no acceptance check; branch {branch} kept for review")


def failed_check_verdict(check: str, result: CommandResult, timeout: float, *, until: bool,
                         last_try: int | None = None) -> FinishVerdict | None:
    """None when the acceptance check passed; else the agent is told to fix it (or, looping until done, this attempt
    ends and a fresh one starts). `last_try`: this was the last of that many tries the run gets (a self-play
    attempt): the run fails."""
    if result.exit_code == 0 and not result.timed_out:
        return None
    why = f"timed out after {timeout:.0f}s" if result.timed_out else f"exit {result.exit_code}"
    feedback = f"The acceptance check `{check}` failed ({why}). Its output:\n{result.output}\n"
    if until:
        return FinishVerdict(RunStatus.FAILED, feedback, reason=f"`{check}` failed ({why})", again=True)
    if last_try is not None:
        return FinishVerdict(RunStatus.FAILED, feedback + f"That was the last of {last_try} tries.",
                             reason=f"`{check}` failed on the last of {last_try} tries ({why})")
    return FinishVerdict(None, feedback + "Fix the cause, then call finish again.")
