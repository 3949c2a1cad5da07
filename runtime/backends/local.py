"""The local backend: a run's loop executes in this process, in a worktree of the project (the runner's default
executor; see `backends.executor`).

A task's worktree and branch are made when it starts and kept across its attempts; each run drives an
`AgentLoop` with the standard, artifact, memory and skill tools, whose `on_finish` runs the task's acceptance
check and squash-merges on success. A resumed run first repairs what a crash may have left in its worktree.
The shell tool, the check and `[workspace] setup_command` run in the runner's sandbox (runtime/sandboxing.py),
each run in its own view of it; every tool's output is redacted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from loopwright.harness.agents.base import CliAgent
from loopwright.harness.agents.driver import CliDriver, DriverSettings
from loopwright.harness.events import CheckRan, MergeConflict, RolledBack, SkillsChanged, SkillsLeftOut
from loopwright.harness.loop import AgentLoop, FinishVerdict, LoopOutcome, LoopSettings, Stopped, rollback_notice
from loopwright.harness.messages import ToolResult
from loopwright.harness.models import ModelAdapter
from loopwright.harness.processes import end_group
from loopwright.harness.sandbox import Sandbox
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.statuses import RunStatus
from loopwright.harness.tools import STANDARD_TOOLS, Toolbox, ToolContext
from loopwright.memory import intents
from loopwright.memory.artifacts import ARTIFACT_TOOLS
from loopwright.memory.processes import ToolProcesses
from loopwright.memory.run import RunMemory
from loopwright.memory.store import Run, Store, StoreError, Task
from loopwright.memory.tools import MEMORY_TOOLS
from loopwright.runtime.agents import LOOPWRIGHT, cli_agent, supervision, untold
from loopwright.runtime.backends.executor import Placement, failed_check_verdict, unchecked_verdict
from loopwright.runtime.chat.threads import FanOut, children
from loopwright.runtime.config import Config
from loopwright.runtime.fleet.budget import FleetBudget
from loopwright.runtime.fleet.quota import StoreQuotaGate, gate_key
from loopwright.runtime.merging import GIT_LOCK, merge_run
from loopwright.runtime.prompts import MEMORY_PROMPT, SYSTEM_PROMPT, task_text
from loopwright.runtime.sandboxing import (
    Redactor,
    check_worktree,
    chosen_event,
    run_check,
    run_sandbox,
    setup_sandbox,
)
from loopwright.skills.catalog import Catalog, Entry, SkillError, discover
from loopwright.skills.tool import WATCHER, SkillShelf, UseSkill
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError, current_branch

if TYPE_CHECKING:
    from loopwright.runtime.runner import Runner


@dataclass
class LocalPlacement(Placement):
    adapter: ModelAdapter | None = None  # the model of the next attempt (made when the task was placed)
    workspace: Workspace | None = None  # the one that made the worktree, for the first run: it knows its branch's tip


class InProcess:
    """The local backend's executor."""

    async def place(self, runner: Runner, task: Task, config: Config, run_id: str) -> LocalPlacement:
        adapter = runner.adapter(config) if config.agent == LOOPWRIGHT else None
        box = setup_sandbox(runner.sandbox)

        def make_workspace() -> tuple[str, Workspace]:
            target = task.target_branch or config.target_branch or current_branch(runner.project.root)
            return target, Workspace.create(
                runner.project.root, run_id, target_branch=target, worktrees_dir=runner.project.worktrees,
                copy_files=config.workspace.copy_files, setup_command=config.workspace.setup_command,
                setup_timeout=config.workspace.setup_timeout, git_lock=GIT_LOCK,
                jail=lambda command, path: box.wrap(command, worktree=path, repo_root=runner.project.root),
                redact=Redactor(config))

        target, ws = await asyncio.to_thread(make_workspace)
        check_worktree(runner.sandbox, ws.path, runner.project.root)  # extra paths that expose too much: refused
        return LocalPlacement(ws.path, ws.branch, ws.base_commit, target, adapter=adapter, workspace=ws)

    async def next_attempt(self, runner: Runner, task: Task, config: Config,
                           placement: LocalPlacement) -> LocalPlacement:
        if config.agent != LOOPWRIGHT:
            return placement
        return replace(placement, adapter=runner.adapter(config, start_at=runner.script_position(task)))

    async def start(self, runner: Runner, run: Run, task: Task, config: Config,
                    placement: LocalPlacement) -> LocalRun:
        ws = placement.workspace
        if ws is None or ws.run_id != run.id:  # a later attempt: a run of its own in the same worktree
            ws = Workspace.open(runner.project.root, run.id, placement.worktree, placement.branch,
                                placement.base_commit, copy_files=config.workspace.copy_files)
        agent = cli_agent(config)
        if agent is not None:
            cli = self._cli_execution(runner, run, task, ws, config, agent, fresh=True)
            cli.loop.start()
            return cli
        assert placement.adapter is not None
        execution = self._execution(runner, run, task, ws, placement.adapter, config, fresh=True)
        execution.loop.start()
        return execution

    async def resume(self, runner: Runner, run: Run, task: Task, config: Config,
                     claim: Callable[[], None]) -> tuple[LocalRun, LocalPlacement]:
        if not Path(run.worktree).is_dir():
            raise StoreError(f"the worktree of run {run.id} is gone ({run.worktree}); it cannot be resumed")
        agent = cli_agent(config)
        adapter = runner.adapter(config, start_at=runner.script_position(task)) if agent is None else None
        check_worktree(runner.sandbox, Path(run.worktree), runner.project.root)
        claim()
        store = runner.store
        ws = Workspace.open(runner.project.root, run.id, Path(run.worktree), run.branch, run.base_commit,
                            copy_files=config.workspace.copy_files)
        was = "crashed (its process died)" if run.status == RunStatus.RUNNING else run.status
        notices = [f"Notice: this run was {was} and has been resumed."]
        if ended := await _end_leftover_commands(store, run.id):  # before anything looks at the worktree
            notices.append(f"{ended} command(s) started before the crash were still running; they were killed.")
        known = {c.sha for c in store.checkpoints(run.id)}
        for cp in await asyncio.to_thread(ws.checkpoints):  # a kill between a checkpoint's commit and its row
            if cp.sha not in known:
                store.add_checkpoint(run.id, sha=cp.sha, step=cp.step, message=cp.message)
        if run.status == RunStatus.RUNNING:  # its owner died, maybe in the middle of a checkpoint
            await asyncio.to_thread(ws.clear_stale_lock)
        if await asyncio.to_thread(ws.is_dirty):
            if agent is not None:  # a CLI's half-done work is its session's: kept (its resume is told so)
                message = f"step {run.step} (the work the interrupted {agent.name} left, checkpointed on resume)"
                cp = await asyncio.to_thread(ws.checkpoint, message, step=run.step)
                if cp is not None:
                    store.add_checkpoint(run.id, sha=cp.sha, step=run.step, message=message)
                notices.append("The changes you made before the interruption are kept; check that they are whole.")
            elif _work_is_whole(store, run.id):  # only a checkpoint written behind a model call was cut short
                message = f"step {run.step} (its checkpoint, cut short, written on resume)"
                cp = await asyncio.to_thread(ws.checkpoint, message, step=run.step)
                if cp is not None:
                    store.add_checkpoint(run.id, sha=cp.sha, step=run.step, message=message)
            else:
                cps = store.checkpoints(run.id)
                sha, seq = (cps[-1].sha, cps[-1].seq) if cps else (run.base_commit, 0)
                await asyncio.to_thread(ws.reset_to, sha)
                store.append(run.id, RolledBack(to_sha=sha, to_seq=seq, requested_by="resume"))
                notices.append("Uncommitted changes from the interrupted step were discarded. "
                               + rollback_notice(sha, seq))
        placement = LocalPlacement(ws.path, ws.branch, ws.base_commit, run.target_branch)
        if agent is not None:
            cli = self._cli_execution(runner, store.run(run.id), task, ws, config, agent)
            try:
                await cli.loop.prepare_resume(notices + untold(store, run.id))
            except BaseException:
                cli.close_jail()
                raise
            return cli, placement
        assert adapter is not None
        execution = self._execution(runner, store.run(run.id), task, ws, adapter, config)
        try:
            await execution.loop.prepare_resume(notices, started=_started_calls(store, run.id))
        except BaseException:
            execution.close_jail()
            raise
        return execution, placement

    def _execution(self, runner: Runner, run: Run, task: Task, ws: Workspace, adapter: ModelAdapter, config: Config,
                   *, fresh: bool = False) -> LocalRun:
        """The run's loop: its tools, prompt and settings, the recalled lessons and the progress file."""
        store = runner.store
        shelf = _skills(runner, task, config)
        lessons = runner.lessons(config) if config.memory.recall else None
        box = _jail(runner, run)
        system_prompt = SYSTEM_PROMPT + (MEMORY_PROMPT if lessons is not None else "")
        if rules := box.rules(ws.path):
            system_prompt += "\n\n" + rules
        tools, skill_context = [cls() for cls in STANDARD_TOOLS], {}
        if shelf is not None:
            text, left_out = shelf.prompt()
            if left_out:
                store.append(run.id, SkillsLeftOut(names=left_out, budget_tokens=config.skills.catalog_tokens))
            system_prompt += text
            tools.append(UseSkill())
            skill_context = {"skills": shelf, "read_roots": shelf.roots}
        tools += [cls() for cls in ARTIFACT_TOOLS] + ([cls() for cls in MEMORY_TOOLS] if lessons is not None else [])
        chat = task.options.get("chat")
        if chat and not chat.get("parent"):
            tools.append(FanOut())
        memory = RunMemory(store=store, run_id=run.id, task_id=task.id,
                           artifacts_root=runner.project.dir / "artifacts", lessons=lessons)
        recalled = runner.recalled_section(run, task, config, fresh) if lessons is not None else ""
        settings = LoopSettings(
            system_prompt=system_prompt,
            task_text=task_text(task, task.check_cmd) + recalled + runner.progress_section(task, run),
            max_output_tokens=config.max_output_tokens, model_info=config.model_info(), budget=config.budget,
            retry=config.retry.policy(), compact_at=config.context.compact_at, keep_recent=config.context.keep_recent,
            fleet=FleetBudget(store, config.fleet),
            quota_gate=None if config.provider == "scripted" else StoreQuotaGate(
                store, gate_key(config.provider, config.model, config.base_url), config.quota,
                config.retry.policy()),
            tool_context={"shell_timeout": config.tools.shell_timeout,
                          "max_shell_timeout": config.tools.max_shell_timeout, "output_cap": config.tools.output_cap,
                          "env": {"LOOPWRIGHT_RUN_ID": run.id, "LOOPWRIGHT_TASK_ID": str(task.id)}, "memory": memory,
                          "sandbox": box, "repo_root": runner.project.root, "redact": Redactor(config),
                          "processes": ToolProcesses(store, run.id),
                          **skill_context},
            turn_notices=_skill_news(store, shelf) if shelf is not None else None)
        execution = LocalRun(runner, run, task, ws, config, adapter, Toolbox(tools), settings,
                             jail=box if box is not runner.sandbox else None)
        runner.attach(execution)
        return execution


    def _cli_execution(self, runner: Runner, run: Run, task: Task, ws: Workspace, config: Config, agent: CliAgent,
                       *, fresh: bool = False) -> LocalCliRun:
        """The run's CLI agent under its supervisor: the task, the recalled lessons, its sandbox, the check's."""
        store = runner.store
        recalled = runner.recalled_section(run, task, config, fresh) if config.memory.recall else ""
        box = _jail(runner, run)  # where the check runs, as for loopwright's own runs
        agent_jail, settings = supervision(
            runner.sandbox, agent, config, root=runner.project.root, worktree=ws.path, run_id=run.id, task_id=task.id,
            text=task_text(task, task.check_cmd, done="stop") + runner.progress_section(task, run), recalled=recalled,
            record=lambda event: store.append(run.id, event), fleet=FleetBudget(store, config.fleet))
        context = ToolContext(worktree=ws.path, scratchpad=store.scratchpad(run.id), output_cap=config.tools.output_cap,
                              sandbox=box, repo_root=runner.project.root, redact=Redactor(config),
                              processes=ToolProcesses(store, run.id))
        execution = LocalCliRun(runner, run, task, ws, config, agent, settings, context, agent_jail,
                                jail=box if box is not runner.sandbox else None)
        runner.attach(execution)
        return execution


