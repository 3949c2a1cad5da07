"""`loopwright tui`: the feed without a terminal, the views as SVG snapshots, every action through a real daemon.

How to rewrite the snapshots after a deliberate change to the views: see tui_support.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import FINISH, FIX_ADD, call, processes, turn, until, write_script
from textual.widgets import Footer
from tui_support import assert_snapshot, screen_text, wait

from loopwright.harness.events import RunStarted, ToolFinished, ToolStarted
from loopwright.memory.store import Store
from loopwright.runtime.fleet.daemon import daemon_pid
from loopwright.runtime.posting import TaskRequest, post_task
from loopwright.runtime.project import init_project, open_project
from loopwright.tui.app import TuiApp
from loopwright.tui.chat_view import ChatScreen
from loopwright.tui.dialogs import ConfirmScreen, HelpScreen, NewTaskScreen, PathScreen, Prompt
from loopwright.tui.feed import Feed
from loopwright.tui.fleet_view import FleetScreen
from loopwright.tui.queue_view import QueueScreen
from loopwright.tui.run_view import RunScreen
from loopwright.tui.widgets import Banner

NOW = 1767225600.0  # 2026-01-01 00:00 UTC: the fixture's clock


# -- helpers ---------------------------------------------------------------------------------------


def commands(store: Store, kind: str) -> list[tuple]:
    return [tuple(r) for r in store.conn.execute("SELECT status, result FROM commands WHERE kind = ? ORDER BY id",
                                                 (kind,))]


def cell(app, run_id: str, column: str) -> str:
    table = app.screen.table
    return str(table.get_cell(run_id, column))


def select(app, key: str) -> None:
    table = app.screen.table
    table.move_cursor(row=table.get_row_index(key), animate=False)


def toasts(app, text: str) -> list[str]:
    return [t for _, t in app.said if text in t]


def row_of(shown: str, key: str) -> str:
    return next(line for line in shown.splitlines() if key in line)


def fleet_fixture(repo: Path):
    """A store built by hand: fixed run ids and timestamps, a closed gate, a spent share of the day's budget."""
    init_project(repo)
    (repo / "loopwright.toml").write_text("[fleet]\nusd_per_day = 5\n")
    project = open_project(repo)
    store, conn = project.store, project.store.conn
    login = store.create_task("Fix the flaky login test in the auth module", check="pytest -q")
    pages = store.create_task("Add pagination to the users endpoint")
    docs = store.create_task("Write docs for pagination", priority=2)
    store.add_dependencies(docs.id, [pages.id])
    config = store.create_task("Refactor config loading", priority=1)
    deps = store.create_task("Upgrade dependencies")
    store.create_task("Tidy the README", priority=-1)

    def run(task, rid, status, ago, step, tokens, cost, active, action, reason=""):
        store.create_run(task.id, provider="anthropic", model="claude-sonnet-4-5",
                         worktree=f"{repo}/.loopwright/worktrees/{rid}", branch=f"lw/{rid}", base_commit="0" * 40,
                         target_branch="main", run_id=rid)
        ended = NOW - ago + active if status in ("failed", "succeeded") else None
        conn.execute("UPDATE runs SET status = ?, started_at = ?, step = ?, input_tokens = ?, output_tokens = ?,"
                     " cost_usd = ?, active_seconds = ?, last_action = ?, ended_at = ?, heartbeat_at = ?, reason = ?"
                     " WHERE id = ?", (status, NOW - ago, step, tokens, tokens // 20, cost, active, action, ended,
                                       NOW - ago + active, reason, rid))
        conn.execute("UPDATE tasks SET status = ? WHERE id = ?", (status, task.id))

    run(login, "a1b2c3d4", "running", 600, 12, 80000, 0.31, 590, "shell pytest -q")
    run(pages, "e5f60718", "running", 300, 5, 20000, 0.08, 290, "read_file src/users.py")
    run(config, "0badc0de", "failed", 4000, 40, 300000, 1.42, 3000, "finish", "check failed")
    run(deps, "5eed5eed", "paused", 2000, 7, 9000, 0.04, 400, "edit_file requirements.txt", "paused from the TUI")

    def event(rid, ts, e):
        conn.execute("INSERT INTO events (run_id, ts, type, data) VALUES (?, ?, ?, ?)",
                     (rid, ts, e.type, e.model_dump_json()))

    for i in range(5):  # the same call five times in a row: flagged
        event("a1b2c3d4", NOW - 30 + i, ToolStarted(call_id=f"c{i}", name="shell", arguments={"command": "pytest -q"}))
    event("e5f60718", NOW - 200, ToolStarted(call_id="x", name="read_file", arguments={"path": "src/users.py"}))
    conn.execute("UPDATE tasks SET created_at = ?, updated_at = ?", (NOW - 5000, NOW - 5000))
    conn.execute("INSERT INTO fleet_usage (day, usd, tokens) VALUES ('2026-01-01', 1.85, 420000)")
    conn.execute("INSERT INTO quota_gates (key, closed_until, next_slot, hits, reason, updated_at) "
                 "VALUES (?, ?, 0, 2, ?, ?)",
                 ("anthropic/claude-sonnet-4-5", NOW + 7980, "429 rate limited", NOW))
    return project


