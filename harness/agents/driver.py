"""The supervisor of one external command-line agent's run: the counterpart of `harness.loop.AgentLoop` for a
`CliAgent` (Claude Code, Codex, a command template).

It starts the agent's command in the run's worktree, jailed by the run's sandbox, as a process group of its own
(recorded in the run's process ledger while it lives, so that a crashed owner's CLI is ended before the run
resumes). It reads the CLI's output line by line (a line longer than `line_cap` is cut, the transcript kept as
its head and tail, and a flood is read to its end) and writes the run's events from what `agent.parse` makes
of each line: tool calls and results, text, usage (priced by the CLI's own figure, else the model table, else
the cost stays unknown). A CLI with no event stream has its output written as it comes instead, throttled (the
head of the transcript in pieces, its tail when the session ends). It checkpoints after every tool result that
may change files, and, for a CLI with no event stream, on the file changes it sees in the worktree (watchdog,
debounced). After every usage event the call permit decides whether the CLI may go on (the run's caps, the
fleet budget); the wall-clock cap is watched all the time. A cap hit, a pause or a kill ends the process group
(a pause: SIGINT, a grace, then SIGKILL).

Commands are taken while it runs: a rollback or a message stops the CLI, (resets the worktree) and resumes its
session at once with what happened; a pause or kill stops it. When the CLI exits, the acceptance check decides
through `on_finish`, as for loopwright's own loop; a failed check resumes the same session with the check's
output. A CLI that cannot start or exits non-zero pauses the run with one line naming what it needs
(`agent.key_hint`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.harness.agents.base import (
    AgentEvent,
    AgentFinished,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
    CliAgent,
    SessionStarted,
)
from loopwright.harness.budget import BudgetConfig, BudgetExceeded, FleetBudgetSpent, FleetGate, check_wall_time
from loopwright.harness.events import (
    ConversationReset,
    MessageAdded,
    ModelCalled,
    Notice,
    RolledBack,
    ToolFinished,
    ToolStarted,
)
from loopwright.harness.loop import FinishVerdict, LoopOutcome, Stopped, rollback_notice
from loopwright.harness.messages import Message, TextBlock, Usage, gist_argument
from loopwright.harness.models import ModelInfo, cost_usd
from loopwright.harness.processes import ProcessGroup, ProcessLedger, group_of
from loopwright.harness.runlog import RunCommand, RunLog
from loopwright.harness.sandbox import Sandbox
from loopwright.harness.seams import BudgetPermit, CallPermit, CheckpointSink, CommandSource, LoggedCommands
from loopwright.harness.statuses import CommandKind, RunStatus
from loopwright.harness.tools import ToolContext, cap_text
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError

EXIT_NOT_FOUND = 127  # bash: the command was not found
EXIT_CANNOT_RUN = 126


@dataclass
class DriverSettings:
    """What a CLI run's supervisor needs besides the agent: the task, the caps, where prices come from."""

    task_text: str
    options: AgentOptions
    budget: BudgetConfig
    price: Callable[[str | None], ModelInfo | None]  # a model's prices by name (None: not in the table)
    fleet: FleetGate | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of the sandbox's environment
    env_override: dict[str, str] = field(default_factory=dict)  # set after the sandbox's own (e.g. NO_PROXY)
    line_cap: int = 16_000  # characters of one output line kept (a longer line is cut)
    transcript_cap: int = 30_000  # characters of a session's transcript kept (head and tail)
    live_chars: int = 4096  # no event stream: the head of its output goes out as it comes, in pieces of whole
    live_seconds: float = 0.5  # lines once this many characters or seconds have gathered (a piece: + one line)
    stop_grace: float = 5.0  # seconds between SIGINT and SIGKILL when a pause stops the CLI
    debounce: float = 0.5  # quiet seconds after a file change before its checkpoint (no event stream)
    tick: float = 0.2  # how often commands, the wall clock and file changes are looked at