class LocalRun:
    """A run's `AgentLoop` in this process (the local backend's `Execution`); its acceptance step checks and
    merges."""

    def __init__(self, runner: Runner, run: Run, task: Task, ws: Workspace, config: Config, adapter: ModelAdapter,
                 toolbox: Toolbox, settings: LoopSettings, *, jail: Sandbox | None = None):
        self.store, self.run_row, self.task, self.ws, self.config = runner.store, run, task, ws, config
        self.adapter: ModelAdapter | None = adapter
        self.jail = jail  # the run's own view of the sandbox (its proxy with network allow): closed when it ends
        self.loop = AgentLoop(store=runner.store, run_id=run.id, adapter=adapter, toolbox=toolbox, workspace=ws,
                              settings=settings, on_finish=self.accept, stop=runner.stop)

    @property
    def run_id(self) -> str:
        return self.loop.run_id

    def request_stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        self.loop.request_stop(status, reason, interrupt)

    async def run(self) -> LoopOutcome:
        try:
            outcome = await self.loop.run()
            adapter, done = self.adapter, outcome.status in (RunStatus.SUCCEEDED, RunStatus.NEEDS_REVIEW)
            if isinstance(adapter, ScriptedModel) and adapter.unused and done:
                outcome = LoopOutcome(RunStatus.FAILED, _script_disagrees(adapter.unused))
        finally:
            if self.adapter is not None:
                await self.adapter.aclose()
            self.close_jail()
        return outcome

    def close_jail(self) -> None:
        if self.jail is not None:
            self.jail.close()
            self.jail = None

    async def accept(self, summary: str) -> FinishVerdict:
        """The acceptance check, then the merge: the agent's claim alone never ends a run."""
        store, run, task, ws = self.store, self.run_row, self.task, self.ws
        merged = store.events(run.id, types=("merged",))
        if merged:  # exactly once: a crash after the merge must not merge (or check) again
            done = merged[-1][2]
            return FinishVerdict(RunStatus.SUCCEEDED, f"Accepted and merged into {done.target_branch}.",
                                 reason=f"merged into {done.target_branch} as {done.commit[:10]}")
        parts = children(store, task.id)
        if parts:  # a chat request split into parts: it is done when they are (the daemon follows them)
            return FinishVerdict(RunStatus.SUCCEEDED,
                                 f"Started {len(parts)} parts; their results are posted as replies.",
                                 reason=f"split into {len(parts)} parts")
        if intents.merge_intent(store, run.id) is None:  # else the check passed and a kill cut the merge short
            verdict = await self._check()
            if verdict is not None:
                return verdict
            if isinstance(self.adapter, ScriptedModel) and self.adapter.unused:  # before main moves, not after
                return FinishVerdict(RunStatus.FAILED, "The script and the run disagree.",
                                     reason=_script_disagrees(self.adapter.unused))
        try:
            merge = await asyncio.to_thread(merge_run, store, ws, task, run)
        except WorkspaceError as e:
            return FinishVerdict(RunStatus.NEEDS_REVIEW, "Accepted, but the merge failed; kept for review.",
                                 reason=f"merge failed ({e}); branch {ws.branch} kept")
        if merge.status == "conflict":
            store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
            return FinishVerdict(RunStatus.NEEDS_REVIEW, "Accepted, but it does not merge cleanly; kept for review.",
                                 reason=f"merge conflict ({merge.detail}); branch {ws.branch} kept")
        if merge.status == "nothing":
            return FinishVerdict(RunStatus.SUCCEEDED, "Accepted: the check passed (no changes to merge).",
                                 reason="check passed; no changes to merge")
        return FinishVerdict(RunStatus.SUCCEEDED, f"Accepted and merged into {run.target_branch}.",
                             reason=f"merged into {run.target_branch} as {(merge.commit or '')[:10]}")

    async def _check(self) -> FinishVerdict | None:
        """The acceptance check and the merge policy: the verdict when the run ends here, None when it merges."""
        store, task, ws, config, loop = self.store, self.task, self.ws, self.config, self.loop
        check = task.check_cmd
        if not check:
            return unchecked_verdict(ws.branch)
        selfplay = task.options.get("selfplay")
        result = await run_check(check, ws.path, config, loop.tool_context, trusted=bool(selfplay))
        if result.interrupted:  # the run is being stopped; a resumed run does the acceptance step again
            raise Stopped(loop.stop_status, loop.stop_reason)
        tries = (selfplay or {}).get("check_tries")
        last = tries if tries and len(store.events(self.run_row.id, types=("check_ran",))) + 1 >= tries else None
        failed = failed_check_verdict(check, result, config.check_timeout, until=bool(task.options.get("until")),
                                      last_try=last)
        store.append(self.run_row.id, CheckRan(command=check, passed=failed is None, exit_code=result.exit_code,
                                               output_tail=result.output[-4000:], duration_ms=result.duration_ms))
        if failed is not None:
            return failed
        on_success = store.task(task.id).options.get("on_success") or config.on_success  # a person may change it
        if on_success == "keep":
            return FinishVerdict(RunStatus.SUCCEEDED, "Accepted: the check passed. The branch is kept for review.",
                                 reason=f"check passed; branch {ws.branch} kept")
        return None


