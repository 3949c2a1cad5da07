"""The TUI's data layer: what changed in the store since the last look, read incrementally; no terminal needed.

`Feed.poll()` reads only what is new: events after the last id seen (only the
payloads the fleet view needs are parsed), the runs rows of runs whose events
arrived (now or at the poll before, since a run saves its step just after its
events), tasks by `updated_at` (once a second, or at once when an event says a
status changed) and new rows by primary key, notifications by rowid, and now
and then the daemon's pid, the fleet budget and the provider gates. The whole
runs table is re-read only every `full_every` seconds. `now` is injectable, so
elapsed times, health and gate times can be pinned in tests.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from loopwright.harness.messages import gist_argument
from loopwright.harness.statuses import RUN_FINAL, RunStatus, TaskStatus
from loopwright.memory import feed as reads
from loopwright.memory import notifications
from loopwright.memory.store import Run, Store, Task
from loopwright.runtime.config import FleetBudgetConfig
from loopwright.runtime.display import fmt_elapsed
from loopwright.runtime.fleet.budget import FleetBudget, budget_day
from loopwright.runtime.fleet.quota import closed_gates

STUCK_SECONDS = 300.0  # a running run with no event for this long is flagged
REPEAT_LIMIT = 4  # the same tool call (name and arguments) this many times in a row is flagged
FULL_EVERY = 5.0  # seconds between full re-reads of the runs table
SLOW_EVERY = 1.0  # seconds between reads of the daemon pid, budget, gates and tasks by updated_at
OVERLAP = 2.0  # seconds of updated_at re-read each time: a writer's clock is read before it commits
EVENT_BATCH = 5000
CHUNK = 500  # ids per IN (...)
TASK_EVENTS = ("status", "task_updated", "run_started")  # events that say a task changed
# a running run whose pause or kill reached its process
STOPPING = {RunStatus.PAUSED: "pausing…", RunStatus.KILLED: "killing…"}


@dataclass
class EventRow:
    """One new event; `data` is parsed only for the kinds the fleet view reads (tool calls, stop requests)."""

    id: int
    run_id: str | None
    ts: float
    type: str
    data: dict | None = None


@dataclass
class RunState:
    """One run as the fleet view shows it."""

    run: Run
    title: str = ""
    attempt: int = 1
    last_event: float = 0.0  # ts of its newest event
    action: str = ""  # its newest tool call, e.g. "shell sleep 5" ('' before any: runs.last_action)
    call: str = ""  # that call's name and arguments, to spot repeats
    repeats: int = 0  # how many times in a row
    saved_at: float = 0.0  # when active_seconds was last saved (its heartbeat)
    stopping: str = ""  # "pausing…" or "killing…" from its stop request until its status changes


@dataclass
class Header:
    """The fleet at a glance: daemon, counts, budget, closed provider gates."""

    daemon: int | None = None
    running: int = 0
    paused: int = 0
    queued: int = 0
    blocked: int = 0
    budget: dict = field(default_factory=dict)
    spent: str | None = None
    gates: list[dict] = field(default_factory=list)


@dataclass
class Changes:
    """What one poll found."""

    events: dict[str, list[EventRow]] = field(default_factory=dict)  # by run ('': events of no run)
    runs: set[str] = field(default_factory=set)  # rows changed (new ones included)
    added: set[str] = field(default_factory=set)  # runs seen for the first time
    tasks: set[int] = field(default_factory=set)
    notifications: list[dict] = field(default_factory=list)
    daemon_changed: bool = False
    header_changed: bool = False
    newest: dict[str, float] = field(default_factory=dict)  # run -> ts of its newest event in this poll

    def __bool__(self) -> bool:
        return bool(self.events or self.runs or self.tasks or self.notifications or self.daemon_changed
                    or self.header_changed)


class _Budget(FleetBudget):
    """The fleet budget with the feed's clock."""

    def __init__(self, store: Store, config: FleetBudgetConfig, now: Callable[[], float]):
        super().__init__(store, config)
        self.now = now

    def day(self) -> str:
        return budget_day(self.config.resets_at, self.now())