class Transcript:
    """What a CLI printed in one session: the first `cap // 2` characters, handed out as they come (`take`), and a
    rolling last `cap // 2`, handed out when the session ends (`rest`, saying how much was left out between)."""

    def __init__(self, cap: int):
        self.half = max(cap // 2, 1)
        self.head_len = 0
        self.fresh: list[str] = []  # of the head, not taken yet
        self.fresh_len = 0
        self.fresh_since = 0.0  # when the oldest of `fresh` came (monotonic)
        self.tail: deque[str] = deque()
        self.tail_len = 0
        self.left_out = 0
        self.last = ""  # the last line that is not blank

    def add(self, line: str) -> None:
        if line.strip():
            self.last = line.strip()
        if self.head_len < self.half:
            part = line[:self.half - self.head_len]
            if not self.fresh:
                self.fresh_since = time.monotonic()
            self.fresh.append(part)
            self.fresh_len += len(part)
            self.head_len += len(part)
            line = line[len(part):]
            if not line:
                return
        self.tail.append(line)
        self.tail_len += len(line)
        while self.tail_len > self.half and len(self.tail) > 1:
            gone = self.tail.popleft()
            self.tail_len -= len(gone)
            self.left_out += len(gone)

    def take(self) -> str:
        """The head's lines added since the last take."""
        text = "".join(self.fresh)
        self.fresh.clear()
        self.fresh_len = 0
        return text

    def rest(self) -> str:
        """What was not taken yet: the head's last lines, then the tail."""
        middle = f"[… {self.left_out} characters left out …]\n" if self.left_out else ""
        text = self.take() + middle + "".join(self.tail)
        self.tail.clear()
        self.tail_len = self.left_out = 0
        return text


class _Halt(Exception):
    """End the CLI's process now, and the session with `outcome` (None: resume it at once with what it is told)."""

    def __init__(self, outcome: LoopOutcome | None):
        super().__init__(outcome.reason if outcome else "restart")
        self.outcome = outcome


class CliDriver:
    """Supervises one run of a `CliAgent` until the acceptance check accepts it, or it stops (see the module
    docstring). The seams are `AgentLoop`'s: `permit`, `commands` and `checkpoints`, with the local defaults."""

    def __init__(self, *, store: RunLog, run_id: str, agent: CliAgent, workspace: Workspace, settings: DriverSettings,
                 tool_context: ToolContext, sandbox: Sandbox, on_finish: Callable[[str], Awaitable[FinishVerdict]],
                 stop: asyncio.Event | None = None, permit: CallPermit | None = None,
                 commands: CommandSource | None = None, checkpoints: CheckpointSink | None = None):
        self.store, self.run_id, self.agent, self.settings = store, run_id, agent, settings
        self.workspace, self.tool_context, self.sandbox, self.on_finish = workspace, tool_context, sandbox, on_finish
        self.permit: CallPermit = permit if permit is not None else BudgetPermit(store, run_id, settings.budget,
                                                                                 settings.fleet)
        self.commands: CommandSource = commands if commands is not None else LoggedCommands(store, run_id)
        self.checkpoints: CheckpointSink = checkpoints if checkpoints is not None else workspace
        self.stop = stop or asyncio.Event()
        self.stop_status, self.stop_reason = RunStatus.PAUSED, "stopped by the user (Ctrl-C)"
        run = store.run(run_id)
        self.step, self._active_before, self._session_start = run.step, run.active_seconds, time.monotonic()
        self.session_id: str | None = getattr(run, "agent_session", None)
        self.prompt = settings.task_text
        self.told: list[str] = []  # what the agent is told when its session resumes next
        self._lock = asyncio.Lock()  # one thing at a time touches the worktree: a checkpoint, a rollback
        self._halt: _Halt | None = None
        self._rollbacks: list[RunCommand] = []  # taken, done once the CLI has stopped
        self._transcript = Transcript(settings.transcript_cap)
        self._calls: dict[str, float] = {}
        self._summary = ""
        self._cost_this_process = 0.0
        self._changed_at: float | None = None
        self._progress_at = 0.0

    # -- entry points (as AgentLoop's) ----------------------------------------------------------------

    def request_stop(self, status: RunStatus, reason: str, interrupt: bool = False) -> None:
        """Stop as `status` (paused or killed): the CLI's process group is ended (a pause gives it a grace)."""
        self.stop_status, self.stop_reason = status, reason
        if interrupt:
            self.tool_context.interrupt.set()
        self.stop.set()

    def start(self) -> None:
        """A new run: the task is its first prompt (its conversation: each prompt and what the agent said)."""
        self.store.update_run(self.run_id, agent=self.agent.name, cost_known=0)
        self.store.append(self.run_id, ConversationReset(reason="start", messages=[]))

    async def prepare_resume(self, notices: list[str]) -> None:
        """A run taken back after a pause or a crash: its session resumes with `notices` and the commands queued
        while it was stopped (a rollback's notice, messages)."""
        self.told += notices
        try:
            await self._take_commands()
        except _Halt as h:
            if h.outcome is not None and h.outcome.status == RunStatus.KILLED:
                self.request_stop(RunStatus.KILLED, h.outcome.reason)
        await self._apply_rollbacks()

    async def run(self) -> LoopOutcome:
        try:
            prompt = self._next_prompt() if self.told or self.session_id else self.prompt
            while True:
                if self.stop.is_set():  # a kill queued while it was stopped, a stop during the check
                    return LoopOutcome(self.stop_status, self.stop_reason)
                await self.permit.check(self._active_seconds)  # the run's caps, before each session too
                self.store.append(self.run_id, MessageAdded(message=Message.user(prompt)))
                outcome, code = await self._session(prompt)
                if outcome is not None:
                    return outcome
                if code is None:  # a rollback or a message: resume now with what it is told
                    prompt = self._next_prompt()
                    continue
                if code != 0:
                    return LoopOutcome(RunStatus.PAUSED, self._exit_reason(code))
                verdict = await self.on_finish(self._summary or "(the agent exited)")
                if verdict.status is not None:
                    return LoopOutcome(verdict.status, verdict.reason, verdict.again)
                self.told.append(verdict.feedback.replace("call finish again", "stop when you are done"))
                prompt = self._next_prompt()
        except Stopped as s:
            return LoopOutcome(s.status, s.reason)
        except BudgetExceeded as e:
            return LoopOutcome(RunStatus.BUDGET_EXCEEDED, str(e), again=True)
        except FleetBudgetSpent as e:
            return LoopOutcome(RunStatus.PAUSED, str(e))
        finally:
            with contextlib.suppress(WorkspaceError):
                await asyncio.shield(self._checkpoint(f"{self.agent.name}: the work when the session ended"))
            await self.tool_context.aclose()
            self._save_progress("")

    # -- one session of the CLI ------------------------------------------------------------------------

    def _next_prompt(self) -> str:
        """The prompt that continues the work: what the agent is told; with no session to resume, the task too."""
        told, self.told = self.told, []
        if self.session_id is None:
            return "\n\n".join([self.prompt, *told])
        return "\n\n".join(told) or "Continue the task."

    def _exit_reason(self, code: int) -> str:
        last = self._transcript.last[:200]
        what = "could not start" if code in (EXIT_NOT_FOUND, EXIT_CANNOT_RUN) else f"exited with code {code}"
        return f"{self.agent.name} {what}" + (f" ({last})" if last else "") + f"; it needs {self.agent.key_hint}"

    async def _session(self, prompt: str) -> tuple[LoopOutcome | None, int | None]:
        """Run the CLI on `prompt` until it exits (its exit code), is halted to resume at once (None, None) or
        stops the run (the outcome)."""
        self._transcript = Transcript(self.settings.transcript_cap)
        self._summary, self._halt, self._cost_this_process = "", None, 0.0
        argv = self.agent.command(prompt, self.settings.options, session_id=self.session_id)
        command = "exec " + shlex.join(argv)
        wt = self.workspace.path
        try:
            full, env = self.sandbox.wrap(command, worktree=wt, repo_root=self.tool_context.repo_root,
                                          env=self.settings.env, new_session=False)
            env.update(self.agent.environment())  # its key variables, by name from this environment: never stored
            env.update(self.settings.env_override)
            proc = await asyncio.create_subprocess_exec(
                *full, cwd=str(wt), env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE if self.agent.streams_events else asyncio.subprocess.STDOUT,
                start_new_session=True)
        except (OSError, WorkspaceError) as e:
            return LoopOutcome(RunStatus.PAUSED, f"{self.agent.name} could not start ({e}); it needs "
                                                 f"{self.agent.key_hint}"), None
        ledger: ProcessLedger | None = self.tool_context.processes
        group = group_of(proc.pid)
        if ledger is not None and group is not None:
            ledger.started(group)
        watcher = self._watch_files(wt) if not self.agent.streams_events else None
        assert proc.stdout is not None
        pumps = [asyncio.ensure_future(self._pump(proc.stdout, events=self.agent.streams_events))]
        if proc.stderr is not None:
            pumps.append(asyncio.ensure_future(self._pump(proc.stderr, events=False)))
        self._save_progress(f"{self.agent.name} started")
        try:
            while not (proc.returncode is not None and all(p.done() for p in pumps)):
                if self._halt is None:
                    self._halt = await self._look_around()
                if self._halt is not None:
                    await self._end(proc, group, graceful=self._halt.outcome is None
                                    or self._halt.outcome.status == RunStatus.PAUSED)
                    break
                waiter = asyncio.ensure_future(self.stop.wait())
                await asyncio.wait([*pumps, waiter], timeout=self.settings.tick, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if all(p.done() for p in pumps) and proc.returncode is None:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(proc.wait(), self.settings.tick)
        except asyncio.CancelledError:
            await asyncio.shield(self._end(proc, group, graceful=False))
            raise
        finally:
            for p in pumps:
                if not p.done():
                    await asyncio.wait({p}, timeout=1.0)
                    p.cancel()
            if watcher is not None:
                watcher.stop()
                watcher.join(timeout=5)
            if ledger is not None and group is not None:
                ledger.ended(group)
        for p in pumps:
            if p.done() and not p.cancelled() and (error := p.exception()) is not None:
                raise error
        if not self.agent.streams_events:
            self._said(self._transcript.rest() or ("" if self._transcript.head_len else "(no output)"))
            self._summary = self._summary or self._transcript.last
            self._save_progress(self._transcript.last[:120])  # its last words, not what it said a second ago
        await self._apply_rollbacks()
        halt = self._halt
        if halt is not None:
            return halt.outcome, None
        await self._checkpoint(f"{self.agent.name}: exited")
        return None, proc.returncode

    async def _look_around(self) -> _Halt | None:
        """Between reads: a stop, the wall clock, the commands, a debounced checkpoint of changed files."""
        if self.stop.is_set():
            return _Halt(LoopOutcome(self.stop_status, self.stop_reason))
        try:
            check_wall_time(self.settings.budget, self._active_seconds())
        except BudgetExceeded as e:
            return _Halt(LoopOutcome(RunStatus.BUDGET_EXCEEDED, str(e), again=True))
        try:
            await self._take_commands()
        except _Halt as h:
            return h
        changed = self._changed_at
        if changed is not None and time.monotonic() - changed >= self.settings.debounce:
            self._changed_at = None
            self.step += 1
            await self._checkpoint(f"{self.agent.name}: files changed")
            self._save_progress(f"{self.agent.name}: {self._transcript.last[:80]}")
        elif time.monotonic() - self._progress_at > 1.0 and not self.agent.streams_events:
            self._save_progress(self._transcript.last[:120])
        transcript = self._transcript
        if transcript.fresh and time.monotonic() - transcript.fresh_since >= self.settings.live_seconds:
            self._said(transcript.take())
        return None

    async def _end(self, proc: asyncio.subprocess.Process, group: ProcessGroup | None, *, graceful: bool) -> None:
        """End the CLI's process group: SIGINT and `stop_grace` seconds first when `graceful`, then SIGKILL."""
        pgid = group.pgid if group is not None else proc.pid
        if graceful:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGINT)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), self.settings.stop_grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 5.0)

    async def _pump(self, stream: asyncio.StreamReader, *, events: bool) -> None:
        """Read `stream` to its end, line by line, each cut at `line_cap` characters."""
        cap = self.settings.line_cap
        buf = bytearray()
        skipping = False
        while chunk := await stream.read(65536):
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    if not skipping:
                        buf += chunk[start:]
                        if len(buf) > cap:
                            await self._line(buf[:cap].decode("utf-8", "replace") + " [… line cut …]", events)
                            buf.clear()
                            skipping = True
                    break
                if skipping:
                    skipping = False
                else:
                    buf += chunk[start:nl]
                    await self._line(buf.decode("utf-8", "replace"), events)
                    buf.clear()
                start = nl + 1
        if buf and not skipping:
            await self._line(buf.decode("utf-8", "replace"), events)

    async def _line(self, line: str, events: bool) -> None:
        self._transcript.add(self._redact(line) + "\n")  # a key's value never spans lines
        if self._transcript.fresh_len >= self.settings.live_chars:
            self._said(self._transcript.take())
        if not events or self._halt is not None:
            return
        for event in self.agent.parse(line):
            try:
                await self._event(event)
            except BudgetExceeded as e:
                self._halt = _Halt(LoopOutcome(RunStatus.BUDGET_EXCEEDED, str(e), again=True))
            except FleetBudgetSpent as e:
                self._halt = _Halt(LoopOutcome(RunStatus.PAUSED, str(e)))
            if self._halt is not None:
                return

    async def _event(self, event: AgentEvent) -> None:
        """One event of the CLI's stream, as the run's events."""
        store, run_id = self.store, self.run_id
        if isinstance(event, SessionStarted):
            if event.session_id != self.session_id:
                self.session_id = event.session_id
                store.update_run(run_id, agent_session=event.session_id)
        elif isinstance(event, AgentText):
            text = self._redact(cap_text(event.text, self.tool_context.output_cap))
            store.append(run_id, MessageAdded(message=Message(
                role="assistant", content=[TextBlock(text=f"(reasoning) {text}" if event.reasoning else text)])))
            if not event.reasoning:
                self._summary = text
        elif isinstance(event, AgentToolCall):
            self._calls[event.call_id] = time.perf_counter()
            arguments = json.loads(self._redact(json.dumps(event.arguments)))
            store.append(run_id, ToolStarted(call_id=event.call_id, name=event.name, arguments=arguments))
            self._save_progress(f"{event.name} {gist_argument(event.arguments)}".strip()[:80])
        elif isinstance(event, AgentToolResult):
            started = self._calls.pop(event.call_id, time.perf_counter())
            store.append(run_id, ToolFinished(call_id=event.call_id, name=event.name, is_error=event.is_error,
                                              duration_ms=(time.perf_counter() - started) * 1000,
                                              preview=self._redact(event.output[:200])))
            self.step += 1
            if event.may_change_files:
                await self._checkpoint(f"{self.agent.name}: {event.name}")
            self._save_progress("")
        elif isinstance(event, AgentUsage):
            self._usage(event.usage, event.model, event.cost_usd)
            await self.permit.check(self._active_seconds)
        elif isinstance(event, AgentFinished):
            if event.text:
                self._summary = event.text
            extra = (event.total_cost_usd or 0.0) - self._cost_this_process
            if event.total_cost_usd is not None and extra > 1e-9:  # what the per-call figures did not carry
                self._usage(Usage(input_tokens=0, output_tokens=0), None, extra)
                await self.permit.check(self._active_seconds)

    def _usage(self, usage: Usage, model: str | None, reported: float | None) -> None:
        """One model call's usage, priced by the CLI (`reported`), else the model table, else unknown."""
        cost = reported
        if cost is None and (info := self.settings.price(model)) is not None:
            cost = cost_usd(usage, info)
        self._cost_this_process += cost or 0.0
        self.store.record_model_call(self.run_id, ModelCalled(
            model=model or self.agent.name, usage=usage, cost_usd=cost or 0.0, stop_reason=self.agent.name,
            duration_ms=0.0), None, self.permit.day())
        if cost is not None:
            self.store.update_run(self.run_id, cost_known=1)

    # -- commands, checkpoints, progress ----------------------------------------------------------------

    async def _take_commands(self) -> None:
        """Apply the run's queued commands: a message or rollback halts the CLI to resume it (a rollback is done
        once it has stopped), a pause or kill halts it for good."""
        halt: _Halt | None = None
        for cmd in await self.commands.take():
            if cmd.kind == CommandKind.NOTIFY:
                self.told.append(cmd.args["text"])
                self.store.append(self.run_id, Notice(text=cmd.args["text"]))
                halt = halt or _Halt(None)
            elif cmd.kind == CommandKind.ROLLBACK:
                self._rollbacks.append(cmd)
                halt = halt or _Halt(None)
                continue  # reported when it is done
            elif cmd.kind in (CommandKind.PAUSE, CommandKind.KILL):
                status = RunStatus.PAUSED if cmd.kind == CommandKind.PAUSE else RunStatus.KILLED
                self.stop_status, self.stop_reason = status, cmd.args.get("reason", f"{cmd.kind} command")
                halt = _Halt(LoopOutcome(self.stop_status, self.stop_reason))
            else:
                self.commands.finish(cmd.id, ok=False, result=f"unknown command kind {cmd.kind!r}")
                continue
            self.commands.finish(cmd.id, ok=True, result="applied")
        if halt is not None:
            raise halt

    async def _apply_rollbacks(self) -> None:
        while self._rollbacks:
            cmd = self._rollbacks.pop(0)
            try:
                async with self._lock:
                    await asyncio.to_thread(self.checkpoints.reset_to, cmd.args["sha"])
                self.store.append(self.run_id, RolledBack(to_sha=cmd.args["sha"], to_seq=cmd.args["seq"],
                                                          requested_by=cmd.args.get("by", "user")))
                notice = rollback_notice(cmd.args["sha"], cmd.args["seq"])
                self.told.append(notice)
                self.store.append(self.run_id, Notice(text=notice))  # what a resume after a crash tells it too
                self.commands.finish(cmd.id, ok=True, result="applied")
            except (WorkspaceError, KeyError) as e:
                self.commands.finish(cmd.id, ok=False, result=str(e))

    async def _checkpoint(self, message: str) -> None:
        async with self._lock:
            cp = await asyncio.to_thread(self.checkpoints.checkpoint, message, step=self.step)
        if cp is not None:
            self.store.add_checkpoint(self.run_id, sha=cp.sha, step=self.step, message=message)

    def _watch_files(self, worktree: Path):
        """A watchdog observer noting when a file in the worktree (not its git data) last changed."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        driver = self

        class Changed(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                path = str(event.src_path)
                if event.event_type in ("opened", "closed_no_write") or "/.git" in path:
                    return
                driver._changed_at = time.monotonic()

        observer = Observer()
        observer.schedule(Changed(), str(worktree), recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    def _said(self, text: str) -> None:
        """A piece of the output of a CLI with no event stream, as the run's events (live in `show`, the TUI)."""
        if text and not self.agent.streams_events:  # a message is its lines: without the last one's end
            self.store.append(self.run_id, MessageAdded(message=Message(
                role="assistant", content=[TextBlock(text=text.removesuffix("\n"))])))

    def _redact(self, text: str) -> str:
        """`text` with the values of key variables hidden (the CLI holds its keys and may print them)."""
        return self.tool_context.redact(text) if self.tool_context.redact is not None else text

    def _active_seconds(self) -> float:
        return self._active_before + time.monotonic() - self._session_start

    def _save_progress(self, last_action: str) -> None:
        fields: dict = {"step": self.step, "active_seconds": self._active_seconds()}
        if last_action:
            fields["last_action"] = last_action
        self._progress_at = time.monotonic()
        self.store.update_run(self.run_id, **fields)
