"""The Textual app of `loopwright tui` (the command is cli/tui.py): it supervises the project's daemon through
the store.

The fleet view (one row per run) and the queue view (queued and blocked
tasks) redraw from a `Feed` on a timer; every action is a row in the store's
commands table (runtime/actions.py), carried out by the daemon. Without a
daemon the app is read-only, says so in a banner and attaches again as soon as
one runs. Quitting never stops the daemon or any agent.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.geometry import Region, Size
from textual.message import Message
from textual.screen import ModalScreen, Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Button, DataTable, Footer, Input, Label, Static, Switch

from loopwright.errors import LoopwrightError
from loopwright.harness.statuses import RunStatus, TaskStatus
from loopwright.memory.store import StoreError
from loopwright.runtime.actions import Actions, Done
from loopwright.runtime.display import fmt_elapsed, fmt_tokens
from loopwright.runtime.project import Project
from loopwright.tui.feed import Changes, Feed

ACTION_ERRORS = (LoopwrightError, ValueError)  # a user's error (or a bad number typed): said in a toast
SERVE_HINT = "start one with `loopwright serve --detach` (or quit and run `loopwright tui --serve`)"
STATUS_STYLE = {TaskStatus.RUNNING: "bold green", TaskStatus.PAUSED: "yellow", TaskStatus.SUCCEEDED: "bold blue",
                TaskStatus.FAILED: "bold red", TaskStatus.KILLED: "red", TaskStatus.NEEDS_REVIEW: "bold magenta",
                TaskStatus.BUDGET_EXCEEDED: "bold dark_orange", TaskStatus.QUEUED: "cyan", TaskStatus.CANCELLED: "dim",
                "blocked": "dim", "pausing…": "yellow", "killing…": "red"}  # and what the fleet view shows instead
TOAST = {"task_succeeded": "information", "task_failed": "error", "task_needs_review": "warning",
         "run_needs_input": "warning", "budget_spent": "error"}


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _status(status: str) -> Text:
    return Text(status.replace("_", " "), style=STATUS_STYLE.get(status, ""))


def _cost(usd: float) -> str:
    return f"${usd:.2f}" if usd >= 1 else f"${usd:.3f}"


def budget_text(usage: dict, spent: str | None) -> Text:
    """The fleet budget in one line: spent today and what is left (and the all-time limit when there is one)."""
    if spent:
        return Text(spent, style="bold red")
    if not usage:
        return Text("budget: …")
    parts = [f"${usage['day_usd']:.2f} spent today"]
    if usage["day_usd_limit"] is not None:
        parts[0] += f", ${max(0.0, usage['day_usd_limit'] - usage['day_usd']):.2f} left"
    if usage["day_tokens_limit"] is not None:
        parts.append(f"{fmt_tokens(usage['day_tokens'])} of {fmt_tokens(usage['day_tokens_limit'])} tokens today")
    if usage["total_usd_limit"] is not None:
        parts.append(f"${usage['total_usd']:.2f} of ${usage['total_usd_limit']:.2f} in total")
    if usage["total_tokens_limit"] is not None:
        parts.append(f"{fmt_tokens(usage['total_tokens'])} of {fmt_tokens(usage['total_tokens_limit'])} "
                     "tokens in total")
    if all(usage[k] is None for k in ("day_usd_limit", "day_tokens_limit", "total_usd_limit", "total_tokens_limit")):
        parts[0] += " (no limit)"
    return Text("budget: " + "; ".join(parts))


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


# -- widgets shared by the views -----------------------------------------------------------------


class HeaderBar(Static):
    """Daemon, runs and queue counts, fleet budget, provider gates."""

    def __init__(self, view: str):
        super().__init__()
        self.view = view

    def update_from(self, app: TuiApp) -> None:
        h = app.feed.header
        t = Text()
        t.append("loopwright", style="bold")
        t.append(f" · {self.view} · {app.project.root.name} · ")
        t.append(f"daemon pid {h.daemon}" if h.daemon else "no daemon (read-only)",
                 style="green" if h.daemon else "bold red")
        t.append(f"\nruns: {h.running} running, {h.paused} paused · queue: {h.queued}"
                 + (f" ({h.blocked} blocked)" if h.blocked else "") + " · ")
        t.append_text(budget_text(h.budget, h.spent))
        if h.gates:
            for g in h.gates:
                until = time.strftime("%H:%M", time.localtime(g["until"]))
                t.append(f"\ngate {g['gate']}: backing off until {until}", style="yellow")
                if g.get("reason"):
                    t.append(f" ({_cut(g['reason'], 60)})", style="yellow")
        else:
            t.append(" · gates open")
        if app.sandbox_warning:  # agent commands run unjailed: loud
            t.append(f"\n⚠ WARNING: {app.sandbox_warning}", style="bold red")
        self.update(t)


class Banner(Static):
    """Shown while no daemon runs: the view is read-only, and how to start one."""

    def update_from(self, app: TuiApp) -> None:
        self.set_class(app.read_only, "shown")
        if app.read_only:
            lost = f"the daemon (pid {app.lost_pid}) stopped" if app.lost_pid else "no daemon is running"
            self.update(Text(f"Read-only: {lost}; {SERVE_HINT}. This view attaches again when one runs."))


class RowTable(ScrollView, can_focus=True):
    """A keyed table that re-renders only the rows that changed (the Line API): a fleet of 100 busy runs.

    DataTable re-renders every visible cell after any update; this keeps one rendered strip per row
    and refreshes the screen lines of the rows that changed. A fixed header line, a row cursor
    (up/down/page/home/end, a click), enter posts `RowTable.Selected`.
    """

    BINDINGS = [
        Binding("enter", "select", "Select", show=False),
        Binding("up", "cursor(-1)", show=False),
        Binding("down", "cursor(1)", show=False),
        Binding("pageup", "cursor(-20)", show=False),
        Binding("pagedown", "cursor(20)", show=False),
        Binding("home", "cursor(-1000000)", show=False),
        Binding("end", "cursor(1000000)", show=False),
    ]
    COMPONENT_CLASSES = {"row-table--header", "row-table--cursor", "row-table--odd"}
    DEFAULT_CSS = """
    RowTable { height: 1fr; background: $surface; }
    RowTable > .row-table--header { text-style: bold; background: $panel; color: $text; }
    RowTable > .row-table--cursor { background: $block-cursor-blurred-background; }
    RowTable:focus > .row-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground; }
    RowTable > .row-table--odd { background: $surface-lighten-1; }
    """

    class Selected(Message):
        """Enter on a row."""

        def __init__(self, key: str):
            super().__init__()
            self.key = key

    def __init__(self, columns: Iterable[tuple[str, str, int]], *, id: str | None = None):
        super().__init__(id=id)
        self.columns = list(columns)
        self._col = {key: i for i, (key, _, _) in enumerate(self.columns)}
        self.width_cells = sum(w + 2 for _, _, w in self.columns)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple] = {}
        self._strips: dict[str, Strip] = {}
        self.cursor_row = 0
        self._styles: tuple = ()  # base, header, cursor and odd-row styles, read once per render
        self._header: Strip | None = None

    # -- data --------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def selected_key(self) -> str | None:
        return self._keys[self.cursor_row] if self._keys else None

    def get_row_index(self, key: str) -> int:
        return self._index[key]

    def get_cell(self, key: str, column: str):
        return self._cells[key][self._col[column]]

    def set_row(self, key: str, cells: tuple) -> None:
        """Add the row, or update it (its line alone is redrawn)."""
        self._cells[key] = cells
        self._strips.pop(key, None)
        if key in self._index:
            self._refresh_row(self._index[key])
            return
        self._index[key] = len(self._keys)
        self._keys.append(key)
        self._resize()
        self._refresh_row(self._index[key])

    def set_rows(self, rows: list[tuple[str, tuple]]) -> None:
        """Replace every row (the cursor stays on its row when that row is still there)."""
        keep = self.selected_key
        self._keys = [k for k, _ in rows]
        self._index = {k: i for i, k in enumerate(self._keys)}
        self._cells = dict(rows)
        self._strips = {}
        self.cursor_row = self._index.get(keep, min(self.cursor_row, max(0, len(self._keys) - 1)))  # type: ignore[arg-type]
        self._resize()
        self.refresh()

    def sort(self, key: Callable[[str], object]) -> None:
        keep = self.selected_key
        self._keys.sort(key=key)
        self._index = {k: i for i, k in enumerate(self._keys)}
        if keep is not None:
            self.cursor_row = self._index[keep]
        self.refresh()

    def move_cursor(self, *, row: int, animate: bool = False) -> None:
        old, self.cursor_row = self.cursor_row, max(0, min(row, len(self._keys) - 1))
        self._refresh_row(old)
        self._refresh_row(self.cursor_row)
        top, rows = self.scroll_offset.y, max(1, self.size.height - 1 - (self.size.width < self.width_cells))
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + rows:
            self.scroll_to(y=self.cursor_row - rows + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(row=self.cursor_row + delta)

    def action_select(self) -> None:
        if self.selected_key is not None:
            self.post_message(self.Selected(self.selected_key))

    def on_click(self, event) -> None:
        if event.y >= 1 and (row := self.scroll_offset.y + event.y - 1) < len(self._keys):
            self.move_cursor(row=row)

    def _resize(self) -> None:
        self.virtual_size = Size(self.width_cells, len(self._keys) + 1)

    def _refresh_row(self, index: int) -> None:
        self.refresh(Region(0, index - self.scroll_offset.y + 1, max(self.width_cells, self.size.width), 1))

    # -- rendering ---------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles, self._header = (), None

    def render_lines(self, crop: Region) -> list[Strip]:
        if not self._styles:
            self._styles = (self.rich_style, self.get_component_rich_style("row-table--header"),
                            self.get_component_rich_style("row-table--cursor"),
                            self.get_component_rich_style("row-table--odd"))
        return super().render_lines(crop)

    def on_focus(self) -> None:
        self._styles = ()
        self._refresh_row(self.cursor_row)

    on_blur = on_focus

    def _strip(self, cells: Iterable) -> Strip:
        line = Text(no_wrap=True, end="")
        for (_, _, width), cell in zip(self.columns, cells):
            text = cell.copy() if isinstance(cell, Text) else Text(str(cell))
            text.truncate(width, overflow="ellipsis", pad=True)
            line.append(" ")
            line.append_text(text)
            line.append(" ")
        return Strip(list(line.render(self.app.console)), line.cell_len)

    def render_line(self, y: int) -> Strip:
        base, header, cursor, odd = self._styles or (Style(),) * 4
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            if self._header is None:
                self._header = self._strip(label for _, label, _ in self.columns).apply_style(base + header)
            return self._header.crop_extend(scroll_x, scroll_x + width, base + header)
        index = scroll_y + y - 1
        if index >= len(self._keys):
            return Strip.blank(width, base)
        key = self._keys[index]
        strip = self._strips.get(key)
        if strip is None:
            strip = self._strips[key] = self._strip(self._cells[key])
        style = base + (cursor if index == self.cursor_row else odd if index % 2 else Style())
        return strip.apply_style(style).crop_extend(scroll_x, scroll_x + width, style)


class View(Screen):
    """A screen the app feeds on every tick."""

    view = ""
    PALETTE: list[tuple[str, str, str]] = []  # (action, title, help) offered in the command palette

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.view)
        yield Banner()
        yield from self.body()
        yield Footer()

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.app.views.add(self)
        self.refresh_header()
        self.sync()

    def on_unmount(self) -> None:
        self.app.views.discard(self)

    def refresh_header(self) -> None:
        self.query_one(HeaderBar).update_from(self.app)
        self.query_one(Banner).update_from(self.app)

    def sync(self) -> None:
        """Show the feed's state as it is."""

    def apply(self, ch: Changes) -> bool:
        """Show what changed; True when something on screen did."""
        if ch.header_changed:
            self.refresh_header()
            return True
        return False

    @property
    def table(self) -> RowTable:
        return self.query_one(RowTable)

    def selected(self) -> str | None:
        return self.table.selected_key

    def palette(self) -> Iterable[tuple[str, str, Callable[[], object]]]:
        key = self.selected()
        for action, title, help in self.PALETTE:
            if key is not None:
                yield title.format(key=key), help, lambda a=action: self.run_action(a)