def fixture_app(project, daemon=4242) -> TuiApp:
    feed = Feed(project.store, daemon=lambda: daemon, budget=project.config.fleet, now=lambda: NOW,
                stuck_seconds=120)
    return TuiApp(project, feed=feed)


# -- the feed --------------------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_feed_reads_only_what_is_new_and_never_a_whole_table_between_full_refreshes(repo, utc):
    project = fleet_fixture(repo)
    store, clock = project.store, Clock()
    feed = Feed(store, now=lambda: NOW, clock=clock, stuck_seconds=120, budget=project.config.fleet)
    first = feed.poll()
    assert first.runs == first.added == {"a1b2c3d4", "e5f60718", "0badc0de", "5eed5eed"}
    assert first.tasks == {1, 2, 3, 4, 5, 6} and first.header_changed
    assert [t.id for t in feed.queue()] == [3, 6] and feed.waiting_on(3) == [2]
    assert (feed.header.running, feed.header.paused, feed.header.queued, feed.header.blocked) == (2, 1, 2, 1)
    assert feed.health("a1b2c3d4") == "loop ×5" and feed.health("e5f60718") == "stuck 3:20"
    assert feed.health("5eed5eed") == "" and feed.elapsed("5eed5eed") == 400
    assert feed.last_action("a1b2c3d4") == "shell pytest -q"
    assert feed.header.gates[0]["until"] == NOW + 7980 and feed.header.budget["day_usd"] == 1.85
    assert not feed.poll()  # nothing new

    queries: list[str] = []
    store.conn.set_trace_callback(queries.append)
    clock.t += 0.1
    store.append("e5f60718", ToolStarted(call_id="y", name="search", arguments={"pattern": "page"}))
    ch = feed.poll()
    assert set(ch.events) == {"e5f60718"} and ch.runs == {"e5f60718"} and not ch.tasks
    assert feed.last_action("e5f60718") == "search page"
    assert feed.health("e5f60718") == ""  # an event just now (NOW is the feed's clock; the event's ts is later)
    store.update_run("e5f60718", step=6)  # a run saves its step just after its events: read once more
    store.set_task_status(6, "cancelled")
    clock.t += 0.1
    assert feed.poll().runs == {"e5f60718"} and feed.runs["e5f60718"].run.step == 6
    clock.t += 0.1
    assert not feed.poll()  # the cancel shows at the next once-a-second read of tasks
    clock.t += 1.0
    ch = feed.poll()
    assert ch.tasks == {6} and [t.id for t in feed.queue()] == [3] and feed.header.queued == 1
    scans = [q for q in queries if " FROM runs" in q and "WHERE" not in q or " FROM events" in q and "id >" not in q]
    assert scans == [], scans
    clock.t += 5.0  # the slow full refresh re-reads the runs table
    store.conn.execute("UPDATE runs SET cost_usd = 0.5 WHERE id = '0badc0de'")  # a change without an event
    assert feed.poll().runs == {"0badc0de"}
    store.conn.set_trace_callback(None)


