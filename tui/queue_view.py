"""The queue view of `loopwright tui`: queued and blocked tasks in the order they start, and their priorities."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from loopwright.harness.statuses import TaskStatus
from loopwright.tui.dialogs import Prompt
from loopwright.tui.feed import Changes
from loopwright.tui.widgets import STATUS_STYLE, VIEW_KEYS, RowTable, View, cut

QUEUE_COLUMNS = (("task", "Task", 5), ("priority", "Pri", 4), ("state", "State", 8), ("title", "Title", 40),
                 ("after", "After", 28))


class QueueScreen(View):
    """Queued tasks in the order they start; blocked ones wait for their `--after` tasks."""

    view = "queue"
    BINDINGS = [
        Binding("f", "app.fleet", "Fleet"),
        Binding("plus,equals_sign", "raise", "Raise", key_display="+"),
        Binding("minus", "lower", "Lower", key_display="-"),
        Binding("P", "set_priority", "Set priority", show=False),
        Binding("c,delete", "cancel", "Cancel", key_display="c"),
        *VIEW_KEYS[1:],
    ]
    PALETTE = [("raise", "Raise the priority of task {key}", "it starts before tasks of lower priority"),
               ("lower", "Lower the priority of task {key}", ""),
               ("set_priority", "Set the priority of task {key}", "any integer; higher starts first"),
               ("cancel", "Cancel task {key}", "it leaves the queue and never starts")]

    def __init__(self) -> None:
        super().__init__()
        self.shown: list[tuple] = []

    def body(self) -> ComposeResult:
        yield RowTable(QUEUE_COLUMNS, shrink={"title": 20, "after": 12}, id="queue")

    def rows(self) -> list[tuple]:
        feed, rows = self.app.feed, []
        for task in feed.queue():
            waiting = feed.waiting_on(task.id)
            after = ", ".join(f"{d} ({feed.tasks[d].status.replace('_', ' ') if d in feed.tasks else '?'})"
                              for d in feed.dependencies(task.id))
            state = "blocked" if waiting else TaskStatus.QUEUED
            rows.append((str(task.id), str(task.priority), Text(state, style=STATUS_STYLE[state]),
                         cut(task.title, 40), cut(after, 28)))
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
