"""One agent's loop: model call, tool calls, checkpoint, repeat — until the acceptance check says done.

Every step writes events to the run's log (the store, seen as a `RunLog`) first. Before every model call the
call permit says whether it may start (the hard budget); near the context limit the oldest turns are summarised
into a hand-off note, and so they are when the provider says the request overflowed the context window (the call
is then tried once more; a second overflow pauses the run). An assistant text longer than the tool output cap is
kept as its head and tail, as a tool output is. A model error a person must fix pauses the run. Commands from
the CLI (rollback, message, pause) are taken at model boundaries only, never in the middle of a tool call, while a
stop that interrupts (a kill, a daemon's stop) ends the command a tool is running at once and records the call as
interrupted. Whether the work is done is decided outside the agent, by
the `on_finish` callback (the runner runs the acceptance check and merges).

What a backend may do differently is passed in, not overridden: the call permit, the command source and the
checkpoint sink (`harness.seams`), each with the local implementation as the default.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from loopwright.harness.budget import BudgetConfig, BudgetExceeded, FleetBudgetSpent, FleetGate
from loopwright.harness.events import (
    Compacted,
    ConversationReset,
    MessageAdded,
    ModelCalled,
    ModelStreaming,
    Notice,
    Retrying,
    RolledBack,
    ToolFinished,
    ToolStarted,
)
from loopwright.harness.messages import (
    Message,
    ModelResponse,
    TextBlock,
    ToolCall,
    ToolResult,
    ToolSpec,
    gist_argument,
)
from loopwright.harness.models import (
    STREAMED,
    ContextOverflow,
    FatalModelError,
    ModelAdapter,
    ModelInfo,
    ModelUnavailable,
    NeedsAttention,
    cache_saved_usd,
    cost_usd,
)
from loopwright.harness.retry import QuotaGate, RetryPolicy, call_model
from loopwright.harness.runlog import RunLog
from loopwright.harness.seams import BudgetPermit, CallPermit, CheckpointSink, CommandSource, LoggedCommands
from loopwright.harness.statuses import CommandKind, RunStatus
from loopwright.harness.tools import Toolbox, ToolContext, cap_text
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError

WAITING = "waiting for the model since"  # the last action while a model call is out
STREAM_SAVE_SECONDS = 0.4  # tokens arriving are said (runs.last_action, the listeners) at most this often
CHARS_PER_TOKEN = 4  # the estimate of tokens so far, from the characters streamed (the usage comes at the end)
COMPACTION_SYSTEM = (
    "You write hand-off notes for a coding agent whose context is full. Be concrete and brief: what the task is, "
    "what has been done (files changed, commands run, results), what failed and why, what to do next. "
    "Plain text, at most about 400 words."
)


@dataclass(frozen=True)
class FinishVerdict:
    """What the acceptance step decided: a final run status, or None to keep working with `feedback`."""

    status: str | None
    feedback: str
    reason: str = ""
    again: bool = False  # the attempt failed in a way a fresh attempt may fix (loop-until-done)


@dataclass(frozen=True)
class LoopOutcome:
    status: str  # succeeded | needs_review | failed | paused | budget_exceeded | killed
    reason: str = ""
    again: bool = False


@dataclass
class LoopSettings:
    system_prompt: str
    task_text: str
    max_output_tokens: int
    model_info: ModelInfo
    budget: BudgetConfig
    retry: RetryPolicy
    compact_at: float = 0.75
    keep_recent: float = 0.25
    tool_context: dict = field(default_factory=dict)  # extra ToolContext fields (timeouts, caps, env)
    fleet: FleetGate | None = None  # with `budget` and `quota_gate`: what the default call permit checks
    quota_gate: QuotaGate | None = None  # the fleet's rate-limit gate for this provider and model
    turn_notices: Callable[[str], list[str]] | None = None  # news for the agent at each turn (skills changed)


class Stopped(Exception):
    """Ctrl-C or a pause/kill command: stop at this safe point."""

    def __init__(self, status: RunStatus, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def estimate_tokens(message: Message) -> int:
    """A cheap token estimate: about four characters a token, plus framing."""
    return len(message.model_dump_json()) // 4 + 4


class Conversation:
    """The messages sent to the model, with a running token estimate (O(1) per appended message)."""

    def __init__(self, messages: list[Message]):
        self.messages: list[Message] = []
        self.sizes: list[int] = []
        self.tokens = 0
        for m in messages:
            self.append(m)

    def append(self, message: Message) -> None:
        size = estimate_tokens(message)
        self.messages.append(message)
        self.sizes.append(size)
        self.tokens += size


class AgentLoop:
    """Drives one run until it is accepted, fails, pauses or runs out of budget.

    `permit`, `commands` and `checkpoints` are the seams (`harness.seams`): by default the run's limits and the
    fleet budget in `settings` are checked on `store`, commands come from `store`, and checkpoints and rollbacks
    go to `workspace`."""

    def __init__(self, *, store: RunLog, run_id: str, adapter: ModelAdapter, toolbox: Toolbox, workspace: Workspace,
                 settings: LoopSettings, on_finish: Callable[[str], Awaitable[FinishVerdict]],
                 stop: asyncio.Event | None = None, permit: CallPermit | None = None,
                 commands: CommandSource | None = None, checkpoints: CheckpointSink | None = None):
        self.store, self.run_id, self.adapter, self.toolbox = store, run_id, adapter, toolbox
        adapter.cache_key = run_id
        self.workspace, self.settings, self.on_finish = workspace, settings, on_finish
        self.permit: CallPermit = permit if permit is not None else BudgetPermit(
            store, run_id, settings.budget, settings.fleet, settings.quota_gate)
        self.commands: CommandSource = commands if commands is not None else LoggedCommands(store, run_id)
        self.checkpoints: CheckpointSink = checkpoints if checkpoints is not None else workspace
        self.stop = stop or asyncio.Event()
        self.stop_status, self.stop_reason = RunStatus.PAUSED, "stopped by the user (Ctrl-C)"
        self.specs: list[ToolSpec] = toolbox.specs()
        self._overhead = (len(settings.system_prompt) + sum(len(str(s.input_schema)) + len(s.description)
                                                           for s in self.specs)) // 4
        self.tool_context = ToolContext(worktree=workspace.path, scratchpad=store.scratchpad(run_id),
                                        **settings.tool_context)
        run = store.run(run_id)
        self._session_start = time.monotonic()
        self._active_before, self.step = run.active_seconds, run.step
        self._last_action = "" if run.last_action.startswith(WAITING) else run.last_action
        self._waiting = False
        self._waiting_since = ""
        self._next_stream_save, self._streamed_tokens = 0.0, 0
        self.conversation = Conversation(store.conversation(run_id))
        self._resume_calls: tuple[list[ToolCall], list[ToolResult], str] | None = None
        self._resume_finish: str | None = None  # a finish the acceptance step accepted before a crash lost the end
        self._pending_checkpoint: asyncio.Future | None = None

    # -- entry points -------------------------------------------------------------------------

    def request_stop(self, status: RunStatus, reason: str, interrupt: bool = False) -> None:
        """Stop at the next safe point as `status` (paused or killed); a model call in flight is dropped.

        With `interrupt` the command a tool is running is ended now (its process group) instead of waited for."""
        self.stop_status, self.stop_reason = status, reason
        if interrupt:
            self.tool_context.interrupt.set()
        self.stop.set()

    def start(self) -> None:
        """Record the opening conversation of a new run: the task."""
        first = [Message.user(self.settings.task_text)]
        self.store.append(self.run_id, ConversationReset(reason="start", messages=first))
        self.conversation = Conversation(first)

    async def prepare_resume(self, notices: list[str], started: Collection[str] | None = None) -> None:
        """Make the stored conversation continuable after a pause or a crash, and tell the agent why.

        Commands queued while the run was stopped (a rollback's notice, a message) are delivered here. Of the
        last answer's tool calls, those in `started` (ids of calls whose tool began; None: any may have) are
        answered as interrupted; the others, and a `finish` (its acceptance step), are run again by `run`. A
        `finish` whose acceptance ended the run (it merged, say) when a crash came before the run's status was
        written has its acceptance step run again before any model call: the run ends as it was going to, and the
        agent is never asked to go on after its work was merged.
        """
        queued, stopped = await self._take_commands()  # a pause queued while stopped is moot now; a kill is not
        if stopped is not None and stopped.status == RunStatus.KILLED:
            self.stop_status, self.stop_reason = stopped.status, stopped.reason
            self.stop.set()
        messages = self.conversation.messages
        pad = self.tool_context.scratchpad.read()
        text = "\n\n".join(notices + queued + ([f"Your scratch pad (read it first):\n{pad}"] if pad else []))
        if not messages:
            self.start()
            messages = self.conversation.messages
        last = messages[-1]
        if last.role == "assistant" and last.tool_calls:
            calls = last.tool_calls
            again = [c for c in calls if c.name == "finish" or started is not None and c.id not in started]
            interrupted = [ToolResult(tool_call_id=c.id, is_error=True,
                                      content="interrupted: the run stopped before this tool call finished")
                           for c in calls if c not in again]
            if again:
                self._resume_calls = (again, interrupted, text)
                return
            self._add_message(Message(role="user", content=[*interrupted, TextBlock(text=text)]))
        elif last.role == "assistant":
            self._add_message(Message.user(text))
        else:  # merge into the last user message, so roles keep alternating
            self._resume_finish = _accepted_finish(messages)
            merged = Message(role="user", content=[*last.content, TextBlock(text=text)])
            rebuilt = [*messages[:-1], merged]
            self.store.append(self.run_id, ConversationReset(reason="resume", messages=rebuilt))
            self.conversation = Conversation(rebuilt)

    async def run(self) -> LoopOutcome:
        try:
            if self._resume_calls is not None:  # the calls a crash or a pause left unrun
                calls, answered, told = self._resume_calls
                self._resume_calls = None
                verdict = await self._act(calls, answered=answered, told=[told])
                if verdict is not None and verdict.status is not None:
                    return LoopOutcome(verdict.status, verdict.reason, verdict.again)
            if self._resume_finish is not None:
                summary, self._resume_finish = self._resume_finish, None
                await self._settle()
                verdict = await self.on_finish(summary)
                if verdict.status is not None:
                    return LoopOutcome(verdict.status, verdict.reason, verdict.again)
            warm = "shell" in self.toolbox.tools
            while True:
                if self.stop.is_set():
                    raise Stopped(self.stop_status, self.stop_reason)
                await self._maybe_compact()
                response = await self._turn()
                if warm:  # the shell's jail starts now, while the tools run and the next call is out: after the
                    warm = False  # first answer, not with the first call (a fleet's runs all make theirs at once)
                    self.tool_context.warm_jail()
                self.conversation.append(response.message)
                verdict = await self._act(response.message.tool_calls, stop_reason=response.stop_reason,
                                          text=response.message.text)
                if verdict is not None and verdict.status is not None:
                    return LoopOutcome(verdict.status, verdict.reason, verdict.again)
        except Stopped as s:
            await self._checkpoint_quietly(f"{s.status}: {s.reason}")
            return LoopOutcome(s.status, s.reason)
        except asyncio.CancelledError:  # interrupted mid-tool (a second Ctrl-C, a daemon's stop timeout)
            reason = self.stop_reason if self.stop.is_set() else "interrupted"
            await self._checkpoint_quietly(f"paused: {reason}")
            return LoopOutcome(RunStatus.PAUSED, reason)
        except BudgetExceeded as e:
            await self._checkpoint_quietly(f"budget exceeded: {e}")
            return LoopOutcome(RunStatus.BUDGET_EXCEEDED, str(e), again=True)
        except FleetBudgetSpent as e:
            await self._checkpoint_quietly(f"paused: {e}")
            return LoopOutcome(RunStatus.PAUSED, str(e))
        except NeedsAttention as e:
            return LoopOutcome(RunStatus.PAUSED, str(e))
        except ModelUnavailable as e:
            return LoopOutcome(RunStatus.PAUSED, f"model unavailable: {e}")
        except FatalModelError as e:
            return LoopOutcome(RunStatus.FAILED, str(e))
        finally:
            await self.tool_context.aclose()  # the run's jail ends with it
            with contextlib.suppress(WorkspaceError):
                await self._settle()
            self._save_progress("")

    # -- one step -------------------------------------------------------------------------------

    async def _act(self, calls: list[ToolCall], *, stop_reason: str = "tool_use", text: str = "",
                   answered: list[ToolResult] | None = None, told: list[str] | None = None) -> FinishVerdict | None:
        """Run the tool calls of one answer, checkpoint, and send back results (plus any notices).

        On resume, `answered` are results already known for the answer's other calls and `told` what the agent
        is told about the stop.

        The checkpoint is written while the next model call is out (it needs only the tool results), and is
        waited for before anything touches the worktree again: this turn's tools, the acceptance step, a
        rollback, the end of the run."""
        await self._settle()
        blocks: list = list(answered or [])
        finish_summary: str | None = None
        finish_call: str | None = None
        changed = False
        explicit: list[str] = []
        for call in calls:
            if self.tool_context.interrupt.is_set() or self.stop.is_set() and answered is not None:
                # the run is being stopped (or was killed while stopped): the calls left are not started
                blocks.append(ToolResult(tool_call_id=call.id, is_error=True,
                                         content="not run: the run was stopped before this tool call started"))
                continue
            self.store.append(self.run_id, ToolStarted(call_id=call.id, name=call.name, arguments=call.arguments))
            t0 = time.perf_counter()
            outcome = await self.toolbox.execute(call, self.tool_context)
            self.store.append(self.run_id, ToolFinished(
                call_id=call.id, name=call.name, is_error=outcome.is_error,
                duration_ms=(time.perf_counter() - t0) * 1000, preview=outcome.content[:200]))
            changed |= outcome.may_have_changed_files
            if outcome.checkpoint_message:
                explicit.append(outcome.checkpoint_message)
            if outcome.finish_summary is not None:
                finish_summary, finish_call = outcome.finish_summary, call.id
            blocks.append(ToolResult(tool_call_id=call.id, content=outcome.content, is_error=outcome.is_error))
        if calls:
            self.step += 1
            if changed or explicit:
                self._pending_checkpoint = asyncio.ensure_future(
                    self._write_checkpoint("; ".join(explicit) or _describe(calls), self.step))
            self._save_progress(_describe(calls))
        elif stop_reason == "max_tokens":
            blocks.append(TextBlock(text="Your reply was cut off at the output limit. Continue, more briefly."))
        else:
            finish_summary = text  # an answer without tool calls ends the turn: same as finish

        if finish_summary is not None:
            await self._settle()
            verdict = await self.on_finish(finish_summary)
            blocks = _answer_finish(blocks, verdict, finish_call)
            if verdict.status is not None:
                if calls:  # close the tool round so the stored conversation stays well-formed
                    self._add_message(Message(role="user", content=blocks))
                return verdict
        notices, stopped = await self._take_commands()
        notices = [*(told or []), *notices]
        if self.settings.turn_notices is not None:
            notices += self.settings.turn_notices(self.run_id)
        blocks += [TextBlock(text=t) for t in notices]
        self._add_message(Message(role="user", content=blocks))
        if stopped is not None:
            raise stopped
        return None

    def _add_message(self, message: Message) -> None:
        self.store.append(self.run_id, MessageAdded(message=message))
        self.conversation.append(message)

    async def _take_commands(self) -> tuple[list[str], Stopped | None]:
        """Apply the CLI's commands for this run; return what the agent must be told, and any stop asked for."""
        notices: list[str] = []
        stopped: Stopped | None = None
        for cmd in await self.commands.take():
            try:
                if cmd.kind == CommandKind.NOTIFY:
                    notices.append(cmd.args["text"])
                elif cmd.kind == CommandKind.ROLLBACK:
                    notices.append(await self.rollback(cmd.args["sha"], cmd.args["seq"], cmd.args.get("by", "user")))
                elif cmd.kind in (CommandKind.PAUSE, CommandKind.KILL):
                    stopped = Stopped(RunStatus.PAUSED if cmd.kind == CommandKind.PAUSE else RunStatus.KILLED,
                                      cmd.args.get("reason", f"{cmd.kind} command"))
                else:
                    raise ValueError(f"unknown command kind {cmd.kind!r}")
                self.commands.finish(cmd.id, ok=True, result="applied")
            except (WorkspaceError, ValueError, KeyError) as e:
                self.commands.finish(cmd.id, ok=False, result=str(e))
        for text in notices:
            self.store.append(self.run_id, Notice(text=text))
        return notices, stopped

    async def rollback(self, sha: str, seq: int, by: str) -> str:
        await self._settle()
        await asyncio.to_thread(self.checkpoints.reset_to, sha)
        self.store.append(self.run_id, RolledBack(to_sha=sha, to_seq=seq, requested_by=by))
        return rollback_notice(sha, seq)

    # -- model calls ---------------------------------------------------------------------------

    def _active_seconds(self) -> float:
        """The run's active time: before this session, and in it so far."""
        return self._active_before + time.monotonic() - self._session_start

    async def _turn(self) -> ModelResponse:
        """The turn's model call; when the request overflows the context window, compact and try once more."""
        try:
            return await self._call(system=self.settings.system_prompt, messages=self.conversation.messages,
                                    tools=self.specs, purpose="turn")
        except ContextOverflow as e:
            self._retrying(1, 0.0, f"{e}: compacting the conversation, then trying once more", None)
            await self._maybe_compact(force=True)
        try:
            return await self._call(system=self.settings.system_prompt, messages=self.conversation.messages,
                                    tools=self.specs, purpose="turn")
        except ContextOverflow as e:
            raise ContextOverflow(f"{e}, again after compacting: lower [context] compact_at or the model's "
                                  f"context_window, then resume") from e

    def _retrying(self, attempt: int, wait: float, reason: str, max_attempts: int | None) -> None:
        self.store.append(self.run_id, Retrying(attempt=attempt, wait_seconds=wait, reason=reason,
                                                max_attempts=max_attempts))

    async def _call(self, *, system: str, messages: list[Message], tools: list[ToolSpec],
                    purpose: str) -> ModelResponse:
        await self.permit.check(self._active_seconds)

        def on_retry(attempt: int, wait: float, reason: str) -> None:
            self._retrying(attempt, wait, reason, self.settings.retry.max_attempts)

        def on_gate(waits: int, wait: float, reason: str) -> None:  # not attempts: no "n of max_attempts"
            self._retrying(waits, wait, reason, None)

        self._save_progress("", waiting=True)  # run()'s own last save ends the wait when the call raises
        t0 = time.perf_counter()
        streamed = STREAMED.set(self._streaming)  # the call's task takes a copy of this context
        try:
            call = asyncio.ensure_future(call_model(self.adapter, self.settings.retry, on_retry=on_retry,
                                                    on_gate=on_gate, gate=self.permit.quota_gate, system=system,
                                                    messages=messages, tools=tools,
                                                    max_tokens=self.settings.max_output_tokens))
        finally:
            STREAMED.reset(streamed)
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({call, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not call.done():  # Ctrl-C during a model call: nothing has happened yet, drop it
            call.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await call
            raise Stopped(self.stop_status, self.stop_reason)
        response = _capped(call.result(), self.tool_context.output_cap)
        info = self.settings.model_info
        event = ModelCalled(model=response.model or self.adapter.model, usage=response.usage,
                            cost_usd=cost_usd(response.usage, info), saved_usd=cache_saved_usd(response.usage, info),
                            stop_reason=response.stop_reason, duration_ms=(time.perf_counter() - t0) * 1000,
                            purpose=purpose)  # type: ignore[arg-type]
        self.store.record_model_call(self.run_id, event, response.message if purpose == "turn" else None,
                                     self.permit.day(), progress=self._progress(""))
        return response

    # -- context -------------------------------------------------------------------------------

    async def _maybe_compact(self, force: bool = False) -> None:
        """Summarise the oldest turns near the context limit, or now when `force`d (the provider said the request
        overflowed: the window is smaller than the estimate thinks, so the conversation is at least as large)."""
        before = self.conversation.tokens + self._overhead
        window = self.settings.model_info.context_window
        if force:
            window = min(window, before)
        elif before <= self.settings.compact_at * window:
            return
        msgs, sizes = self.conversation.messages, self.conversation.sizes
        keep_budget = self.settings.keep_recent * window
        cut, kept = None, 0
        for i in range(len(msgs) - 1, 0, -1):
            kept += sizes[i]
            if msgs[i].role == "assistant":
                if kept > keep_budget and cut is not None:
                    break
                cut = i
        if cut is None or cut <= 1:
            return  # nothing old enough to summarise
        transcript = _render(msgs[:cut], limit_chars=int(window * 4 * 0.5))
        response = await self._call(
            system=COMPACTION_SYSTEM, tools=[], purpose="compaction",
            messages=[Message.user("Write the hand-off note for this work so far.\n\n" + transcript)])
        note = response.message.text.strip() or "(the summariser returned nothing)"
        self.tool_context.scratchpad.append(f"## Hand-off note (step {self.step})\n{note}")
        fresh = [Message.user(f"{self.settings.task_text}\n\n## Hand-off note (your earlier context, summarised)\n"
                              f"{note}\n\nThe most recent turns follow.")] + msgs[cut:]
        self.conversation = Conversation(fresh)
        self.store.append(self.run_id, Compacted(tokens_before=before,
                                                 tokens_after=self.conversation.tokens + self._overhead, note=note))
        self.store.append(self.run_id, ConversationReset(reason="compaction", messages=fresh))

    # -- workspace -----------------------------------------------------------------------------

    async def _checkpoint(self, message: str) -> None:
        await self._settle()
        await self._write_checkpoint(message, self.step)

    async def _write_checkpoint(self, message: str, step: int) -> None:
        cp = await asyncio.to_thread(self.checkpoints.checkpoint, message, step=step)
        if cp is not None:
            self.store.add_checkpoint(self.run_id, sha=cp.sha, step=step, message=message)

    async def _settle(self) -> None:
        """Wait for the checkpoint written behind the model call, if any; its failure is raised here.

        Shielded: a cancelled run still lets it finish (its git commands run in a thread that cannot be stopped),
        and the checkpoint the cancellation handler writes waits for it."""
        pending = self._pending_checkpoint
        if pending is None:
            return
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending_checkpoint = None

    async def _checkpoint_quietly(self, message: str) -> None:
        with contextlib.suppress(WorkspaceError):
            await asyncio.shield(self._checkpoint(message))

    def _save_progress(self, last_action: str, *, waiting: bool = False) -> None:
        self.store.update_run(self.run_id, **self._progress(last_action, waiting=waiting))

    def _progress(self, last_action: str, *, waiting: bool = False) -> dict:
        """Step, active time and last action ('' keeps it); while a model call is out (`waiting`) the last action
        says since when, so a silent API shows, and after it the run's own last action is back."""
        fields: dict = {"step": self.step, "active_seconds": self._active_seconds()}
        if last_action:
            self._last_action = last_action
        if waiting:
            self._waiting_since = fields["last_action"] = f"{WAITING} {time.strftime('%H:%M:%S')}"
            self._next_stream_save, self._streamed_tokens = time.monotonic() + STREAM_SAVE_SECONDS, 0
        elif last_action or self._waiting:
            fields["last_action"] = self._last_action
        self._waiting = waiting
        return fields

    def _streaming(self, chars: int) -> None:
        """An answer arriving: about how many tokens so far, in the last action and to the store's listeners, at
        most every STREAM_SAVE_SECONDS (never an event per token)."""
        now, tokens = time.monotonic(), max(1, chars // CHARS_PER_TOKEN)
        if not self._waiting or now < self._next_stream_save or tokens == self._streamed_tokens:
            return
        self._next_stream_save, self._streamed_tokens = now + STREAM_SAVE_SECONDS, tokens
        self.store.update_run(self.run_id, last_action=f"{self._waiting_since} · ~{tokens:,} tokens so far")
        progress = ModelStreaming(tokens=tokens)
        for listener in self.store.listeners:
            listener(self.run_id, progress)


def rollback_notice(sha: str, seq: int) -> str:
    where = "the start (no checkpoint)" if seq == 0 else f"checkpoint {seq}"
    return (f"Notice: the worktree was rolled back to {where} ({sha[:10]}). Changes made after it are gone; "
            f"re-read files before editing them.")


def _accepted_finish(messages: list[Message]) -> str | None:
    """The summary of the last answer's `finish` when its result says the acceptance step ended the run (a result
    that is not an error: see `_answer_finish`), else None."""
    if len(messages) < 2 or messages[-2].role != "assistant":
        return None
    finishes = {c.id: c for c in messages[-2].tool_calls if c.name == "finish"}
    for block in messages[-1].content:
        if isinstance(block, ToolResult) and block.tool_call_id in finishes and not block.is_error:
            return str(finishes[block.tool_call_id].arguments.get("summary", ""))
    return None


def _answer_finish(blocks: list, verdict: FinishVerdict, finish_call: str | None) -> list:
    """Put the acceptance verdict into the finish tool's result (or add it as text when there was no tool call)."""
    rejected = verdict.status is None
    if finish_call is None:
        return [*blocks, TextBlock(text=verdict.feedback)]
    return [ToolResult(tool_call_id=b.tool_call_id, content=verdict.feedback, is_error=rejected)
            if isinstance(b, ToolResult) and b.tool_call_id == finish_call else b for b in blocks]


def _capped(response: ModelResponse, cap: int) -> ModelResponse:
    """The response with each text longer than `cap` characters cut to its head and tail, as a tool output is."""
    if not any(isinstance(b, TextBlock) and len(b.text) > cap for b in response.message.content):
        return response
    content = [TextBlock(text=cap_text(b.text, cap)) if isinstance(b, TextBlock) else b
               for b in response.message.content]
    return response.model_copy(update={"message": Message(role="assistant", content=content)})


def _describe(calls: list) -> str:
    return "; ".join(f"{c.name} {gist_argument(c.arguments)}".strip()[:80] for c in calls)


def _render(messages: list[Message], limit_chars: int) -> str:
    lines = []
    for m in messages:
        for b in m.content:
            if isinstance(b, TextBlock):
                lines.append(f"[{m.role}] {b.text}")
            elif isinstance(b, ToolResult):
                lines.append(f"[tool result{' (error)' if b.is_error else ''}] {b.content[:2000]}")
            else:
                lines.append(f"[tool call] {b.name} {b.arguments}")
    text = "\n".join(lines)
    if len(text) > limit_chars:
        half = limit_chars // 2
        text = text[:half] + f"\n[… {len(text) - limit_chars} characters left out …]\n" + text[-half:]
    return text
