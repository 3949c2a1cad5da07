"""One run on a Ray worker: the actor (`RunActor`) that drives the same `AgentLoop` as the local backend (or, for
a CLI agent, the same supervisor of its CLI, which must be installed on the worker's machine), with
the seams and tools that reach the head instead of a store: the store proxy and head link, the rate-limit
gate, lessons, artifacts and fan-out, and the acceptance check in the worker's worktree. The worker makes the
sandbox of the project's `[sandbox]` policy on its own machine: the shell tool, the check and the setup command
run in it, and every tool's output is redacted (the key passed from the head too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from loopwright.harness.agents.driver import CliDriver
from loopwright.harness.events import CheckRan
from loopwright.harness.loop import AgentLoop, FinishVerdict, LoopOutcome, LoopSettings
from loopwright.harness.retry import RetryPolicy
from loopwright.harness.sandbox import Sandbox
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.statuses import RunStatus
from loopwright.harness.tools import STANDARD_TOOLS, Toolbox, ToolContext, ToolError, ToolOutcome, resolve_in
from loopwright.memory.artifacts import ArtifactTool
from loopwright.memory.run import RunMemory
from loopwright.runtime.agents import cli_agent, discard_agent_home, supervision
from loopwright.runtime.backends.executor import failed_check_verdict, unchecked_verdict
from loopwright.runtime.backends.ray.store_proxy import HeadLink, StoreProxy
from loopwright.runtime.backends.ray.wire import RemoteOutcome, RunSpec, await_ref
from loopwright.runtime.backends.ray.workspace import PushedCheckpoints, open_workspace, remove_workspace
from loopwright.runtime.chat.threads import FanOut
from loopwright.runtime.config import KEY_VARIABLES, ConfigError, MemoryConfig, QuotaConfig
from loopwright.runtime.fleet.quota import StoreQuotaGate, gate_key
from loopwright.runtime.sandboxing import (
    Redactor,
    check_worktree,
    chosen_event,
    make_sandbox,
    run_check,
    run_sandbox,
    setup_sandbox,
)
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError


class RemoteQuotaGate(StoreQuotaGate):
    """The fleet's rate-limit gate (runtime.quota), its state read and written on the head."""

    def __init__(self, head, key: str, config: QuotaConfig, policy: RetryPolicy):
        super().__init__(None, key, config, policy)  # type: ignore[arg-type]
        self.head = head

    def _call(self, op: str, *args):
        import ray

        return ray.get(self.head.gate.remote(op, self.key, self.config, self.policy, *args))

    def _row(self):
        return self._call("row")

    def _take_slot(self) -> float:
        return self._call("take_slot")

    def close(self, reason: str, server_wait: float | None, sent_at: float) -> None:
        self._call("close", reason, server_wait, sent_at)

    def _reset_hits(self) -> None:
        self._call("opened")


class RemoteLessons:
    """What the memory tools use of `memory.lessons.Lessons`, answered by the head's store."""

    def __init__(self, head, config: MemoryConfig):
        self.head, self.config = head, config
        self.project = SimpleNamespace(add=lambda *a, **k: self._call("add", *a, **k))

    def _call(self, op: str, *args, **kwargs):
        import ray

        from loopwright.memory.lesson_model import LessonError

        ok, value = ray.get(self.head.lessons.remote(op, self.config, *args, **kwargs))
        if not ok:
            raise LessonError(value)
        return value

    def recall(self, query: str, **kwargs):
        return self._call("recall", query, **kwargs)

    def record_shown(self, run_id: str, found) -> None:
        self._call("record_shown", run_id, found)


