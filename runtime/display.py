"""Human-readable rendering of runs: the live progress lines of `loopwright run` and the transcript of `show`."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from loopwright.harness import events as ev
from loopwright.harness.messages import Message, TextBlock, ToolCall, ToolResult, gist_argument
from loopwright.harness.statuses import RunStatus
from loopwright.memory.store import Run, Store


def fmt_tokens(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


def fmt_cache(run: Run) -> str:
    """A run's prompt caching in a few words: the share of its input read from the cache and what that saved."""
    saved = f"saved ${run.cache_saved_usd:.4f}" if run.cache_saved_usd >= 0 else f"cost ${-run.cache_saved_usd:.4f}"
    return f"cache {run.cache_hit_share:.0%}, {saved}" if run.input_tokens else "cache -"


def fmt_cost(run: Run, digits: int = 4) -> str:
    """A run's cost in USD, or "cost unknown" for an external agent that reported none (and none could be priced)."""
    if not run.cost_known:
        return "cost unknown"
    return f"${run.cost_usd:.2f}" if digits == 2 else f"${run.cost_usd:.{digits}f}"


def fmt_elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def clip(text: str, width: int) -> str:
    """`text` on one line in at most `width` characters: whole, or cut between words and ended with "…"."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[:width - 1]
    if text[width - 1] != " " and " " in head:  # the cut falls inside a word (or an "e.g."): drop that word
        head = head.rsplit(" ", 1)[0]
    return head.rstrip() + "…"


class ProgressPrinter:
    """A store listener that prints one line per step, tool, checkpoint, check and status change.

    A step's clock is its run's active time, as the run's summary reports it: the time since the run started or
    resumed in this process, on top of what it had when it resumed."""

    def __init__(self, store: Store, out: TextIO | None = None):
        self.store, self.out = store, out or sys.stderr  # stderr as it is now (a test may have replaced it)
        self.zero: dict[str, float] = {}  # run id -> when (monotonic) its clock read 0:00, while it runs
        self.live = False  # a terminal's last line is the tokens-so-far line, rewritten in place

    def __call__(self, run_id: str | None, event: Any) -> None:
        if isinstance(event, ev.ModelStreaming):  # a line of its own, rewritten in place on a terminal
            text = f"{' ' * 7} model: ~{event.tokens:,} tokens so far"
            if self.out.isatty():
                print(f"\r\x1b[2K{text}", end="", file=self.out, flush=True)
                self.live = True
            else:
                print(text, file=self.out, flush=True)
            return
        line = self.line(run_id, event)
        if line:
            print(("\r\x1b[2K" if self.live else "") + line, file=self.out, flush=True)
            self.live = False

    def line(self, run_id: str | None, e: Any) -> str | None:
        pad = " " * 7
        if run_id:
            self._time(run_id, e)
        if isinstance(e, ev.ToolStarted) and run_id:
            run = self.store.run(run_id)
            elapsed = time.monotonic() - self.zero.setdefault(run_id, time.monotonic() - run.active_seconds)
            return (f"[{fmt_elapsed(elapsed):>5}] step {run.step + 1} · {e.name} "
                    f"{gist_argument(e.arguments)} · {fmt_tokens(run.tokens)} tok · {fmt_cost(run)}")
        if isinstance(e, ev.ToolFinished) and e.is_error:
            return f"{pad} ✗ {e.name}: {e.preview.splitlines()[0][:100] if e.preview else 'error'}"
        if isinstance(e, ev.CheckpointMade):
            return f"{pad} checkpoint {e.seq} ({e.sha[:8]}): {e.message[:80]}"
        if isinstance(e, ev.CheckRan):
            verdict = "passed" if e.passed else f"failed (exit {e.exit_code})"
            return f"{pad} acceptance check `{e.command}`: {verdict}"
        if isinstance(e, ev.Retrying):
            count = f"{e.attempt}/{e.max_attempts}" if e.max_attempts else e.attempt
            return f"{pad} model call failed ({e.reason}); retrying ({count}) in {e.wait_seconds:.1f}s"
        if isinstance(e, ev.Compacted):
            return (f"{pad} context compacted: {fmt_tokens(e.tokens_before)} → {fmt_tokens(e.tokens_after)} tokens"
                    " (a new prompt prefix: the next call writes the cache again)")
        if isinstance(e, ev.RolledBack):
            return f"{pad} rolled back to checkpoint {e.to_seq} ({e.to_sha[:8]}) by {e.requested_by}"
        if isinstance(e, ev.Merged):
            return f"{pad} merged into {e.target_branch} as {e.commit[:10]}"
        if isinstance(e, ev.MergeConflict):
            return f"{pad} merge conflict with {e.target_branch}: {e.detail}"
        if isinstance(e, ev.StatusChanged):
            return f"{pad} run {e.status}" + (f": {e.reason}" if e.reason else "")
        if isinstance(e, ev.StopRequested):
            how = "the running command is ended now" if e.interrupt else "when the current tool call ends"
            return f"{pad} {'pausing' if e.status == RunStatus.PAUSED else 'killing'} ({e.reason}): {how}"
        if isinstance(e, ev.SandboxChosen):  # said only when there is none: a jailed run is the normal case
            return f"{pad} ⚠ WARNING: {e.warning}" if e.mode == "none" else None
        if isinstance(e, ev.NetworkRefused):
            return f"{pad} ✗ network: {e.host}:{e.port} refused (not on [sandbox] allow_hosts)"
        if isinstance(e, ev.TaskUpdated):
            return f"{pad} task {e.task_id} {e.change} (by {e.by})"
        if isinstance(e, ev.LessonsRecalled):
            if e.placebo:
                return f"{pad} placebo section in place of recalled lessons (~{e.tokens} tokens)"
            return f"{pad} recalled {len(e.refs)} lesson(s) into the task: {', '.join(e.refs)} (~{e.tokens} tokens)"
        if isinstance(e, ev.Reflected):
            credit = f"; credit to {', '.join(e.credited)}" if e.credited else ""
            if e.status == "applied":
                return f"{pad} reflection: {'; '.join(e.changes) or 'no changes'}{credit}"
            why = "; ".join(e.problems) or e.reason
            return f"{pad} reflection {e.status}: {why}{credit}"
        return None

    def _time(self, run_id: str, e: Any) -> None:
        """Start a run's clock when it starts or resumes, and drop it when it stops."""
        if isinstance(e, ev.RunStarted):
            self.zero[run_id] = time.monotonic()
        elif isinstance(e, ev.StatusChanged) and e.status == RunStatus.RUNNING:
            self.zero[run_id] = time.monotonic() - self.store.run(run_id).active_seconds
        elif isinstance(e, ev.StatusChanged):
            self.zero.pop(run_id, None)


