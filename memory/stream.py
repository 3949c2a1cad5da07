"""What the HTTP API's live stream and task view read (runtime/http/): the change feed (migration 15: a row per
change of a message or of a task's state, written by triggers in the change's own transaction, whichever process made
it; a thread's row is written by memory/chat.py's add_thread), the last message of each thread, and a task's last run
at a glance. The daemon prunes the feed's old rows.
"""

from __future__ import annotations

import time

from loopwright.memory.store import Store


def changes_after(store: Store, change_id: int, limit: int) -> list[tuple[int, str, int, str | None]]:
    """Up to `limit` changes after `change_id`, oldest first: (id, kind 'message', 'task' or 'thread', the message or
    task id or the thread's rowid, a task's status as of the change).

    Ids are handed out in commit order (SQLite has one writer at a time), so reading after the last id seen misses
    nothing that was committed."""
    return [(r[0], r[1], r[2], r[3]) for r in store.conn.execute(
        "SELECT id, kind, ref, status FROM change_feed WHERE id > ? ORDER BY id LIMIT ?", (change_id, limit))]


def last_change(store: Store) -> int:
    return store.conn.execute("SELECT coalesce(max(id), 0) FROM change_feed").fetchone()[0]


def pruned_up_to(store: Store) -> int:
    """The id up to which changes may have been pruned: the feed has every change after it (0: all of them).

    Ids are consecutive (AUTOINCREMENT, and a rolled-back insert gives its id back), only pruning deletes rows, and it
    always keeps the newest: so this is one below the oldest id left."""
    return store.conn.execute("SELECT coalesce(min(id) - 1, 0) FROM change_feed").fetchone()[0]


def prune_changes(store: Store, before: float, limit: int) -> int:
    """Delete up to `limit` of the oldest changes, those made before `before` (seconds since the epoch), never the
    newest change; how many were deleted."""
    oldest = store.conn.execute("SELECT id, at FROM change_feed ORDER BY id LIMIT ?", (limit,)).fetchall()
    upto = 0
    for change_id, at in oldest:
        if at >= before:
            break
        upto = change_id
    upto = min(upto, last_change(store) - 1)
    if upto <= 0:
        return 0
    return store.conn.execute("DELETE FROM change_feed WHERE id <= ?", (upto,)).rowcount


def add_thread_change(store: Store, rowid: int) -> None:
    """A thread was made, or its mode or allow list changed: its row in the feed, inside the change's
    transaction."""
    store.conn.execute("INSERT INTO change_feed (kind, ref, status, at) VALUES ('thread', ?, NULL, ?)",
                       (rowid, time.time()))


def last_message_ids(store: Store, thread: str | None = None) -> dict[str, int]:
    """Each thread's newest message id, or only `thread`'s (threads without one are left out)."""
    if thread is not None:
        row = store.conn.execute("SELECT max(id) FROM messages WHERE thread = ?", (thread,)).fetchone()
        return {} if row[0] is None else {thread: row[0]}
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
