"""The `notifications` table (each event's key claimed once, then its delivery recorded), and what the daemon's
notifier reads to find events: tasks by primary key, the tasks whose runs changed status, a task's last run.

When to notify, and how, is runtime/fleet/notify.py's; the TUI's feed reads new rows with `since`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from enum import StrEnum

from loopwright.harness.statuses import CommandKind
from loopwright.memory.store import Store

TASK_COLUMNS = "id, title, status, reason, updated_at"


class NotificationStatus(StrEnum):
    PENDING = "pending"  # claimed, being delivered (or lost by a crash: at most once)
    SENT = "sent"
    FAILED = "failed"


def write_mark(store: Store) -> tuple[int, int]:
    """Commits by other connections (`PRAGMA data_version`) and this connection's own writes: equal marks mean
    nothing was written in between."""
    conn = store.conn
    return conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes


# -- the notifications table ---------------------------------------------------------------------------------


def claim(store: Store, key: str, kind: str, event: dict) -> bool:
    """Record the event under its key; False when that key was claimed before (by this daemon or an earlier one)."""
    return store.conn.execute(
        "INSERT OR IGNORE INTO notifications (key, kind, payload, created_at) VALUES (?, ?, ?, ?)",
        (key, kind, json.dumps(event, ensure_ascii=False), time.time())).rowcount == 1


def record_result(store: Store, key: str, ok: bool, result: str) -> None:
    store.conn.execute("UPDATE notifications SET status = ?, result = ? WHERE key = ?",
                       (NotificationStatus.SENT if ok else NotificationStatus.FAILED, result, key))


def last_rowid(store: Store) -> int:
    return store.conn.execute("SELECT coalesce(max(rowid), 0) FROM notifications").fetchone()[0]


def since(store: Store, rowid: int) -> list[tuple[int, str, str, str, float]]:
    """Notifications after `rowid`, oldest first: (rowid, key, kind, payload, created_at)."""
    return [tuple(r) for r in store.conn.execute(
        "SELECT rowid, key, kind, payload, created_at FROM notifications WHERE rowid > ? ORDER BY rowid", (rowid,))]


# -- what the notifier reads ---------------------------------------------------------------------------------


def last_task_id(store: Store) -> int:
    return store.conn.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0]


def tasks_not_in(store: Store, statuses: Sequence[str], *, up_to: int) -> list[sqlite3.Row]:
    """Tasks up to id `up_to` whose status is none of these: (id, status, updated_at) (a full scan: at start only)."""
    return store.conn.execute(
        f"SELECT id, status, updated_at FROM tasks WHERE id <= ? AND status NOT IN ({','.join('?' * len(statuses))})",
        (up_to, *statuses)).fetchall()


def tasks_with_status_events(store: Store, after: int, up_to: int) -> set[int]:
    """The tasks whose runs changed status in the events after id `after`, up to `up_to` (a rowid range)."""
    return {r[0] for r in store.conn.execute(
        "SELECT DISTINCT runs.task_id FROM events JOIN runs ON runs.id = events.run_id"
        " WHERE events.id > ? AND events.id <= ? AND events.type = 'status'", (after, up_to))}


def tasks(store: Store, ids: Sequence[int]) -> list[sqlite3.Row]:
    """These tasks' TASK_COLUMNS (one IN (...) query: keep `ids` to a few hundred)."""
    return store.conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ({','.join('?' * len(ids))})",
                              list(ids)).fetchall()


def tasks_after(store: Store, task_id: int) -> list[sqlite3.Row]:
    """The TASK_COLUMNS of tasks newer than `task_id`, oldest first."""
    return store.conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE id > ? ORDER BY id", (task_id,)).fetchall()


def last_run(store: Store, task_id: int) -> sqlite3.Row | None:
    """The task's newest run (id, status, reason, branch) with `cost`, the cost of all its runs."""
    return store.conn.execute(
        "SELECT id, status, reason, branch, (SELECT sum(cost_usd) FROM runs WHERE task_id = ?) AS cost"
        " FROM runs WHERE task_id = ? ORDER BY started_at DESC, rowid DESC LIMIT 1", (task_id, task_id)).fetchone()


def pause_commands(store: Store, run_id: str) -> list[str]:
    """The arguments (JSON) of every pause command sent to the run."""
    return [r[0] for r in store.conn.execute("SELECT args FROM commands WHERE run_id = ? AND kind = ?",
                                             (run_id, CommandKind.PAUSE))]
