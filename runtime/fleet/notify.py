"""Notifications from the daemon: a task succeeded, failed or needs review, a run needs a person, the budget is spent.

Events (the JSON a hook gets on stdin, one object, every key always present):
`event` (the kind below), `project` (its root), `task`, `title`, `status`, `reason`, `run`, `branch`,
`cost_usd` (all the task's runs), `day` and `scope` (budget only), `message` (one line for people), `at` (ISO time
it happened), `key` (the event's identity, see below). Fields that do not apply are null; reasons are cut to
`MAX_REASON` characters so an event stays well under a few KB.

- `task_succeeded`; `task_failed` when a task ends `failed`, `killed` or `budget_exceeded` (`status` says which;
  `cancelled` is not announced); `task_needs_review`.
- `run_needs_input`: a run paused for a reason a person must act on (the model unavailable, a quota gate closed
  with automatic resume off or longer than `quota.max_wait_seconds`, a refused key, billing, a context overflow
  that compaction did not cure, ...). Not announced: the daemon's own graceful stop (the next `serve` resumes it),
  a fleet-budget pause (`budget_spent` says that, once), and a pause a person asked for (a pause command, Ctrl-C).
- `budget_spent`: `FleetBudget.exhausted()` gives a reason; once per budget day and scope (`today`, `in total`).

Where events come from: an outbox. A trigger (memory/schema.py) adds a row to `notification_outbox` in the same
transaction as the change of a task's status that may be announced, whoever makes it (a run, the CLI, the chat hub),
so a crash right after the change cannot lose it. A poll takes the outbox's rows, and in that same transaction
claims their events (below) and removes them.

What is announced: what changed while a daemon ran, or while none ran after one crashed. A notifier that starts
after a clean stop empties the outbox first, so a daemon started after a week off does not announce last week's
results, nor runs already paused (a task that ends while no daemon runs is not announced); after a crash (the
`notifier_state` row says no clean stop followed the last start) it announces everything the outbox holds. The
fleet budget is apart: a spent budget blocks work now, so it is announced at start unless it was already announced
for that budget day.

Exactly once, bar a crash during a delivery: each event has a stable key (`task:<id>:<status>`,
`run:<id>:paused:<hash of the reason>`, `budget:<day>:<scope>`) inserted with INSERT OR IGNORE into the
`notifications` table (status `pending`) before anything is delivered; an event whose key is already there is
dropped, in this daemon or the next. The row then records the delivery: status `sent` or `failed`, and a result
such as `hook: exit 0; desktop: exit 0; bell`. A daemon delivers at start the rows an earlier one left `pending`
(it died before their delivery finished), so only a crash between a delivery and its recording sends one twice.

Cheap enough for five polls a second: a poll first compares `PRAGMA data_version` (commits by other connections)
and the connection's `total_changes` (its own writes) with the last poll and stops there when nothing was written;
otherwise it reads the outbox (up to `CHUNK` rows, the oldest first), never the tasks table.

Delivery never blocks the daemon's event loop and never raises into it:
- `notify.command`: run through the shell in the project root, the event as one JSON line on stdin (and
  `LOOPWRIGHT_EVENT` set to its kind), killed with its process group after `notify.timeout`. Its exit status and
  the first line of its stderr go into the row; a failure is said in the daemon log in one line.
- `notify.bell`: "\\a" to stderr, or else stdout, only when that stream is a terminal (a foreground `serve`);
  a detached daemon writes its log to a file and rings nothing. One bell per poll, however many events.
- `notify.desktop`: `notify-send` when it is on PATH, a short title and body, bounded like the hook; its first
  failure (no desktop session, say) is said once, later ones only recorded.
Deliveries start in the order of the events, at most `MAX_RUNNING` at once (so one slow hook does not hold the
others back; they may finish out of order).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from loopwright.harness.commands import kill_group, wait_exit
from loopwright.harness.statuses import TaskStatus
from loopwright.memory import notifications as rows
from loopwright.runtime.fleet.budget import SPENT, FleetBudget
from loopwright.runtime.fleet.daemon import GRACEFUL_STOP
from loopwright.runtime.project import Project

TASK_EVENTS = {TaskStatus.SUCCEEDED: "task_succeeded", TaskStatus.FAILED: "task_failed",
               TaskStatus.KILLED: "task_failed", TaskStatus.BUDGET_EXCEEDED: "task_failed",
               TaskStatus.NEEDS_REVIEW: "task_needs_review"}  # the final statuses but cancelled
CTRL_C = "stopped by the user (Ctrl-C)"  # harness/loop.py: the foreground run's own pause
MAX_REASON = 500
MAX_TITLE = 200
MAX_RUNNING = 4
DESKTOP_TIMEOUT = 10.0
CHUNK = 500  # outbox rows per poll


def _cut(text: str | None, limit: int) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


class Notifier:
    """Turns changes in the store into notifications; `poll` from the daemon's loop, `aclose` when it stops."""

    def __init__(self, project: Project, say: Callable[[str], None], *, which=shutil.which,
                 terminals: Sequence[TextIO] | None = None):
        self.project, self.store, self.say = project, project.store, say
        self.config = project.config.notify
        self.budget = FleetBudget(self.store, project.config.fleet)
        self.notify_send = which("notify-send") if self.config.desktop else None
        self.terminals = (sys.stderr, sys.stdout) if terminals is None else terminals
        self._mark: tuple[int, int] | None = None  # (data_version, total_changes) at the last poll
        self._budget_key: str | None = None
        self._queue: deque[tuple[str, dict, bool]] = deque()
        self._running: set[asyncio.Task] = set()
        self._said: set[str] = set()
        self._closing = False
        rows.start_session(self.store)
        self._unsent = [event for _, event in rows.unsent(self.store)]  # left by a daemon that died: sent first

    # -- finding events -------------------------------------------------------------------------

    def poll(self) -> list[dict]:
        """Notify what changed since the last poll; returns the events notified now. Call it on the event loop."""
        try:
            mark = self._changes()
            if mark == self._mark:  # nothing was written since the last poll
                return []
            sent: list[dict] = []
            try:
                sent += self._unsent + self._task_events()
                self._unsent = []
                budget = self._budget_event()
                if budget and self._record(budget):
                    sent.append(budget)
            finally:  # what was claimed is delivered, even when a later step failed (a full disk)
                if sent:
                    rang = self._ring()
                    self._queue.extend((e["key"], e, rang) for e in sent)
                    self._pump()
            self._mark = mark  # only after a poll that worked: a failed one is tried again
            return sent
        except Exception as e:  # a notification problem must never stop the daemon
            self._say_once(f"poll:{type(e).__name__}", f"notify: {type(e).__name__}: {e}")
            return []

    def _changes(self) -> tuple[int, int]:
        """Commits by other connections, and this connection's own writes: equal marks mean nothing changed."""
        return rows.write_mark(self.store)

    def _task_events(self) -> list[dict]:
        """Take the outbox's rows and claim their events, in one transaction; the events claimed now."""
        claimed: list[dict] = []
        if not rows.outbox(self.store, 1):  # most polls: a read, not the write lock
            return claimed
        with self.store.transaction():
            found = rows.outbox(self.store, CHUNK)
            for row in found:
                event = self._outbox_event(row)
                if event is not None and self._record(event):
                    claimed.append(event)
            if found:
                rows.take_outbox(self.store, found[-1]["id"])
        return claimed

    def _outbox_event(self, row) -> dict | None:
        status = row["status"]
        if row["title"] is None:  # the task is gone
            return None
        task = {"id": row["task_id"], "title": row["title"], "status": status, "reason": row["reason"],
                "updated_at": row["at"]}
        if status == TaskStatus.PAUSED:
            return self._pause_event(task)
        kind = TASK_EVENTS.get(status)
        # the key keeps a task that ends with the same status again from being announced twice
        return self._task_event(task, kind, f"task:{row['task_id']}:{status}") if kind else None

    def _last_run(self, task_id: int):
        return rows.last_run(self.store, task_id)

    def _task_event(self, row, kind: str, key: str, run=None) -> dict:
        run = run or self._last_run(row["id"])
        status, title = row["status"], _cut(row["title"], MAX_TITLE)
        said = {"task_succeeded": "succeeded", "task_needs_review": "needs review",
                "run_needs_input": "paused, needs you"}.get(kind, status.replace("_", " "))
        return self._event(kind, key, at=row["updated_at"], task=row["id"], title=title, status=status,
                           reason=row["reason"], run=run["id"] if run else None, branch=run["branch"] if run else None,
                           cost_usd=round(run["cost"] or 0.0, 6) if run else None,
                           message=f"task {row['id']} {said}: {title}")

    def _pause_event(self, task: dict) -> dict | None:
        run = self._last_run(task["id"])
        if run is None or not self._needs_a_person(run["id"], task["reason"]):
            return None
        digest = hashlib.sha1(task["reason"].encode()).hexdigest()[:12]
        return self._task_event(task, "run_needs_input", f"run:{run['id']}:paused:{digest}", run)

    def _needs_a_person(self, run_id: str, reason: str) -> bool:
        """A pause someone must act on: not the daemon's own stop, not the fleet budget, not one a person asked for."""
        if reason == GRACEFUL_STOP or reason.startswith(SPENT) or reason == CTRL_C:
            return False
        for args in rows.pause_commands(self.store, run_id):
            with contextlib.suppress(ValueError, AttributeError):
                if (json.loads(args).get("reason") or "pause command") == reason:
                    return False
        return True

    def _budget_event(self) -> dict | None:
        spent = self.budget.exhausted()
        if not spent:
            self._budget_key = None
            return None
        scope = "in total" if spent.startswith(f"{SPENT} in total") else "today"
        day = self.budget.day()
        key = f"budget:{day}:{scope}"
        if key == self._budget_key:
            return None
        self._budget_key = key
        return self._event("budget_spent", key, at=time.time(), reason=spent, day=day, scope=scope,
                           message=f"fleet budget spent {scope}: no new model calls until it resets or is raised")

    def _event(self, kind: str, key: str, *, at: float, **fields: Any) -> dict:
        event = {"event": kind, "project": str(self.project.root), "task": None, "title": None, "status": None,
                 "reason": None, "run": None, "branch": None, "cost_usd": None, "day": None, "scope": None,
                 "message": "", "at": _when(at), "key": key}
        event.update(fields)
        event["reason"] = _cut(event["reason"], MAX_REASON)
        return event

    def _record(self, event: dict) -> bool:
        """Claim the event's key; False when it was notified before (by this daemon or an earlier one)."""
        return rows.claim(self.store, event["key"], event["event"], event)

    # -- delivering -----------------------------------------------------------------------------

    def _ring(self) -> bool:
        if not self.config.bell:
            return False
        for stream in self.terminals:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                if stream is not None and stream.isatty():
                    stream.write("\a")
                    stream.flush()
                    return True
        return False

    def _pump(self) -> None:
        if self._closing:
            return
        loop = asyncio.get_running_loop()
        while self._queue and len(self._running) < MAX_RUNNING:
            task = loop.create_task(self._deliver(*self._queue.popleft()))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._pump()

    def _record_result(self, key: str, ok: bool, result: str) -> None:
        with contextlib.suppress(Exception):
            rows.record_result(self.store, key, ok, result)

    async def _deliver(self, key: str, event: dict, rang: bool) -> None:
        results: list[str] = []
        ok = True
        try:
            data = (json.dumps(event, ensure_ascii=False) + "\n").encode()
            jobs = []
            if self.config.command:
                jobs.append(self._hook(self.config.command, data, event["event"]))
            if self.notify_send:
                title = f"loopwright: {event['message']}"
                body = event["reason"] or str(self.project.root)
                jobs.append(self._run([self.notify_send, "--app-name=loopwright", "--", _cut(title, 120),
                                       _cut(body, 300)], None, min(self.config.timeout, DESKTOP_TIMEOUT)))
            outcomes = await asyncio.gather(*jobs)
            if self.config.command:
                hook_ok, hook_result = outcomes[0]
                ok = hook_ok
                results.append(f"hook: {hook_result}")
                if not hook_ok:
                    self.say(f"notify: the hook command failed for {key}: {hook_result}")
            if self.notify_send:
                desk_ok, desk_result = outcomes[-1]
                results.append(f"desktop: {desk_result}")
                if not desk_ok:
                    self._say_once("desktop", f"notify: notify-send failed ({desk_result}); said once")
                if not self.config.command:
                    ok = desk_ok
            if rang:
                results.append("bell")
            self._record_result(key, ok, "; ".join(results) or "nothing to deliver to")
        except asyncio.CancelledError:
            self._record_result(key, False, "; ".join([*results, "not delivered: the daemon stopped first"]))
            raise
        except Exception as e:  # never into the daemon
            self._record_result(key, False, f"{type(e).__name__}: {e}")
            self.say(f"notify: delivering {key} failed: {type(e).__name__}: {e}")

    async def _hook(self, command: str, data: bytes, kind: str) -> tuple[bool, str]:
        env = {**os.environ, "LOOPWRIGHT_EVENT": kind, "LOOPWRIGHT_PROJECT": str(self.project.root)}
        return await self._run(["/bin/sh", "-c", command], data, self.config.timeout, env=env)

    async def _run(self, argv: list[str], data: bytes | None, timeout: float,
                   env: dict | None = None) -> tuple[bool, str]:
        """Run argv in its own process group, `data` on stdin; (ok, "exit N[: first stderr line]")."""
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: a backgrounded child cannot hold us up
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=str(self.project.root), env=env, stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.DEVNULL, stderr=err, start_new_session=True)
            except OSError as e:
                return False, f"cannot start: {e}"
            try:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    if data:
                        proc.stdin.write(data)
                        await asyncio.wait_for(proc.stdin.drain(), timeout)
                    proc.stdin.close()
                if not await wait_exit(proc, timeout):
                    kill_group(proc)
                    await wait_exit(proc, 5.0)
                    return False, f"timed out after {timeout:g}s (killed)"
            except TimeoutError:
                kill_group(proc)
                return False, f"timed out after {timeout:g}s writing its stdin (killed)"
            except asyncio.CancelledError:
                kill_group(proc)
                raise
            err.seek(0)
            lines = [ln.strip() for ln in err.read(4096).decode(errors="replace").splitlines() if ln.strip()]
        code = proc.returncode
        if code == 0:
            return True, "exit 0"
        return False, f"exit {code}" + (f": {_cut(lines[0], 300)}" if lines else "")

    def _say_once(self, what: str, text: str) -> None:
        if what not in self._said:
            self._said.add(what)
            self.say(text)

    async def aclose(self) -> None:
        """One last poll (what ended during shutdown), then wait up to `notify.timeout` for deliveries to finish."""
        self.poll()
        deadline = time.monotonic() + self.config.timeout + 1.0
        while self._running:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await asyncio.wait(set(self._running), timeout=left)
        self._closing = True  # past the deadline: start nothing more
        for task in list(self._running):
            task.cancel()
        if self._running:
            await asyncio.wait(set(self._running), timeout=5.0)
        while self._queue:  # never started: say so in their rows
            key = self._queue.popleft()[0]
            self._record_result(key, False, "not delivered: the daemon stopped first")
        self._closing = False
        with contextlib.suppress(Exception):  # not recorded (a full disk): the next start takes it for a crash
            rows.end_session(self.store)
