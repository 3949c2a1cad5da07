"""Statuses of tasks and runs, command kinds, and the one table of the moves between statuses the store allows.

`StrEnum`s: a member is the very string that is stored and printed (`f"{s}"`,
`json.dumps`, SQL parameters), so rows, JSON and CLI output stay as they were,
and a member equals (and hashes as) its string. They live in the harness, the
lowest layer, because the agent loop ends runs with them (`LoopOutcome`,
`Stopped`) and applies the commands a run takes itself; the store (memory/)
guards every status change with `RUN_TRANSITIONS` and `TASK_TRANSITIONS`.
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    NEEDS_REVIEW = "needs_review"
    KILLED = "killed"


class TaskStatus(StrEnum):
    """A task's status: its run's (the task follows its current run) or one of its own."""

    QUEUED = "queued"  # waits for the daemon (and for the tasks it depends on)
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    NEEDS_REVIEW = "needs_review"
    KILLED = "killed"
    CANCELLED = "cancelled"  # taken off the queue, or a chat request stopped while its parts ran
    WAITING = "waiting"  # a chat request whose run ended: it waits for the parts it fanned out to


class CommandKind(StrEnum):
    """What the CLI and the TUI ask of the process that owns a run (or of the daemon, for a task)."""

    NOTIFY = "notify"  # a message for the agent
    ROLLBACK = "rollback"
    PAUSE = "pause"
    KILL = "kill"
    RESUME = "resume"
    MERGE = "merge"
    KEEP = "keep"
    PRIORITY = "priority"  # of a queued task
    CANCEL = "cancel"  # a task


class CommandStatus(StrEnum):
    PENDING = "pending"
    TAKEN = "taken"
    DONE = "done"
    FAILED = "failed"


_R, _T = RunStatus, TaskStatus

RUN_ACTIVE = (_R.RUNNING,)
RUN_RESUMABLE = (_R.PAUSED, _R.RUNNING)  # running only when its owner process is gone
RUN_FINAL = (_R.SUCCEEDED, _R.FAILED, _R.BUDGET_EXCEEDED, _R.NEEDS_REVIEW, _R.KILLED)
TASK_FINAL = (_T.SUCCEEDED, _T.FAILED, _T.BUDGET_EXCEEDED, _T.NEEDS_REVIEW, _T.KILLED, _T.CANCELLED)  # it ended

RUN_COMMANDS = (CommandKind.NOTIFY, CommandKind.ROLLBACK, CommandKind.PAUSE, CommandKind.KILL)
"""The commands a run applies itself at its model boundary (the daemon does the others, and obeys a pause or a kill
of a run it owns at once)."""
STOP_COMMANDS = (CommandKind.PAUSE, CommandKind.KILL)
DAEMON_COMMANDS = (CommandKind.RESUME, CommandKind.MERGE, CommandKind.KEEP, CommandKind.PRIORITY, CommandKind.CANCEL)

# The moves the store allows: target -> the statuses it may be reached from. A guarded update (`only_from`) is
# narrowed to these; one from anywhere else is refused (it changes nothing and returns False).
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    _R.RUNNING: frozenset({_R.PAUSED, _R.BUDGET_EXCEEDED, _R.RUNNING}),  # a resume (running: its owner process died)
    _R.PAUSED: frozenset({_R.RUNNING}),
    _R.SUCCEEDED: frozenset({_R.RUNNING, _R.NEEDS_REVIEW}),  # needs_review: merged by hand
    _R.FAILED: frozenset({_R.RUNNING, _R.PAUSED}),
    _R.BUDGET_EXCEEDED: frozenset({_R.RUNNING}),
    _R.NEEDS_REVIEW: frozenset({_R.RUNNING}),
    _R.KILLED: frozenset({_R.RUNNING, _R.PAUSED, _R.BUDGET_EXCEEDED}),
}

# A task's own moves: claimed, requeued, failed before or without a run, cancelled, the end of a chat request that
# waited for its parts; set again to the status it has, with a new reason. While a run goes, the task follows it in
# the same transaction as the run's guarded move (`Store.transition_run`, `Store.claim_run`), not through this table.
TASK_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    _T.RUNNING: frozenset({_T.QUEUED}),  # claimed by the daemon
    _T.QUEUED: frozenset({_T.RUNNING}),  # requeued: its run never started
    _T.FAILED: frozenset({_T.QUEUED, _T.RUNNING, _T.WAITING, _T.FAILED}),  # queued: a dependency failed
    _T.BUDGET_EXCEEDED: frozenset({_T.BUDGET_EXCEEDED}),
    _T.SUCCEEDED: frozenset({_T.WAITING}),  # all its parts succeeded
    _T.CANCELLED: frozenset({_T.QUEUED, _T.WAITING}),
    _T.WAITING: frozenset({_T.WAITING}),
}


def allowed_from(target: str, only_from: tuple[str, ...] | None, table: dict) -> tuple[str, ...]:
    """The statuses an update to `target` may start from: the table's, narrowed to `only_from` when given.

    An unknown target is refused (an empty tuple)."""
    allowed = table.get(target, frozenset())
    if only_from is not None:
        allowed = allowed & set(only_from)
    return tuple(sorted(allowed))