class RemoteArtifact(ArtifactTool):
    """`artifact` on a worker: the file (or text) is sent to the head, which keeps it with the project."""

    head: Any = None

    def work(self, a, ctx) -> ToolOutcome:
        import ray

        mem = ctx.memory
        if (a.path is None) == (a.text is None):
            raise ToolError("give exactly one of `path` (a file in the worktree) or `text` (new content)")
        if a.name is not None and a.text is None:
            raise ToolError("`name` goes with `text`; a file registered by path keeps its own name")
        if a.path is not None:
            try:
                source = resolve_in(ctx.worktree, a.path)
            except ToolError:
                raise
            if source.is_dir():
                raise ToolError(f"{a.path} is a folder; register files one by one")
            if not source.exists():
                raise ToolError(f"no such file: {a.path}")
            if source.stat().st_size > 50 * 2**20:
                raise ToolError(f"{a.path} is over 50 MB; artifacts are for documents, not data dumps")
            ok, said = ray.get(self.head.artifact.remote(mem.run_id, a.kind, a.title, source.name,
                                                         source.read_bytes(), False))
        else:
            ok, said = ray.get(self.head.artifact.remote(mem.run_id, a.kind, a.title, a.name, a.text or "", True))
        if not ok:
            raise ToolError(said)
        return ToolOutcome(said)


class RemoteFanOut(FanOut):
    """`fan_out` on a worker: the head creates the parts of the chat request."""

    head: Any = None

    async def run(self, a, ctx) -> ToolOutcome:
        ok, said, summary = await await_ref(self.head.fan_out.remote(ctx.memory.task_id, a.items, a.plan))
        if not ok:
            raise ToolError(said)
        return ToolOutcome(said, finish_summary=summary)


def _adapter(spec: RunSpec, api_key: str | None):
    config = spec.config
    if config.provider == "scripted":
        return ScriptedModel(spec.script, start_at=spec.start_at, model=config.model)  # type: ignore[arg-type]
    from loopwright.harness.adapters import build_adapter

    try:
        key = config.api_key()  # the worker's own environment first
    except ConfigError:
        if not api_key:
            raise
        key = api_key
    return build_adapter(config.provider, config.model, api_key=key, base_url=config.base_url,
                         timeout=config.request_timeout, cache=config.cache, stall_seconds=config.retry.stall_seconds,
                         call_deadline_seconds=config.retry.call_deadline_seconds)


class Acceptance:
    """The loop's `on_finish` on a worker: the acceptance check, in the worker's worktree; when it passed, the head
    merges (`accepted` says so)."""

    def __init__(self, spec: RunSpec, ws: Workspace, proxy: StoreProxy, head):
        self.spec, self.ws, self.proxy, self.head = spec, ws, proxy, head
        self.accepted = False
        self.tool_context: ToolContext | None = None  # the loop's (its sandbox, interrupt and redaction)

    async def __call__(self, summary: str) -> FinishVerdict:
        spec, ws, proxy, head = self.spec, self.ws, self.proxy, self.head
        config, check = spec.config, spec.check
        if spec.fan_out:
            parts = await await_ref(head.parts.remote(spec.task_id))
            if parts:  # a chat request split into parts: it is done when they are (the daemon follows them)
                return FinishVerdict(RunStatus.SUCCEEDED,
                                     f"Started {parts} parts; their results are posted as replies.",
                                     reason=f"split into {parts} parts")
        if not check:
            return unchecked_verdict(ws.branch)
        assert self.tool_context is not None
        result = await run_check(check, ws.path, config, self.tool_context)  # in the run's jail, redacted
        failed = failed_check_verdict(check, result, config.check_timeout, until=bool(spec.until))
        proxy.append(spec.run_id, CheckRan(command=check, passed=failed is None, exit_code=result.exit_code,
                                           output_tail=result.output[-4000:], duration_ms=result.duration_ms))
        if failed is not None:
            return failed
        self.accepted = True
        return FinishVerdict(RunStatus.SUCCEEDED, "Accepted: the check passed. The head merges the branch (or keeps it "
                                                  "for review, as the task says).", reason="check passed")