def test_feed_notifications_once_each_and_the_daemon_coming_and_going(repo, utc):
    project = fleet_fixture(repo)
    store, clock = project.store, Clock()
    pid = [None]
    conn = store.conn
    conn.execute("INSERT INTO notifications (key, kind, payload, created_at) VALUES ('old', 'task_succeeded', '{}', 1)")
    feed = Feed(store, daemon=lambda: pid[0], now=lambda: NOW, clock=clock)
    assert feed.poll().notifications == []  # what was there before the TUI started is not news
    for key, kind in (("task:4:failed", "task_failed"), ("budget:2026-01-01:today", "budget_spent")):
        conn.execute("INSERT INTO notifications (key, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                     (key, kind, json.dumps({"message": f"said {key}"}), NOW))
    clock.t += 0.1
    assert [n["message"] for n in feed.poll().notifications] == ["said task:4:failed", "said budget:2026-01-01:today"]
    clock.t += 0.1
    assert feed.poll().notifications == []
    pid[0] = 777
    clock.t += 1.0
    ch = feed.poll()
    assert ch.daemon_changed and feed.header.daemon == 777
    pid[0] = None
    clock.t += 1.0
    assert feed.poll().daemon_changed and feed.header.daemon is None


def test_feed_sees_a_run_started_after_it_and_counts_attempts(repo, utc):
    project = fleet_fixture(repo)
    store, clock = project.store, Clock()
    feed = Feed(store, clock=clock)
    feed.poll()
    run = store.create_run(1, provider="scripted", model="scripted", worktree="/w", branch="lw/x", base_commit="0",
                           target_branch="main", run_id="f00dcafe")
    store.append(run.id, RunStarted(task_id=1, goal="g", provider="scripted", model="scripted", worktree="/w",
                                    branch="lw/x", base_commit="0"))
    store.append(run.id, ToolStarted(call_id="1", name="write_file", arguments={"path": "a.txt", "content": "x"}))
    store.append(run.id, ToolFinished(call_id="1", name="write_file", is_error=False, duration_ms=1, preview="ok"))
    clock.t += 0.1
    ch = feed.poll()
    assert ch.added == {"f00dcafe"} and feed.runs["f00dcafe"].attempt == 2  # task 1's second run
    assert feed.last_action("f00dcafe") == "write_file a.txt" and ch.newest["f00dcafe"] > 0
    assert 1 in ch.tasks  # run_started: the tasks are read at once, not at the next once-a-second read


def test_the_first_screen_comes_from_one_read_while_the_daemon_starts_runs(repo, utc):
    """Defect 12: a daemon starting runs while the TUI loads (`tui --serve`) must not give a header and rows that
    disagree. Here another connection starts three runs just as the feed reads the runs table, after it read the
    tasks: read apart, the tasks are still queued while their runs are running (counted twice)."""
    init_project(repo)
    project = open_project(repo)
    tasks = [project.store.create_task(f"task {i}") for i in range(3)]
    daemon = Store(project.db_path)
    started: list[str] = []

    def start_runs(sql: str) -> None:
        if sql.startswith("SELECT * FROM runs ORDER BY") and not started:
            for t in tasks:
                started.append(daemon.create_run(t.id, provider="scripted", model="scripted", worktree=f"/w{t.id}",
                                                 branch=f"lw/{t.id}", base_commit="0", target_branch="main").id)

    async def scenario():
        app = fixture_app(project)
        project.store.conn.set_trace_callback(start_runs)
        async with app.run_test(size=(120, 40)) as pilot:
            project.store.conn.set_trace_callback(None)
            await pilot.pause(0.1)
            assert started, "the daemon's writes did not happen during the first load"
            h = app.feed.header
            table = app.screen.table
            rows = [table.get_cell(k, "status").plain for k in table.keys]
            assert (h.running, h.queued) in ((0, 3), (3, 0)), (h.running, h.queued)
            assert rows.count("running") == h.running
            assert f"runs: {h.running} running, 0 paused · queue: {h.queued}" in screen_text(app)

    asyncio.run(scenario())


# -- the views, as pictures -----------------------------------------------------------------------


def test_snapshots_of_the_fleet_queue_and_help(repo, utc):
    project = fleet_fixture(repo)

    async def scenario():
        app = fixture_app(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            await assert_snapshot(pilot, app, "fleet")
            await pilot.press("t")
            await pilot.pause(0.2)
            await assert_snapshot(pilot, app, "queue")
            await pilot.press("question_mark")
            await pilot.pause(0.2)
            assert isinstance(app.screen, HelpScreen)
            await assert_snapshot(pilot, app, "help")
            rows = app.screen.rows  # every row, also those scrolled out of view
            for key, does in (("p", "pause the run"), ("x", "kill the run"), ("M", "merge now"), ("K", "keep for"),
                              ("w", "worktree path"), ("+", "raise the task's priority"), ("c", "cancel the queued"),
                              ("n", "new task"), ("ctrl+p", "command palette"), ("g", "chat"),
                              ("b", "roll the worktree back")):
                assert any(row[1] == key and does in row[2] for row in rows), (key, rows)
            assert "command palette" in screen_text(app)  # the top of the list is on screen
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

    asyncio.run(scenario())


def test_a_terminal_of_80_by_24_shows_what_matters(repo, utc):
    project = fleet_fixture(repo)

    async def scenario():
        app = fixture_app(project, daemon=None)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.2)
            await assert_snapshot(pilot, app, "fleet_80x24")
            shown = screen_text(app)
            assert "Read-only: no daemon is running" in shown and "loopwright serve --detach" in shown
            row = next(line for line in shown.splitlines() if "a1b2c3d4" in line)
            assert "running" in row and "loop ×5" in row and "1 Fix the flaky" in row
            lines = shown.splitlines()
            for key in ("? Help", "t Queue", "n New", "g Chat", "q Quit", "p Pause", "x Kill"):  # the footer, whole
                assert key in lines[-1], (key, lines[-1])
            head = next(line for line in lines if line.startswith(" Run "))  # the columns that matter, narrowed
            assert head.split()[:5] == ["Run", "Status", "Health", "Task", "Cost"] and "Last action" in head
            assert "read_file s…" in row_of(shown, "e5f60718") and "$0.080" in row_of(shown, "e5f60718")
            assert "budget: $1.85 spent today, $3.15 left" in shown  # on a line of its own, not wrapped
            await pilot.press("down")
            assert app.screen.selected() == "a1b2c3d4"  # newest first: the second row
            await pilot.press("enter")  # the run screen, for the run under the cursor
            await wait(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            assert app.screen.run_id == "a1b2c3d4" and app.screen.read_only
            assert app.actions.by == f"tui ({app.author})"  # what a rollback from here is logged as
            footer = screen_text(app).splitlines()[-1]
            assert "esc Back" in footer and "f Fleet" in footer and "? Help" in footer
            await pilot.press("escape")
            await wait(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet again")
            assert app.screen.selected() == "a1b2c3d4"
            await pilot.press("enter", "f")  # f goes to the fleet from a run too
            await wait(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet from the run")
            await pilot.press("t")
            await wait(pilot, lambda: "blocked" in screen_text(app), "the queue view")
            assert "f Fleet" in screen_text(app).splitlines()[-1]
            await pilot.press("question_mark")
            await wait(pilot, lambda: isinstance(app.screen, HelpScreen), "the help")
            await assert_snapshot(pilot, app, "help_80x24")
            help_text = " ".join(screen_text(app).split())
            for does in ("open the run: transcript, diff, checkpoints, rollback",
                         "send the agent a message (read at its next model call)"):
                assert does in help_text  # wrapped, not cut
            await pilot.press("escape", "f")
            await wait(pilot, lambda: isinstance(app.screen, FleetScreen), "the fleet from the queue")

            await pilot.press("n")  # without a daemon too: the store keeps the task until one starts
            await wait(pilot, lambda: isinstance(app.screen, NewTaskScreen), "the new task form")
            assert "priority (higher starts first): ▊  0" in screen_text(app)  # the field says what it is
            await pilot.press(*"write notes", "ctrl+s")
            await wait(pilot, lambda: not isinstance(app.screen, NewTaskScreen), "the task posted")
            assert project.store.tasks()[-1].goal == "write notes"
            assert toasts(app, "queued: write notes; no daemon is running: nothing runs until one starts")

    asyncio.run(scenario())


def test_going_between_views_leaves_little_for_the_garbage_collector(repo, utc):
    """Issue 25's worst key waits were full garbage collections: they walked everything the app keeps (now frozen
    after the first frame) and the keys of every footer ever shown (a footer is no longer rebuilt with the same
    keys: each rebuild left its old keys referenced)."""
    project = fleet_fixture(repo)

    async def scenario():
        app = fixture_app(project)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(0.2)
            assert gc.get_freeze_count() > 0
            # built after the first frame, not shown: their first opening builds nothing
            assert app.get_screen_stack("queue")[0].table.row_count == 2 and isinstance(app.screen, FleetScreen)
            assert app.get_screen("chat").query("#say") and app.get_screen("help").query("#help-table")
            footer = app.screen.query_one(Footer)
            keys = list(footer.children)
            for _ in range(3):
                for key, view in (("t", QueueScreen), ("f", FleetScreen), ("g", ChatScreen), ("escape", FleetScreen)):
                    await pilot.press(key)
                    await wait(pilot, lambda view=view: isinstance(app.screen, view), view.__name__)
            await pilot.pause(0.2)
            assert list(footer.children) == keys  # the same widgets, not rebuilt
            assert "t Queue" in screen_text(app).splitlines()[-1]
        assert gc.get_freeze_count() == 0  # the process hosting the app collects them again

    asyncio.run(scenario())


# -- every action through a real daemon ------------------------------------------------------------


def slow_script(tmp_path: Path, name: str, steps: int = 60, then=(FINISH,)) -> Path:
    return write_script(tmp_path / f"{name}.json",
                        [turn(call("shell", command="sleep 0.3")) for _ in range(steps)] + list(then))


def test_run_actions_from_the_fleet_view_through_the_daemon(repo, cli, daemon, tmp_path):
    slow = cli.json(repo, "post", "slow one", "--script", slow_script(tmp_path, "slow"), "--check", "true")["task"]
    daemon(max_parallel=2)
    project = open_project(repo)
    store = project.store
    until(lambda: store.runs(task_id=slow), "the slow run to start")
    rid = store.runs(task_id=slow)[0].id

    async def scenario():
        app = TuiApp(project)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait(pilot, lambda: rid in app.screen.shown and app.feed.header.daemon, "the run on screen")
            # posted once the TUI watches (what `loopwright post` does): a TUI toasts only what happens after it
            # opened. No check: the run is kept for review
            review = post_task(project, TaskRequest(goal="fix add, for review", script=str(
                write_script(tmp_path / "r.json", [FIX_ADD, FINISH])))).id
            await wait(pilot, lambda: store.runs(task_id=review), "the run for review to start")
            reviewed = store.runs(task_id=review)[0].id
            assert cell(app, rid, "status") == "running" and "slow one" in cell(app, rid, "task")
            select(app, rid)

            await pilot.press("m")
            assert isinstance(app.screen, Prompt)
            await pilot.press(*"hurry up", "enter")
            await wait(pilot, lambda: store.events(rid, types=("notice",)), "the message to reach the agent")
            assert "hurry up" in store.events(rid, types=("notice",))[0][2].text
            assert commands(store, "notify") == [("done", "applied")]

            await pilot.press("r")  # a running run cannot be resumed: an error toast, no crash
            assert toasts(app, "only a paused or budget-stopped run can be resumed") and not commands(store, "resume")

            await pilot.press("p")
            await wait(pilot, lambda: cell(app, rid, "status") == "paused", "the pause on screen")
            assert store.run(rid).status == "paused" and [c[0] for c in commands(store, "pause")] == ["done"]
            await pilot.press("ctrl+p")  # the command palette: keep for review, by name
            await pilot.press(*"keep run", "enter")
            await wait(pilot, lambda: commands(store, "keep"), "the keep command")
            await wait(pilot, lambda: commands(store, "keep")[0][0] == "done", "the daemon to apply it")
            assert store.task(slow).options["on_success"] == "keep"

            await pilot.press("r")
            await wait(pilot, lambda: cell(app, rid, "status") == "running", "the resume on screen")
            assert [c[0] for c in commands(store, "resume")] == ["done"]

            await pilot.press("w")
            assert isinstance(app.screen, PathScreen) and app.screen.path == store.run(rid).worktree
            await wait(pilot, lambda: store.run(rid).worktree in "".join(screen_text(app).split()), "the path shown")
            await pilot.press("c")
            assert toasts(app, f"copied {store.run(rid).worktree}")

            await pilot.press("x")  # asks first
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")
            assert not commands(store, "kill")
            for _ in range(5):
                await pilot.press("x", "y")
            assert len(commands(store, "kill")) == 1
            await wait(pilot, lambda: cell(app, rid, "status") == "killed", "the kill on screen")
            await wait(pilot, lambda: toasts(app, f"task {slow} killed"), "the toast for the killed task")

            await wait(pilot, lambda: cell(app, reviewed, "status") == "needs review", "the run kept for review")
            await wait(pilot, lambda: toasts(app, f"task {review} needs review"), "its toast")
            select(app, reviewed)
            await pilot.press("M")
            await wait(pilot, lambda: commands(store, "merge") and commands(store, "merge")[0][0] == "done", "merge")
            await wait(pilot, lambda: cell(app, reviewed, "status") != "needs review", "the merge on screen")
            await pilot.pause(0.3)
            assert len(toasts(app, f"task {slow} killed")) == 1 and len(toasts(app, f"task {review} needs")) == 1

    asyncio.run(scenario())
    assert "return a + b" in (repo / "calc.py").read_text()  # merged into the checkout


def test_a_pause_shows_as_pausing_while_it_waits_for_the_running_command(repo, cli, daemon, tmp_path):
    script = write_script(tmp_path / "s.json", [turn(call("shell", command="sleep 40.5")), FINISH])
    task = cli.json(repo, "post", "sleeps", "--script", script, "--check", "true")["task"]
    daemon()
    project = open_project(repo)
    store = project.store
    until(lambda: store.runs(task_id=task) and processes("sleep 40.5"), "the run to be in its sleep")
    rid = store.runs(task_id=task)[0].id

    async def scenario():
        app = TuiApp(project)
        async with app.run_test(size=(120, 30)) as pilot:
            await wait(pilot, lambda: rid in app.screen.shown and app.feed.header.daemon, "the run on screen")
            select(app, rid)
            await pilot.press("p")
            assert toasts(app, "it pauses when the current tool call ends (shell sleep 40.5)")
            await wait(pilot, lambda: cell(app, rid, "status") == "pausing…", "pausing… in the fleet")
            assert store.run(rid).status == "running" and processes("sleep 40.5")  # the pause waits for the call
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen)
            await wait(pilot, lambda: f"run {rid} · pausing…" in screen_text(app), "pausing… in the run view")
            await pilot.press("x", "y")  # a kill does not wait
            await wait(pilot, lambda: f"run {rid} · killed" in screen_text(app), "the kill in the run view", timeout=10)

    asyncio.run(scenario())
    assert processes("sleep 40.5") == []


def test_queue_actions_and_a_new_task_from_the_form(repo, cli, daemon, tmp_path):
    busy = cli.json(repo, "post", "keeps the only slot", "--script", slow_script(tmp_path, "busy"),
                    "--check", "true")["task"]
    first = cli.json(repo, "post", "waits for a slot", "--script", slow_script(tmp_path, "a", 2),
                     "--check", "true")["task"]
    blocked = cli.json(repo, "post", "waits for the first", "--after", str(first), "--script",
                       slow_script(tmp_path, "b", 2), "--check", "true")["task"]
    script = slow_script(tmp_path, "new", 2)
    (repo / "loopwright.toml").write_text(f'provider = "scripted"\nscript = "{script}"\n')
    daemon(max_parallel=1)
    project = open_project(repo)
    store = project.store
    until(lambda: store.runs(task_id=busy), "the first run")

    async def scenario():
        app = TuiApp(project)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("t")
            await wait(pilot, lambda: app.screen.view == "queue" and app.screen.table.row_count == 2, "the queue")
            table = app.screen.table
            assert [str(table.get_cell(str(t), "state")) for t in (first, blocked)] == ["queued", "blocked"]
            assert str(table.get_cell(str(blocked), "after")) == f"{first} (queued)"
            select(app, str(blocked))
            await pilot.press("plus")
            await wait(pilot, lambda: str(app.screen.table.get_cell(str(blocked), "priority")) == "1", "priority +1")
            assert [c[0] for c in commands(store, "priority")] == ["done"]
            select(app, str(blocked))
            await pilot.press("P")
            assert isinstance(app.screen, Prompt)
            await pilot.press("ctrl+a", "ctrl+k", "7", "enter")
            await wait(pilot, lambda: store.task(blocked).priority == 7, "priority 7")
            await wait(pilot, lambda: str(app.screen.table.get_cell(str(blocked), "priority")) == "7", "7 on screen")
            await pilot.press("minus")
            await wait(pilot, lambda: store.task(blocked).priority == 6, "priority 6")

            await pilot.press("c")
            await wait(pilot, lambda: store.task(blocked).status == "cancelled", "the cancel")
            await wait(pilot, lambda: app.screen.table.row_count == 1, "the cancelled task to leave the queue")
            assert [c[0] for c in commands(store, "cancel")] == ["done"]

            await pilot.press("n")
            assert isinstance(app.screen, NewTaskScreen)
            await pilot.press(*"write a changelog", "enter", *"test -f CHANGES", "enter", "ctrl+a", "ctrl+k", "3")
            app.screen.query_one("#until").value = True
            await pilot.press("ctrl+s")
            await wait(pilot, lambda: not isinstance(app.screen, NewTaskScreen), "the form to close")
            task = store.tasks()[-1]
            assert (task.goal, task.check_cmd, task.priority) == ("write a changelog", "test -f CHANGES", 3)
            assert task.options["until"] is True
            await wait(pilot, lambda: str(task.id) in app.screen.shown[0][0], "the new task on top of the queue")

            await pilot.press("n")  # a bad form: an error toast, the form stays open
            await pilot.press("ctrl+s")
            assert isinstance(app.screen, NewTaskScreen) and toasts(app, "the goal is empty")
            await pilot.press("escape")

    asyncio.run(scenario())


def test_read_only_without_a_daemon_then_attached_then_the_daemon_dies(repo, cli, daemon, tmp_path):
    task = cli.json(repo, "post", "slow", "--script", slow_script(tmp_path, "s"), "--check", "true")["task"]
    project = open_project(repo)
    store = project.store

    async def scenario():
        app = TuiApp(project)
        async with app.run_test(size=(100, 30)) as pilot:
            banner = app.screen.query_one(Banner)
            await wait(pilot, lambda: "no daemon is running" in screen_text(app), "the read-only banner")
            assert banner.has_class("shown")
            await pilot.press("n")  # the form opens (a task waits in the store); a run action is refused
            assert isinstance(app.screen, NewTaskScreen)
            await pilot.press("escape")
            first = daemon()
            await wait(pilot, lambda: not app.read_only, "the TUI to attach")
            assert not banner.has_class("shown") and toasts(app, f"attached to the daemon (pid {first.proc.pid})")
            await wait(pilot, lambda: store.runs(task_id=task) and app.screen.shown, "the run")
            rid = store.runs(task_id=task)[0].id
            first.stop(signal.SIGKILL)
            await wait(pilot, lambda: app.read_only, "the TUI to notice the daemon died")
            assert banner.has_class("shown")
            # the banner's new text reaches the screen at the next refresh, not in the tick that set it
            await wait(pilot, lambda: f"the daemon (pid {first.proc.pid}) stopped" in screen_text(app), "the banner")
            select(app, rid)
            await pilot.press("x")
            assert not commands(store, "kill") and toasts(app, "read-only: no daemon")
            second = daemon()
            await wait(pilot, lambda: not app.read_only, "the TUI to reattach")
            assert not banner.has_class("shown") and toasts(app, "actions are back")
            await wait(pilot, lambda: (store.run(rid).status == "running"
                                       and store.run(rid).owner_pid == second.proc.pid),
                       "the new daemon to resume the run")
            step = store.run(rid).step  # a kill queued while the run resumes is dropped as moot: wait for a step
            await wait(pilot, lambda: store.run(rid).step > step, "a step of the resumed run")
            select(app, rid)
            await pilot.press("x", "y")
            await wait(pilot, lambda: cell(app, rid, "status") == "killed", "the kill")

    asyncio.run(scenario())


def test_notifications_become_toasts_once_each(repo):
    init_project(repo)
    project = open_project(repo)
    conn = project.store.conn

    async def scenario():
        app = TuiApp(project)
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.pause(0.1)
            for key, kind, message in (("task:1:succeeded", "task_succeeded", "task 1 succeeded: a"),
                                       ("task:2:failed", "task_failed", "task 2 failed: b"),
                                       ("task:3:needs_review", "task_needs_review", "task 3 needs review: c"),
                                       ("run:x:paused:1", "run_needs_input", "task 4 paused, needs you: d"),
                                       ("budget:d:today", "budget_spent", "fleet budget spent today")):
                conn.execute("INSERT INTO notifications (key, kind, payload, created_at) VALUES (?, ?, ?, ?)",
                             (key, kind, json.dumps({"message": message}), time.time()))
            await pilot.pause(0.5)
            assert [s for s, _ in app.said] == ["information", "error", "warning", "warning", "error"]
            assert [t for _, t in app.said][-1] == "fleet budget spent today"

    asyncio.run(scenario())


# -- the command ------------------------------------------------------------------------------------


def test_no_store_and_a_newer_schema_are_one_line_errors(repo, cli, monkeypatch):
    code, out, err = cli(repo, "tui")
    assert code == 2 and err.count("\n") == 1 and "has no .loopwright/ yet" in err and "loopwright init" in err
    init_project(repo)
    conn = sqlite3.connect(repo / ".loopwright" / "state.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, out, err = cli(repo, "tui", "--serve")
    assert code == 2 and err.count("\n") == 1 and "newer than this loopwright" in err
    assert not (repo / ".loopwright" / "daemon.pid").exists()  # --serve started nothing


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_as_a_person_would_in_tmux(repo, cli, tmp_path):
    """tmux runs `loopwright tui --serve`; keys go in, the pane is read back; quitting leaves the daemon running."""
    task = cli.json(repo, "post", "slow in tmux", "--script", slow_script(tmp_path, "t", 200),
                    "--check", "true")["task"]
    sock = f"lw-tui-{os.getpid()}"
    tmux = ["tmux", "-L", sock, "-f", "/dev/null"]
    command = f"{shlex.quote(sys.executable)} -m loopwright.cli.main tui --serve"

    def pane() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "tui"], capture_output=True, text=True).stdout

    def pane_until(text: str, timeout: float = 30) -> str:
        until(lambda: text in pane(), f"{text!r} in the pane", timeout)
        return pane()

    project = open_project(repo)
    try:
        subprocess.run([*tmux, "new-session", "-d", "-s", "tui", "-x", "100", "-y", "30", "-c", str(repo),
                        "-e", "TERM=xterm-256color", command], check=True)
        subprocess.run([*tmux, "set-option", "-t", "tui", "remain-on-exit", "on"], check=True)
        shown = pane_until("daemon pid")
        pid = daemon_pid(project)
        assert pid and f"daemon pid {pid}" in shown
        until(lambda: project.store.runs(task_id=task), "the run to start")
        rid = project.store.runs(task_id=task)[0].id
        row = next(line for line in pane_until(rid).splitlines() if rid in line)
        assert "slow in tmux" in row
        subprocess.run([*tmux, "send-keys", "-t", "tui", "t"], check=True)
        assert "· queue ·" in pane_until("· queue ·")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "?"], check=True)
        assert "kill the run" in pane_until("Key bindings")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "Escape"], check=True)
        until(lambda: "Key bindings" not in pane(), "the help to close")  # (a key right after Escape is alt+key)
        subprocess.run([*tmux, "send-keys", "-t", "tui", "f"], check=True)
        pane_until("· fleet ·")
        subprocess.run([*tmux, "send-keys", "-t", "tui", "q"], check=True)
        until(lambda: subprocess.run([*tmux, "display-message", "-p", "-t", "tui", "#{pane_dead}"],
                                     capture_output=True, text=True).stdout.strip() == "1", "the TUI to quit")
        assert daemon_pid(project) == pid  # quitting never stops the daemon
        assert project.store.run(rid).status == "running"  # nor any agent
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        if (pid := daemon_pid(project)):
            os.kill(pid, signal.SIGKILL)


