"""The Textual app of `loopwright tui` (the command is cli/tui.py): it supervises the project's daemon through
the store.

The fleet view (one row per run) and the queue view (queued and blocked
tasks) redraw from a `Feed` on a timer; every action is a row in the store's
commands table (runtime/actions.py), carried out by the daemon. Without a
daemon the app is read-only, says so in a banner and attaches again as soon as
one runs. Quitting never stops the daemon or any agent. Here: the app shell
(polling, toasts, actions, key bindings, the command palette); the views are in
fleet_view.py and queue_view.py, what they share in widgets.py, the dialogs in
dialogs.py.
"""

from __future__ import annotations

import gc
import os
import sqlite3
from collections.abc import Callable, Iterable

from textual import events
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import ModalScreen, Screen
from textual.widgets import Input

from loopwright.errors import LoopwrightError
from loopwright.memory.store import StoreError
from loopwright.runtime.actions import Actions, Done
from loopwright.runtime.project import Project
from loopwright.tui.dialogs import ConfirmScreen, HelpScreen, NewTaskScreen
from loopwright.tui.feed import Changes, Feed
from loopwright.tui.fleet_view import FleetScreen
from loopwright.tui.queue_view import QueueScreen
from loopwright.tui.widgets import NOTHING_RUNS, SERVE_HINT, View

ACTION_ERRORS = (LoopwrightError, ValueError)  # a user's error (or a bad number typed): said in a toast
TOAST = {"task_succeeded": "information", "task_failed": "error", "task_needs_review": "warning",
         "run_needs_input": "warning", "budget_spent": "error"}

# inline, not a .tcss file: the package ships no data files for the tui
CSS = """
HeaderBar {
    height: auto;
    padding: 0 1;
    background: $boost;
}

Banner {
    height: auto;
    padding: 0 1;
    background: $error 40%;
    color: $text;
    display: none;
}

Banner.shown {
    display: block;
}

ModalScreen {
    align: center middle;
}

.dialog {
    width: 84;
    max-width: 100%;
    height: auto;
    max-height: 100%;
    border: thick $primary;
    background: $surface;
    padding: 0 1;
}

.dialog Label {
    width: 100%;
}

.dialog .hint {
    color: $text-muted;
}

.dialog .path {
    background: $boost;
    padding: 0 1;
    margin: 1 0;
}

.dialog .row {
    height: auto;
}

.dialog .row Label {
    width: auto;
    padding: 1 1 0 0;
}

.dialog .row Input {
    width: 1fr;
}

.dialog Horizontal {
    height: auto;
}

.dialog Button {
    margin: 0 1 0 0;
}

#help-table {
    height: auto;
    max-height: 20;
}

.dialog.wide {
    width: 100%;
    border: none;
    border-top: thick $primary;
    border-bottom: thick $primary;
    padding: 0;
}
"""


