"""The fleet view of `loopwright tui`: one row per run, newest first, and the actions on the selected run."""

from __future__ import annotations

import time
from collections.abc import Iterable

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding

from loopwright.harness.statuses import RunStatus
from loopwright.memory.store import Run
from loopwright.runtime.display import fmt_cost, fmt_elapsed, fmt_tokens
from loopwright.tui.dialogs import PathScreen, Prompt
from loopwright.tui.feed import Changes
from loopwright.tui.widgets import STATUS_STYLE, VIEW_KEYS, RowTable, View, cut

FLEET_COLUMNS = (("run", "Run", 8), ("status", "Status", 12), ("health", "Health", 10), ("task", "Task", 22),
                 ("attempt", "Att", 3), ("step", "Step", 4), ("tokens", "Tokens", 6), ("cost", "Cost", 6),
                 ("elapsed", "Elapsed", 7), ("action", "Last action", 40))
FLEET_DROP = ("attempt", "step", "tokens", "elapsed", "health", "cost")  # left out first in a narrow terminal


def _status(status: str) -> Text:
    return Text(status.replace("_", " "), style=STATUS_STYLE.get(status, ""))


def _cost(run: Run) -> str:
    return fmt_cost(run, 2 if run.cost_usd >= 1 else 3)


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
        *VIEW_KEYS,
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
        yield RowTable(FLEET_COLUMNS, shrink={"task": 14, "action": 12}, drop=FLEET_DROP, id="fleet")

    def cells(self, run_id: str) -> tuple:
        feed = self.app.feed
        s = feed.runs[run_id]
        run = s.run
        health = feed.health(run_id)
        return (run.id, _status(feed.status(run_id)),
                Text(health, style="bold red" if health.startswith("stuck") else "bold yellow") if health
                else Text("ok", style="dim") if run.status == RunStatus.RUNNING else "",
                cut(f"{run.task_id} {s.title}", 22), str(s.attempt), str(run.step), fmt_tokens(run.tokens),
                _cost(run), fmt_elapsed(feed.elapsed(run_id)), cut(feed.last_action(run_id), 40))

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
            actions = self.app.actions
            self.app.confirm(f"Kill run {rid}?\n\nIts agent stops for good (the tool call running now is ended); "
                             "its branch is kept.", "Kill", lambda: actions.killable(rid),
                             lambda: self.app.act(lambda: actions.kill(rid)))

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
