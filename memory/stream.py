"""What the HTTP API's live stream and task view read (runtime/http/): the change feed that triggers fill (migration
14: a row per change of a message or of a task's state, in the change's own transaction, whichever process made it),
the last message of each thread, and a task's last run at a glance.
"""

from __future__ import annotations

from loopwright.memory.store import Store


def changes_after(store: Store, change_id: int, limit: int) -> list[tuple[int, str, int, str | None]]:
    """Up to `limit` changes after `change_id`, oldest first: (id, kind 'message' or 'task', message or task id,
    a task's status as of the change).

    Ids are handed out in commit order (SQLite has one writer at a time), so reading after the last id seen misses
    nothing that was committed."""
    return [(r[0], r[1], r[2], r[3]) for r in store.conn.execute(
        "SELECT id, kind, ref, status FROM change_feed WHERE id > ? ORDER BY id LIMIT ?", (change_id, limit))]


def last_change(store: Store) -> int:
    return store.conn.execute("SELECT coalesce(max(id), 0) FROM change_feed").fetchone()[0]


def last_message_ids(store: Store) -> dict[str, int]:
    """Each thread's newest message id (threads without one are left out)."""
    return {r[0]: r[1] for r in store.conn.execute("SELECT thread, max(id) FROM messages GROUP BY thread")}


def task_thread(store: Store, task_id: int) -> str | None:
    """The chat thread a task works for: its own, else that of the request it is a part of."""
    row = store.conn.execute("SELECT coalesce(t.thread, p.thread) FROM tasks t LEFT JOIN tasks p ON p.id = t.parent_id"
                             " WHERE t.id = ?", (task_id,)).fetchone()
    return None if row is None else row[0]


def last_run(store: Store, task_id: int) -> dict | None:
    """The task's newest run: id, status, cost_usd, checkpoints (how many), last_checkpoint (its message)."""
    row = store.conn.execute(
        "SELECT r.id, r.status, r.cost_usd, (SELECT count(*) FROM checkpoints c WHERE c.run_id = r.id) AS checkpoints,"
        " (SELECT message FROM checkpoints c WHERE c.run_id = r.id ORDER BY seq DESC LIMIT 1) AS last_checkpoint"
        " FROM runs r WHERE r.task_id = ? ORDER BY r.started_at DESC, r.rowid DESC LIMIT 1", (task_id,)).fetchone()
    return None if row is None else dict(row)
