"""The schema of the project store: one migration per version (`PRAGMA user_version`), never edited once released.

`memory.store.migrate` runs them on open, each in its own transaction; a table family's statements live in its module
(memory/chat.py, memory/notifications.py, ...), its tables here.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils


def _lesson_tables(db: sqlite_utils.Database) -> None:
    from loopwright.memory.lesson_book import create_lesson_schema  # it imports the store, which imports this

    create_lesson_schema(db)


# the task statuses the daemon may announce (runtime/fleet/notify.py): the final ones but cancelled, and paused;
# spelled out, as a released migration never changes
_ANNOUNCED = "('succeeded', 'failed', 'killed', 'budget_exceeded', 'needs_review', 'paused')"

# A migration is a list of SQL statements and callables taking the sqlite_utils.Database (for what sqlite-utils
# does, such as FTS); each migration runs in its own transaction.
Migration = list[str | Callable[[sqlite_utils.Database], None]]

MIGRATIONS: list[Migration] = [
    [  # 1: the foundation
        """CREATE TABLE tasks (
            id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, goal TEXT NOT NULL, check_cmd TEXT,
            status TEXT NOT NULL, priority INTEGER NOT NULL DEFAULT 0, target_branch TEXT,
            options TEXT NOT NULL DEFAULT '{}', reason TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY, task_id INTEGER NOT NULL REFERENCES tasks(id), status TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '', provider TEXT NOT NULL, model TEXT NOT NULL,
            worktree TEXT NOT NULL, branch TEXT NOT NULL, base_commit TEXT NOT NULL, target_branch TEXT NOT NULL,
            step INTEGER NOT NULL DEFAULT 0, model_calls INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL NOT NULL DEFAULT 0, active_seconds REAL NOT NULL DEFAULT 0,
            last_action TEXT NOT NULL DEFAULT '', merge_commit TEXT,
            owner_pid INTEGER, owner_host TEXT, heartbeat_at REAL,
            started_at REAL NOT NULL, ended_at REAL)""",
        "CREATE INDEX runs_task ON runs(task_id)",
        """CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, ts REAL NOT NULL, type TEXT NOT NULL,
            data TEXT NOT NULL)""",
        "CREATE INDEX events_run ON events(run_id, id)",
        "CREATE TRIGGER events_no_update BEFORE UPDATE ON events BEGIN"
        " SELECT RAISE(ABORT, 'events are append-only'); END",
        "CREATE TRIGGER events_no_delete BEFORE DELETE ON events BEGIN"
        " SELECT RAISE(ABORT, 'events are append-only'); END",
        """CREATE TABLE checkpoints (
            run_id TEXT NOT NULL, seq INTEGER NOT NULL, sha TEXT NOT NULL, step INTEGER NOT NULL,
            message TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (run_id, seq))""",
        """CREATE TABLE artifacts (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL, kind TEXT NOT NULL, title TEXT NOT NULL,
            path TEXT NOT NULL, created_at REAL NOT NULL)""",
        "CREATE TABLE scratchpads (run_id TEXT PRIMARY KEY, content TEXT NOT NULL, updated_at REAL NOT NULL)",
        """CREATE TABLE commands (
            id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, kind TEXT NOT NULL, args TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', result TEXT NOT NULL DEFAULT '',
            created_at REAL NOT NULL, done_at REAL)""",
        "CREATE INDEX commands_pending ON commands(run_id, status)",
    ],
    [  # 2: the fleet: task dependencies, the owner's boot, queue order
        "ALTER TABLE runs ADD COLUMN owner_boot TEXT",
        """CREATE TABLE task_deps (
            task_id INTEGER NOT NULL REFERENCES tasks(id), depends_on INTEGER NOT NULL REFERENCES tasks(id),
            PRIMARY KEY (task_id, depends_on))""",
        "CREATE INDEX tasks_queue ON tasks(status, priority DESC, id)",
    ],
    [  # 3: the fleet budget: spend and raises per budget day ('*' holds raises of the total)
        """CREATE TABLE fleet_usage (
            day TEXT PRIMARY KEY, usd REAL NOT NULL DEFAULT 0, tokens INTEGER NOT NULL DEFAULT 0,
            extra_usd REAL NOT NULL DEFAULT 0, extra_tokens INTEGER NOT NULL DEFAULT 0)""",
    ],
    [  # 4: quota gates shared by every run of one provider and model; notifications sent (never twice)
        """CREATE TABLE quota_gates (
            key TEXT PRIMARY KEY, closed_until REAL NOT NULL DEFAULT 0, next_slot REAL NOT NULL DEFAULT 0,
            hits INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL)""",
        """CREATE TABLE notifications (
            key TEXT PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, created_at REAL NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending', result TEXT NOT NULL DEFAULT '')""",
    ],
    [  # 5: skills switched off for this project
        "CREATE TABLE disabled_skills (name TEXT PRIMARY KEY, disabled_at REAL NOT NULL)",
    ],
    [  # 6: lessons (continual learning) with their history and full-text index; which lessons each run was shown
        _lesson_tables,
        """CREATE TABLE run_lessons (
            run_id TEXT NOT NULL, ref TEXT NOT NULL, rank INTEGER NOT NULL, credited INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (run_id, ref))""",
    ],
    [  # 7: the progress file of each task: every attempt reads it at start, and an entry is added at its end
        """CREATE TABLE task_progress (
            task_id INTEGER PRIMARY KEY REFERENCES tasks(id), content TEXT NOT NULL, updated_at REAL NOT NULL)""",
    ],
    [  # 8: group chat: threads (one active task each, under a lease), messages, tasks of a thread and their parts
        """CREATE TABLE threads (
            name TEXT PRIMARY KEY, mode TEXT NOT NULL DEFAULT 'mention', owner TEXT, allow TEXT, check_cmd TEXT,
            active_task INTEGER, lease_until REAL NOT NULL DEFAULT 0, created_at REAL NOT NULL)""",
        """CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT, thread TEXT NOT NULL REFERENCES threads(name), author TEXT NOT NULL,
            author_name TEXT NOT NULL, text TEXT NOT NULL, reply_to INTEGER, mentions TEXT NOT NULL DEFAULT '[]',
            kind TEXT NOT NULL DEFAULT 'user', state TEXT NOT NULL, task_id INTEGER, external_id TEXT UNIQUE,
            reply_key TEXT UNIQUE, edited INTEGER NOT NULL DEFAULT 0, deleted INTEGER NOT NULL DEFAULT 0,
            ts REAL NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE INDEX messages_thread ON messages(thread, id)",
        "CREATE INDEX messages_state ON messages(state, thread)",
        "ALTER TABLE tasks ADD COLUMN parent_id INTEGER",
        "ALTER TABLE tasks ADD COLUMN thread TEXT",
        "CREATE INDEX tasks_parent ON tasks(parent_id)",
    ],
    [  # 9: the TUI reads the tasks changed since its last look
        "CREATE INDEX tasks_updated ON tasks(updated_at)",
    ],
    [  # 10: the process groups of running commands, so a crashed owner's can be ended before its run resumes
        """CREATE TABLE tool_processes (
            run_id TEXT NOT NULL, pgid INTEGER NOT NULL, leader_start INTEGER NOT NULL, boot_id TEXT NOT NULL,
            PRIMARY KEY (run_id, pgid))""",
    ],
    [  # 11: what a kill could cut in half: a new run's worktree being made (claimed before git makes it, until its
        # run row exists), a merge begun (its squash commit recorded before the target branch moves)
        """CREATE TABLE worktree_claims (
            run_id TEXT PRIMARY KEY, owner_pid INTEGER, owner_host TEXT, owner_boot TEXT, created_at REAL NOT NULL)""",
        """CREATE TABLE merge_intents (
            run_id TEXT PRIMARY KEY, target_branch TEXT NOT NULL, onto TEXT NOT NULL, commit_sha TEXT NOT NULL,
            created_at REAL NOT NULL)""",
    ],
    [  # 12: the notifications outbox, written with the status change that causes it (a crash loses none)
        """CREATE TABLE notification_outbox (
            id INTEGER PRIMARY KEY AUTOINCREMENT, task_id INTEGER NOT NULL, status TEXT NOT NULL,
            reason TEXT NOT NULL, at REAL NOT NULL)""",
        *(f"""CREATE TRIGGER tasks_outbox_{when} AFTER {what} ON tasks WHEN new.status IN {_ANNOUNCED}{also} BEGIN
            INSERT INTO notification_outbox (task_id, status, reason, at)
            VALUES (new.id, new.status, new.reason, new.updated_at); END"""
          for when, what, also in (("insert", "INSERT", ""),
                                   ("update", "UPDATE OF status", " AND new.status IS NOT old.status"))),
        # whether the last notifier stopped cleanly: the outbox then holds only what changed while no daemon ran
        "CREATE TABLE notifier_state (id INTEGER PRIMARY KEY CHECK (id = 1), stopped_cleanly INTEGER NOT NULL)",
        "INSERT INTO notifier_state (id, stopped_cleanly) VALUES (1, 1)",
    ],
    [  # 13: prompt caching per run: input tokens read from the cache (of input_tokens) and what caching saved
        "ALTER TABLE runs ADD COLUMN cache_read_tokens INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE runs ADD COLUMN cache_saved_usd REAL NOT NULL DEFAULT 0",
    ],
    [  # 14: external agents: who does the run, the CLI's own session (what a resume continues), and whether any
        # cost was reported or priced (a CLI that reports none is "cost unknown")
        "ALTER TABLE runs ADD COLUMN agent TEXT NOT NULL DEFAULT 'loopwright'",
        "ALTER TABLE runs ADD COLUMN agent_session TEXT",
        "ALTER TABLE runs ADD COLUMN cost_known INTEGER NOT NULL DEFAULT 1",
    ],
    [  # 15: people who use the HTTP API (their tokens stored hashed), and the change feed its live stream serves: a
        # row per change of a message or of a task's state (with the task's status as of that change), written by
        # triggers in the change's own transaction
        """CREATE TABLE people (
            name TEXT PRIMARY KEY, token_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL, revoked_at REAL)""",
        """CREATE TABLE change_feed (
            id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, ref INTEGER NOT NULL, status TEXT,
            at REAL NOT NULL)""",
        *(f"""CREATE TRIGGER {name} AFTER {what} BEGIN INSERT INTO change_feed (kind, ref, status, at)
            VALUES ('{kind}', {ref}, {status}, (julianday('now') - 2440587.5) * 86400.0); END"""
          for name, what, kind, ref, status in (
              ("feed_message_insert", "INSERT ON messages", "message", "new.id", "NULL"),
              ("feed_message_update", "UPDATE OF text, state, edited, deleted, task_id ON messages WHEN"
               " new.text IS NOT old.text OR new.state IS NOT old.state OR new.edited IS NOT old.edited"
               " OR new.deleted IS NOT old.deleted OR new.task_id IS NOT old.task_id", "message", "new.id", "NULL"),
              ("feed_task_insert", "INSERT ON tasks", "task", "new.id", "new.status"),
              ("feed_task_update", "UPDATE OF status, title, reason ON tasks WHEN new.status IS NOT old.status"
               " OR new.title IS NOT old.title OR new.reason IS NOT old.reason", "task", "new.id", "new.status"),
              ("feed_run_insert", "INSERT ON runs", "task", "new.task_id",
               "(SELECT status FROM tasks WHERE id = new.task_id)"),
              ("feed_run_update", "UPDATE OF status ON runs WHEN new.status IS NOT old.status", "task",
               "new.task_id", "(SELECT status FROM tasks WHERE id = new.task_id)"),
              ("feed_checkpoint_insert", "INSERT ON checkpoints WHEN (SELECT task_id FROM runs WHERE id = new.run_id)"
               " IS NOT NULL", "task", "(SELECT task_id FROM runs WHERE id = new.run_id)",
               "(SELECT t.status FROM tasks t JOIN runs r ON r.task_id = t.id WHERE r.id = new.run_id)"),
          )),
    ],
    [  # 16: per chat bridge, the last message of its thread posted to its service (runtime/chat/bridge.py)
        """CREATE TABLE bridge_cursors (
            name TEXT PRIMARY KEY, thread TEXT NOT NULL, delivered INTEGER NOT NULL, updated_at REAL NOT NULL)""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)
