"""The chat view of the TUI: threads, live messages and posting, on the same store as `loopwright chat`."""

from __future__ import annotations

import asyncio

from support import call, turn, write_script
from textual.app import App
from textual.widgets import RichLog
from tui_support import wait

from loopwright.runtime.chat.threads import create_thread, messages, post_message
from loopwright.runtime.project import open_project
from loopwright.tui.chat_view import ChatScreen


class Host(App):
    def __init__(self, project, author: str, read_only: bool = False):
        super().__init__()
        self.project, self.author, self.read_only = project, author, read_only
        self.toasts: list[str] = []

    def on_mount(self) -> None:
        self.push_screen(ChatScreen(self.project, self.author, read_only=self.read_only))

    def notify(self, message, *, title="", severity="information", timeout=None, markup=True) -> None:
        self.toasts.append(f"{severity}: {message}")
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=markup)


def shown(app: App) -> str:
    log = app.screen.query_one("#log", RichLog)
    return "\n".join(strip.text for strip in log.lines)


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
            assert "read-only" in str(app.screen.query_one("#banner").render())
            await pilot.press(*"let me in")
            await pilot.press("enter")
            await pilot.pause()
            assert any("mallory may not post in 'closed'" in t for t in app.toasts)
    asyncio.run(scenario())
