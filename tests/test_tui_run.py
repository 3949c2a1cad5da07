"""The run screen of `loopwright tui`, driven through Textual's pilot at 80x24.

Hand-built runs (a real worktree, events appended by the test) check what the
screen shows and the command each key writes into the store; a real daemon
with a scripted model checks that pause, resume, kill, a message and a rollback
are carried out.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from support import CALC, CHECK, call, turn, write_script
from textual.app import App
from textual.widgets import Collapsible, DataTable, Input, RichLog, Static
from tui_support import assert_snapshot, screen_text, wait

from loopwright.harness import events as ev
from loopwright.harness.messages import Message, TextBlock, ToolCall, ToolResult
from loopwright.memory.artifacts import register
from loopwright.memory.store import Store
from loopwright.runtime.actions import Actions
from loopwright.runtime.project import init_project, open_project
from loopwright.tui.dialogs import ConfirmScreen
from loopwright.tui.run_view import MessageScreen, PathScreen, RunScreen
from loopwright.workspaces.git import Workspace

SIZE = (80, 24)
RUN = "feedc0de"
NOW = 1767225600.0  # 2026-01-01 00:00 UTC: the snapshot's clock


class Host(App):
    """A tiny app that shows one RunScreen and records every toast."""

    def __init__(self, project, run_id: str, read_only: bool = False, by: str = "tui"):
        super().__init__()
        self.project, self.run_id, self.read_only, self.by = project, run_id, read_only, by
        self.toasts: list[tuple[str, str]] = []

    def on_mount(self) -> None:
        self.push_screen(RunScreen(self.project, Actions(self.project, by=self.by), self.run_id,
                                   read_only=self.read_only))

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True) -> None:
        self.toasts.append((severity, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    @property
    def run_screen(self) -> RunScreen:
        return next(s for s in self.screen_stack if isinstance(s, RunScreen))

    def said(self, severity: str | None = None) -> str:
        return "\n".join(m for s, m in self.toasts if severity is None or s == severity)


def log_text(app: Host) -> list[str]:
    return [strip.text for strip in app.run_screen.query_one("#log", RichLog).lines]


def commands(store: Store, run_id: str, kind: str | None = None) -> list:
    rows = store.conn.execute("SELECT kind, status, args FROM commands WHERE run_id = ? ORDER BY id",
                              (run_id,)).fetchall()
    return [tuple(r) for r in rows if kind is None or r[0] == kind]


def hand_built_run(repo: Path, status: str = "running"):
    """A project with one run: a real worktree, checkpoint 1 (calc fixed) and an uncommitted new file."""
    init_project(repo)
    project = open_project(repo)
    store = project.store
    task = store.create_task("Fix add in calc.py", check="true")
    ws = Workspace.create(repo, RUN, target_branch="main", worktrees_dir=project.worktrees)
    store.create_run(task.id, provider="scripted", model="script", worktree=str(ws.path), branch=ws.branch,
                     base_commit=ws.base_commit, target_branch="main", run_id=RUN)
    store.append(RUN, ev.RunStarted(task_id=task.id, goal=task.goal, provider="scripted", model="script",
                                    worktree=str(ws.path), branch=ws.branch, base_commit=ws.base_commit))
    store.append(RUN, ev.ConversationReset(reason="start", messages=[Message.user("Fix add in calc.py")]))
    store.append(RUN, ev.MessageAdded(message=Message(role="assistant", content=[
        TextBlock(text="I will fix add."),
        ToolCall(id="c1", name="edit_file", arguments={"path": "calc.py", "old": "a - b", "new": "a + b"})])))
    (ws.path / "calc.py").write_text(CALC.replace("a - b", "a + b"))
    store.append(RUN, ev.MessageAdded(message=Message(role="user", content=[
        ToolResult(tool_call_id="c1", content="edited calc.py")])))
    cp = ws.checkpoint("fix add", step=1)
    store.add_checkpoint(RUN, sha=cp.sha, step=1, message=cp.message)
    (ws.path / "notes.txt").write_text("uncommitted\n")
    if status != "running":
        store.transition_run(RUN, status, only_from=("running",), reason="test")
    return project, ws


def test_transcript_folds_a_huge_tool_output_and_follows_the_tail_unless_scrolled_up(repo):
    project, _ = hand_built_run(repo)
    store = project.store

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: any("I will fix add." in line for line in log_text(app)), "the transcript")
            text = "\n".join(log_text(app))
            assert "→ edit_file" in text and "← edited calc.py" in text and "checkpoint 1" in text
            screen = app.run_screen
            assert screen.query_one("#head", Static).region.height == 3  # usable at 80x24
            assert screen.query_one("#log", RichLog).region.height >= 12

            many_lines = "\n".join(f"line {i:07d} of the output" for i in range(40_000))  # ~1 MB
            one_line = "x" * 1_000_000
            started = time.monotonic()
            store.append(RUN, ev.MessageAdded(message=Message(role="assistant", content=[
                ToolCall(id="c2", name="shell", arguments={"command": "cat big.log"})])))
            store.append(RUN, ev.MessageAdded(message=Message(role="user", content=[
                ToolResult(tool_call_id="c2", content=many_lines), ToolResult(tool_call_id="c3", content=one_line)])))
            store.append(RUN, ev.Compacted(tokens_before=150_000, tokens_after=2_000, note="Hand-off: add is fixed"))
            await wait(pilot, lambda: any("Hand-off" in line for line in log_text(app)), "the new turns")
            assert time.monotonic() - started < 5
            text = "\n".join(log_text(app))
            assert "line 0000000 of the output" in text and "line 0039999" not in text
            assert "… 39992 more lines" in text and "… (+999604 chars)" in text and "context compacted" in text
            assert len(log_text(app)) < 200
            log = screen.query_one("#log", RichLog)
            await wait(pilot, lambda: log.is_vertical_scroll_end, "the log to follow the tail")

            log.scroll_home(animate=False)
            await pilot.pause(0.1)
            store.append(RUN, ev.MessageAdded(message=Message(role="assistant", content=[TextBlock(text="later")])))
            await wait(pilot, lambda: any("assistant: later" in line for line in log_text(app)), "a later turn")
            assert log.scroll_y == 0  # scrolled up: the screen stays where the reader is

            log.scroll_end(animate=False)
            await pilot.pause(0.1)
            store.append(RUN, ev.MessageAdded(message=Message(role="assistant", content=[TextBlock(text="tail")])))
            await wait(pilot, lambda: any("assistant: tail" in line for line in log_text(app)), "the tail")
            await wait(pilot, lambda: log.is_vertical_scroll_end, "the log to follow the tail again")

    asyncio.run(scenario())


def test_a_long_run_opens_on_its_last_entries_and_says_where_the_rest_is(repo):
    project, _ = hand_built_run(repo)
    store = project.store
    store.append(RUN, ev.StopRequested(status="paused", reason="test", interrupt=False))  # long before the tail
    with store.transaction():
        for i in range(2000):
            store.append(RUN, ev.MessageAdded(message=Message(role="assistant", content=[TextBlock(text=f"turn {i}")])))
            store.append(RUN, ev.ToolStarted(call_id=f"t{i}", name="shell", arguments={"command": "true"}))

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: any("turn 1999" in line for line in log_text(app)), "the last entry")
            text = "\n".join(log_text(app))
            assert f"earlier entries: `loopwright show {RUN} --full`" in text
            assert "turn 1699" not in text and "turn 1700" in text  # the last 300 entries
            await wait(pilot, lambda: "pausing…" in str(app.run_screen.query_one("#head", Static).content),
                       "the stop request, older than the entries read")

    asyncio.run(scenario())


def test_diff_per_file_refreshed_on_a_new_checkpoint(repo):
    project, ws = hand_built_run(repo)

    def titles(app):
        return [str(c.title) for c in app.run_screen.query(Collapsible)]

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await wait(pilot, lambda: len(titles(app)) == 2, "the diff")
            assert titles(app) == ["calc.py  +1 −1", "notes.txt  +1 −0"]  # uncommitted changes included
            box = app.run_screen.query_one("#diff-files")
            assert [c.collapsed for c in box.query(Collapsible)] == [False, True]  # the first file is open
            assert "Tab to a file, Enter opens or closes it" in str(box.query_one("#diff-summary").render())
            app.run_screen.action_refresh_diff(quiet=True)
            assert box.loading  # a spinner while git works (the answer comes back through the event loop)
            await wait(pilot, lambda: not box.loading, "the diff again")
            (ws.path / "more.py").write_text("print('more')\n")
            cp = ws.checkpoint("more", step=2)
            project.store.add_checkpoint(RUN, sha=cp.sha, step=2, message=cp.message)
            await wait(pilot, lambda: "more.py  +1 −0" in titles(app), "the diff after the checkpoint")
            (ws.path / "last.py").write_text("x = 1\n")
            await pilot.press("d")
            await wait(pilot, lambda: "last.py  +1 −0" in titles(app), "the diff on d")

    asyncio.run(scenario())


def test_a_diff_of_many_files_shows_every_file_once_in_order(repo):
    """A long diff is mounted a batch of files a frame; a refresh meanwhile starts over, nothing twice."""
    project, ws = hand_built_run(repo)
    for i in range(45):
        (ws.path / f"f{i:02d}.py").write_text("x = 1\n")
    names = ["calc.py", *(f"f{i:02d}.py" for i in range(46)), "notes.txt"]

    def titles(app):
        return [str(c.title).split()[0] for c in app.run_screen.query(Collapsible)]

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("2")
            await wait(pilot, lambda: len(titles(app)) == 47, "the whole diff")
            assert titles(app) == [n for n in names if n != "f45.py"]
            (ws.path / "f45.py").write_text("x = 1\n")
            await pilot.press("d")
            await wait(pilot, lambda: "f45.py" in titles(app), "the first files of the new diff")
            await pilot.press("d")  # again, while the last one's later files may still be coming
            await wait(pilot, lambda: len(titles(app)) >= 48, "the whole new diff")
            await pilot.pause(0.3)
            assert titles(app) == names

    asyncio.run(scenario())


def test_checkpoints_artifacts_scratch_pad_and_progress(repo, tmp_path):
    project, _ = hand_built_run(repo)
    store = project.store
    report = tmp_path / "report.md"
    report.write_text("# Report\n")
    register(store, project.dir / "artifacts", RUN, report, kind="report", title="What changed")
    store.scratchpad(RUN).append("plan: fix add, then run the tests")
    store.add_progress(store.run(RUN).task_id, "attempt 1: failed (check)")

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.run_screen
            await pilot.press("3")
            table = screen.query_one("#checkpoints-table", DataTable)
            rows = [table.get_row_at(i) for i in range(table.row_count)]
            assert [r[0] for r in rows] == ["0", "1"] and str(rows[1][3]) == "fix add" and rows[1][2] == "1"
            await pilot.press("4")
            arts = screen.query_one("#artifacts-table", DataTable)
            assert arts.row_count == 1
            kind, title, size, path = arts.get_row_at(0)
            assert (kind, str(title), size) == ("report", "What changed", "9 B") and str(path).endswith("report.md")
            await pilot.press("enter")  # copies the path
            assert app.clipboard == str(path) and Path(app.clipboard).read_text() == "# Report\n"
            await pilot.press("5")
            await pilot.pause(0.1)
            assert "plan: fix add" in str(screen.query_one("#scratch", Static).render())
            assert "attempt 1: failed" in str(screen.query_one("#progress", Static).render())
            store.scratchpad(RUN).append("step 2: tests pass")
            await wait(pilot, lambda: "step 2" in str(screen.query_one("#scratch", Static).render()), "scratch pad")

    asyncio.run(scenario())


def test_every_action_writes_its_command_and_kill_pressed_five_times_queues_one(repo):
    project, ws = hand_built_run(repo)  # owned by this process: commands stay pending for us to see
    store = project.store

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("p", "p")
            assert commands(store, RUN, "pause") == [("pause", "pending", '{"reason": "paused from the TUI"}')]
            assert "already under way" in app.said()

            await pilot.press("x")  # a kill asks first
            assert isinstance(app.screen, ConfirmScreen) and "Kill run feedc0de?" in str(
                app.screen.query_one(Static).render())
            await pilot.press("n")
            assert commands(store, RUN, "kill") == []
            for _ in range(5):
                await pilot.press("x", "y")
            assert len(commands(store, RUN, "kill")) == 1 and "kill of run feedc0de is already under way" in app.said()
            await pilot.press("m")
            assert isinstance(app.screen, MessageScreen)
            await pilot.press(*"use ints")
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen)
            (_, status, args), = commands(store, RUN, "notify")
            assert status == "pending" and "Message from the person supervising you: use ints" in args
            assert "message queued for run feedc0de" in app.said() and "notify" not in app.said()
            await pilot.press("m", "escape")  # cancelled: nothing sent
            assert len(commands(store, RUN, "notify")) == 1

            await pilot.press("M", "K")
            assert [c[0] for c in commands(store, RUN) if c[0] in ("merge", "keep")] == ["merge", "keep"]
            await pilot.press("r")  # a running run cannot be resumed: an error toast, no command
            assert "only a paused or budget-stopped run can be resumed" in app.said("error")
            assert commands(store, RUN, "resume") == []

            await pilot.press("b")  # first b: the checkpoints tab, to choose
            assert app.run_screen.query_one("#tabs").active == "checkpoints"
            await pilot.press("down", "b")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("n")
            assert commands(store, RUN, "rollback") == []
            await pilot.press("enter")  # Enter on the row asks too
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait(pilot, lambda: commands(store, RUN, "rollback"), "the rollback command")
            (_, status, args), = commands(store, RUN, "rollback")
            assert status == "pending" and '"seq": 1' in args
            await wait(pilot, lambda: "queued: the running agent applies it" in app.said(), "the rollback toast")

            await pilot.press("w")
            assert isinstance(app.screen, PathScreen)
            assert app.screen.query_one("#path", Input).value == str(ws.path) == app.clipboard
            await pilot.press("escape")

            store.transition_run(RUN, "paused", only_from=("running",), reason="test")
            await pilot.press("r")
            assert [c[:2] for c in commands(store, RUN, "resume")] == [("resume", "pending")]
            await pilot.pause(0.3)
            assert "paused" in str(app.run_screen.query_one("#head", Static).render())
            assert app.said("error").count("\n") == 0  # the one refused resume, nothing else failed
            await pilot.press("escape")
            assert not any(isinstance(s, RunScreen) for s in app.screen_stack)

    asyncio.run(scenario())


def test_read_only_disables_every_action_with_a_toast(repo):
    project, _ = hand_built_run(repo)

    async def scenario():
        app = Host(project, RUN, read_only=True)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(*"pxrmMKb")
            assert commands(project.store, RUN) == []
            assert isinstance(app.screen, RunScreen)
            warnings = [m for s, m in app.toasts if s == "warning"]
            assert len(warnings) == 7 and all("no daemon is running" in w for w in warnings)
            assert "read-only" in str(app.run_screen.query_one("#head", Static).render())

    asyncio.run(scenario())


def test_a_run_id_that_does_not_exist_says_so(repo):
    init_project(repo)
    project = open_project(repo)

    async def scenario():
        app = Host(project, "nosuchrun")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.1)
            assert "no run 'nosuchrun'" in str(app.screen.query_one("#missing", Static).render())
            assert "no run 'nosuchrun'" in app.said("error")
            await pilot.press(*"pxmbw12")  # every key answers with the reason, nothing crashes
            assert commands(project.store, "nosuchrun") == []
            await pilot.press("escape")
            assert not any(isinstance(s, RunScreen) for s in app.screen_stack)

    asyncio.run(scenario())


def test_rollback_of_a_stopped_run_resets_its_worktree_and_a_gcd_worktree_is_a_clear_error(repo, cli):
    project, ws = hand_built_run(repo, status="paused")
    store = project.store

    async def roll_back(app, pilot):
        await pilot.press("3", "b")  # on the checkpoints tab, the cursor on 0: the start
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")

    async def stopped():
        app = Host(project, RUN, by="tui (ana)")
        async with app.run_test(size=SIZE) as pilot:
            await roll_back(app, pilot)
            await wait(pilot, lambda: "rolled back to checkpoint 0" in app.said(), "the rollback")
            assert (ws.path / "calc.py").read_text() == CALC and not (ws.path / "notes.txt").exists()
            assert [(e.to_seq, e.requested_by) for _, _, e in store.events(RUN, types=("rolled_back",))] == [
                (0, "tui (ana)")]
            table = app.run_screen.query_one("#checkpoints-table", DataTable)
            await wait(pilot, lambda: "discarded (rolled back to 0)" in str(table.get_row("1")[3]),
                       "checkpoint 1 marked as discarded")
            assert "discarded" not in str(table.get_row("0")[3])
            assert [c[:2] for c in commands(store, RUN)] == [("notify", "pending")]  # told when it resumes
            await pilot.press("1")
            await wait(pilot, lambda: any("rolled back to checkpoint 0" in line for line in log_text(app)),
                       "the rollback in the transcript")

    asyncio.run(stopped())
    store.conn.execute("UPDATE runs SET status = 'succeeded' WHERE id = ?", (RUN,))  # as if merged

    async def finished():  # refused before any question
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "b")
            assert isinstance(app.screen, RunScreen) and "run feedc0de is succeeded" in app.said("error")
            await pilot.press("enter")
            assert isinstance(app.screen, RunScreen) and app.said("error").count("is succeeded") == 2
            await pilot.press("x")
            assert isinstance(app.screen, RunScreen) and "is succeeded already" in app.said("error")

    asyncio.run(finished())
    store.conn.execute("UPDATE runs SET status = 'failed' WHERE id = ?", (RUN,))
    code, out, _ = cli(repo, "gc")
    assert code == 0 and not ws.path.exists()

    async def gone():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3", "b")
            assert isinstance(app.screen, RunScreen)  # no question asked: it cannot be done
            assert "its worktree" in app.said("error") and "no longer exists" in app.said("error")
            assert "loopwright gc" in app.said("error")
            await pilot.press("2")
            await wait(pilot, lambda: "no longer exists" in str(app.run_screen.query_one("#diff-summary").render()),
                       "the diff's explanation")
        assert len(store.events(RUN, types=("rolled_back",))) == 1

    asyncio.run(gone())


# -- the screen, as a picture ----------------------------------------------------------------------------


def snapshot_project(repo: Path, monkeypatch):
    """A store built by hand with fixed ids, shas and timestamps (no worktree: nothing varies)."""
    init_project(repo)
    project = open_project(repo)
    store = project.store
    ticks = iter(range(10_000))
    rid, base = "a1b2c3d4", "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: NOW + 7 * next(ticks))
        task = store.create_task("Fix the flaky login test in the auth module", check="pytest -q")
        store.create_run(task.id, provider="anthropic", model="claude-sonnet-4-5", branch=f"lw/{rid}",
                         worktree=f"/home/dev/shop/.loopwright/worktrees/{rid}", base_commit=base,
                         target_branch="main", run_id=rid)
        store.append(rid, ev.RunStarted(task_id=task.id, goal=task.goal, provider="anthropic",
                                        model="claude-sonnet-4-5", worktree="", branch=f"lw/{rid}", base_commit=base))
        store.append(rid, ev.ConversationReset(reason="start", messages=[Message.user(task.goal)]))
        store.append(rid, ev.MessageAdded(message=Message(role="assistant", content=[
            TextBlock(text="Let me run the tests first."),
            ToolCall(id="c1", name="shell", arguments={"command": "pytest -q tests/test_login.py"})])))
        failures = "\n".join(["F.F" + "." * 20, ""]
                             + [f"tests/test_login.py:{40 + i}: AssertionError" for i in range(12)])
        store.append(rid, ev.MessageAdded(message=Message(role="user", content=[
            ToolResult(tool_call_id="c1", content=failures, is_error=True)])))
        store.append(rid, ev.MessageAdded(message=Message(role="assistant", content=[
            ToolCall(id="c2", name="edit_file", arguments={"path": "auth/session.py", "old": "sleep(0.1)",
                                                           "new": "clock.advance(0.1)"})])))
        store.append(rid, ev.MessageAdded(message=Message(role="user", content=[
            ToolResult(tool_call_id="c2", content="edited auth/session.py")])))
        store.add_checkpoint(rid, sha="9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b", step=2,
                             message="use the fake clock in the session test")
        store.append(rid, ev.Compacted(tokens_before=181_000, tokens_after=3_200,
                                       note="Fixed the sleep in auth/session.py; next: the token refresh test."))
        store.conn.execute("UPDATE runs SET step = 3, input_tokens = 184200, output_tokens = 5100,"
                           " cost_usd = 0.6291, active_seconds = 754, cache_read_tokens = 165780,"
                           " cache_saved_usd = 0.4476 WHERE id = ?", (rid,))
    return project, rid


def test_snapshot_of_the_run_screen_at_80x24(repo, monkeypatch, utc):
    project, rid = snapshot_project(repo, monkeypatch)

    async def scenario():
        app = Host(project, rid)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: any("token refresh" in line for line in log_text(app)), "the transcript")
            await assert_snapshot(pilot, app, "run_80x24")

    asyncio.run(scenario())


# -- with the daemon carrying the commands out ----------------------------------------------------------


def post(cli, repo: Path, tmp_path: Path, turns: list[dict]) -> int:
    script = write_script(tmp_path / "script.json", turns)
    return cli.json(repo, "post", "write a.txt and wait", "--script", script, "--check", "true")["task"]


def run_of(store: Store, task: int):
    runs = store.runs(task_id=task)
    return runs[0] if runs else None


def test_message_and_rollback_are_carried_out_by_the_running_agent(repo, cli, tmp_path, daemon):
    task = post(cli, repo, tmp_path, [
        turn(call("write_file", path="a.txt", content="a")),
        turn(call("shell", command="until [ -e go ]; do sleep 0.05; done")),  # until the test says go
        turn(call("finish", summary="done"), expect="hello from the supervisor"),  # fails the run if unseen
    ])
    daemon(max_parallel=1)
    project = open_project(repo)
    store = project.store

    async def scenario():
        deadline = time.monotonic() + 30
        while not (run_of(store, task) and store.events(run_of(store, task).id, types=("tool_started",))[1:]):
            assert time.monotonic() < deadline, "the run did not reach its waiting command"
            await asyncio.sleep(0.05)
        run = run_of(store, task)
        assert store.checkpoints(run.id) and Path(run.worktree, "a.txt").exists()
        app = Host(project, run.id)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("m", *"hello from the supervisor", "enter")
            await pilot.press("3", "b", "y")  # the cursor is on 0: the start
            await wait(pilot, lambda: len(commands(store, run.id)) == 2, "the two commands queued", timeout=30)
            Path(run.worktree, "go").write_text("")  # the agent's command ends; it takes them at its turn's end
            await wait(pilot, lambda: store.events(run.id, types=("rolled_back",)), "the rollback", timeout=30)
            assert not Path(run.worktree, "a.txt").exists()

            def notices() -> list[str]:  # written after the rollback's own event, once both commands are applied
                return [e.text for _, _, e in store.events(run.id, types=("notice",))]
            await wait(pilot, lambda: len(notices()) == 2, "the agent's notices", timeout=30)
            assert any("hello from the supervisor" in n for n in notices())
            assert any("rolled back" in n for n in notices())
            await wait(pilot, lambda: store.run(run.id).status == "succeeded", "the run's end", timeout=30)
            await pilot.press("1")
            await wait(pilot, lambda: any("hello from the supervisor" in line for line in log_text(app)),
                       "the message in the transcript")
            assert "succeeded" in str(app.run_screen.query_one("#head", Static).render())
        assert [c[:2] for c in commands(store, run.id) if c[0] in ("notify", "rollback")] == [
            ("notify", "done"), ("rollback", "done")]

    asyncio.run(scenario())


def test_pause_resume_and_kill_are_carried_out_by_the_daemon(repo, cli, tmp_path, daemon):
    task = post(cli, repo, tmp_path, [
        turn(call("write_file", path="a.txt", content="a")),
        turn(call("shell", command="sleep 2")),
        turn(call("shell", command="sleep 5")),
        turn(call("finish", summary="done")),
    ])
    daemon(max_parallel=1)
    project = open_project(repo)
    store = project.store

    async def scenario():
        deadline = time.monotonic() + 30
        while not (run_of(store, task) and store.checkpoints(run_of(store, task).id)):
            assert time.monotonic() < deadline, "the run did not start"
            await asyncio.sleep(0.05)
        run = run_of(store, task)
        app = Host(project, run.id)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("p")
            await wait(pilot, lambda: store.run(run.id).status == "paused", "the pause")
            await wait(pilot, lambda: "paused" in str(app.run_screen.query_one("#head", Static).render()),
                       "the header")
            await pilot.press("r")
            await wait(pilot, lambda: store.run(run.id).status == "running" and any(
                "sleep 5" in str(e.arguments) for _, _, e in store.events(run.id, types=("tool_started",))),
                "the resumed run's next step")
            await pilot.press("x", "y")
            await wait(pilot, lambda: store.run(run.id).status == "killed", "the kill")
            await wait(pilot, lambda: any("run killed" in line for line in log_text(app)), "the kill in the log")
            await pilot.press("x")
            assert "killed already" in app.said("error")

    asyncio.run(scenario())


def test_a_command_agents_run_at_80x24_its_output_as_it_comes_cost_unknown_and_its_checkpoints(
        repo, cli, tmp_path, daemon, monkeypatch):
    """An external CLI with no event stream (the `command` agent's fake script, which waits for a file)."""
    from test_agents_command import FAKE

    folder = tmp_path / "agentbin"
    folder.mkdir()
    (folder / "fakeagent.py").write_text(FAKE)
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(folder)]))
    task = cli.json(repo, "post", "WAITGO then fix add", "--check", CHECK,
                    "--agent-command", f"{sys.executable} {folder / 'fakeagent.py'} {{prompt}}")["task"]
    daemon()
    project = open_project(repo)
    store = project.store

    async def scenario():
        deadline = time.monotonic() + 30
        while not run_of(store, task):
            assert time.monotonic() < deadline, "the run did not start"
            await asyncio.sleep(0.05)
        run = run_of(store, task)
        app = Host(project, run.id)
        async with app.run_test(size=SIZE) as pilot:
            await wait(pilot, lambda: "waiting for go" in log_text(app), "the output so far, while it waits")
            top = lambda: screen_text(app).splitlines()[0]  # noqa: E731
            await wait(pilot, lambda: f"run {run.id} · running · cost unknown · agent command · step" in top(),
                       "the header")
            assert "tok" not in top() and "anthropic" not in top()
            shown = log_text(app)
            assert "assistant: fake agent got: # Task 1: WAITGO then fix add" in shown
            assert any("run started: task 1 with agent command" in line for line in shown)
            await pilot.press("3")
            table = app.run_screen.query_one("#checkpoints-table", DataTable)
            await wait(pilot, lambda: table.row_count == 2, "the checkpoint of the watcher")
            assert str(table.get_row_at(1)[3]) == "command: files changed"
            (folder / "go").write_text("")
            await wait(pilot, lambda: table.row_count == 3 and "succeeded" in top(), "the run to succeed")
            assert str(table.get_row_at(2)[3]) == "command: exited"
            assert top().startswith(f" run {run.id} · succeeded (merged into main as ") and "cost unknown" in top()
            await pilot.press("1")
            await wait(pilot, lambda: "assistant: second part" in log_text(app), "the rest of the output")

    asyncio.run(scenario())


