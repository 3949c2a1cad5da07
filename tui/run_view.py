"""The run screen of `loopwright tui`: one run's live transcript, diff, checkpoints, artifacts and notes.

Everything shown comes from the store (events read incrementally, after the
last id seen, a few times a second) or from git in a worker thread (the diff);
every action is a command written through `runtime.actions.Actions`, which the
daemon or the run itself carries out. Nothing here touches the daemon's memory.

Kept whole although just over 600 lines: it is one screen, and its transcript
and diff helpers and its three small dialogs serve only it (the fleet and
queue views' dialogs are in dialogs.py).
"""

from __future__ import annotations

import dataclasses
import re
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.syntax import Syntax
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.lazy import Lazy
from textual.screen import ModalScreen, Screen
from textual.widgets import Collapsible, DataTable, Footer, Input, RichLog, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from loopwright.harness import events as ev
from loopwright.harness.loop import WAITING
from loopwright.harness.statuses import RunStatus
from loopwright.memory import feed as reads
from loopwright.memory.artifacts import list_artifacts
from loopwright.memory.store import Run, Store, StoreError
from loopwright.runtime.actions import Actions, Done
from loopwright.runtime.agents import LOOPWRIGHT
from loopwright.runtime.display import ProgressPrinter, event_entries, fmt_cache, fmt_cost, fmt_elapsed, fmt_tokens
from loopwright.runtime.project import Project
from loopwright.tui.dialogs import DIALOG_CSS, ConfirmScreen
from loopwright.tui.feed import STOPPING
from loopwright.tui.widgets import KeyFooter
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError

POLL_SECONDS = 0.25  # 4 Hz: each tick reads only the events after the last one seen
FOLD_LINES = 40  # a message block (model text) shows this many lines, then "… N more lines"
RESULT_LINES = 8  # a tool result, folded further
LINE_CHARS = 400  # longer lines are cut (a 1 MB one-line tool output stays one short line)
LOG_LINES = 5000  # the transcript keeps this many rendered lines
TRANSCRIPT_TAIL = 300  # entries shown when a run is opened (`loopwright show ID --full` has them all)
TRANSCRIPT_EVENTS = 3 * TRANSCRIPT_TAIL  # the last events read for them (tool starts and model calls add none)
WRITE_BATCH = 40  # entries written to the transcript per turn of the event loop: keys are handled between
DIFF_FILE_LINES = 2000  # per file in the diff view
DIFF_FILES = 300
DIFF_BATCH = 20  # files mounted per frame: a diff of hundreds of files shows its first ones at once
DIFF_OPEN_LINES = 400  # the first file of the diff is shown open when it changes no more lines than this
TABS = ("transcript", "diff", "checkpoints", "artifacts", "notes")
TAB_FOCUS = {"transcript": "#log", "checkpoints": "#checkpoints-table", "artifacts": "#artifacts-table",
             "diff": "#diff-files", "notes": "#notes-scroll"}  # what has the keys on each tab
READ_ONLY = ("read-only: no daemon is running for this project, so nothing would carry out {verb} "
             "(start `loopwright serve`, then reopen the TUI)")


def fold(entry: str, max_lines: int = FOLD_LINES, width: int = LINE_CHARS) -> str:
    """A transcript entry cut to `max_lines` lines of at most `width` characters, saying what was left out."""
    lines = entry.split("\n", max_lines)
    if len(lines) > max_lines:
        total = entry.count("\n") + 1
        lines = lines[:max_lines] + [f"    … {total - max_lines} more lines"]
    return "\n".join(ln if len(ln) <= width else f"{ln[:width]} … (+{len(ln) - width} chars)" for ln in lines)


def event_lines(event: Any, ts: float, printer: ProgressPrinter) -> list[str]:
    """What one event adds to the transcript (as `runtime.display.transcript` shows it), folded."""
    return [fold(entry, RESULT_LINES if entry.startswith(("  ←", "  ✗")) else FOLD_LINES)
            for entry in event_entries(ts, event, printer, full=True)]


