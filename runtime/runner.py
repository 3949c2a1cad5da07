"""Run one task end to end: worktree, agent loop, acceptance check, merge. Shared by `loopwright run` and the daemon.

`Runner.start` makes the task and runs it; `run_task` runs a task this process
claimed (one run, or with loop-until-done a fresh run per attempt until the
check passes); `resume` takes a paused or orphaned run back. Where a run's loop
executes is the runner's executor (`runtime.backends.executor`): in this
process by default (`backends.local`, whose acceptance step runs the task's
check and squash-merges on success), or on a Ray cluster. The runner keeps what
is the same for both: the runs' rows, final statuses, the progress file,
loop-until-done's caps and reflection after a run.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwright.harness.events import (
    LessonsRecalled,
    MergeConflict,
    Reflected,
    RolledBack,
    RunStarted,
    StopRequested,
)
from loopwright.harness.loop import rollback_notice
from loopwright.harness.messages import ModelResponse
from loopwright.harness.models import ModelAdapter, ModelUnavailable
from loopwright.harness.sandbox import Sandbox
from loopwright.harness.script import Script, ScriptTurn
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.statuses import RUN_FINAL, STOP_COMMANDS, CommandKind, CommandStatus, RunStatus, TaskStatus
from loopwright.memory import commands, intents
from loopwright.memory.store import Command, Run, Store, StoreError, Task, new_run_id
from loopwright.runtime.agents import LOOPWRIGHT, cli_agent, discard_agent_home
from loopwright.runtime.backends.executor import Execution, Executor, Placement
from loopwright.runtime.backends.local import InProcess
from loopwright.runtime.chat.threads import TASK_DONE, children
from loopwright.runtime.config import Config
from loopwright.runtime.fleet.budget import FleetBudget
from loopwright.runtime.merging import merge_run
from loopwright.runtime.project import Project
from loopwright.runtime.prompts import placebo_text
from loopwright.runtime.sandboxing import make_sandbox
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import require_commits


@dataclass
class RunResult:
    run: Run
    task: Task
    again: bool = False  # loop-until-done: another attempt follows


def check_model(config: Config, *, key: bool = True) -> None:
    """Fail now, in one line, on a missing key (unless not `key`: a task posted for a daemon that has it), an
    unknown model or a broken script. A task done by an external agent (`agent`) needs a usable agent instead:
    loopwright's own model then only reflects."""
    if cli_agent(config) is not None:
        return
    if config.provider == "scripted":
        Script.load(config.script)  # type: ignore[arg-type]
    else:
        config.model_info()
        if key:
            config.api_key()


class KeyMissing(ModelAdapter):
    """The model of a run the daemon started without the provider key in its environment: the first model call
    pauses the run, saying which variable to set (a task is posted from where the key need not be)."""

    def __init__(self, config: Config, variable: str):
        self.provider, self.model, self.variable = config.provider, config.model, variable

    async def complete(self, **_) -> ModelResponse:
        raise ModelUnavailable(f"{self.variable} is not set in the daemon's environment: restart `loopwright "
                               f"serve` with it exported, then `loopwright resume` the run")


def make_adapter(config: Config, *, start_at: int = 0, key_missing_pauses: bool = False) -> ModelAdapter:
    """The configured model (see `check_model` for what fails here). With `key_missing_pauses` (the daemon) a
    provider key missing from the environment gives a `KeyMissing` instead of failing."""
    if config.provider == "scripted":
        return ScriptedModel(Script.load(config.script), start_at=start_at, model=config.model)  # type: ignore[arg-type]
    from loopwright.harness.adapters import build_adapter

    config.model_info()
    if key_missing_pauses and (variable := config.missing_key()) is not None:
        return KeyMissing(config, variable)
    return build_adapter(config.provider, config.model, api_key=config.api_key(), base_url=config.base_url,
                         timeout=config.request_timeout, cache=config.cache, stall_seconds=config.retry.stall_seconds,
                         call_deadline_seconds=config.retry.call_deadline_seconds)


def merge_reviewed(project: Project, run_id: str) -> str:
    """Merge now a run kept for review (a person's decision, in place of the check): squash into its target."""
    store = project.store
    run = store.run(run_id)
    if run.status != RunStatus.NEEDS_REVIEW:
        raise StoreError(f"run {run.id} is {run.status}; only a run kept for review merges by hand")
    if not Path(run.worktree).is_dir():
        raise StoreError(f"the worktree of run {run.id} is gone ({run.worktree}); merge its branch {run.branch} "
                         f"with git")
    task = store.task(run.task_id)
    ws = Workspace.open(project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                        copy_files=project.config.workspace.copy_files)
    merge = merge_run(store, ws, task, run)
    if merge.status == "conflict":
        store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
        raise StoreError(f"run {run.id} does not merge cleanly into {run.target_branch}: {merge.detail}")
    if merge.status == "nothing":
        reason = "merged by hand: no changes to merge"
    else:
        reason = f"merged by hand into {run.target_branch} as {(merge.commit or '')[:10]}"
    store.transition_run(run.id, RunStatus.SUCCEEDED, only_from=(RunStatus.NEEDS_REVIEW,), reason=reason,
                         merge_commit=merge.commit)
    return reason


