"""Tokens arriving while a model call streams: `loopwright run`'s progress and the run's last action (the TUI's run
view shows it in its header) say how many have come so far, before the call ends, without an event per token."""

from __future__ import annotations

import asyncio
import re
import threading

from support import FINISH, call, turn
from textual.app import App
from tui_support import wait

from loopwright.harness.loop import WAITING
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.script import Script
from loopwright.memory.store import Store
from loopwright.runtime.actions import Actions
from loopwright.runtime.project import init_project, open_project
from loopwright.tui.run_view import RunScreen

SLOW_TEXT = "Reading calc.py, one line at a time, before changing anything. " * 16  # ~1,000 characters


def test_tokens_arriving_are_shown_before_the_call_ends(repo, cli, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-a-key")
    turns = [{"fault": "trickle", "delay": 0.001},  # the first answer goes out one byte a millisecond (seconds)
             turn(call("read_file", path="calc.py"), text=SLOW_TEXT), FINISH]
    seen: list[tuple[str, int]] = []  # (last action, model calls done) as another process would read them
    done = threading.Event()

    def watch() -> None:
        store = None
        while not done.wait(0.05):
            try:
                store = store or Store(repo / ".loopwright" / "state.db")
                row = store.conn.execute("SELECT last_action, model_calls FROM runs").fetchone()
            except Exception:  # noqa: BLE001 - the store is not there yet
                continue
            if row is not None:
                seen.append((row[0], row[1]))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with LoopbackServer(Script.parse(turns)) as server:
            code, out, err = cli(repo, "run", "read calc.py", "--provider", "anthropic", "--model",
                                 "claude-sonnet-4-6", "--base-url", server.anthropic_base_url)
    finally:
        done.set()
        watcher.join()
    assert code in (0, 1), err
    # `loopwright run`: the count grows, line by line, all before the first step's tool call is printed
    before_step = err.split("step 1 · read_file")[0]
    counts = [int(n.replace(",", "")) for n in re.findall(r"model: ~([\d,]+) tokens so far", before_step)]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] > counts[0], err
    # the store: the run's last action says the tokens so far while no model call has ended yet
    streaming = [action for action, calls in seen if "tokens so far" in action and calls == 0]
    assert streaming and all(a.startswith("waiting for the model since") for a in streaming), seen


def test_the_run_view_header_shows_the_tokens_so_far_as_the_loop_saves_them(repo):
    init_project(repo)
    project = open_project(repo)
    store = project.store
    task = store.create_task("Explain calc.py")
    run = store.create_run(task.id, provider="anthropic", model="claude-sonnet-4-6", worktree=str(repo / "wt"),
                           branch="lw/x", base_commit="0" * 40, target_branch="main")

    class Host(App):
        def on_mount(self) -> None:
            self.push_screen(RunScreen(project, Actions(project, by="tui"), run.id))

    def head(app) -> str:
        return str(app.screen.query_one("#head").content)

    async def scenario():
        app = Host()
        async with app.run_test(size=(120, 40)) as pilot:
            for tokens in ("1,234", "2,345"):  # as the loop writes it while the answer streams in
                store.update_run(run.id, last_action=f"{WAITING} 12:00:00 · ~{tokens} tokens so far")
                await wait(pilot, lambda t=tokens: f"~{t} tokens so far" in head(app), f"{tokens} tokens shown")
            store.update_run(run.id, last_action="read_file calc.py")  # the call ended
            await wait(pilot, lambda: "tokens so far" not in head(app), "the wait no longer shown")

    asyncio.run(scenario())
