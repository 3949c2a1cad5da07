"""The chat view of `loopwright tui`: threads, their messages as they arrive, and an input box to post.

It reads and writes the same store as `loopwright chat` (runtime/chat.py): a
message typed here is a row the daemon acts on, exactly as one from the
terminal chat. Reads are incremental: messages after the last id seen, plus
messages edited since the last look (a status message updated in place).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Input, OptionList, RichLog, Static
from textual.widgets.option_list import Option

from loopwright.memory import chat as chat_rows
from loopwright.runtime.chat.format import line
from loopwright.runtime.chat.threads import ChatError, Message, messages, post_message, threads, unknown_mentions
from loopwright.tui.widgets import NOTHING_RUNS, KeyFooter

POLL_SECONDS = 0.25
NO_THREADS = "no threads yet: create one with `loopwright threads new general`; it shows here as soon as it exists"


class ChatScreen(Screen):
    """Threads on the left, the selected thread on the right, an input box below."""

    BINDINGS = [Binding("escape", "app.pop_screen", "Back", key_display="esc"),
                Binding("ctrl+t", "next_thread", "Next thread")]
    DEFAULT_CSS = """
    ChatScreen #title { height: auto; padding: 0 1; background: $boost; }
    ChatScreen #threads { width: 24; border: round $primary; }
    ChatScreen #log { border: round $secondary; }
    ChatScreen #say { dock: bottom; }
    """

    def __init__(self, project, author: str, *, thread: str | None = None):
        super().__init__()
        self.project, self.store, self.author = project, project.store, author
        self.thread = thread
        self.names: list[str] = []  # the threads listed
        self.last_id = 0
        self.shown: dict[int, Message] = {}  # the thread's messages on screen, by id, in order
        self.seen_edit = 0.0
        self.ticks = 0

    def compose(self) -> ComposeResult:
        yield Static("", id="title")
        with Horizontal():
            yield OptionList(id="threads")
            with Vertical():
                yield RichLog(id="log", wrap=True, markup=False, min_width=10)
                yield Input(placeholder=f"message as {self.author} (mention @{self.project.config.chat.name} to "
                                        f"start work; /stop, /status, /retry)", id="say")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._load_threads()
        self.set_interval(POLL_SECONDS, self.refresh_messages)
        self.query_one("#say", Input).focus()

    def on_screen_resume(self) -> None:
        self.refresh_messages()  # what came while it was closed

    def _title(self) -> None:
        t = Text()
        t.append("loopwright", style="bold")
        t.append(f" · chat · {'#' + self.thread if self.thread else 'no thread yet'} · posting as {self.author}")
        if self.app.read_only:  # posting works: the message waits in the store
            t.append(f"\n{NOTHING_RUNS}", style="bold yellow")
        self.query_one("#title", Static).update(t)

    def _load_threads(self) -> None:
        rows = threads(self.store)
        box = self.query_one("#threads", OptionList)
        box.clear_options()
        for r in rows:
            busy = " •" if r["active_task"] else ""
            box.add_option(Option(f"#{r['name']}{busy}", id=r["name"]))
        self.names = [r["name"] for r in rows]
        if rows and self.thread is None:
            self.thread = rows[0]["name"]
        if self.thread is not None:
            if self.thread in self.names:
                box.highlighted = self.names.index(self.thread)
            self._switch(self.thread)
        else:
            self._redraw()
        self._title()

    def _switch(self, name: str) -> None:
        self.thread, self.last_id, self.shown, self.seen_edit = name, 0, {}, 0.0
        self.query_one("#log", RichLog).clear()
        self._title()
        self.refresh_messages()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if event.option.id and event.option.id != self.thread:
            self._switch(event.option.id)

    def action_next_thread(self) -> None:
        box = self.query_one("#threads", OptionList)
        if box.option_count:
            box.highlighted = ((box.highlighted or 0) + 1) % box.option_count
            self._switch(box.get_option_at_index(box.highlighted).id)

    def refresh_messages(self) -> None:
        """New messages are added; an edited one is redrawn where it is (the whole thread, rewrapped)."""
        if not self.is_current:  # closed (the app keeps it): read on from the last id when shown again
            return
        self.ticks += 1
        if self.ticks % 4 == 0:  # about once a second: threads created since, the daemon come or gone
            if [r["name"] for r in threads(self.store)] != self.names:
                self._load_threads()
            self._title()
        if self.thread is None:
            return
        log = self.query_one("#log", RichLog)
        for m in messages(self.store, self.thread, after=self.last_id):
            self.shown[m.id] = m
            log.write(line(m))
            self.last_id = m.id
        edited = [m for m in chat_rows.edited(self.store, self.thread, since=self.seen_edit, up_to=self.last_id)
                  if m.id in self.shown]
        if edited:
            self.seen_edit = max(m.updated_at for m in edited)
            changed = any(line(self.shown[m.id]) != line(m) for m in edited)
            self.shown.update((m.id, m) for m in edited)
            if changed:
                self._redraw()

    def _redraw(self) -> None:
        log = self.query_one("#log", RichLog)
        log.clear()
        if self.thread is None:
            log.write(NO_THREADS)
        for m in self.shown.values():
            log.write(line(m))

    def on_resize(self) -> None:
        self.call_after_refresh(self._redraw)  # wrapped again at the new width

    def on_input_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.thread is None:
            self.app.notify(NO_THREADS, severity="warning", markup=False)
            return
        try:
            m = post_message(self.store, self.project.config.chat, self.thread, self.author, text)
        except ChatError as e:
            self.app.notify(str(e), severity="error")
            return
        event.input.value = ""
        for name in unknown_mentions(self.store, m, self.project.config.chat):
            self.app.notify(f"no agent or member @{name} here; mention @{self.project.config.chat.name}",
                            severity="warning")
        if self.app.read_only:
            self.app.notify(f"posted; {NOTHING_RUNS}", severity="warning", markup=False)
        self.refresh_messages()