# -- the fleet -----------------------------------------------------------------------------------

FLEET_COLUMNS = (("run", "Run", 8), ("status", "Status", 12), ("health", "Health", 10), ("task", "Task", 22),
                 ("attempt", "Att", 3), ("step", "Step", 4), ("tokens", "Tokens", 6), ("cost", "Cost", 6),
                 ("elapsed", "Elapsed", 7), ("action", "Last action", 40))


class FleetScreen(View):
    """One row per run, newest first."""

    view = "fleet"
    BINDINGS = [
        Binding("enter", "open", "Open", show=False),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("x", "kill", "Kill"),
        Binding("m", "message", "Message"),
        Binding("M", "merge", "Merge now", show=False),
        Binding("K", "keep", "Keep for review", show=False),
        Binding("w", "worktree", "Worktree", show=False),
    ]
    PALETTE = [("open", "Open run {key}", "its transcript, diff and checkpoints (rollback from there)"),
               ("pause", "Pause run {key}", "it stops when its current tool call ends (shown as pausing…); "
                                            "resume continues it"),
               ("resume", "Resume run {key}", "a paused or budget-stopped run goes on"),
               ("kill", "Kill run {key}", "stop it for good (its branch is kept)"),
               ("message", "Send a message to run {key}", "the agent reads it at its next model call"),
               ("merge", "Merge run {key} now", "a run kept for review is merged; a running one when accepted"),
               ("keep", "Keep run {key} for review", "when accepted, its branch is kept instead of merged"),
               ("worktree", "Show the worktree path of run {key}", "to open it in your editor or a shell")]

    def __init__(self) -> None:
        super().__init__()
        self.shown: dict[str, tuple] = {}
        self._ticked = 0.0

    def body(self) -> ComposeResult:
        yield RowTable(FLEET_COLUMNS, id="fleet")

    def cells(self, run_id: str) -> tuple:
        feed = self.app.feed
        s = feed.runs[run_id]
        run = s.run
        health = feed.health(run_id)
        return (run.id, _status(feed.status(run_id)),
                Text(health, style="bold red" if health.startswith("stuck") else "bold yellow") if health
                else Text("ok", style="dim") if run.status == RunStatus.RUNNING else "",
                _cut(f"{run.task_id} {s.title}", 22), str(s.attempt), str(run.step), fmt_tokens(run.tokens),
                _cost(run.cost_usd), fmt_elapsed(feed.elapsed(run_id)), _cut(feed.last_action(run_id), 40))

    def show(self, run_ids: Iterable[str]) -> set[str]:
        """Update the rows of these runs (those whose cells changed); returns the runs whose row changed."""
        table, changed, added = self.table, set(), False
        for rid in run_ids:
            cells = self.cells(rid)
            old = self.shown.get(rid)
            if old == cells:
                continue
            added |= old is None
            table.set_row(rid, cells)
            self.shown[rid] = cells
            changed.add(rid)
        if added:
            runs = self.app.feed.runs
            table.sort(key=lambda rid: (-runs[rid].run.started_at, rid))
        return changed

    def sync(self) -> None:
        self.show(self.app.feed.runs)
        self.table.move_cursor(row=0)

    def apply(self, ch: Changes) -> bool:
        changed = super().apply(ch)
        rows = set(ch.runs) | set(ch.events) - {""}
        clock = time.monotonic()
        if clock - self._ticked >= 1.0:  # elapsed times and health move without events
            self._ticked = clock
            rows |= {rid for rid, s in self.app.feed.runs.items() if s.run.status == RunStatus.RUNNING}
        shown = self.show(r for r in rows if r in self.app.feed.runs)
        self.app.shown_rows(shown, ch)
        return changed or bool(shown)

    # -- actions --------------------------------------------------------------------------------

    def _selected_run(self) -> str | None:
        rid = self.selected()
        if rid is None:
            self.app.say("no run selected", "warning")
        return rid

    @on(RowTable.Selected)
    def _row_selected(self, event: RowTable.Selected) -> None:
        self.open_run(event.key)

    def action_open(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.open_run(rid)

    def open_run(self, run_id: str) -> None:
        try:
            from loopwright.tui.run_view import RunScreen
        except ImportError:
            self.app.say("the run view is not part of this build yet", "warning")
            return
        self.app.push_screen(RunScreen(self.app.project, self.app.actions, run_id, read_only=self.app.read_only))

    def action_pause(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.act(lambda: self.app.actions.pause(rid))

    def action_resume(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.act(lambda: self.app.actions.resume(rid))

    def action_kill(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.act(lambda: self.app.actions.kill(rid))

    def action_merge(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.act(lambda: self.app.actions.merge(rid))

    def action_keep(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.act(lambda: self.app.actions.keep(rid))

    def action_message(self) -> None:
        if (rid := self._selected_run()) is None or not self.app.writable():
            return

        def send(text: str | None) -> None:
            if text is not None:
                self.app.act(lambda: self.app.actions.message(rid, text))

        self.app.push_screen(Prompt(f"Message to run {rid}", "the agent reads it at its next model call"), send)

    def action_worktree(self) -> None:
        if (rid := self._selected_run()) is not None:
            self.app.push_screen(PathScreen(rid, self.app.feed.runs[rid].run.worktree))


# -- the queue -----------------------------------------------------------------------------------

QUEUE_COLUMNS = (("task", "Task", 5), ("priority", "Pri", 4), ("state", "State", 8), ("title", "Title", 40),
                 ("after", "After", 28))


class QueueScreen(View):
    """Queued tasks in the order they start; blocked ones wait for their `--after` tasks."""

    view = "queue"
    BINDINGS = [
        Binding("plus,equals_sign", "raise", "Priority +1", key_display="+"),
        Binding("minus", "lower", "Priority -1", key_display="-"),
        Binding("P", "set_priority", "Set priority", show=False),
        Binding("c,delete", "cancel", "Cancel task", key_display="c"),
    ]
    PALETTE = [("raise", "Raise the priority of task {key}", "it starts before tasks of lower priority"),
               ("lower", "Lower the priority of task {key}", ""),
               ("set_priority", "Set the priority of task {key}", "any integer; higher starts first"),
               ("cancel", "Cancel task {key}", "it leaves the queue and never starts")]

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple] = []

    def body(self) -> ComposeResult:
        yield RowTable(QUEUE_COLUMNS, id="queue")

    def rows(self) -> list[tuple]:
        feed, rows = self.app.feed, []
        for task in feed.queue():
            waiting = feed.waiting_on(task.id)
            after = ", ".join(f"{d} ({feed.tasks[d].status.replace('_', ' ') if d in feed.tasks else '?'})"
                              for d in feed.dependencies(task.id))
            state = "blocked" if waiting else TaskStatus.QUEUED
            rows.append((str(task.id), str(task.priority), Text(state, style=STATUS_STYLE[state]),
                         _cut(task.title, 40), _cut(after, 28)))
        return rows

    def sync(self) -> None:
        rows = self.rows()
        if rows != self.shown:
            self.table.set_rows([(row[0], row) for row in rows])
            self.shown = rows

    def apply(self, ch: Changes) -> bool:
        changed = super().apply(ch)
        if ch.tasks:
            before = self.shown
            self.sync()
            changed |= before is not self.shown
        return changed

    def _queued_task(self) -> int | None:
        key = self.selected()
        if key is None:
            self.app.say("the queue is empty", "warning")
            return None
        return int(key)

    def _priority(self, delta: int) -> None:
        if (tid := self._queued_task()) is not None:
            current = self.app.feed.tasks[tid].priority
            self.app.act(lambda: self.app.actions.prioritise(tid, current + delta))

    def action_raise(self) -> None:
        self._priority(+1)

    def action_lower(self) -> None:
        self._priority(-1)

    def action_set_priority(self) -> None:
        if (tid := self._queued_task()) is None or not self.app.writable():
            return

        def set_to(text: str | None) -> None:
            if text is not None:
                self.app.act(lambda: self.app.actions.prioritise(tid, int(text)))

        current = str(self.app.feed.tasks[tid].priority)
        self.app.push_screen(Prompt(f"Priority of task {tid}", "higher starts first", integer=True, value=current),
                             set_to)

    def action_cancel(self) -> None:
        if (tid := self._queued_task()) is not None:
            self.app.act(lambda: self.app.actions.cancel(tid))


# -- dialogs -------------------------------------------------------------------------------------


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

    BINDINGS = [Binding("escape", "cancel", "Cancel"), Binding("ctrl+s", "post", "Post")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("New task")
            yield Input(placeholder="goal: what the agent should do", id="goal")
            yield Input(placeholder="check: acceptance command, e.g. pytest -q (optional)", id="check")
            yield Input(value="0", placeholder="priority (higher starts first)", type="integer", id="priority")
            with Horizontal(classes="row"):
                yield Switch(id="until")
                yield Label("until mode: fresh attempts until the check passes")
            with Horizontal():
                yield Button("Post", variant="primary", id="post")
                yield Button("Cancel", id="cancel")
            yield Label("enter: next field (post from the last) · ctrl+s: post · escape: cancel", classes="hint")

    @on(Input.Submitted)
    def _next(self, event: Input.Submitted) -> None:
        if event.input.id == "priority":
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
                            said=lambda t: f"task {t.id} queued: {t.title}")
        if task is not None:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class HelpScreen(ModalScreen[None]):
    """Every key binding, by view."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "Close")]

    def compose(self) -> ComposeResult:
        table = DataTable(id="help-table", cursor_type="none", show_cursor=False)
        table.add_column("Where", key="where", width=10)
        table.add_column("Key", key="key", width=7)
        table.add_column("Does", key="does")
        from loopwright.tui.chat_view import ChatScreen
        from loopwright.tui.run_view import RunScreen

        for where, bindings in (("anywhere", TuiApp.BINDINGS), ("fleet", FleetScreen.BINDINGS),
                                ("queue", QueueScreen.BINDINGS), ("run", RunScreen.BINDINGS),
                                ("chat", ChatScreen.BINDINGS)):
            for b in bindings:
                table.add_row(where, b.key_display or b.key.split(",")[0], HELP.get(b.action, b.description))
            if where == "anywhere":
                table.add_row("anywhere", "ctrl+p", "command palette: every action by name")
                table.add_row("dialogs", "escape", "close without doing anything")
        with Vertical(classes="dialog"):
            yield Label("Key bindings")
            yield table
            yield Label("escape: close", classes="hint")

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


# -- the app -------------------------------------------------------------------------------------


class TuiApp(App):
    """The supervisor's terminal UI; `feed` and `actions` may be given (tests, the benchmark)."""

    CSS = CSS
    TITLE = "loopwright"
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("f", "fleet", "Fleet", show=False),
        Binding("t", "queue", "Queue"),
        Binding("n", "new_task", "New task"),
        Binding("g", "chat", "Chat"),
        Binding("q", "quit", "Quit"),
    ]
    MODES = {"fleet": FleetScreen, "queue": QueueScreen}

    def __init__(self, project: Project, *, feed: Feed | None = None, actions: Actions | None = None,
                 interval: float = 1 / 12, author: str | None = None, sandbox_warning: str | None = None):
        super().__init__()
        self.project = project
        self.sandbox_warning = sandbox_warning  # agent commands run unjailed: said in the header
        self.author = author or os.environ.get("USER") or "me"  # who the chat view posts as
        self.feed = feed or Feed.for_project(project)
        self.actions = actions or Actions(project)
        self.interval = interval
        self.said: list[tuple[str, str]] = []  # every toast shown: (severity, text)
        self.lost_pid: int | None = None  # the daemon that stopped while we were attached
        self.on_shown: Callable[[set[str], Changes], None] | None = None  # the benchmark's lag probe
        self.views: set[View] = set()  # the mounted views, fed on every tick
        self._last_pid: int | None = None
        self._failing = False

    @property
    def read_only(self) -> bool:
        return self.feed.header.daemon is None

    def on_mount(self) -> None:
        self.feed.poll()
        self._last_pid = self.feed.header.daemon
        self.switch_mode("fleet")
        self.set_interval(self.interval, self.tick)

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

    def act(self, do: Callable[[], object], *, said: Callable[[object], str] | None = None):
        """Run one action (a row in the commands table); its errors become error toasts. None when refused."""
        if not self.writable():
            return None
        try:
            result = do()
        except ACTION_ERRORS as e:
            self.say(str(e), "error")
            return None
        except Exception as e:  # noqa: BLE001 - a supervisor's screen must not die of one failed action
            self.say(f"{type(e).__name__}: {e}", "error")
            return None
        self.say(said(result) if said else result.said if isinstance(result, Done) else str(result))
        self.tick()  # show the effect at once where there is one
        return result

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_fleet(self) -> None:
        self.switch_mode("fleet")

    def action_queue(self) -> None:
        self.switch_mode("queue")

    def action_new_task(self) -> None:
        if self.writable():
            self.push_screen(NewTaskScreen())

    def action_chat(self) -> None:
        from loopwright.tui.chat_view import ChatScreen

        if not isinstance(self.screen, ChatScreen):
            self.push_screen(ChatScreen(self.project, self.author, read_only=self.read_only))

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