class TuiApp(App):
    """The supervisor's terminal UI; `feed` and `actions` may be given (tests, the benchmark)."""

    CSS = CSS
    TITLE = "loopwright"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f", "fleet", "Fleet", show=False),
        Binding("t", "queue", "Queue", show=False),  # each view's footer shows the keys it has room for
        Binding("n", "new_task", "New task", show=False),
        Binding("g", "chat", "Chat", show=False),
        Binding("q", "quit", "Quit", show=False),
    ]
    MODES = {"fleet": FleetScreen, "queue": QueueScreen}

    def __init__(self, project: Project, *, feed: Feed | None = None, actions: Actions | None = None,
                 interval: float = 1 / 12, author: str | None = None, sandbox_warning: str | None = None):
        super().__init__()
        self.project = project
        self.sandbox_warning = sandbox_warning  # agent commands run unjailed: said in the header
        self.author = author or os.environ.get("USER") or "me"  # who the chat view posts as
        self.feed = feed or Feed.for_project(project)
        self.actions = actions or Actions(project, by=f"tui ({self.author})")
        self.interval = interval
        self.said: list[tuple[str, str]] = []  # every toast shown: (severity, text)
        self.lost_pid: int | None = None  # the daemon that stopped while we were attached
        self.on_shown: Callable[[set[str], Changes], None] | None = None  # the benchmark's lag probe
        self.views: set[View] = set()  # the mounted views, fed on every tick
        self._last_pid: int | None = None
        self._failing = False
        self._held: list[events.Key] = []  # keys typed ahead of a dialog

    # -- keys ---------------------------------------------------------------------------------------
    # Textual queues a key for the focused widget and runs a binding only when the key comes back up from it, so
    # keys typed fast (a loaded machine, tmux) were reordered or misrouted: a digit typed after Backspace was
    # inserted before the Backspace ran (and deleted by it), keys after `P` went to the table before its dialog
    # opened, a digit after Enter went to the field Enter was leaving. Here each key is handled as it arrives, in
    # order: a character typed into a field is inserted, a binding runs; keys for a dialog whose field has no
    # focus yet are held until it has.

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, events.Key) and not event.is_forwarded and await self._route_key(event):
            return
        await super().on_event(event)

    async def _route_key(self, event: events.Key) -> bool:
        """True when the key was held or its binding run here."""
        screen = self.screen
        if isinstance(screen, ModalScreen) and screen.focused is None and screen.query(Input):
            self._held.append(event)
            return True
        if self._held:  # the dialog went without its field ever having the focus: the keys go on as they are
            await self._replay()
        field = screen.focused
        if isinstance(field, Input) and event.is_printable and event.character:  # what Input does with it
            if field.selection.is_empty:
                field.insert_text_at_cursor(event.character)
            else:
                field.replace(event.character, *field.selection)
            return True
        bound = screen.active_bindings.get(event.key)
        if bound is None or not bound.enabled:
            return False
        await self.run_action(bound.binding.action, bound.node)
        return True

    async def on_descendant_focus(self) -> None:
        if self._held:  # the dialog's field has the focus now
            await self._replay()

    async def _replay(self) -> None:
        held, self._held = self._held, []
        for event in held:  # in the order typed, ahead of any key still to come
            await self.on_event(event)

    @property
    def read_only(self) -> bool:
        return self.feed.header.daemon is None

    def on_mount(self) -> None:
        self.feed.poll()
        self._last_pid = self.feed.header.daemon
        self.switch_mode("fleet")
        self.set_interval(self.interval, self.tick)
        self.call_after_refresh(self._prebuild)

    def _prebuild(self) -> None:
        """After the first frame: the queue view, the help and the chat are built (not shown) so that their first
        opening builds no widgets either; then `_settle`."""
        with self.batch_update():
            self.switch_mode("queue")
            self.switch_mode("fleet")
            for name in ("help", "chat"):
                self.push_screen(self._kept(name))
                self.pop_screen()
        self.call_after_refresh(self._settle)

    def _settle(self) -> None:
        """What lives as long as the app (Textual, its views, the feed) is left out of every later full garbage
        collection. Each walked all of it, 100-200 ms that a key pressed then waited for."""
        gc.collect()
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()  # (a host process, a test run, goes on collecting them)

    def tick(self) -> None:
        """Poll the feed and show what changed (the timer's job)."""
        try:
            ch = self.feed.poll()
        except (sqlite3.Error, StoreError) as e:
            if not self._failing:
                self.say(f"cannot read the store: {e}", "error")
            self._failing = True
            return
        self._failing = False
        if not ch:
            return
        if ch.daemon_changed:
            pid = self.feed.header.daemon
            if pid:
                self.say(f"attached to the daemon (pid {pid})" + (": actions are back" if self.lost_pid else ""))
                self.lost_pid = None
            else:
                self.lost_pid = self._last_pid
                self.say(f"the daemon stopped: read-only until it runs again ({SERVE_HINT})", "warning")
        self._last_pid = self.feed.header.daemon
        for view in list(self.views):
            if self.is_running and view.is_attached:  # not while the app quits: it prunes the views' widgets
                view.apply(ch)
        for note in ch.notifications:
            self.say(note["message"], TOAST.get(note["kind"], "information"))

    def shown_rows(self, rows: set[str], ch: Changes) -> None:
        if self.on_shown is not None:
            self.on_shown(rows, ch)

    # -- doing things ---------------------------------------------------------------------------

    def say(self, text: str, severity: str = "information") -> None:
        """A toast (and a record of it in `said`)."""
        self.said.append((severity, text))
        self.notify(text, severity=severity, timeout=6 if severity == "error" else 4, markup=False)  # type: ignore[arg-type]

    def writable(self) -> bool:
        if self.read_only:
            self.say(f"read-only: no daemon is running; {SERVE_HINT}", "warning")
            return False
        return True

    def confirm(self, question: str, yes: str, check: Callable[[], object], then: Callable[[], object]) -> None:
        """Ask before `then` (a kill), unless `check` refuses it already: then its error is said at once."""
        if not self.writable():
            return
        try:
            check()
        except ACTION_ERRORS as e:
            self.say(str(e), "error")
            return
        self.push_screen(ConfirmScreen(question, yes=yes), lambda ok: ok and then())

    def act(self, do: Callable[[], object], *, said: Callable[[object], str] | None = None, offline: bool = False):
        """Run one action (a row in the store); its errors become error toasts. None when refused.

        Without a daemon, only what the store keeps until one starts (`offline`: a new task) is done, and the
        toast says that nothing runs yet.
        """
        if not offline and not self.writable():
            return None
        try:
            result = do()
        except ACTION_ERRORS as e:
            self.say(str(e), "error")
            return None
        except Exception as e:  # noqa: BLE001 - a supervisor's screen must not die of one failed action
            self.say(f"{type(e).__name__}: {e}", "error")
            return None
        text = said(result) if said else result.said if isinstance(result, Done) else str(result)
        self.say(text + (f"; {NOTHING_RUNS}" if self.read_only else ""), "warning" if self.read_only else "information")
        self.tick()  # show the effect at once where there is one
        return result

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(self._kept("help"))

    def _kept(self, name: str) -> str:
        """The name of a screen made once and kept when closed (the help, the chat): opening it again builds no
        widgets."""
        from loopwright.tui.chat_view import ChatScreen
        from loopwright.tui.run_view import RunScreen

        if not self.is_screen_installed(name):
            self.install_screen(HelpScreen((
                ("anywhere", self.BINDINGS), ("fleet", FleetScreen.BINDINGS), ("queue", QueueScreen.BINDINGS),
                ("run", RunScreen.BINDINGS), ("chat", ChatScreen.BINDINGS))) if name == "help"
                else ChatScreen(self.project, self.author), name)
        return name

    def action_fleet(self) -> None:
        self._to_view("fleet")

    def action_queue(self) -> None:
        self._to_view("queue")

    def _to_view(self, mode: str) -> None:
        """Show that view itself: what was opened over a view (a run, the chat) is closed."""
        while len(self.screen_stack) > 1:
            self.pop_screen()
        self.switch_mode(mode)
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_new_task(self) -> None:
        self.push_screen(NewTaskScreen())  # without a daemon too: the task waits in the queue

    def action_chat(self) -> None:
        from loopwright.tui.chat_view import ChatScreen

        if not isinstance(self.screen, ChatScreen):
            self.push_screen(self._kept("chat"))

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        if isinstance(screen, View):
            for title, help, callback in screen.palette():
                yield SystemCommand(title, help, callback)
        yield SystemCommand("Fleet view", "one row per run", self.action_fleet)
        yield SystemCommand("Queue view", "queued and blocked tasks", self.action_queue)
        yield SystemCommand("New task", "goal, check, priority, until mode", self.action_new_task)
        yield SystemCommand("Chat", "threads and their messages; post as " + self.author, self.action_chat)
        yield SystemCommand("Key bindings", "every key, by view", self.action_help)
