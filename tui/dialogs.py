"""The dialogs of `loopwright tui`'s fleet and queue views and the app: one line of input, a worktree path, a new
task, the key bindings. (The run screen's own dialogs are in run_view.py.)"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static, Switch

# a dialog that brings its own style (the run screen is also shown by a host app without the TuiApp CSS)
DIALOG_CSS = """
    align: center middle;
    & > Vertical { width: 76; max-width: 100%; height: auto; max-height: 100%; border: thick $accent;
                   background: $surface; padding: 0 1; }
    & .hint { color: $text-muted; }
    & Horizontal { height: auto; align: right middle; }
    & Button { margin: 0 0 0 1; }
"""


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question (y / n, Escape is no): before a kill or a rollback."""

    DEFAULT_CSS = "ConfirmScreen {" + DIALOG_CSS + "}"
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes"):
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(self.question))
            yield Static("y confirms · n or Escape cancels", classes="hint")
            with Horizontal():
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class Prompt(ModalScreen[str | None]):
    """One line of input (a message for an agent, a priority); enter sends, escape cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, hint: str, *, integer: bool = False, value: str = ""):
        super().__init__()
        self.title_text, self.hint, self.integer, self.value = title, hint, integer, value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text)
            yield Input(value=self.value, placeholder=self.hint, type="integer" if self.integer else "text")
            yield Label(f"{self.hint} · enter: send · escape: cancel", classes="hint")

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if self.integer and not text.lstrip("-").isdigit():
            self.app.say("a priority is a whole number", "error")
            return
        self.dismiss(text)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PathScreen(ModalScreen[None]):
    """A run's worktree path, to open in an editor or a shell; `c` copies it (OSC 52)."""

    BINDINGS = [Binding("c", "copy", "Copy"), Binding("escape,q,w", "close", "Close")]

    def __init__(self, run_id: str, path: str):
        super().__init__()
        self.run_id, self.path = run_id, path

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):  # no side borders: the path selects cleanly with the mouse
            yield Label(f"Worktree of run {self.run_id}" + ("" if Path(self.path).exists() else " (removed)"))
            yield Static(self.path, classes="path", markup=False)
            yield Label("c: copy the path · escape: close", classes="hint")

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(self.path)
        self.app.say(f"copied {self.path}")
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class NewTaskScreen(ModalScreen[None]):
    """A new task: goal, check, priority, and until mode (fresh attempts until the check passes)."""

    # enter is routed as the key comes (priority), so that the keys typed after it go to the next field
    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "post", "Post"),
                Binding("enter", "enter", "Next field", priority=True)]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("New task")
            yield Input(placeholder="goal: what the agent should do", id="goal")
            yield Input(placeholder="check: acceptance command, e.g. pytest -q (optional)", id="check")
            with Horizontal(classes="row"):
                yield Label("priority (higher starts first):")
                yield Input(value="0", placeholder="0", type="integer", id="priority")
            with Horizontal(classes="row"):
                yield Switch(id="until")
                yield Label("until mode: fresh attempts until the check passes")
            with Horizontal():
                yield Button("Post", variant="primary", id="post")
                yield Button("Cancel", id="cancel")
            yield Label("enter: next field (post from the last) · ctrl+s: post · escape: cancel", classes="hint")

    def action_enter(self) -> None:
        """The next field; from the last one (priority), post; on a button or the switch, what enter does there."""
        focused = self.focused
        if isinstance(focused, Button):
            focused.press()
        elif isinstance(focused, Switch):
            focused.toggle()
        elif isinstance(focused, Input) and focused.id == "priority":
            self.action_post()
        else:
            self.focus_next()

    @on(Button.Pressed, "#post")
    def _post(self) -> None:
        self.action_post()

    @on(Button.Pressed, "#cancel")
    def _cancel(self) -> None:
        self.action_cancel()

    def action_post(self) -> None:
        goal = self.query_one("#goal", Input).value.strip()
        check = self.query_one("#check", Input).value.strip() or None
        priority = self.query_one("#priority", Input).value.strip() or "0"
        until = self.query_one("#until", Switch).value
        if not priority.lstrip("-").isdigit():
            self.app.say("priority: a whole number", "error")
            return
        if until and not check:
            self.app.say("until mode needs a check: the command that must pass", "error")
            return
        task = self.app.act(lambda: self.app.actions.post(goal, check=None if until else check,
                                                           priority=int(priority), until=check if until else None),
                            said=lambda t: f"task {t.id} queued: {t.title}", offline=True)
        if task is not None:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding, by view: `views` is (where, its bindings), "anywhere" (the app's) first.

    A table of wrapped text (not a DataTable, which cuts a long line): every description is read whole.
    """

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def __init__(self, views: Iterable[tuple[str, Iterable[Binding]]]):
        super().__init__()
        self.rows: list[tuple[str, str, str]] = []  # (where, key, what it does)
        views = [(where, list(bindings)) for where, bindings in views]
        anywhere = {b.action for where, bindings in views if where == "anywhere" for b in bindings}
        for where, bindings in views:
            for b in bindings:
                if where != "anywhere" and b.action.removeprefix("app.") in anywhere:
                    continue  # an app key a view shows in its footer: listed once, under "anywhere"
                self.rows.append((where, b.key_display or b.key.split(",")[0],
                                  HELP.get(b.action.removeprefix("app."), b.description)))
            if where == "anywhere":
                self.rows.append(("anywhere", "ctrl+p", "command palette: every action by name"))
                self.rows.append(("dialogs", "escape", "close without doing anything"))

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_edge=False, pad_edge=False, expand=True, header_style="bold")
        table.add_column("Where", width=8, no_wrap=True)
        table.add_column("Key", width=6, no_wrap=True)
        table.add_column("Does", ratio=1)
        last = ""
        for where, key, does in self.rows:
            table.add_row(where if where != last else "", key, does)
            last = where
        with Vertical(classes="dialog"):
            yield Label("Key bindings")
            with VerticalScroll(id="help-table"):
                yield Static(table)
            yield Label("↑/↓ scroll · escape: close", classes="hint")

    def on_mount(self) -> None:
        self.query_one("#help-table").focus()

    def action_close(self) -> None:
        self.dismiss(None)


HELP = {"help": "this list", "fleet": "fleet view: one row per run", "queue": "queue view: queued and blocked tasks",
        "new_task": "new task: goal, check, priority, until mode", "quit": "quit (the daemon and agents go on)",
        "open": "open the run: transcript, diff, checkpoints, rollback", "pause": "pause the run",
        "resume": "resume a paused run", "kill": "kill the run (its branch is kept)",
        "message": "send the agent a message (read at its next model call)",
        "merge": "merge now (a run kept for review, or when accepted)",
        "keep": "keep for review: when accepted, keep the branch",
        "worktree": "show (and copy) the run's worktree path", "raise": "raise the task's priority by 1",
        "lower": "lower the task's priority by 1", "set_priority": "set the task's priority",
        "cancel": "cancel the queued task", "chat": "chat: threads, messages, post as --as NAME",
        "next_thread": "the next thread", "rollback": "roll the worktree back to the chosen checkpoint (asks first)",
        "refresh_diff": "recompute the diff"}