class LocalCliRun(LocalRun):
    """A run of an external CLI agent under its supervisor (`harness.agents.driver`), in this process; its
    acceptance step is `LocalRun`'s."""

    def __init__(self, runner: Runner, run: Run, task: Task, ws: Workspace, config: Config, agent: CliAgent,
                 settings: DriverSettings, context: ToolContext, agent_jail: Sandbox, *, jail: Sandbox | None = None):
        self.store, self.run_row, self.task, self.ws, self.config = runner.store, run, task, ws, config
        self.adapter = None
        self.jail, self.agent_jail = jail, agent_jail
        self.loop = CliDriver(store=runner.store, run_id=run.id, agent=agent, workspace=ws,  # type: ignore[assignment]
                              settings=settings, tool_context=context, sandbox=agent_jail, on_finish=self.accept,
                              stop=runner.stop)

    async def run(self) -> LoopOutcome:
        try:
            return await self.loop.run()
        finally:
            self.close_jail()

    def close_jail(self) -> None:
        super().close_jail()
        self.agent_jail.close()


def _jail(runner: Runner, run: Run) -> Sandbox:
    """The run's view of the runner's sandbox (said in a `sandbox` event: loudly when there is none)."""
    base = runner.sandbox
    runner.store.append(run.id, chosen_event(base))
    return run_sandbox(base, lambda event: runner.store.append(run.id, event))


