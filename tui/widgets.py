"""What the fleet and queue views of `loopwright tui` share: the header, the read-only banner, `RowTable` (a
keyed table that redraws only the rows that changed) and `View`, the screen the app feeds on every tick."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Region, Size
from textual.message import Message
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Footer, Static

from loopwright.harness.statuses import TaskStatus
from loopwright.runtime.display import fmt_tokens
from loopwright.tui.feed import Changes

if TYPE_CHECKING:
    from loopwright.tui.app import TuiApp

SERVE_HINT = "start one with `loopwright serve --detach` (or quit and run `loopwright tui --serve`)"
NOTHING_RUNS = "no daemon is running: nothing runs until one starts (`loopwright serve --detach`)"
STATUS_STYLE = {TaskStatus.RUNNING: "bold green", TaskStatus.PAUSED: "yellow", TaskStatus.SUCCEEDED: "bold blue",
                TaskStatus.FAILED: "bold red", TaskStatus.KILLED: "red", TaskStatus.NEEDS_REVIEW: "bold magenta",
                TaskStatus.BUDGET_EXCEEDED: "bold dark_orange", TaskStatus.QUEUED: "cyan", TaskStatus.CANCELLED: "dim",
                "blocked": "dim", "pausing…": "yellow", "killing…": "red"}  # and what the fleet view shows instead


def cut(text: str, width: int) -> str:
    """The text on one line, cut to `width` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


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
        counts = (f"runs: {h.running} running, {h.paused} paused · queue: {h.queued}"
                  + (f" ({h.blocked} blocked)" if h.blocked else ""))
        budget = budget_text(h.budget, h.spent)
        t.append("\n" + counts)  # the budget on a line of its own rather than wrapped mid-phrase
        t.append("\n" if len(counts) + 3 + budget.cell_len > app.size.width - 2 else " · ")
        t.append_text(budget)
        if h.gates:
            for g in h.gates:
                until = time.strftime("%H:%M", time.localtime(g["until"]))
                t.append(f"\ngate {g['gate']}: backing off until {until}", style="yellow")
                if g.get("reason"):
                    t.append(f" ({cut(g['reason'], 60)})", style="yellow")
        else:
            t.append(" · gates open")
        if app.sandbox_warning:  # agent commands run unjailed: loud
            t.append(f"\n⚠ WARNING: {app.sandbox_warning}", style="bold red")
        self.update(t)


class KeyFooter(Footer):
    """The footer, rebuilt only when the keys it shows change.

    Textual's Footer rebuilds its keys whenever a screen's bindings are updated (each focus change, each time the
    screen is shown again), and every key it drops stays referenced by the footer (a data binding), so a long
    session piled up thousands of dead widgets that each full garbage collection walked: the worst key waits.
    """

    def __init__(self) -> None:
        super().__init__(compact=True, show_command_palette=False)
        self._shown: tuple | None = None

    def bindings_changed(self, screen: Screen) -> None:
        keys = tuple((b.key, b.description, enabled, tooltip)
                     for _, b, enabled, tooltip in screen.active_bindings.values() if b.show)
        if keys == self._shown:
            return
        if screen.app.app_focus and self.is_attached and screen is self.screen:  # when Footer rebuilds
            self._shown = keys
        super().bindings_changed(screen)


class Banner(Static):
    """Shown while no daemon runs: run actions are off, what the store keeps meanwhile, and how to start one."""

    def update_from(self, app: TuiApp) -> None:
        self.set_class(app.read_only, "shown")
        if app.read_only:
            lost = f"the daemon (pid {app.lost_pid}) stopped" if app.lost_pid else "no daemon is running"
            self.update(Text(f"Read-only: {lost}. Start one with `loopwright serve --detach`; until then nothing "
                             "runs (a new task or a chat message waits in the store). This view attaches when one "
                             "runs."))


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

    def __init__(self, columns: Iterable[tuple[str, str, int]], *, shrink: dict[str, int] | None = None,
                 drop: Iterable[str] = (), id: str | None = None):
        """`columns` are (key, label, width); when the table is narrower than they need, the columns in
        `shrink` narrow down to the width given there, then the columns in `drop` are left out, first first."""
        super().__init__(id=id)
        self.all_columns = list(columns)
        self.shrink, self.drop = shrink or {}, list(drop)
        self._col = {key: i for i, (key, _, _) in enumerate(self.all_columns)}
        self.columns = self.all_columns  # those shown, at the widths they get
        self.width_cells = self._width(self.columns)
        self._keys: list[str] = []
        self._index: dict[str, int] = {}
        self._cells: dict[str, tuple] = {}
        self._strips: dict[str, Strip] = {}
        self.cursor_row = 0
        self._styles: tuple = ()  # base, header, cursor and odd-row styles, read once per render
        self._header: Strip | None = None

    @staticmethod
    def _width(columns: Iterable[tuple[str, str, int]]) -> int:
        return sum(w + 1 for _, _, w in columns) + 1  # a space before each column and after the last

    def fit(self, width: int) -> list[tuple[str, str, int]]:
        """The columns shown in `width` cells: shrunk, then the least important left out, then grown back."""
        least = [(k, label, self.shrink.get(k, w)) for k, label, w in self.all_columns]
        for key in self.drop:
            if self._width(least) <= width:
                break
            least = [c for c in least if c[0] != key]
        spare, full = width - self._width(least), {k: w for k, _, w in self.all_columns}
        shown = []
        for key, label, w in least:
            grow = max(0, min(full[key] - w, spare))
            spare -= grow
            shown.append((key, label, w + grow))
        return shown

    def on_resize(self) -> None:
        columns = self.fit(self.scrollable_content_region.width or self.size.width)
        if columns != self.columns:
            self.columns, self.width_cells = columns, self._width(columns)
            self._strips, self._header = {}, None
            self._resize()
            self.refresh()

    # -- data --------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self._keys)

    @property
    def keys(self) -> list[str]:
        """The rows' keys, top to bottom."""
        return list(self._keys)

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

    def _strip(self, cells: tuple) -> Strip:
        line = Text(no_wrap=True, end="")
        for key, _, width in self.columns:
            cell = cells[self._col[key]]
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
                self._header = self._strip(tuple(label for _, label, _ in self.all_columns)).apply_style(base + header)
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


# the app's keys a view's footer shows (after the view's own); they do the same from every screen
VIEW_KEYS = [Binding("t", "app.queue", "Queue"), Binding("n", "app.new_task", "New"),
             Binding("g", "app.chat", "Chat"), Binding("q", "app.quit", "Quit")]


class View(Screen):
    """A screen the app feeds on every tick."""

    view = ""
    PALETTE: list[tuple[str, str, str]] = []  # (action, title, help) offered in the command palette

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.view)
        yield Banner()
        yield from self.body()
        yield KeyFooter()  # the most used keys; `?` lists every one

    def body(self) -> ComposeResult:
        yield from ()

    def on_mount(self) -> None:
        self.app.views.add(self)
        self.refresh_header()
        self.sync()

    def on_unmount(self) -> None:
        self.app.views.discard(self)

    def on_resize(self) -> None:
        self.refresh_header()

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
