"""The store: one SQLite database per project (`.loopwright/state.db`), the single source of truth.

Opened through sqlite-utils in WAL mode so several processes (a run, the CLI,
later the daemon and the TUI) read and write it at once. The schema is
versioned with `PRAGMA user_version` and migrated in small transactions on
open. Events are append-only (triggers refuse UPDATE and DELETE) and writing
one is a single INSERT, whatever the length of the run. Status changes are
single guarded UPDATEs, so two processes can never both move a run or task.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from loopwright.harness.events import (
    CheckpointMade,
    ConversationReset,
    MessageAdded,
    ModelCalled,
    StatusChanged,
    parse_event,
)
from loopwright.harness.messages import Message
from loopwright.harness.processes import boot_id
from loopwright.harness.statuses import (
    RUN_COMMANDS,
    RUN_FINAL,
    RUN_TRANSITIONS,
    TASK_TRANSITIONS,
    CommandKind,
    CommandStatus,
    RunStatus,
    TaskStatus,
    allowed_from,
)
from loopwright.memory.database import StoreError, connect, migrate, transaction
from loopwright.memory.schema import MIGRATIONS
from loopwright.memory.schema import SCHEMA_VERSION as SCHEMA_VERSION  # re-exported: callers read it here


def owner() -> tuple[int, str, str]:
    """This process as the owner of a row: (pid, host, boot)."""
    return os.getpid(), socket.gethostname(), boot_id()


def owner_alive(pid: int | None, host: str | None, boot: str | None) -> bool:
    """True when the process recorded as (pid, host, boot) still exists on this host."""
    if not pid or host != socket.gethostname():
        return False
    if boot and boot != boot_id():
        return False  # the machine rebooted since
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return True


class Task(BaseModel):
    id: int
    title: str
    goal: str
    check_cmd: str | None
    status: TaskStatus
    priority: int
    target_branch: str | None
    options: dict
    reason: str
    created_at: float
    updated_at: float
    parent_id: int | None = None  # a part of a chat request that fanned out
    thread: str | None = None  # the chat thread the task came from


class Run(BaseModel):
    id: str
    task_id: int
    status: RunStatus
    reason: str
    provider: str
    model: str
    worktree: str
    branch: str
    base_commit: str
    target_branch: str
    step: int
    model_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    active_seconds: float
    last_action: str
    merge_commit: str | None
    owner_pid: int | None
    owner_host: str | None
    owner_boot: str | None = None
    heartbeat_at: float | None
    started_at: float
    ended_at: float | None
    cache_read_tokens: int = 0  # of input_tokens, read from the provider's prompt cache
    cache_saved_usd: float = 0.0  # what prompt caching saved against sending the same input uncached
    agent: str = "loopwright"  # who did the run: loopwright, or an external CLI agent (harness/agents)
    agent_session: str | None = None  # that CLI's session id, which a resume continues
    cost_known: bool = True  # False: a CLI agent that reported no cost (and none could be priced)

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def cache_hit_share(self) -> float:
        """Cache-read tokens over all input tokens (0 before any)."""
        return self.cache_read_tokens / self.input_tokens if self.input_tokens else 0.0

    def owner_alive(self) -> bool:
        """True when the process that owns this run still exists on this host."""
        return owner_alive(self.owner_pid, self.owner_host, self.owner_boot)


class CheckpointRow(BaseModel):
    run_id: str
    seq: int
    sha: str
    step: int
    message: str
    created_at: float


class Command(BaseModel):
    id: int
    run_id: str | None
    kind: str  # a CommandKind; kept a str, so a row of a kind this version does not know is still read (and refused)
    args: dict
    status: CommandStatus
    result: str
    created_at: float
    done_at: float | None


def _row(model: type[BaseModel], row: sqlite3.Row | dict, json_fields: tuple[str, ...] = ()) -> Any:
    data = dict(row)
    for f in json_fields:
        data[f] = json.loads(data[f])
    return model.model_validate(data)


def task_of(row: sqlite3.Row | dict) -> Task:
    """A tasks row as a Task (for the memory modules' own queries)."""
    return _row(Task, row, ("options",))


def run_of(row: sqlite3.Row | dict) -> Run:
    """A runs row as a Run."""
    return _row(Run, row)


def command_of(row: sqlite3.Row | dict) -> Command:
    """A commands row as a Command."""
    return _row(Command, row, ("args",))


class Store:
    """One project's database. Cheap to open; each process opens its own."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.db = connect(self.path)
        self.db.execute("PRAGMA foreign_keys = ON")
        self.listeners: list[Callable[[str | None, BaseModel], None]] = []
        """Called after every event this process appends (live displays, the demo's supervisor)."""
        self._migrate()

    @property
    def conn(self) -> sqlite3.Connection:
        return self.db.conn

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE … COMMIT: the writes inside land together or not at all."""
        with transaction(self.conn) as conn:
            yield conn

    def _migrate(self) -> None:
        migrate(self.db, MIGRATIONS, self.path)

    @property
    def schema_version(self) -> int:
        return self.conn.execute("PRAGMA user_version").fetchone()[0]

    # -- tasks -------------------------------------------------------------------------------

    def create_task(self, goal: str, *, title: str | None = None, check: str | None = None, priority: int = 0,
                    target_branch: str | None = None, options: dict | None = None,
                    status: TaskStatus = TaskStatus.QUEUED) -> Task:
        now = time.time()
        title = title or _title(goal)
        cur = self.conn.execute(
            "INSERT INTO tasks (title, goal, check_cmd, status, priority, target_branch, options, created_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (title, goal, check, status, priority, target_branch, json.dumps(options or {}), now, now),
        )
        assert cur.lastrowid is not None
        return self.task(cur.lastrowid)

    def task(self, task_id: int) -> Task:
        row = self.conn.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise StoreError(f"no task {task_id} (list them with `loopwright tasks`)")
        return _row(Task, row, ("options",))

    def set_task_status(self, task_id: int, status: str, *, reason: str = "", only_from: tuple[str, ...] = ()) -> bool:
        """A task's own move (harness/statuses.py, TASK_TRANSITIONS), from one of `only_from` if given; a guarded
        UPDATE: False when the task is in a status the move may not start from."""
        allowed = allowed_from(status, only_from or None, TASK_TRANSITIONS)
        if not allowed:
            return False
        sql = (f"UPDATE tasks SET status = ?, reason = ?, updated_at = ? WHERE id = ?"
               f" AND status IN ({','.join('?' * len(allowed))})")
        return self.conn.execute(sql, [status, reason, time.time(), task_id, *allowed]).rowcount == 1

    def update_task(self, task_id: int, *, priority: int | None = None, options: dict | None = None,
                    only_from: tuple[str, ...] = ()) -> bool:
        """Change a task's priority and/or merge `options` into its options (a guarded UPDATE)."""
        sets: list[str] = ["updated_at = ?"]
        params: list[Any] = [time.time()]
        if priority is not None:
            sets.append("priority = ?")
            params.append(priority)
        if options:
            sets.append("options = json_patch(options, ?)")
            params.append(json.dumps(options))
        sql = f"UPDATE tasks SET {', '.join(sets)} WHERE id = ?"
        params.append(task_id)
        if only_from:
            sql += f" AND status IN ({','.join('?' * len(only_from))})"
            params += list(only_from)
        return self.conn.execute(sql, params).rowcount == 1

    def tasks(self, *, statuses: tuple[str, ...] = ()) -> list[Task]:
        sql, params = "SELECT * FROM tasks", []
        if statuses:
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            params = list(statuses)
        return [_row(Task, r, ("options",)) for r in self.conn.execute(sql + " ORDER BY id", params)]

    def queue(self) -> list[Task]:
        """Queued tasks in the order they should start: priority (high first), then FIFO."""
        return [_row(Task, r, ("options",)) for r in self.conn.execute(
            "SELECT * FROM tasks WHERE status = ? ORDER BY priority DESC, id", (TaskStatus.QUEUED,))]

    def claim_task(self, task_id: int) -> bool:
        """queued -> running, for exactly one caller."""
        return self.set_task_status(task_id, TaskStatus.RUNNING, only_from=(TaskStatus.QUEUED,))

    def add_dependencies(self, task_id: int, depends_on: list[int]) -> None:
        """Record that `task_id` waits for `depends_on`; unknown ids and cycles are refused."""
        with self.transaction() as conn:
            for dep in depends_on:
                if dep == task_id:
                    raise StoreError(f"task {task_id} cannot wait for itself")
                if conn.execute("SELECT 1 FROM tasks WHERE id = ?", (dep,)).fetchone() is None:
                    raise StoreError(f"--after {dep}: there is no task {dep} (see `loopwright tasks`)")
                if task_id in self._ancestors(dep):
                    raise StoreError(f"--after {dep} would make a dependency cycle through task {task_id}")
                conn.execute("INSERT OR IGNORE INTO task_deps (task_id, depends_on) VALUES (?, ?)", (task_id, dep))

    def _ancestors(self, task_id: int) -> set[int]:
        rows = self.conn.execute(
            "WITH RECURSIVE up(id) AS (SELECT depends_on FROM task_deps WHERE task_id = ?"
            " UNION SELECT d.depends_on FROM task_deps d JOIN up ON d.task_id = up.id) SELECT id FROM up",
            (task_id,)).fetchall()
        return {r[0] for r in rows}

    def dependencies(self, task_id: int) -> list[Task]:
        return [_row(Task, r, ("options",)) for r in self.conn.execute(
            "SELECT t.* FROM tasks t JOIN task_deps d ON d.depends_on = t.id WHERE d.task_id = ? ORDER BY t.id",
            (task_id,))]

    # -- skills --------------------------------------------------------------------------------

    def disabled_skills(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT name FROM disabled_skills")}

    def set_skill_enabled(self, name: str, enabled: bool) -> None:
        if enabled:
            self.conn.execute("DELETE FROM disabled_skills WHERE name = ?", (name,))
        else:
            self.conn.execute("INSERT OR IGNORE INTO disabled_skills (name, disabled_at) VALUES (?, ?)",
                              (name, time.time()))

    # -- runs --------------------------------------------------------------------------------

    def create_run(self, task_id: int, *, provider: str, model: str, worktree: str, branch: str, base_commit: str,
                   target_branch: str, run_id: str | None = None) -> Run:
        run_id = run_id or new_run_id()
        now = time.time()
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO runs (id, task_id, status, provider, model, worktree, branch, base_commit, target_branch,"
                " owner_pid, owner_host, owner_boot, heartbeat_at, started_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (run_id, task_id, RunStatus.RUNNING, provider, model, worktree, branch, base_commit, target_branch,
                 *owner(), now, now),
            )
            conn.execute("UPDATE tasks SET status = ?, updated_at = ? WHERE id = ?", (TaskStatus.RUNNING, now, task_id))
            conn.execute("DELETE FROM worktree_claims WHERE run_id = ?", (run_id,))  # the run owns its worktree now
        return self.run(run_id)

    def run(self, run_id: str) -> Run:
        """A run by id or unambiguous id prefix."""
        rows = self.conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchall()
        if not rows and run_id:
            rows = self.conn.execute("SELECT * FROM runs WHERE id LIKE ? || '%' LIMIT 3", (run_id,)).fetchall()
        if not rows:
            raise StoreError(f"no run '{run_id}' (list them with `loopwright runs`)")
        if len(rows) > 1:
            raise StoreError(f"run id '{run_id}' is ambiguous: {', '.join(r['id'] for r in rows)} …; type more of it")
        return _row(Run, rows[0])

    def runs(self, *, task_id: int | None = None, statuses: tuple[str, ...] = ()) -> list[Run]:
        sql, params = "SELECT * FROM runs WHERE 1", list[Any]()
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            params += list(statuses)
        return [_row(Run, r) for r in self.conn.execute(sql + " ORDER BY started_at", params)]

    def transition_run(self, run_id: str, status: str, *, only_from: tuple[str, ...], reason: str = "",
                       task_status: str | None = None, task_reason: str | None = None, **fields: Any) -> bool:
        """Move a run to `status` if (and only if) it is in one of `only_from` and RUN_TRANSITIONS allows the move
        (harness/statuses.py); logs the change.

        The task follows (to `task_status`, default the same word; `task_reason`, default the run's) in the same
        transaction.
        """
        only_from = allowed_from(status, only_from, RUN_TRANSITIONS)
        if not only_from:
            return False
        now = time.time()
        sets = ["status = ?", "reason = ?"] + [f"{k} = ?" for k in fields]
        params: list[Any] = [status, reason, *fields.values()]
        if status in RUN_FINAL:
            sets.append("ended_at = ?")
            params.append(now)
        sql = f"UPDATE runs SET {', '.join(sets)} WHERE id = ? AND status IN ({','.join('?' * len(only_from))})"
        with self.transaction() as conn:
            if conn.execute(sql, [*params, run_id, *only_from]).rowcount != 1:
                return False
            task_id = conn.execute("SELECT task_id FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
            conn.execute("UPDATE tasks SET status = ?, reason = ?, updated_at = ? WHERE id = ?",
                         (task_status or status, task_reason or reason, now, task_id))
            self.append(run_id, StatusChanged(status=status, reason=reason))
        return True

    def claim_run(self, run_id: str, *, only_from: tuple[str, ...]) -> bool:
        """Make this process the owner of a run (resume); a guarded UPDATE, so only one process wins."""
        with self.transaction() as conn:
            run = self.run(run_id)
            if (run.status not in allowed_from(RunStatus.RUNNING, only_from, RUN_TRANSITIONS)
                    or (run.status == RunStatus.RUNNING and run.owner_alive())):
                return False
            ok = conn.execute(
                "UPDATE runs SET status = ?, reason = '', owner_pid = ?, owner_host = ?, owner_boot = ?,"
                " heartbeat_at = ?, ended_at = NULL WHERE id = ? AND status = ? AND coalesce(owner_pid, 0) = ?",
                (RunStatus.RUNNING, *owner(), time.time(), run.id, run.status, run.owner_pid or 0),
            ).rowcount == 1
            if ok:
                conn.execute("UPDATE tasks SET status = ?, reason = '', updated_at = ? WHERE id = ?",
                             (TaskStatus.RUNNING, time.time(), run.task_id))
                self.append(run.id, StatusChanged(status=RunStatus.RUNNING, reason="resumed"))
            return ok

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Progress fields (step, last_action, active_seconds, …); never the status."""
        assert "status" not in fields, "status changes go through transition_run"
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.conn.execute(f"UPDATE runs SET {sets}, heartbeat_at = ? WHERE id = ?",
                          (*fields.values(), time.time(), run_id))

    def record_model_call(self, run_id: str, call: ModelCalled, message: Message | None,
                          budget_day: str | None = None, progress: dict[str, Any] | None = None) -> None:
        """One model answer: its message, its usage event, the run's counters and the fleet's spend, at once.

        A reflection call costs like any other but is not one of the run's model turns (`model_calls`).
        `progress`: fields `update_run` would set, written by the same statement (one commit per answer)."""
        tokens_in = call.usage.input_tokens + call.usage.cache_read_tokens + call.usage.cache_write_tokens
        progress = progress or {}
        assert "status" not in progress, "status changes go through transition_run"
        sets = "".join(f", {k} = ?" for k in progress)
        with self.transaction() as conn:
            self.append(run_id, call)
            if message is not None:
                self.append(run_id, MessageAdded(message=message))
            conn.execute(
                "UPDATE runs SET model_calls = model_calls + ?, input_tokens = input_tokens + ?,"
                " output_tokens = output_tokens + ?, cost_usd = cost_usd + ?,"
                f" cache_read_tokens = cache_read_tokens + ?, cache_saved_usd = cache_saved_usd + ?{sets},"
                " heartbeat_at = ? WHERE id = ?",
                (int(call.purpose != "reflection"), tokens_in, call.usage.output_tokens, call.cost_usd,
                 call.usage.cache_read_tokens, call.saved_usd, *progress.values(), time.time(), run_id),
            )
            if budget_day is not None:
                conn.execute(
                    "INSERT INTO fleet_usage (day, usd, tokens) VALUES (?, ?, ?) ON CONFLICT(day) DO UPDATE"
                    " SET usd = usd + excluded.usd, tokens = tokens + excluded.tokens",
                    (budget_day, call.cost_usd, tokens_in + call.usage.output_tokens))

    # -- events ------------------------------------------------------------------------------

    def append(self, run_id: str | None, event: BaseModel) -> int:
        """Append one event: a single INSERT."""
        cur = self.conn.execute(
            "INSERT INTO events (run_id, ts, type, data) VALUES (?, ?, ?, ?)",
            (run_id, time.time(), event.type, event.model_dump_json()),  # type: ignore[attr-defined]
        )
        for listener in self.listeners:
            listener(run_id, event)
        return cur.lastrowid  # type: ignore[return-value]

    def events(self, run_id: str, *, after: int = 0, types: tuple[str, ...] = ()) -> list[tuple[int, float, Any]]:
        sql, params = "SELECT id, ts, data FROM events WHERE run_id = ? AND id > ?", [run_id, after]
        if types:
            sql += f" AND type IN ({','.join('?' * len(types))})"
            params += list(types)
        return [(r[0], r[1], parse_event(r[2])) for r in self.conn.execute(sql + " ORDER BY id", params)]

    def last_event_id(self) -> int:
        """The id of the newest event of any run (0 before the first)."""
        return self.conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]

    def event_count(self, run_id: str) -> int:
        return self.conn.execute("SELECT count(*) FROM events WHERE run_id = ?", (run_id,)).fetchone()[0]

    def last_event(self, run_id: str, types: tuple[str, ...]) -> tuple[int, float, Any] | None:
        """The run's newest event of these kinds (id, ts, event), or None."""
        row = self.conn.execute(f"SELECT id, ts, data FROM events WHERE run_id = ? AND type IN "
                                f"({','.join('?' * len(types))}) ORDER BY id DESC LIMIT 1", (run_id, *types)).fetchone()
        return None if row is None else (row[0], row[1], parse_event(row[2]))

    def conversation(self, run_id: str) -> list[Message]:
        """The run's conversation as it stands: the last reset's messages plus every message after it."""
        row = self.conn.execute(
            "SELECT id FROM events WHERE run_id = ? AND type = 'conversation_reset' ORDER BY id DESC LIMIT 1",
            (run_id,),
        ).fetchone()
        if row is None:
            return []
        messages: list[Message] = []
        for _, _, event in self.events(run_id, after=row[0] - 1, types=("conversation_reset", "message")):
            if isinstance(event, ConversationReset):
                messages = list(event.messages)
            elif isinstance(event, MessageAdded):
                messages.append(event.message)
        return messages

    # -- checkpoints -------------------------------------------------------------------------

    def add_checkpoint(self, run_id: str, *, sha: str, step: int, message: str) -> CheckpointRow:
        with self.transaction() as conn:
            seq = conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM checkpoints WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
            conn.execute("INSERT INTO checkpoints (run_id, seq, sha, step, message, created_at) VALUES (?,?,?,?,?,?)",
                         (run_id, seq, sha, step, message, time.time()))
            self.append(run_id, CheckpointMade(seq=seq, sha=sha, step=step, message=message))
        return CheckpointRow(run_id=run_id, seq=seq, sha=sha, step=step, message=message, created_at=time.time())

    def checkpoints(self, run_id: str) -> list[CheckpointRow]:
        return [_row(CheckpointRow, r) for r in
                self.conn.execute("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY seq", (run_id,))]

    # -- scratch pads ------------------------------------------------------------------------

    def scratchpad(self, run_id: str) -> RunScratchpad:
        return RunScratchpad(self, run_id)

    # -- progress files ----------------------------------------------------------------------

    def progress(self, task_id: int) -> str:
        """The task's progress file ('' before its first attempt ended)."""
        row = self.conn.execute("SELECT content FROM task_progress WHERE task_id = ?", (task_id,)).fetchone()
        return row[0] if row else ""

    def add_progress(self, task_id: int, entry: str) -> None:
        """Append one entry (an attempt's end) to the task's progress file: one statement, never a rewrite."""
        self.conn.execute(
            "INSERT INTO task_progress (task_id, content, updated_at) VALUES (?, ?, ?) ON CONFLICT(task_id) DO UPDATE"
            " SET content = content || char(10) || char(10) || excluded.content, updated_at = excluded.updated_at",
            (task_id, entry.strip(), time.time()))

    # -- commands (CLI/TUI -> the process that owns a run) -----------------------------------

    def enqueue_command(self, run_id: str | None, kind: CommandKind, args: dict | None = None) -> int:
        cur = self.conn.execute("INSERT INTO commands (run_id, kind, args, created_at) VALUES (?, ?, ?, ?)",
                                (run_id, kind, json.dumps(args or {}), time.time()))
        return cur.lastrowid  # type: ignore[return-value]

    def take_commands(self, run_id: str) -> list[Command]:
        """Claim the commands a run applies itself (messages, rollbacks, pause, kill), oldest first; each once.

        Others (resume, merge, keep) are the daemon's, and stay for it."""
        return self.claim_commands(RUN_COMMANDS, [run_id])

    def claim_commands(self, kinds: tuple[str, ...], run_ids: list[str] | None = None) -> list[Command]:
        """Claim pending commands of these kinds (for these runs only, if given), oldest first; each is taken once."""
        sql = f"UPDATE commands SET status = ? WHERE status = ? AND kind IN ({','.join('?' * len(kinds))})"
        params: list[Any] = [CommandStatus.TAKEN, CommandStatus.PENDING, *kinds]
        if run_ids is not None:
            if not run_ids:
                return []
            sql += f" AND run_id IN ({','.join('?' * len(run_ids))})"
            params += run_ids
        rows = self.conn.execute(sql + " RETURNING *", params).fetchall()
        return sorted((_row(Command, r, ("args",)) for r in rows), key=lambda c: c.id)

    def finish_command(self, command_id: int, *, ok: bool, result: str) -> None:
        self.conn.execute("UPDATE commands SET status = ?, result = ?, done_at = ? WHERE id = ?",
                          (CommandStatus.DONE if ok else CommandStatus.FAILED, result, time.time(), command_id))

    def pending_commands(self, run_id: str) -> list[Command]:
        return [_row(Command, r, ("args",)) for r in self.conn.execute(
            "SELECT * FROM commands WHERE run_id = ? AND status = ? ORDER BY id", (run_id, CommandStatus.PENDING))]


class RunScratchpad:
    """A run's scratch pad in the store (the `Scratchpad` the tools use)."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id

    def read(self) -> str:
        row = self.store.conn.execute("SELECT content FROM scratchpads WHERE run_id = ?", (self.run_id,)).fetchone()
        return row[0] if row else ""

    def append(self, text: str) -> None:
        self.store.conn.execute(
            "INSERT INTO scratchpads (run_id, content, updated_at) VALUES (?, ?, ?) ON CONFLICT(run_id) DO UPDATE"
            " SET content = content || char(10) || excluded.content, updated_at = excluded.updated_at",
            (self.run_id, text, time.time()),
        )

    def replace(self, text: str) -> None:
        self.store.conn.execute(
            "INSERT INTO scratchpads (run_id, content, updated_at) VALUES (?, ?, ?) ON CONFLICT(run_id) DO UPDATE"
            " SET content = excluded.content, updated_at = excluded.updated_at",
            (self.run_id, text, time.time()),
        )


def new_run_id() -> str:
    return secrets.token_hex(4)


def _title(goal: str) -> str:
    line = goal.strip().splitlines()[0] if goal.strip() else "(empty goal)"
    return line if len(line) <= 72 else line[:71] + "…"