def _skills(runner: Runner, task: Task, config: Config) -> SkillShelf | None:
    """The skills this task's agent sees: the config's or the task's choice (all, auto, none or names)."""
    choice = (task.options.get("skills") or config.skills.select).strip()
    if choice == "none":
        return None
    root, store = runner.project.root, runner.store
    WATCHER.watch(root)

    def select(catalog: Catalog) -> list[Entry]:
        if choice == "all":
            return catalog.entries
        if choice == "auto":
            hits = catalog.search(f"{task.title} {task.goal}", limit=config.skills.auto_count)
            return [e for score, e in hits if score > 0]
        chosen = []
        for ref in (r.strip() for r in choice.split(",") if r.strip()):
            try:
                chosen.append(catalog.get(ref))
            except SkillError:
                continue  # said at post time; a skill removed since is left out
        return chosen
    shelf = SkillShelf(lambda: discover(root, disabled=store.disabled_skills()), config.skills.catalog_tokens,
                       select, config.skills.max_pack_skills)
    return shelf if shelf.entries else None


def _skill_news(store: Store, shelf: SkillShelf):
    def news(run_id: str) -> list[str]:
        changed = shelf.changes()
        if changed is None:
            return []
        store.append(run_id, SkillsChanged(added=changed[0], removed=changed[1], updated=changed[2]))
        return [shelf.news(*changed)]
    return news