class Feed:
    """The store as the TUI sees it: state (`runs`, `tasks`, `header`) and `poll()` for what changed."""

    def __init__(self, store: Store, *, daemon: Callable[[], int | None] | None = None,
                 budget: FleetBudgetConfig | None = None, now: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic, stuck_seconds: float = STUCK_SECONDS,
                 repeat_limit: int = REPEAT_LIMIT, full_every: float = FULL_EVERY, slow_every: float = SLOW_EVERY):
        self.store, self.now, self.clock = store, now, clock
        self.daemon = daemon or (lambda: None)
        self.budget = _Budget(store, budget or FleetBudgetConfig(), now)
        self.stuck_seconds, self.repeat_limit = stuck_seconds, repeat_limit
        self.full_every, self.slow_every = full_every, slow_every
        self.runs: dict[str, RunState] = {}
        self.tasks: dict[int, Task] = {}
        self.header = Header()
        self._deps: dict[int, list[int]] = {}
        self._runs_of: dict[int, list[str]] = {}  # task -> its runs, oldest first (attempt numbers)
        self._event_id = self._note_id = self._task_id = 0
        self._task_mark = 0.0
        self._recent: set[str] = set()
        self._next_full = self._next_slow = 0.0
        self._loaded = False

    @classmethod
    def for_project(cls, project, **kw) -> Feed:
        """A feed of a project's store, its daemon pid from the lock file, its fleet budget."""
        from loopwright.runtime.fleet.daemon import daemon_pid

        return cls(project.store, daemon=lambda: daemon_pid(project), budget=project.config.fleet, **kw)

    # -- polling --------------------------------------------------------------------------------

    def poll(self) -> Changes:
        """Read what changed since the last poll (everything, the first time) and return it."""
        ch = Changes()
        t = self.clock()
        if not self._loaded:  # the first screen: its rows and header counts from one read
            with reads.snapshot(self.store):
                self._load(ch)
                self._read_header(ch, slow=True)
            self._loaded = True
            self._next_slow = t + self.slow_every
            return ch
        self._read_events(ch)
        with_events = set(ch.events) - {""}
        reread, self._recent = with_events | self._recent, with_events
        if t >= self._next_full:
            self._read_runs(ch, None)
            self._next_full = t + self.full_every
        elif reread:
            self._read_runs(ch, sorted(reread))
        self._apply_events(ch)
        triggered = any(e.type in TASK_EVENTS for rows in ch.events.values() for e in rows)
        self._read_tasks(ch, by_time=triggered or t >= self._next_slow)
        self._read_notifications(ch)
        if t >= self._next_slow or ch.runs or ch.tasks:
            self._read_header(ch, slow=t >= self._next_slow)
            if t >= self._next_slow:
                self._next_slow = t + self.slow_every
        return ch

    def _load(self, ch: Changes) -> None:
        self._event_id = self.store.last_event_id()
        self._note_id = notifications.last_rowid(self.store)
        self._read_tasks(ch, by_time=True, everything=True)
        self._read_runs(ch, None)
        for rid, state in self.runs.items():  # what the live columns need, for runs still going only
            if state.run.status in RUN_FINAL:
                continue
            state.last_event = reads.last_event_ts(self.store, rid) or 0.0
            calls = reads.recent_tool_calls(self.store, rid, max(self.repeat_limit, 32))
            for data in reversed(calls):
                self._saw_call(state, data)
            last = self.store.last_event(rid, ("status", "stop_requested"))
            if last is not None and last[2].type == "stop_requested":
                state.stopping = STOPPING.get(last[2].status, "")
        self._next_full = self.clock() + self.full_every

    def _read_events(self, ch: Changes) -> None:
        while True:
            rows = reads.events_after(self.store, self._event_id, EVENT_BATCH)
            for eid, rid, ts, kind, data in rows:
                event = EventRow(eid, rid, ts, kind, json.loads(data) if data else None)
                ch.events.setdefault(rid or "", []).append(event)
                if rid:
                    ch.newest[rid] = ts
            if rows:
                self._event_id = rows[-1][0]
            if len(rows) < EVENT_BATCH:
                break

    def _apply_events(self, ch: Changes) -> None:
        for rid, rows in ch.events.items():
            state = self.runs.get(rid)
            if state is None:
                continue
            state.last_event = rows[-1].ts
            for event in rows:
                if event.type == "tool_started":
                    self._saw_call(state, event.data or {})
                elif event.type == "stop_requested":
                    state.stopping = STOPPING.get((event.data or {}).get("status", ""), "")
                elif event.type == "status":
                    state.stopping = ""
                else:
                    continue
                ch.runs.add(rid)

    def _saw_call(self, state: RunState, data: dict) -> None:
        name, args = data.get("name", "?"), data.get("arguments") or {}
        key = name + json.dumps(args, sort_keys=True)
        state.repeats = state.repeats + 1 if key == state.call else 1
        state.call = key
        state.action = f"{name} {gist_argument(args)}".strip()

    def _read_runs(self, ch: Changes, ids: list[str] | None) -> None:
        if ids is None:
            runs = reads.all_runs(self.store)
        else:
            runs = []
            for i in range(0, len(ids), CHUNK):
                runs += reads.runs(self.store, ids[i:i + CHUNK])
            runs.sort(key=lambda r: r.started_at)
        for run in runs:
            state = self.runs.get(run.id)
            if state is None:
                order = self._runs_of.setdefault(run.task_id, [])
                order.append(run.id)
                task = self.tasks.get(run.task_id) or self._task(run.task_id)
                state = self.runs[run.id] = RunState(run=run, title=task.title if task else "?", attempt=len(order),
                                                     last_event=run.started_at, saved_at=run.heartbeat_at or 0.0)
                ch.added.add(run.id)
                ch.runs.add(run.id)
                continue
            if state.run != run:
                if run.active_seconds != state.run.active_seconds:
                    state.saved_at = run.heartbeat_at or state.saved_at
                state.run = run
                ch.runs.add(run.id)

    def _task(self, task_id: int) -> Task | None:
        task = reads.task(self.store, task_id)
        if task is not None:
            self.tasks[task_id] = task
        return task

    def _read_tasks(self, ch: Changes, *, by_time: bool, everything: bool = False) -> None:
        if everything:
            tasks = reads.all_tasks(self.store)
        else:
            tasks = reads.tasks_after(self.store, self._task_id)
            if by_time:
                tasks += reads.tasks_updated(self.store, self._task_mark - OVERLAP, up_to=self._task_id)
        for task in tasks:
            self._task_id = max(self._task_id, task.id)
            self._task_mark = max(self._task_mark, task.updated_at)
            if self.tasks.get(task.id) != task:
                self.tasks[task.id] = task
                ch.tasks.add(task.id)
                for rid in self._runs_of.get(task.id, ()):  # a retitled task, if ever
                    if self.runs[rid].title != task.title:
                        self.runs[rid].title = task.title
                        ch.runs.add(rid)

    def _read_notifications(self, ch: Changes) -> None:
        for rowid, key, kind, payload, created in notifications.since(self.store, self._note_id):
            self._note_id = rowid
            try:
                data = json.loads(payload)
            except ValueError:
                data = {}
            ch.notifications.append({"key": key, "kind": kind, "created_at": created,
                                     "message": data.get("message") or key, **{k: data.get(k) for k in (
                                         "task", "run", "status", "reason")}})

    def _read_header(self, ch: Changes, *, slow: bool) -> None:
        h = self.header
        new = Header(**{**h.__dict__})
        if slow:
            new.daemon = self.daemon()
            new.budget = self.budget.usage()
            new.spent = self.budget.exhausted()
            now = self.now()
            new.gates = [{"gate": g["gate"], "until": now + g["closed_for_seconds"], "reason": g["reason"],
                          "closings_in_a_row": g["closings_in_a_row"]} for g in closed_gates(self.store, now)]
        if slow or ch.runs:
            statuses = [s.run.status for s in self.runs.values()]
            new.running, new.paused = statuses.count(RunStatus.RUNNING), statuses.count(RunStatus.PAUSED)
        if slow or ch.tasks:
            queued = [t.id for t in self.tasks.values() if t.status == TaskStatus.QUEUED]
            new.queued, new.blocked = len(queued), sum(bool(self.waiting_on(t)) for t in queued)
        if new != h:
            ch.header_changed = True
            ch.daemon_changed = new.daemon != h.daemon
            self.header = new

    # -- derived --------------------------------------------------------------------------------

    def dependencies(self, task_id: int) -> list[int]:
        """The tasks `task_id` waits for (`--after`); read once per task (they never change)."""
        if task_id not in self._deps:
            self._deps[task_id] = [t.id for t in self.store.dependencies(task_id)]
        return self._deps[task_id]

    def waiting_on(self, task_id: int) -> list[int]:
        """Its dependencies that have not succeeded yet (a queued task with any is blocked)."""
        return [d for d in self.dependencies(task_id)
                if (t := self.tasks.get(d)) is None or t.status != TaskStatus.SUCCEEDED]

    def queue(self) -> list[Task]:
        """Queued tasks in the order the daemon starts them: priority (high first), then FIFO."""
        return sorted((t for t in self.tasks.values() if t.status == TaskStatus.QUEUED),
                      key=lambda t: (-t.priority, t.id))

    def elapsed(self, run_id: str) -> float:
        """Active time: as saved, plus the time since then while the run is going."""
        state = self.runs[run_id]
        run = state.run
        if run.status != RunStatus.RUNNING:
            return run.active_seconds
        return run.active_seconds + max(0.0, self.now() - (state.saved_at or run.started_at))

    def health(self, run_id: str) -> str:
        """'' when fine; 'stuck M:SS' (no event for `stuck_seconds`) or 'loop ×N' (the same call N times)."""
        state = self.runs[run_id]
        if state.run.status != RunStatus.RUNNING:
            return ""
        if self.repeat_limit and state.repeats >= self.repeat_limit:
            return f"loop ×{state.repeats}"
        idle = self.now() - max(state.last_event, state.run.started_at)
        if idle >= self.stuck_seconds:
            return f"stuck {fmt_elapsed(idle)}"
        return ""

    def status(self, run_id: str) -> str:
        """Its status, or "pausing…"/"killing…" while a running run's pause or kill waits to take effect."""
        state = self.runs[run_id]
        return state.stopping if state.run.status == RunStatus.RUNNING and state.stopping else state.run.status

    def last_action(self, run_id: str) -> str:
        state = self.runs[run_id]
        if state.run.status == RunStatus.RUNNING and state.action:
            return state.action
        return state.run.last_action or state.action