_STYLES = (("assistant:", "bold"), ("user:", "green"), ("  →", "cyan"), ("  ←", "dim"), ("  ✗", "red"),
           ("[", "yellow"))


def styled(entry: str) -> Text:
    """A transcript entry coloured by what it is (model text, tool call, result, error, event)."""
    for prefix, style in _STYLES:
        if entry.startswith(prefix):
            return Text(entry, style=style)
    return Text(entry)


def split_diff(diff: str) -> list[tuple[str, str]]:
    """A unified diff as (path, that file's part), in order."""
    parts = re.split(r"(?m)^(?=diff --git )", diff)
    files = []
    for part in parts:
        if not part.startswith("diff --git "):
            continue
        header = part.split("\n", 1)[0]
        path = header.rsplit(" b/", 1)[-1] if " b/" in header else header[len("diff --git "):]
        files.append((path, part))
    return files


def diff_body(part: str, max_lines: int = DIFF_FILE_LINES) -> str:
    """One file's diff as shown: without the header lines its title repeats, cut to `max_lines` short lines."""
    lines = [ln for ln in part.rstrip("\n").split("\n") if not ln.startswith(("diff --git ", "index "))]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"… {len(lines) - max_lines} more lines"]
    return "\n".join(ln if len(ln) <= LINE_CHARS else f"{ln[:LINE_CHARS]} …" for ln in lines)


def _diff_stat(part: str) -> tuple[int, int]:
    adds = dels = 0
    for line in part.split("\n"):
        if line.startswith("+") and not line.startswith("+++"):
            adds += 1
        elif line.startswith("-") and not line.startswith("---"):
            dels += 1
    return adds, dels


def _size(n: int | None) -> str:
    if n is None:
        return "missing"
    return f"{n} B" if n < 1024 else f"{n / 1024:.1f} KB" if n < 1024 ** 2 else f"{n / 1024 ** 2:.1f} MB"


def _subject(message: str) -> str:
    return (message.strip().splitlines() or [""])[0]


# -- dialogs ----------------------------------------------------------------------------------------