class RunActor:
    """One run on a Ray worker (see the module docstring). Its loop runs in a thread with its own event loop,
    so `stop` and `wait` are answered while it works."""

    def __init__(self):
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self._result: RemoteOutcome | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._stop_request: tuple[str, str, bool] | None = None
        self._agent: AgentLoop | CliDriver | None = None

    def start(self, spec: RunSpec, head, api_key: str | None = None) -> dict:
        import ray

        if self._thread is None:
            self._thread = threading.Thread(target=self._thread_main, args=(spec, head, api_key), daemon=True,
                                            name=f"loopwright-run-{spec.run_id}")
            self._thread.start()
        return {"node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}

    def wait(self) -> RemoteOutcome:
        self._done.wait()
        assert self._result is not None
        return self._result

    def ping(self) -> bool:
        return True

    def stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        self._stop_request = (status, reason, interrupt)
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed: the run is over
                loop.call_soon_threadsafe(self._apply_stop)

    def _apply_stop(self) -> None:
        if self._stop_request is None:
            return
        if self._agent is not None:
            self._agent.request_stop(*self._stop_request)
        elif self._stop is not None:
            self._stop.set()

    def _thread_main(self, spec: RunSpec, head, api_key: str | None) -> None:
        try:
            self._result = asyncio.run(_work(self, spec, head, api_key))
        except BaseException as e:  # noqa: BLE001 — whatever happened is the run's outcome, said in one line
            self._result = RemoteOutcome(RunStatus.FAILED, f"on the Ray worker ({socket.gethostname()}): "
                                                   f"{type(e).__name__}: {e}")
        finally:
            self._done.set()


async def _work(actor: RunActor, spec: RunSpec, head, api_key: str | None) -> RemoteOutcome:
    """The run, in the actor's thread. Not a method: a Ray actor class with a coroutine method becomes an async
    actor, whose blocking `wait` would hold back `stop`."""
    actor._loop, actor._stop = asyncio.get_running_loop(), asyncio.Event()
    proxy = StoreProxy(head, spec)
    agent = cli_agent(spec.config)  # None: loopwright's own loop
    # the model's SDK is imported (a second of CPU) while git fetches and checks out
    making = asyncio.ensure_future(asyncio.to_thread(_adapter, spec, api_key)) if agent is None else None
    # the project's [sandbox] policy, as this node can give it (auto: bwrap if it works here)
    base = await asyncio.to_thread(make_sandbox, spec.config)
    proxy.append(spec.run_id, chosen_event(base))
    setup_box = setup_sandbox(base)
    key_variable = spec.config.api_key_env or KEY_VARIABLES.get(spec.config.provider)
    redactor = Redactor(spec.config, {**os.environ, **({key_variable: api_key} if key_variable and api_key else {})})
    try:
        ws = await asyncio.to_thread(open_workspace, spec, lambda command, path: setup_box.wrap(command, worktree=path),
                                     redactor)
    except WorkspaceError as e:
        if making is not None:
            with contextlib.suppress(Exception):
                await (await making).aclose()
        return RemoteOutcome(RunStatus.FAILED, f"on the Ray worker ({socket.gethostname()}): {e}")
    adapter = None
    box = base
    jails: list[Sandbox] = []
    try:
        if making is not None:
            adapter = await making
        config = spec.config
        check_worktree(base, ws.path, ws.root)
        box = run_sandbox(base, lambda event: proxy.append(spec.run_id, event))
        acceptance = Acceptance(spec, ws, proxy, head)
        checkpoints = PushedCheckpoints(ws, spec.remote)
        loop: AgentLoop | CliDriver
        if agent is not None:
            agent_jail, settings = supervision(
                base, agent, config, root=ws.root, worktree=ws.path, run_id=spec.run_id, task_id=spec.task_id,
                text=spec.task_text, recalled=spec.instructions,
                record=lambda event: proxy.append(spec.run_id, event))
            jails.append(agent_jail)
            link = HeadLink(proxy, config.budget, config.fleet, None)
            context = ToolContext(worktree=ws.path, scratchpad=proxy.scratchpad(spec.run_id),
                                  output_cap=config.tools.output_cap, sandbox=box, repo_root=ws.root, redact=redactor)
            loop = CliDriver(store=proxy, run_id=spec.run_id, agent=agent, workspace=ws, settings=settings,
                             tool_context=context, sandbox=agent_jail, on_finish=acceptance, stop=actor._stop,
                             permit=link, commands=link, checkpoints=checkpoints)
        else:
            loop = _own_loop(actor, spec, head, ws, box, redactor, proxy, adapter, acceptance, checkpoints)
        acceptance.tool_context = loop.tool_context
        actor._agent = loop
        actor._apply_stop()
        proxy.start()
        if spec.fresh:
            loop.start()
        else:
            await loop.prepare_resume(spec.notices)
        outcome = await loop.run()
        if isinstance(adapter, ScriptedModel) and adapter.unused and outcome.status in (RunStatus.SUCCEEDED,
                                                                                        RunStatus.NEEDS_REVIEW):
            outcome = LoopOutcome(RunStatus.FAILED, f"scripted model: the run ended with {adapter.unused} script "
                                                    f"turn(s) unused — the script and the run disagree")
        if agent is not None and outcome.status not in (RunStatus.PAUSED, RunStatus.BUDGET_EXCEEDED):
            await asyncio.to_thread(discard_agent_home, ws.root, spec.run_id)  # no resume here needs its sessions
        return RemoteOutcome(outcome.status, outcome.reason, outcome.again,
                             accepted=acceptance.accepted and outcome.status == RunStatus.SUCCEEDED)
    finally:
        if adapter is not None:
            with contextlib.suppress(Exception):
                await adapter.aclose()
        for jail in [*jails, *([box] if box is not base else [])]:
            jail.close()
        await proxy.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(remove_workspace, ws)


def _own_loop(actor: RunActor, spec: RunSpec, head, ws: Workspace, box: Sandbox, redactor: Redactor,
              proxy: StoreProxy, adapter, acceptance: Acceptance, checkpoints: PushedCheckpoints) -> AgentLoop:
    """loopwright's own loop on the worker: its tools (artifacts, fan-out and lessons through the head), prompt
    and settings."""
    config = spec.config
    memory_on = spec.memory_tools
    tools = [cls() for cls in STANDARD_TOOLS]
    artifact = RemoteArtifact()
    artifact.head = head
    tools.append(artifact)
    if spec.fan_out:
        fan = RemoteFanOut()
        fan.head = head
        tools.append(fan)
    if memory_on:
        from loopwright.memory.tools import MEMORY_TOOLS

        tools += [cls() for cls in MEMORY_TOOLS]
    memory = RunMemory(store=None, run_id=spec.run_id, task_id=spec.task_id, artifacts_root=Path("/nonexistent"),
                       lessons=RemoteLessons(head, config.memory) if memory_on else None)
    settings = LoopSettings(
        system_prompt=spec.system_prompt + (f"\n\n{rules}" if (rules := box.rules(ws.path)) else ""),
        task_text=spec.task_text,
        max_output_tokens=config.max_output_tokens, model_info=config.model_info(), budget=config.budget,
        retry=config.retry.policy(), compact_at=config.context.compact_at,
        keep_recent=config.context.keep_recent,
        tool_context={"shell_timeout": config.tools.shell_timeout,
                      "max_shell_timeout": config.tools.max_shell_timeout,
                      "output_cap": config.tools.output_cap,
                      "env": {"LOOPWRIGHT_RUN_ID": spec.run_id, "LOOPWRIGHT_TASK_ID": str(spec.task_id)},
                      "memory": memory, "sandbox": box, "repo_root": ws.root, "redact": redactor})
    gate = None if config.provider == "scripted" else RemoteQuotaGate(
        head, gate_key(config.provider, config.model, config.base_url), config.quota, config.retry.policy())
    link = HeadLink(proxy, config.budget, config.fleet, gate)
    return AgentLoop(store=proxy, run_id=spec.run_id, adapter=adapter, toolbox=Toolbox(tools), workspace=ws,
                     settings=settings, on_finish=acceptance, stop=actor._stop, permit=link, commands=link,
                     checkpoints=checkpoints)