def _script_disagrees(unused: int) -> str:
    return f"scripted model: the run ended with {unused} script turn(s) unused — the script and the run disagree"


async def _end_leftover_commands(store: Store, run_id: str) -> int:
    """Kill the process groups the run's commands left running when its owner died, and wait until they are
    gone (so nothing writes into the worktree any more); how many still had processes."""
    ledger, ended = ToolProcesses(store, run_id), 0
    for group in ledger.recorded():
        found = await asyncio.to_thread(end_group, group)
        if found is not None:  # one that would not die stays recorded, for the next resume
            ended += found > 0
            ledger.ended(group)
    return ended


def _started_calls(store: Store, run_id: str) -> set[str]:
    """The ids of the calls of the agent's last answer whose tool began (a ToolStarted after that answer)."""
    started: set[str] = set()
    for _, _, event in store.events(run_id, types=("message", "tool_started")):
        if event.type == "tool_started":
            started.add(event.call_id)
        elif event.message.role == "assistant":
            started.clear()
    return started


def _work_is_whole(store: Store, run_id: str) -> bool:
    """Whether no tool has started since the agent was last given tool results: what the worktree holds beyond
    the last checkpoint is then the whole work of finished turns (their checkpoint is written behind the next
    model call), not half of a tool's."""
    whole = True
    for _, _, event in store.events(run_id, types=("message", "tool_started")):
        if event.type == "tool_started":
            whole = False
        elif event.message.role == "user" and any(isinstance(b, ToolResult) for b in event.message.content):
            whole = True
    return whole