def test_keys_reach_the_screen_when_the_focused_widget_is_gone_or_in_a_hidden_tab(repo):
    project, ws = hand_built_run(repo)

    async def scenario():
        app = Host(project, RUN)
        async with app.run_test(size=SIZE) as pilot:
            screen = app.run_screen
            await pilot.press("2")
            await wait(pilot, lambda: len(screen.query(Collapsible)) == 2, "the diff")
            await pilot.press("tab", "tab")  # onto a file's title, as a person opening one does
            assert screen.focused is not None and screen.focused.parent in screen.query(Collapsible)
            (ws.path / "more.py").write_text("x = 1\n")
            await pilot.press("d")  # the diff is drawn again: the focused title is removed
            await wait(pilot, lambda: len(screen.query(Collapsible)) == 3, "the new diff")
            await pilot.press("3", "down", "b")
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("escape")
            # the state a person once met (keys ignored until Tab), made here: the focus on a widget that is gone
            # (keys go up from it, and reach no binding) or in a tab not shown; within a tick it moves back
            gone = screen.query(Collapsible).first()
            await gone.remove()
            screen.focused = gone
            await wait(pilot, lambda: screen.focused is screen.query_one("#checkpoints-table"), "the keys back")
            await pilot.press("w")
            assert isinstance(app.screen, PathScreen)
            await pilot.press("escape")
            screen.query_one("#log").focus()  # in the transcript tab, while the checkpoints tab is shown
            await wait(pilot, lambda: screen.focused is screen.query_one("#checkpoints-table"), "the shown tab's")

    asyncio.run(scenario())