def test_keys_typed_ahead_reach_the_dialog_and_the_field_they_were_meant_for(repo, utc):
    """Keys that come faster than the screen (a loaded machine, a paste): none lost, none in the wrong field."""
    from textual import events

    project = fleet_fixture(repo)

    def typed(app, *keys: str) -> None:  # all at once, as a terminal delivers them under load
        for key in keys:
            app.post_message(events.Key(key, key if len(key) == 1 else None))

    async def scenario():
        app = fixture_app(project)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("t")
            await wait(pilot, lambda: app.screen.view == "queue" and app.screen.table.row_count == 2, "the queue")
            select(app, "3")
            typed(app, "P", "backspace", "7", "enter")  # the dialog opens while the keys are on their way
            await wait(pilot, lambda: commands(project.store, "priority"), "the priority command")
            assert [json.loads(a)["priority"] for a, in project.store.conn.execute(
                "SELECT args FROM commands WHERE kind = 'priority'")] == [7]
            typed(app, "n", *"write notes", "enter", *"true", "enter", "backspace", "3", "ctrl+s")
            await wait(pilot, lambda: project.store.tasks()[-1].goal == "write notes", "the task posted")
            task = project.store.tasks()[-1]
            assert (task.goal, task.check_cmd, task.priority) == ("write notes", "true", 3)

    asyncio.run(scenario())
