"""Reads of the `commands` table beyond the store's queue (`Store.enqueue_command`, `claim_commands`,
`finish_command`): one command's outcome, whether the same request is already under way, and commands a dead daemon
took but never finished."""

from __future__ import annotations

from loopwright.harness.statuses import CommandKind, CommandStatus, RunStatus
from loopwright.memory.store import Command, Store, command_of


def command(store: Store, command_id: int) -> Command | None:
    row = store.conn.execute("SELECT * FROM commands WHERE id = ?", (command_id,)).fetchone()
    return None if row is None else command_of(row)


def under_way(store: Store, run_id: str, kind: str, *, run_status: str, done_since: float) -> int | None:
    """The newest command of this kind for the run still to be done — or done, and the run still running: a kill
    (final), or one done after `done_since` (taking effect). Its id, or None."""
    row = store.conn.execute(
        "SELECT id FROM commands WHERE run_id = ? AND kind = ? AND (status IN (?, ?) OR "
        "(status = ? AND ? = ? AND (kind = ? OR done_at > ?))) ORDER BY id DESC LIMIT 1",
        (run_id, kind, CommandStatus.PENDING, CommandStatus.TAKEN, CommandStatus.DONE, run_status, RunStatus.RUNNING,
         CommandKind.KILL, done_since)).fetchone()
    return None if row is None else row[0]


def pending_for_task(store: Store, kind: str, task_id: int) -> int | None:
    """The id of a pending command of this kind for the task (priority, cancel), or None."""
    row = store.conn.execute(
        "SELECT id FROM commands WHERE run_id IS NULL AND kind = ? AND status = ? AND json_extract(args, '$.task') = ?",
        (kind, CommandStatus.PENDING, task_id)).fetchone()
    return None if row is None else row[0]


def retake(store: Store, kind: str) -> list[Command]:
    """Put back in the queue the commands of this kind that were taken and never finished: at a daemon's start, the
    one that took them is dead (one daemon per project), so the new one takes them again."""
    rows = store.conn.execute("UPDATE commands SET status = ? WHERE status = ? AND kind = ? RETURNING *",
                              (CommandStatus.PENDING, CommandStatus.TAKEN, kind)).fetchall()
    return sorted((command_of(r) for r in rows), key=lambda c: c.id)