class MessageScreen(ModalScreen["str | None"]):
    """An input for a message to the agent (Enter sends, Escape cancels)."""

    DEFAULT_CSS = "MessageScreen {" + DIALOG_CSS + "}"
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(Text(f"Message to the agent of run {self.run_id}"))
            yield Input(placeholder="what the agent should know", id="message")
            yield Static("delivered at its next model boundary · Enter sends · Escape cancels", classes="hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)


class PathScreen(ModalScreen[None]):
    """The run's worktree path, selectable (and copied to the clipboard)."""

    DEFAULT_CSS = "PathScreen {" + DIALOG_CSS + "}"
    BINDINGS = [Binding("escape,enter", "close", "Close")]

    def __init__(self, run: Run):
        super().__init__()
        self.run = run

    def compose(self) -> ComposeResult:
        exists = Path(self.run.worktree).is_dir()
        with Vertical():
            yield Static(Text(f"Worktree of run {self.run.id} (branch {self.run.branch})"))
            yield Input(self.run.worktree, id="path")
            yield Static("copied to the clipboard (where the terminal allows it) · Escape closes" if exists else
                         "this folder no longer exists (`loopwright gc` removes the worktrees of finished runs)",
                         classes="hint")

    def on_mount(self) -> None:
        self.app.copy_to_clipboard(self.run.worktree)

    def action_close(self) -> None:
        self.dismiss(None)


# -- the screen -------------------------------------------------------------------------------------


class RunScreen(Screen):
    """One run: transcript, diff, checkpoints, artifacts, scratch pad and progress file, and its actions."""

    DEFAULT_CSS = """
    RunScreen #head { height: auto; max-height: 3; padding: 0 1; background: $boost; text-wrap: nowrap;
                      text-overflow: ellipsis; }
    RunScreen #missing { padding: 1 2; color: $error; }
    RunScreen TabbedContent { height: 1fr; }
    RunScreen ContentSwitcher { height: 1fr; }
    RunScreen TabPane { height: 1fr; padding: 0; }
    RunScreen #log { height: 1fr; }
    RunScreen #log-loading { height: auto; padding: 0 1; color: $text-muted; }
    RunScreen DataTable { height: 1fr; }
    RunScreen #diff-files, RunScreen #notes-scroll { height: 1fr; }
    RunScreen .section { text-style: bold; margin-top: 1; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", key_display="esc"),
        Binding("f", "app.fleet", "Fleet"),
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("x", "kill", "Kill"),
        Binding("m", "message", "Message"),
        Binding("b", "rollback", "Rollback"),
        Binding("M", "merge", "Merge", show=False),
        Binding("K", "keep", "Keep", show=False),
        Binding("w", "worktree", "Path", show=False),
        Binding("d", "refresh_diff", "Diff", show=False),
        *(Binding(str(i + 1), f"tab('{name}')", name.capitalize(), show=False) for i, name in enumerate(TABS)),
    ]

    def __init__(self, project: Project, actions: Actions, run_id: str, read_only: bool = False):
        super().__init__()
        self.project, self.actions, self.read_only = project, actions, read_only
        self.store: Store = project.store
        self.run_id = run_id
        self.run: Run | None = None
        self.error = ""
        try:
            self.run = self.store.run(run_id)
            self.run_id = self.run.id
        except StoreError as e:
            self.error = str(e)
        self.last_id: int | None = None  # None until the transcript's first read (a worker) is in
        self.ticks = 0
        self.stopping = ""  # "pausing…" or "killing…" from its stop request until its status changes
        self.scratch_text: str | None = None
        self.printer = ProgressPrinter(self.store)
        self.diff_stale = True
        self.diffs_shown = 0  # diffs shown so far: a long one's later files are not added to its successor
        self.unwritten: deque[str] = deque(maxlen=LOG_LINES)  # read while another tab was shown
        self._task_row: Any = None
        self._head_plain = ""
        self._rollback_actions: Actions | None = None
        self._rollback_lock = threading.Lock()

    # -- layout ------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        if self.run is None:
            yield Static(Text(f"Cannot show run '{self.run_id}': {self.error}\n\nEscape goes back."), id="missing")
            yield Footer(compact=True)
            return
        yield Static(id="head")
        with TabbedContent(id="tabs", initial="transcript"):
            with TabPane("Transcript", id="transcript"):
                yield Static("loading the transcript…", id="log-loading")
                yield RichLog(id="log", wrap=True, max_lines=LOG_LINES, min_width=20)
            # the tabs not shown at first are mounted after the first frame (Lazy): a run opens sooner
            with TabPane("Diff", id="diff"):
                yield Lazy(VerticalScroll(Static("computing the diff…", id="diff-summary"), id="diff-files"))
            with TabPane("Checkpoints", id="checkpoints"):
                checkpoints = DataTable(id="checkpoints-table", cursor_type="row", zebra_stripes=True)
                checkpoints.add_columns("#", "sha", "step", "message", "made")
                yield Lazy(checkpoints)
            with TabPane("Artifacts", id="artifacts"):
                artifacts = DataTable(id="artifacts-table", cursor_type="row", zebra_stripes=True)
                artifacts.add_columns("kind", "title", "size", "path")
                yield Lazy(artifacts)
            with TabPane("Notes", id="notes"):
                with Lazy(VerticalScroll(id="notes-scroll")):
                    yield Static("Scratch pad", classes="section")
                    yield Static(id="scratch")
                    yield Static("Progress file", classes="section", id="progress-title")
                    yield Static(id="progress")
        yield KeyFooter()

    def on_mount(self) -> None:
        if self.run is None:
            self.notify(self.error, title="no such run", severity="error", markup=False)
            return
        self._refresh_head()
        self.call_after_refresh(self._fill_tabs)
        self.query_one("#log", RichLog).focus()
        self.call_after_refresh(self._load_transcript)  # after the first frame: its parsing takes the GIL too
        self.set_interval(POLL_SECONDS, self._poll)

    def _fill_tabs(self) -> None:
        """Fill the tabs mounted after the first frame, once they are there."""
        if not all(self._mounted(w) for w in ("#diff-files", "#checkpoints-table", "#artifacts-table", "#progress")):
            self.call_after_refresh(self._fill_tabs)
            return
        self._refresh_checkpoints()
        self._refresh_artifacts()
        self._refresh_notes()
        if self.diff_stale and self._tabs_active() == "diff":  # shown before it was there
            self.action_refresh_diff(quiet=True)
        self._keep_keys_reachable()

    def _mounted(self, selector: str) -> bool:
        return bool(self.query(selector))

    @work(thread=True, group="transcript", exit_on_error=False)
    def _load_transcript(self) -> None:
        """The run's last events, read on a connection of this thread (a long run has thousands)."""
        try:
            store = Store(self.project.db_path)
            try:
                batch = reads.recent_events(store, self.run_id, TRANSCRIPT_EVENTS)
                stop = store.last_event(self.run_id, ("status", "stop_requested"))  # maybe before those
            finally:
                store.close()
        except (sqlite3.Error, StoreError) as e:
            self.app.call_from_thread(self.notify, f"reading the transcript failed: {e}", severity="error",
                                      markup=False)
            batch, stop = [], None
        if self.is_attached:
            self.app.call_from_thread(self._transcript_loaded, batch, stop)

    def _transcript_loaded(self, batch: list, stop: tuple | None) -> None:
        if not self.is_attached:  # closed while the worker read
            return
        self.query_one("#log-loading").display = False
        self.last_id = 0
        if stop is not None and isinstance(stop[2], ev.StopRequested):
            self.stopping = STOPPING.get(stop[2].status, "")
        self._take(batch)
        self._refresh_head()  # "pausing…", if so
        if len(batch) == TRANSCRIPT_EVENTS or len(self.unwritten) > TRANSCRIPT_TAIL:
            while len(self.unwritten) > TRANSCRIPT_TAIL:
                self.unwritten.popleft()
            self.unwritten.appendleft(f"[… earlier entries: `loopwright show {self.run_id} --full` prints the whole "
                                      "transcript]")
        self._write_transcript()

    def on_unmount(self) -> None:
        if self._rollback_actions is not None:
            self._rollback_actions.store.close()

    # -- live updates --------------------------------------------------------------------------------

    def _poll(self) -> None:
        """One tick: the events after the last one seen, the header, and the scratch pad now and then."""
        if self.run is None:
            return
        self.ticks += 1
        self._keep_keys_reachable()
        try:
            batch = [] if self.last_id is None else self.store.events(self.run_id, after=self.last_id)
            self._refresh_head()
            if self.ticks % 4 == 1:
                self._refresh_scratch()
        except sqlite3.Error as e:
            if self.ticks % 40 == 1:  # a locked or vanished database: say so now and then, keep trying
                self.notify(f"reading the store failed: {e}", severity="error", markup=False)
            return
        self._take(batch)
        self._write_transcript()

    def _take(self, batch: list) -> None:
        """Take these events in: their transcript entries (written by `_write_transcript`), the tabs they make
        stale."""
        if not batch:
            return
        kinds: set[type] = set()
        new_artifact = False
        for event_id, ts, event in batch:
            self.last_id = event_id
            kinds.add(type(event))
            if isinstance(event, ev.StopRequested):
                self.stopping = STOPPING.get(event.status, "")
            elif isinstance(event, ev.StatusChanged):
                self.stopping = ""
            new_artifact |= isinstance(event, ev.ToolFinished) and event.name == "artifact"
            self.unwritten.extend(event_lines(event, ts, self.printer))
        if kinds & {ev.CheckpointMade, ev.RolledBack}:
            self._refresh_checkpoints()
            self.diff_stale = True  # recomputed now if the diff is on screen, else when it is shown
            if self._tabs_active() == "diff":
                self.action_refresh_diff(quiet=True)
        if kinds & {ev.StatusChanged, ev.Merged, ev.MergeConflict, ev.CheckRan}:
            self._refresh_notes()
        if new_artifact or ev.StatusChanged in kinds:
            self._refresh_artifacts()

    def _write_transcript(self) -> None:
        """Write the entries read so far, when the transcript is on screen (so they wrap at its width)."""
        log = self.query_one("#log", RichLog)
        if not self.unwritten or self._tabs_active() != "transcript":
            return
        if not log.scrollable_content_region.width:  # not laid out yet
            self.call_after_refresh(self._write_transcript)
            return
        follow = log.is_vertical_scroll_end  # scrolled up: stay there
        for _ in range(min(WRITE_BATCH, len(self.unwritten))):
            log.write(styled(self.unwritten.popleft()), scroll_end=follow)
        if self.unwritten:
            self.call_later(self._write_transcript)

    def _tabs_active(self) -> str:
        return self.query_one("#tabs", TabbedContent).active

    def _refresh_head(self) -> None:
        run = self.run = self.store.run(self.run_id)
        if self._task_row is None:
            self._task_row = self.store.task(run.task_id)
        task = self._task_row
        state = (self.stopping if run.status == RunStatus.RUNNING and self.stopping else run.status) + (
            f" ({run.reason})" if run.reason and run.status != RunStatus.RUNNING else "")
        if run.agent == LOOPWRIGHT:
            fields = [f"step {run.step}", f"{fmt_tokens(run.tokens)} tok", fmt_cost(run),
                      fmt_elapsed(run.active_seconds), fmt_cache(run), f"{run.provider}:{run.model}"]
        else:  # a CLI agent: who, and its cost (often unknown) where a long reason does not push it off the line
            fields = [fmt_cost(run), f"agent {run.agent}", f"step {run.step}", fmt_elapsed(run.active_seconds)]
            if run.tokens:  # only an agent that reports its usage
                fields += [f"{fmt_tokens(run.tokens)} tok", fmt_cache(run)]
        line1 = " · ".join([f"run {run.id}", state, *fields])
        line2 = f"task {task.id}: {task.title}"
        if run.status == RunStatus.RUNNING and run.last_action.startswith(WAITING):  # and the tokens arriving
            line2 = f"{run.last_action} · {line2}"
        line3 = f"worktree {run.worktree}" + ("   [read-only: no daemon]" if self.read_only else "")
        text = Text(f"{line1}\n{line2}\n{line3}")  # one line each: the CSS cuts them with an ellipsis
        if text.plain != self._head_plain:
            self._head_plain = text.plain
            self.query_one("#head", Static).update(text)

    def _refresh_checkpoints(self) -> None:
        assert self.run is not None
        if not self._mounted("#checkpoints-table"):
            return  # filled when it is (_fill_tabs)
        table = self.query_one("#checkpoints-table", DataTable)
        row = table.cursor_row
        table.clear()
        table.add_row("0", self.run.base_commit[:10], "0", "(the start: the base commit)", "", key="0")
        rollbacks = [(ts, e.to_seq) for _, ts, e in self.store.events(self.run_id, types=("rolled_back",))]
        for cp in self.store.checkpoints(self.run_id):
            made = time.strftime("%H:%M:%S", time.localtime(cp.created_at))
            undone = [to for ts, to in rollbacks if ts >= cp.created_at and to < cp.seq]
            message = (Text(f"discarded (rolled back to {undone[0]}): {_subject(cp.message)[:200]}", style="dim strike")
                       if undone else Text(_subject(cp.message)[:200]))
            table.add_row(str(cp.seq), cp.sha[:10], str(cp.step), message, made, key=str(cp.seq))
        table.move_cursor(row=min(max(row, 0), table.row_count - 1))

    def _refresh_artifacts(self) -> None:
        if not self._mounted("#artifacts-table"):
            return
        table = self.query_one("#artifacts-table", DataTable)
        table.clear()
        try:
            found = list_artifacts(self.store, self.project.dir / "artifacts", run_id=self.run_id)
        except (sqlite3.Error, OSError) as e:
            self.notify(f"listing the artifacts failed: {e}", severity="error", markup=False)
            return
        for a in found:
            table.add_row(a.kind, Text(a.title), _size(a.size), Text(a.path), key=str(a.id))

    def _refresh_scratch(self) -> None:
        if not self._mounted("#scratch"):
            return
        text = self.store.scratchpad(self.run_id).read()
        if text != self.scratch_text:
            self.scratch_text = text
            self.query_one("#scratch", Static).update(Text(text or "(empty)"))

    def _refresh_notes(self) -> None:
        assert self.run is not None
        if not self._mounted("#progress"):
            return
        self._refresh_scratch()
        progress = self.store.progress(self.run.task_id)
        self.query_one("#progress-title", Static).update(f"Progress file (task {self.run.task_id})")
        self.query_one("#progress", Static).update(Text(progress or "(no attempt of this task has ended yet)"))

    # -- diff (git, in a worker thread) ---------------------------------------------------------------

    def action_refresh_diff(self, quiet: bool = False) -> None:
        """Recompute the diff of the worktree against the base, in a worker thread."""
        if self.run is None or not self._mounted("#diff-files"):
            return  # computed when it is there (_fill_tabs)
        self.diff_stale = False
        self.query_one("#diff-files", VerticalScroll).loading = True  # a spinner until git answers
        self._load_diff(self.run)
        if not quiet:
            self.notify("refreshing the diff…", timeout=2)

    @work(thread=True, exclusive=True, group="diff", exit_on_error=False)
    def _load_diff(self, run: Run) -> None:
        worker = get_current_worker()
        path = Path(run.worktree)
        files: list[tuple[str, str, int, int]] = []
        error = ""
        if not path.is_dir():
            error = (f"the worktree {path} no longer exists (`loopwright gc` removes the worktrees of finished "
                     "runs); there is no diff to show")
        else:
            try:
                ws = Workspace.open(self.project.root, run.id, path, run.branch, run.base_commit,
                                    copy_files=self.project.config.workspace.copy_files)
                files = [(name, diff_body(part), *_diff_stat(part)) for name, part in split_diff(ws.diff())]
            except WorkspaceError as e:
                error = str(e)
        if not worker.is_cancelled and self.is_attached:
            self.app.call_from_thread(self._show_diff, run, files, error)

    async def _show_diff(self, run: Run, files: list[tuple[str, str, int, int]], error: str) -> None:
        if not self.is_attached:  # the screen was closed while git worked
            return
        box = self.query_one("#diff-files", VerticalScroll)
        was = {c.name: c.collapsed for c in box.query(Collapsible)}
        box.loading = False
        await box.remove_children()
        if error:
            await box.mount(Static(Text(error), id="diff-summary"))
            return
        adds, dels = sum(f[2] for f in files), sum(f[3] for f in files)
        summary = (f"{len(files)} file(s) · +{adds} −{dels} since base {run.base_commit[:10]} (uncommitted included)"
                   if files else f"no changes since base {run.base_commit[:10]}")
        if len(files) > DIFF_FILES:
            summary += f"; the first {DIFF_FILES} are shown"
        if files:
            summary += " · Tab to a file, Enter opens or closes it"
        self.diffs_shown += 1
        files = files[:DIFF_FILES]
        await box.mount(Static(Text(summary + " · d refreshes"), id="diff-summary"),
                        *self._diff_files(files[:DIFF_BATCH], 0, was))
        if len(files) > DIFF_BATCH:
            self.call_after_refresh(self._more_diff, self.diffs_shown, files, DIFF_BATCH, was)

    def _more_diff(self, shown: int, files: list[tuple[str, str, int, int]], start: int, was: dict) -> None:
        """The next files of a long diff, a batch a frame: keys are handled between."""
        if shown != self.diffs_shown or not self.is_attached:  # refreshed or closed meanwhile
            return
        self.query_one("#diff-files", VerticalScroll).mount(*self._diff_files(files[start:start + DIFF_BATCH],
                                                                             start, was))
        if start + DIFF_BATCH < len(files):
            self.call_after_refresh(self._more_diff, shown, files, start + DIFF_BATCH, was)

    @staticmethod
    def _diff_files(files: list[tuple[str, str, int, int]], start: int, was: dict) -> list[Collapsible]:
        widgets = []
        for i, (path, body, plus, minus) in enumerate(files, start):
            syntax = Syntax(body, "diff", theme="monokai", background_color="default", word_wrap=True)
            opened = i == 0 and plus + minus <= DIFF_OPEN_LINES  # the first file open, unless it is huge
            widgets.append(Collapsible(Static(syntax), title=f"{path}  +{plus} −{minus}", name=path,
                                       collapsed=was.get(path, not opened)))
        return widgets

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane.id
        if pane == "transcript":
            self.call_after_refresh(self._write_transcript)
        elif pane == "diff" and self.diff_stale:
            self.action_refresh_diff(quiet=True)
        elif pane == "artifacts":
            self._refresh_artifacts()
        elif pane == "notes":
            self._refresh_notes()

    def action_tab(self, name: str) -> None:
        """Show one tab (keys 1-5) and focus what is in it."""
        if self.run is None:
            return
        self.query_one("#tabs", TabbedContent).active = name
        for widget in self.query(TAB_FOCUS[name]):  # (not there yet: _fill_tabs focuses it)
            widget.focus()

    def _keep_keys_reachable(self) -> None:
        """Keys go to the focused widget and up through its parents to this screen's bindings: a focused widget
        no longer mounted, or inside a tab not shown, would swallow every key. Focus the shown tab's instead."""
        focused = self.focused
        if focused is None:
            return
        pane = next((w for w in focused.ancestors_with_self if isinstance(w, TabPane)), None)
        if not focused.is_attached or (pane is not None and pane.id != self._tabs_active()):
            for widget in self.query(TAB_FOCUS[self._tabs_active()]):
                widget.focus()

    # -- actions ---------------------------------------------------------------------------------------

    def _can_act(self, verb: str) -> bool:
        if self.run is None:
            self.notify(f"cannot {verb}: {self.error}", severity="error", markup=False)
            return False
        if self.read_only:
            self.notify(READ_ONLY.format(verb=verb), title="read-only", severity="warning", markup=False)
            return False
        return True

    def _act(self, verb: str, action: Callable[..., Done], *args: Any) -> Done | None:
        """Run one Actions call; its result or its error becomes a toast (an error never crashes the screen)."""
        if not self._can_act(verb):
            return None
        try:
            done = action(self.run_id, *args)
        except (StoreError, WorkspaceError) as e:
            self.notify(str(e), title=f"{verb} refused", severity="error", markup=False)
            return None
        except Exception as e:  # noqa: BLE001 - a supervisor's screen must not die of one failed action
            self.notify(f"{type(e).__name__}: {e}", title=f"{verb} failed", severity="error", markup=False)
            return None
        self.notify(done.said, title=verb, markup=False)
        return done

    def action_pause(self) -> None:
        self._act("pause", self.actions.pause)

    def action_resume(self) -> None:
        self._act("resume", self.actions.resume)

    def action_kill(self) -> None:
        """Kill, after a confirmation (a run that cannot be killed is refused before asking)."""
        if not self._can_act("kill") or not self._allowed("kill", self.actions.killable):
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self._act("kill", self.actions.kill)

        self.app.push_screen(ConfirmScreen(f"Kill run {self.run_id}?\n\nIts agent stops for good (the tool call "
                                           "running now is ended); its branch is kept.", yes="Kill"), answer)

    def _allowed(self, verb: str, check: Callable[[str], object]) -> bool:
        try:
            check(self.run_id)
        except StoreError as e:
            self.notify(str(e), title=f"{verb} refused", severity="error", markup=False)
            return False
        return True

    def action_merge(self) -> None:
        self._act("merge", self.actions.merge)

    def action_keep(self) -> None:
        self._act("keep for review", self.actions.keep)

    def action_message(self) -> None:
        """Ask for a message; the agent reads it at its next model boundary."""
        if not self._can_act("message the agent"):
            return

        def send(text: str | None) -> None:
            if text is not None:
                self._act("message", self.actions.message, text)

        self.app.push_screen(MessageScreen(self.run_id), send)

    def action_worktree(self) -> None:
        """Show the worktree path (selectable) and copy it to the clipboard."""
        if self.run is None:
            self.notify(self.error, severity="error", markup=False)
            return
        self.app.push_screen(PathScreen(self.store.run(self.run_id)))

    def action_back(self) -> None:
        self.dismiss()

    # -- rollback --------------------------------------------------------------------------------------

    def action_rollback(self) -> None:
        """On the checkpoints tab: roll back to the checkpoint under the cursor, after a confirmation."""
        if not self._can_act("roll back") or not self._allowed("rollback", self.actions.rollbackable):
            return
        if self._tabs_active() != "checkpoints":
            self.action_tab("checkpoints")
            self.notify("choose the checkpoint to go back to (↑/↓), then press b (or Enter)", title="rollback")
            return
        table = self.query_one("#checkpoints-table", DataTable)
        self._confirm_rollback(str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "checkpoints-table" and self._can_act("roll back"):
            self._confirm_rollback(str(event.row_key.value))
        elif event.data_table.id == "artifacts-table":
            path = str(event.data_table.get_row(event.row_key)[3])
            self.app.copy_to_clipboard(path)
            self.notify(f"copied {path}", title="artifact path", markup=False)

    def _confirm_rollback(self, seq: str) -> None:
        if not self._allowed("rollback", self.actions.rollbackable):
            return
        run = self.run = self.store.run(self.run_id)
        if not Path(run.worktree).is_dir():
            self.notify(f"cannot roll back run {run.id}: its worktree {run.worktree} no longer exists "
                        "(`loopwright gc` removes the worktrees of finished runs)",
                        title="rollback impossible", severity="error", markup=False)
            return
        cps = {str(cp.seq): cp for cp in self.store.checkpoints(run.id)}
        if seq in cps:
            cp = cps[seq]
            where = f"{seq} ({cp.sha[:10]}, step {cp.step}): {_subject(cp.message)[:120]}"
        else:
            where = f"0, the start of the run (its base commit {run.base_commit[:10]})" if seq == "0" else seq
        question = (f"Roll back run {run.id} to checkpoint {where}?\n\nEverything the agent changed after it is "
                    "discarded from the worktree; the agent is told at its next model boundary.")

        def answer(yes: bool | None) -> None:
            if yes:
                self._rollback(seq)

        self.app.push_screen(ConfirmScreen(question, yes="Roll back"), answer)

    @work(thread=True, group="rollback", exit_on_error=False)
    def _rollback(self, seq: str) -> None:
        """Actions.rollback in a thread (a stopped run is reset here, with git), on its own store connection."""
        with self._rollback_lock:
            try:
                if self._rollback_actions is None:
                    self._rollback_actions = Actions(dataclasses.replace(self.project,
                                                                       store=Store(self.project.db_path)),
                                                     by=self.actions.by)
                done = self._rollback_actions.rollback(self.run_id, seq)
            except (StoreError, WorkspaceError) as e:
                self.app.notify(str(e), title="rollback refused", severity="error", markup=False)
                return
            except Exception as e:  # noqa: BLE001
                self.app.notify(f"{type(e).__name__}: {e}", title="rollback failed", severity="error", markup=False)
                return
        self.app.notify(done.said, title="rollback", markup=False)
