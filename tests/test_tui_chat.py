"""The chat view of the TUI: threads, live messages and posting, on the same store as `loopwright chat`."""

from __future__ import annotations

import asyncio
import time

from support import call, turn, write_script
from textual.app import App
from textual.widgets import RichLog
from tui_support import screen_text, wait

from loopwright.memory import chat as chat_rows
from loopwright.runtime.chat.threads import create_thread, messages, post_message
from loopwright.runtime.project import open_project
from loopwright.tui.chat_view import ChatScreen


class Host(App):
    def __init__(self, project, author: str, read_only: bool = False):
        super().__init__()
        self.project, self.author, self.read_only = project, author, read_only
        self.toasts: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(ChatScreen(self.project, self.author))

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True) -> None:
        self.toasts.append(f"{severity}: {message}")
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


def shown(app: App) -> str:
    """The log's text, its wrapped lines joined again."""
    log = app.screen.query_one("#log", RichLog)
    return " ".join(strip.text.rstrip() for strip in log.lines)


def test_posting_from_the_tui_starts_work_and_the_answer_appears_live(repo, daemon, tmp_path):
    script = write_script(tmp_path / "s.json", [turn(call("finish", summary="the README is short"))])
    (repo / "loopwright.toml").write_text(f'provider = "scripted"\nscript = "{script}"\n'
                                          '[chat]\ndebounce_seconds = 0.2\n')
    project = open_project(repo, create=True)
    create_thread(project.store, "general")
    create_thread(project.store, "random")
    post_message(project.store, project.config.chat, "general", "bob", "hello everyone")
    daemon()

    async def scenario():
        app = Host(project, "ana")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait(pilot, lambda: "hello everyone" in shown(app), "the earlier message")
            await pilot.press(*"@loopwright what is in the README?")
            await pilot.press("enter")
            await wait(pilot, lambda: "@ana the README is short" in shown(app), "the answer on screen")
            await wait(pilot, lambda: "done: task 1" in shown(app), "the status message, edited in place")
            await pilot.press(*"@loopwrite typo")
            await pilot.press("enter")
            assert any("no agent or member @loopwrite" in t for t in app.toasts)
            await pilot.press("ctrl+t")
            await wait(pilot, lambda: "hello everyone" not in shown(app), "the other thread")
            await pilot.press(*"   ")
            await pilot.press("enter")
        return app

    asyncio.run(scenario())
    got = [(m.author, m.text) for m in messages(project.store, "general") if m.kind == "user"]
    assert got == [("bob", "hello everyone"), ("ana", "@loopwright what is in the README?"),
                   ("ana", "@loopwrite typo")]
    assert messages(project.store, "random") == []


def test_read_only_says_so_and_a_refused_message_is_a_toast(repo, tmp_path):
    project = open_project(repo, create=True)
    create_thread(project.store, "closed", allow=["bob"])

    async def scenario():
        app = Host(project, "mallory", read_only=True)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            assert "nothing runs until one starts" in str(app.screen.query_one("#title").render())
            await pilot.press(*"let me in")
            await pilot.press("enter")
            await pilot.pause()
            assert any("mallory may not post in 'closed'" in t for t in app.toasts)
    asyncio.run(scenario())


LONG = ("@tester alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
        "quebec romeo sierra tango uniform victor whiskey xray yankee zulu: 12 steps, 0 checkpoint(s)")


def test_a_thread_made_while_open_edits_in_place_and_wrapping_at_the_real_width(repo, tmp_path):
    project = open_project(repo, create=True)
    store = project.store

    async def scenario():
        app = Host(project, "ana", read_only=True)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            first = screen_text(app).splitlines()[0]
            assert "chat · no thread yet · posting as ana" in first  # a title, not a blank line
            assert "nothing runs until one starts" in screen_text(app)  # read-only: posting waits in the store
            await pilot.resize_terminal(100, 30)  # the log is drawn again at the new width: it still says why
            await wait(pilot, lambda: "no threads yet" in shown(app), "the no-threads line after a resize")
            await pilot.press(*"hello", "enter")
            await wait(pilot, lambda: any("no threads yet" in t for t in app.toasts), "why nothing was posted")
            create_thread(store, "general")
            await wait(pilot, lambda: "#general" in screen_text(app), "the new thread")
            await pilot.press("enter")  # the input still holds "hello"
            await wait(pilot, lambda: "ana: hello" in shown(app), "the message posted")
            assert any("posted; no daemon is running: nothing runs until one starts" in t for t in app.toasts)

            chat_rows.add_message(store, "general", author="loopwright", author_name="loopwright", kind="status",
                                  state="done", text="on it (task 21)", reply_key="status:21")
            await wait(pilot, lambda: "on it (task 21)" in shown(app), "the status message")
            chat_rows.edit_by_key(store, "status:21", "done: task 21 needs_review", time.time())
            await wait(pilot, lambda: "done: task 21 needs_review (edited)" in shown(app), "the edit")
            assert "on it (task 21)" not in shown(app) and shown(app).count("task 21") == 1  # in place
            assert shown(app).index("ana: hello") < shown(app).index("done: task 21")

            post_message(store, project.config.chat, "general", "bob", LONG)
            await wait(pilot, lambda: "zulu" in shown(app), "the long message")
            await pilot.resize_terminal(80, 24)
            words = LONG.split()
            await wait(pilot, lambda: all(w in screen_text(app) for w in words), "every word at 80x24")

    asyncio.run(scenario())