def running_tool_call(store: Store, run_id: str) -> tuple[str, float] | None:
    """The tool call a run is in the middle of, e.g. ("shell sleep 40", seconds since it started), or None."""
    last = store.last_event(run_id, ("tool_started", "tool_finished"))
    if last is None or not isinstance(last[2], ev.ToolStarted):
        return None
    return f"{last[2].name} {gist_argument(last[2].arguments)}".strip(), max(time.time() - last[1], 0.0)


def run_summary(run: Run) -> dict:
    return {"run": run.id, "task": run.task_id, "status": run.status, "reason": run.reason, "step": run.step,
            "tokens": run.tokens, "cost_usd": round(run.cost_usd, 6) if run.cost_known else None,
            "model": f"{run.provider}:{run.model}", "agent": run.agent,
            "cache_hit_share": round(run.cache_hit_share, 4), "cache_saved_usd": round(run.cache_saved_usd, 6),
            "branch": run.branch, "worktree": run.worktree, "merge_commit": run.merge_commit,
            "elapsed_seconds": round(run.active_seconds, 1), "last_action": run.last_action}


def render_message(m: Message, full: bool = False) -> list[str]:
    lines = []
    for b in m.content:
        if isinstance(b, TextBlock) and b.text.strip():
            lines.append(f"{m.role}: {b.text}")
        elif isinstance(b, ToolCall):
            bad = f"  [bad arguments: {b.parse_error}]" if b.parse_error else ""
            lines.append(f"  → {b.name} {b.arguments}{bad}")
        elif isinstance(b, ToolResult):
            body = b.content if full else _clip(b.content, 12)
            mark = "✗" if b.is_error else "←"
            lines.append(f"  {mark} " + body.replace("\n", "\n    "))
    return lines


def _clip(text: str, max_lines: int) -> str:
    lines = text.splitlines()
    if len(lines) <= max_lines:
        return text
    return "\n".join(lines[:max_lines] + [f"… ({len(lines) - max_lines} more lines; --full shows all)"])


def event_entries(ts: float, e: Any, printer: ProgressPrinter, *, full: bool = False) -> list[str]:
    """What one event adds to a run's transcript (messages, tools, checkpoints, checks, status changes)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(ts))
    if isinstance(e, ev.RunStarted):
        who = f"{e.provider}:{e.model}" if e.agent == "loopwright" else f"agent {e.agent}"
        return [f"[{stamp}] run started: task {e.task_id} with {who} on {e.branch}"]
    if isinstance(e, ev.ConversationReset):
        if e.reason == "start":
            return [line for m in e.messages for line in render_message(m, full)]
        return [f"[{stamp}] conversation restarted ({e.reason})"]
    if isinstance(e, ev.MessageAdded):
        return render_message(e.message, full)
    if isinstance(e, ev.Compacted):
        return [f"[{stamp}] context compacted ({fmt_tokens(e.tokens_before)} → {fmt_tokens(e.tokens_after)} tokens);"
                " hand-off note:\n    " + e.note.replace("\n", "\n    ")]
    if isinstance(e, (ev.ModelCalled, ev.ToolStarted)):
        return []
    line = printer.line(None, e)
    return [f"[{stamp}] {line.strip()}"] if line else []


def transcript(store: Store, run_id: str, *, full: bool = False) -> list[str]:
    """The run as a person reads it: messages, tools, checkpoints, checks and status changes in order."""
    printer = ProgressPrinter(store)
    return [entry for _, ts, e in store.events(run_id) for entry in event_entries(ts, e, printer, full=full)]