def resumable(store: Store, run_id: str) -> Run:
    """The run, if it may be resumed: not finished (a budget stop may go on) and not running in a live process."""
    run = store.run(run_id)
    if run.status in RUN_FINAL and run.status != RunStatus.BUDGET_EXCEEDED:
        raise StoreError(f"run {run.id} is {run.status}; there is nothing to resume")
    if run.status == RunStatus.RUNNING and run.owner_alive():
        raise StoreError(f"run {run.id} is running in process {run.owner_pid}; pause it first")
    return run


TASK_KEYS = ("provider", "model", "base_url", "script", "on_success", "agent", "agent_command")


def model_options(config: Config) -> dict:
    """The model (never the key), agent and merge policy a task was posted with: every attempt and resume uses
    them."""
    script = str(Path(config.script).resolve()) if config.script else None
    return {"provider": config.provider, "model": config.model, "base_url": config.base_url, "script": script,
            "on_success": config.on_success, "agent": config.agent, "agent_command": config.agent_command}


class Runner:
    """Drives one run of one task (and its next attempts), its loop executing where `executor` says (default: in
    this process)."""

    def __init__(self, project: Project, *, stop: asyncio.Event | None = None, key_missing_pauses: bool = False,
                 executor: Executor[Any] | None = None, sandbox: Sandbox | None = None):
        self.project = project
        self.store = project.store
        self.stop = stop or asyncio.Event()
        self.key_missing_pauses = key_missing_pauses  # the daemon: see `make_adapter`
        self.executor: Executor[Any] = executor if executor is not None else InProcess()
        self.stop_request: tuple[str, str, bool] | None = None  # (status, reason, interrupt) of `request_stop`
        self.loop: Execution | None = None
        self._lessons = None
        self._sandbox = sandbox  # made once where runs start (run, serve), else here on first use

    @property
    def sandbox(self) -> Sandbox:
        """The jail agent commands run in (see runtime/sandboxing.py); the local executor gives each run its view
        of it."""
        if self._sandbox is None:
            self._sandbox = make_sandbox(self.project.config)
        return self._sandbox

    def lessons(self, config: Config):
        """The project's (and the user's global) lessons, opened on first use."""
        if self._lessons is None:
            from loopwright.memory.lessons import Lessons

            self._lessons = Lessons(self.store, config.memory)
        return self._lessons

    # -- starting and resuming ---------------------------------------------------------------

    async def start(self, goal: str, *, check: str | None = None, title: str | None = None,
                    skills: str | None = None) -> RunResult:
        """Create a task and run it now (the foreground `loopwright run`); `skills` as `--skills` takes it."""
        config = self.project.config
        check_model(config)
        require_commits(self.project.root)
        options = model_options(config) | ({"skills": skills} if skills is not None else {})
        task = self.store.create_task(goal, title=title, check=check if check is not None else config.check,
                                      options=options, status=TaskStatus.RUNNING)
        return await self.run_task(task)

    def adapter(self, config: Config, *, start_at: int = 0) -> ModelAdapter:
        """The run's model, made in this process (see `make_adapter`)."""
        return make_adapter(config, start_at=start_at, key_missing_pauses=self.key_missing_pauses)

    def task_config(self, task: Task) -> Config:
        """The project config with the task's own model choice and USD cap (what is left of it) on top."""
        options = {k: v for k, v in task.options.items() if k in TASK_KEYS and v is not None}
        config = self.project.config.model_copy(update=options)
        if task.options.get("budget_usd") is not None:
            left = task.options["budget_usd"] - sum(r.cost_usd for r in self.store.runs(task_id=task.id))
            config.budget = config.budget.model_copy(update={"max_usd": max(left, 1e-9)})
        return config

    async def run_task(self, task: Task) -> RunResult:
        """Run a task this process has claimed (status running): worktree, loop, check, merge."""
        config = self.task_config(task)
        run_id = new_run_id()
        # claimed until the run's row is written: a kill in between leaves an orphan that recovery and gc remove
        intents.claim_worktree(self.store, run_id)
        try:
            placement = await self.executor.place(self, task, config, run_id)
        except Exception as e:
            intents.release_worktree(self.store, run_id)
            self.store.set_task_status(task.id, TaskStatus.FAILED, reason=str(e))
            raise
        return await self._attempts(task, config, placement, run_id)

    async def _attempts(self, task: Task, config: Config, placement: Placement, run_id: str) -> RunResult:
        """One run, or (loop-until-done) a fresh run per attempt in the same worktree until the check passes."""
        while True:
            worktree = str(placement.worktree)
            run = self.store.create_run(task.id, provider=config.provider, model=config.model, worktree=worktree,
                                        branch=placement.branch, base_commit=placement.base_commit,
                                        target_branch=placement.target_branch, run_id=run_id)
            self.store.append(run.id, RunStarted(task_id=task.id, goal=task.goal, provider=config.provider,
                                                 model=config.model, worktree=worktree, branch=placement.branch,
                                                 base_commit=placement.base_commit, agent=config.agent))
            execution = await self.executor.start(self, run, task, config, placement)
            result = await self._drive(execution, run, task, config)
            if not result.again:
                return result
            run_id = new_run_id()
            config = self.task_config(task)
            placement = await self.executor.next_attempt(self, task, config, placement)

    def attach(self, execution: Execution) -> None:
        """The run this runner drives from now on (its executor says so as soon as the run's loop exists): a stop
        asked for before then applies to it."""
        self.loop = execution
        if self.stop_request is not None:
            execution.request_stop(*self.stop_request)

    def request_stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        """Stop the run at its next safe point (a model call in flight is dropped) as `status` (paused or killed);
        with `interrupt` the command a tool is running is ended now instead of waited for."""
        self.stop_request = (status, reason, interrupt)
        if self.loop is not None:
            self.loop.request_stop(status, reason, interrupt)  # first: the event below fails on a full disk
            self.store.append(self.loop.run_id, StopRequested(status=status, reason=reason, interrupt=interrupt))
        self.stop.set()

    def obey(self, command: Command) -> None:
        """Carry out a pause or kill command: a kill ends the command a tool is running now, a pause waits for it."""
        kill = command.kind == CommandKind.KILL
        self.request_stop(RunStatus.KILLED if kill else RunStatus.PAUSED,
                          command.args.get("reason") or f"{command.kind} command", kill)

    async def watch_commands(self, every: float = 0.2) -> None:
        """Obey pause and kill commands for this runner's run as they come, also in the middle of a tool call
        (for a run in the foreground; the daemon claims them for its runs itself)."""
        while True:
            await asyncio.sleep(every)
            if self.loop is not None:
                for command in self.store.claim_commands(STOP_COMMANDS, [self.loop.run_id]):
                    self.obey(command)
                    self.store.finish_command(command.id, ok=True, result="applied")

    async def resume(self, run_id: str) -> RunResult:
        run = resumable(self.store, run_id)
        task = self.store.task(run.task_id)
        config = self.task_config(task)

        def claim() -> None:
            if not self.store.claim_run(run.id,
                                        only_from=(RunStatus.PAUSED, RunStatus.RUNNING, RunStatus.BUDGET_EXCEEDED)):
                raise StoreError(f"run {run.id} was taken by another process")

        execution, placement = await self.executor.resume(self, run, task, config, claim)
        result = await self._drive(execution, run, task, config)
        if result.again:
            placement = await self.executor.next_attempt(self, task, config, placement)
            return await self._attempts(task, config, placement, new_run_id())
        return result

    # -- what the executors use -------------------------------------------------------------------

    def recalled_section(self, run: Run, task: Task, config: Config, fresh: bool) -> str:
        """The recalled-lessons section of the task: recalled now for a new run, the same lessons on a resume.

        The placebo arm of `loopwright eval` gets neutral text of the same length, and nothing is recorded as shown.
        """
        lessons = self.lessons(config)
        if fresh:
            found = lessons.recall(f"{task.title}\n{task.goal}", token_budget=config.memory.recall_tokens,
                                   limit=config.memory.recall_count)
        else:
            found = lessons.lessons_shown(run.id)
        section = lessons.recall_section(found)
        if not section:
            return ""
        if config.memory.placebo:
            section = placebo_text(len(section))
        if fresh:
            if not config.memory.placebo:
                lessons.record_shown(run.id, found)
            self.store.append(run.id, LessonsRecalled(refs=[] if config.memory.placebo else [le.ref for le in found],
                                                      tokens=len(section) // 4, placebo=config.memory.placebo))
        return "\n\n" + section

    async def _learn(self, run: Run, task: Task, config: Config) -> None:
        """Reflection after a finished run (see runtime/reflection.py); never fails the run."""
        from loopwright.runtime.learning.reflection import reflect

        if not config.memory.reflect or run.status == RunStatus.KILLED:
            return
        adapter, why_not = None, ""
        try:
            if self.stop.is_set():
                why_not = "stopping"
            elif why := FleetBudget(self.store, config.fleet).exhausted():
                why_not = why
            elif run.agent != LOOPWRIGHT and (variable := config.missing_key()) is not None:
                why_not = (f"the run was done by {run.agent}; reflection uses loopwright's configured model, whose key "
                           f"{variable} is not set")
            elif config.provider == "scripted":
                script = Script.load(config.script)  # type: ignore[arg-type]
                position = sum(1 for r in self.store.runs(task_id=task.id)
                               for _, _, e in self.store.events(r.id, types=("model_called",))
                               if e.purpose == "reflection")
                reply = script.reflection_reply(position)
                if reply is None:
                    why_not = "the scripted model's script has no reflection reply left"
                else:
                    adapter = ScriptedModel(Script(turns=[ScriptTurn(text=reply)]), model=config.model)
            else:
                adapter = make_adapter(config)
            await reflect(store=self.store, lessons=self.lessons(config), run=run, task=task, config=config,
                          adapter=adapter, project_root=self.project.root, policy=config.retry.policy(),
                          budget_day=FleetBudget(self.store, config.fleet).day(), why_not=why_not)
        except Exception as e:  # noqa: BLE001 — learning is after the fact: it must never take the run down with it
            self.store.append(run.id, Reflected(status="failed", reason=f"{type(e).__name__}: {e}"))
        finally:
            if adapter is not None:
                await adapter.aclose()

    def progress_section(self, task: Task, current: Run) -> str:
        """For a later attempt: the task's progress file, which every earlier attempt added to at its end."""
        content = self.store.progress(task.id)
        if not content:
            return ""
        attempt = len(self.store.runs(task_id=task.id))
        cap = task.options.get("max_attempts") or self.project.config.until_max_attempts
        limit = f" of at most {cap}" if task.options.get("until") else ""
        return (f"\n\n## Progress file of this task (this is attempt {attempt}{limit})\n"
                "The worktree holds the work of the earlier attempts. Only the check decides when the task is done.\n\n"
                + content)

    def _record_progress(self, run: Run, task: Task) -> None:
        """Add this attempt's entry to the task's progress file: outcome, the check's output, the agent's notes."""
        attempt = [r.id for r in self.store.runs(task_id=task.id)].index(run.id) + 1
        lines = [f"### Attempt {attempt} (run {run.id}): {run.status}" + (f" — {run.reason}" if run.reason else ""),
                 f"{run.step} steps; last action: {run.last_action or '(none)'}"]
        checks = self.store.events(run.id, types=("check_ran",))
        if checks:
            check = checks[-1][2]
            lines.append(f"Last check `{check.command}`: {'passed' if check.passed else 'failed'} "
                         f"(exit {check.exit_code}). Output tail:\n{check.output_tail[-1500:]}")
        else:
            lines.append("No check ran.")
        pad = self.store.scratchpad(run.id).read()
        if pad:
            lines.append(f"Its scratch pad:\n{pad[-3000:]}")
        self.store.add_progress(task.id, "\n".join(lines))

    async def _drive(self, execution: Execution, run: Run, task: Task, config: Config) -> RunResult:
        outcome = await execution.run()
        again = False
        task_status = TaskStatus.PAUSED if outcome.status == RunStatus.PAUSED else None
        task_reason = ""
        if task.options.get("until") and outcome.again and not self.stop.is_set():
            again, why_not = self._another_attempt(task, config)
            if again:
                task_status = TaskStatus.RUNNING
            else:
                task_status = TaskStatus.BUDGET_EXCEEDED if "budget" in why_not else TaskStatus.FAILED
                task_reason = f"{outcome.reason}; {why_not}"
        if (outcome.status == RunStatus.SUCCEEDED
                and any(p.status not in TASK_DONE for p in children(self.store, task.id))):
            task_status = TaskStatus.WAITING  # on its parts
        self.store.transition_run(run.id, outcome.status, only_from=(RunStatus.RUNNING,), reason=outcome.reason,
                                  task_status=task_status, task_reason=task_reason or None)
        ended = self.store.run(run.id)
        if ended.status in RUN_FINAL and ended.status != RunStatus.BUDGET_EXCEEDED:  # it can never resume
            await asyncio.to_thread(discard_agent_home, self.project.root, run.id)
        if ended.status in RUN_FINAL:
            self._record_progress(ended, task)
            await self._learn(ended, task, config)
        return RunResult(run=self.store.run(run.id), task=self.store.task(task.id), again=again)

    def _another_attempt(self, task: Task, config: Config) -> tuple[bool, str]:
        """Whether loop-until-done may start another attempt, or which cap stops it."""
        runs = self.store.runs(task_id=task.id)
        cap = task.options.get("max_attempts") or config.until_max_attempts
        if len(runs) >= cap:
            return False, f"stopped after {len(runs)} attempt(s): `{task.check_cmd}` never passed"
        spent = sum(r.cost_usd for r in runs)
        budget = task.options.get("budget_usd")
        if budget is not None and spent >= budget:
            return False, f"task budget spent (${spent:.4f} of ${budget:.2f})"
        elapsed = time.time() - runs[0].started_at if runs else 0.0
        if elapsed >= config.until_max_wall_seconds:
            return False, f"time cap reached ({elapsed:.0f}s of {config.until_max_wall_seconds:.0f}s)"
        return True, ""

    def script_position(self, task: Task) -> int:
        """A scripted model plays one script per task: each attempt and resume goes on where the last stopped."""
        return sum(r.model_calls for r in self.store.runs(task_id=task.id))


def rollback_allowed(run: Run) -> Run:
    """The run, when it may be rolled back; else a StoreError saying why."""
    if run.status in RUN_FINAL and run.status not in (RunStatus.BUDGET_EXCEEDED, RunStatus.NEEDS_REVIEW,
                                                      RunStatus.FAILED):
        raise StoreError(f"run {run.id} is {run.status}; its worktree is no longer in use")
    return run


def rollback(project: Project, run_id: str, *, to: str | None = None, steps: int | None = None,
             wait_seconds: float = 30.0, by: str = "cli") -> tuple[Run, int, str, str]:
    """Roll a run's worktree back to a checkpoint (by number or sha prefix, or `steps` back).

    A live run gets a command it applies at its next model boundary (we wait for
    it); a stopped run is reset here and told at its next turn. Returns
    (run, checkpoint number, sha, how it was done).
    """
    import time

    store = project.store
    run = rollback_allowed(store.run(run_id))
    cps = store.checkpoints(run.id)
    seq, sha = _pick_checkpoint(run, cps, to, steps)
    if run.status == RunStatus.RUNNING and run.owner_alive():
        cmd = store.enqueue_command(run.id, CommandKind.ROLLBACK, {"sha": sha, "seq": seq, "by": by})
        deadline = time.monotonic() + wait_seconds
        while time.monotonic() < deadline:
            row = commands.command(store, cmd)
            assert row is not None
            if row.status == CommandStatus.DONE:
                return run, seq, sha, "applied by the running agent at its model boundary"
            if row.status == CommandStatus.FAILED:
                raise StoreError(f"rollback failed: {row.result}")
            time.sleep(0.1)
        return run, seq, sha, "queued: the running agent applies it at its next model boundary"
    ws = Workspace.open(project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                        copy_files=project.config.workspace.copy_files)
    ws.reset_to(sha)
    store.append(run.id, RolledBack(to_sha=sha, to_seq=seq, requested_by=by))
    store.enqueue_command(run.id, CommandKind.NOTIFY, {"text": rollback_notice(sha, seq)})
    return run, seq, sha, "done; the agent is told when the run resumes"


def _pick_checkpoint(run: Run, cps: list, to: str | None, steps: int | None) -> tuple[int, str]:
    points = [(0, run.base_commit)] + [(c.seq, c.sha) for c in cps]
    if steps is not None:
        if len(points) == 1:
            raise StoreError(f"run {run.id} has no checkpoints yet: there is nothing to step back over "
                             f"(--to 0 resets its worktree to the start)")
        if steps < 1 or steps > len(points) - 1:
            raise StoreError(f"--steps must be between 1 and {len(points) - 1} for run {run.id}")
        return points[-1 - steps]
    if to is None:
        raise StoreError("say where to: --to CHECKPOINT (a number from `loopwright checkpoints`, or a sha) "
                         "or --steps N")
    if to.isdigit() and len(to) < 7:
        for seq, sha in points:
            if seq == int(to):
                return seq, sha
        raise StoreError(f"run {run.id} has no checkpoint {to} (it has 0..{len(points) - 1}; 0 is the start)")
    matches = [(seq, sha) for seq, sha in points if sha.startswith(to.lower())]
    if len(matches) != 1:
        raise StoreError(f"'{to}' matches {len(matches)} checkpoints of run {run.id}; "
                         f"see `loopwright checkpoints {run.id}`")
    return matches[0]
