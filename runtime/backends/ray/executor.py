"""The ray backend's executor (`runtime.backends.executor`): the runner's runs placed on a branch of the git
remote, executed by a `RunActor` on the cluster, merged on the head.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loopwright.harness.events import MergeConflict, TaskUpdated
from loopwright.harness.loop import LoopOutcome, rollback_notice
from loopwright.harness.script import Script
from loopwright.harness.statuses import RunStatus
from loopwright.memory.store import Run, Store, Task
from loopwright.runtime.agents import LOOPWRIGHT, cli_agent, untold
from loopwright.runtime.backends.executor import Placement
from loopwright.runtime.backends.ray.wire import RemoteOutcome, RunSpec, await_ref, run_options
from loopwright.runtime.config import Config, ConfigError
from loopwright.runtime.merging import merge_run
from loopwright.runtime.prompts import MEMORY_PROMPT, SYSTEM_PROMPT, task_text
from loopwright.runtime.runner import Runner
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import WorkspaceError, current_branch

if TYPE_CHECKING:
    from loopwright.runtime.backends.ray.cluster import RayBackend


@dataclass
class ClusterPlacement(Placement):
    start_sha: str | None = None  # where the next attempt's worker starts (None: the branch's tip on the remote)


class RayExecutor:
    """The ray backend's executor (`runtime.backends.executor`): the same runs, tasks, attempts and merges as the
    local backend, the loop on a Ray worker."""

    def __init__(self, backend: RayBackend):
        self.backend = backend

    @staticmethod
    def worktree(runner: Runner, branch: str) -> Path:
        """Where the head checks the run branch out, for a person to review."""
        return runner.project.worktrees / branch.removeprefix("lw/")

    async def place(self, runner: Runner, task: Task, config: Config, run_id: str) -> ClusterPlacement:
        if cli_agent(config) is None:  # a CLI agent's CLI, and what that needs to start, are the worker's
            if config.provider == "scripted":
                Script.load(config.script)  # type: ignore[arg-type]
            else:
                config.model_info()  # the key may live on the workers only
        self.backend.check_feasible(run_options(config, task.options))
        target = task.target_branch or config.target_branch or current_branch(runner.project.root)
        base = await asyncio.to_thread(self.backend.new_branch, run_id, target)
        branch = f"lw/{run_id}"
        return ClusterPlacement(self.worktree(runner, branch), branch, base, target, start_sha=base)

    async def next_attempt(self, runner: Runner, task: Task, config: Config,
                           placement: ClusterPlacement) -> ClusterPlacement:
        return replace(placement, start_sha=None)

    async def start(self, runner: Runner, run: Run, task: Task, config: Config,
                    placement: ClusterPlacement) -> RemoteRun:
        execution = RemoteRun(self, runner, run, task, config, fresh=True, notices=[], start_sha=placement.start_sha)
        runner.attach(execution)
        return execution

    async def resume(self, runner: Runner, run: Run, task: Task, config: Config,
                     claim: Callable[[], None]) -> tuple[RemoteRun, ClusterPlacement]:
        actor = await self.backend.find_actor(run.id)
        claim()
        was = "crashed (its head died)" if run.status == RunStatus.RUNNING else run.status
        execution = RemoteRun(self, runner, runner.store.run(run.id), task, config, fresh=False,
                              notices=[f"Notice: this run was {was} and has been resumed."], start_sha=None,
                              attach=actor)
        runner.attach(execution)
        return execution, ClusterPlacement(self.worktree(runner, run.branch), run.branch, run.base_commit,
                                           run.target_branch)

    def spec(self, runner: Runner, run: Run, task: Task, config: Config, *, fresh: bool, notices: list[str],
             start_sha: str | None) -> RunSpec:
        store, root = runner.store, runner.project.root
        lessons = runner.lessons(config) if config.memory.recall else None
        recalled = runner.recalled_section(run, task, config, fresh) if lessons is not None else ""
        own = config.agent == LOOPWRIGHT
        if own:
            system_prompt, text = SYSTEM_PROMPT + (MEMORY_PROMPT if lessons is not None else ""), task_text(
                task, task.check_cmd) + recalled
        else:  # a CLI agent has its own instructions (the lessons are appended to them) and stops when it is done
            system_prompt, text = "", task_text(task, task.check_cmd, done="stop")
            if not fresh:
                notices = notices + untold(store, run.id)
        ws_cfg = config.workspace
        files: dict[str, bytes] = {}
        for rel in ws_cfg.copy_files:
            src = root / rel
            if src.is_file():
                files[rel] = src.read_bytes()
            elif src.is_dir():
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        files[str(p.relative_to(root))] = p.read_bytes()
        return RunSpec(
            run_id=run.id, task_id=task.id, branch=run.branch, base_commit=run.base_commit, start_sha=start_sha,
            remote=self.backend.remote or "", cache_dir=config.ray.cache_dir, fresh=fresh, notices=notices,
            system_prompt=system_prompt, task_text=text + runner.progress_section(task, run),
            instructions="" if own else recalled, config=config,
            script=Script.load(config.script) if own and config.provider == "scripted" else None,  # type: ignore[arg-type]
            start_at=runner.script_position(task), check=task.check_cmd, until=bool(task.options.get("until")),
            run=store.run(run.id), conversation=[] if fresh else store.conversation(run.id),
            scratchpad=store.scratchpad(run.id).read(), copy_files=files,
            setup_command=ws_cfg.setup_command, setup_timeout=ws_cfg.setup_timeout,
            flush_interval=config.ray.flush_interval, memory_tools=lessons is not None,
            fan_out=bool(task.options.get("chat")) and not task.options["chat"].get("parent"))


def resume_point(store: Store, run: Run) -> tuple[str, int]:
    """Where a resumed run starts: its last checkpoint or rollback recorded in the store (sha, seq)."""
    sha, seq = run.base_commit, 0
    for _, _, event in store.events(run.id, types=("checkpoint", "rolled_back")):
        if event.type == "checkpoint":
            sha, seq = event.sha, event.seq
        else:
            sha, seq = event.to_sha, event.to_seq
    return sha, seq


class RemoteRun:
    """A run on the cluster, then its merge on the head (the ray backend's `Execution`)."""

    def __init__(self, executor: RayExecutor, runner: Runner, row: Run, task: Task, config: Config, *, fresh: bool,
                 notices: list[str], start_sha: str | None, attach: Any = None):
        self.executor, self.backend = executor, executor.backend
        self.runner, self.row, self.task, self.config = runner, row, task, config
        self.fresh, self.notices, self.start_sha, self.attach = fresh, notices, start_sha, attach
        self.actor: Any = None
        self.failures = 0

    @property
    def run_id(self) -> str:
        return self.row.id

    def forward_stop(self) -> None:
        if self.actor is not None and self.runner.stop_request is not None:
            with contextlib.suppress(Exception):
                self.actor.stop.remote(*self.runner.stop_request)

    def request_stop(self, status: str, reason: str, interrupt: bool = False) -> None:
        """What `Runner.request_stop` asks of its loop: the runner's request goes to the worker."""
        self.forward_stop()

    async def run(self) -> LoopOutcome:
        store = self.runner.store
        merged = store.events(self.row.id, types=("merged",))
        if merged:  # exactly once: a head that died after the merge must not merge again
            done = merged[-1][2]
            return LoopOutcome(RunStatus.SUCCEEDED, f"merged into {done.target_branch} as {done.commit[:10]}")
        if not self.fresh and self.attach is None and self._accepted_before():
            outcome = RemoteOutcome(RunStatus.SUCCEEDED, "check passed", accepted=True)
        else:
            outcome = await self._on_cluster()
        if outcome.accepted:
            return await self._merge()
        await self._after(outcome.status)
        return LoopOutcome(outcome.status, outcome.reason, outcome.again)

    def _accepted_before(self) -> bool:
        """The check passed and nothing happened after it: the head died before merging."""
        events = self.runner.store.events(self.row.id, types=("check_ran", "model_called"))
        return bool(events) and events[-1][2].type == "check_ran" and events[-1][2].passed

    async def _on_cluster(self) -> RemoteOutcome:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        from loopwright.runtime.fleet.daemon import GRACEFUL_STOP

        runner, backend = self.runner, self.backend
        store = runner.store
        options = run_options(self.config, self.task.options)
        fresh, notices, start_sha = self.fresh, list(self.notices), self.start_sha
        if not fresh:
            start_sha = resume_point(store, self.row)[0]
        if self.attach is not None:
            backend.say(f"run {self.row.id}: reattached to its worker on the cluster")
            self.actor = self.attach
        while True:
            try:
                if self.actor is None:
                    if runner.stop_request is not None and runner.stop.is_set():
                        return RemoteOutcome(*runner.stop_request[:2])
                    spec = self.executor.spec(runner, store.run(self.row.id), self.task, self.config, fresh=fresh,
                                              notices=notices, start_sha=start_sha)
                    self.actor = backend.new_actor(self.row.id, options)
                    key = None
                    if self.config.provider != "scripted" and self.config.agent == LOOPWRIGHT:
                        with contextlib.suppress(ConfigError):
                            key = self.config.api_key()
                    started = asyncio.ensure_future(await_ref(self.actor.start.remote(spec, backend.head, key)))
                    stopper = asyncio.ensure_future(runner.stop.wait())
                    try:
                        await asyncio.wait({started, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        stopper.cancel()
                    if not started.done():  # stopped while waiting for a node with room: nothing ran yet
                        started.cancel()
                        with contextlib.suppress(Exception):
                            ray.kill(self.actor)
                        self.actor = None
                        return RemoteOutcome(*(runner.stop_request or (RunStatus.PAUSED, "stopped"))[:2])
                    where = started.result()
                    store.append(self.row.id, TaskUpdated(
                        task_id=self.task.id, by="ray",
                        change=f"running on Ray node {where['node'][:8]} ({where['host']}, pid {where['pid']})"))
                    self.forward_stop()
                outcome = await self._wait(ActorUnavailableError)
                if self.attach is not None and outcome.status == RunStatus.PAUSED and outcome.reason == GRACEFUL_STOP:
                    # it paused because the last head stopped: go on, from where it paused
                    self.attach = None
                    self._kill()
                    fresh, start_sha = False, resume_point(store, store.run(self.row.id))[0]
                    notices = ["Notice: this run was paused (daemon restart) and has been resumed."]
                    continue
                self._kill()
                return outcome
            except RayActorError as e:
                self._kill()  # whatever is left of it must not go on next to its successor
                self.attach = None
                self.failures += 1
                if runner.stop_request is not None and runner.stop.is_set():
                    return RemoteOutcome(*runner.stop_request[:2])
                why = " ".join(str(e).split())[:200]
                if self.failures > self.config.ray.max_node_failures:
                    return RemoteOutcome(RunStatus.FAILED, f"its Ray worker died {self.failures} times (last: {why})")
                sha, seq = resume_point(store, store.run(self.row.id))
                store.append(self.row.id, TaskUpdated(
                    task_id=self.task.id, by="ray",
                    change=f"its Ray worker was lost; resuming from checkpoint {seq} on another node"))
                backend.say(f"run {self.row.id}: its Ray worker was lost ({type(e).__name__}); resuming from "
                            f"checkpoint {seq}")
                fresh, start_sha = False, sha
                notices = ["Notice: the machine running this run was lost and the run moved to another one. "
                           + rollback_notice(sha, seq)]
            except asyncio.CancelledError:  # the daemon's stop timeout: the worker pauses on its own
                self.forward_stop()
                return RemoteOutcome(RunStatus.PAUSED, (runner.stop_request or (RunStatus.PAUSED, "interrupted"))[1])

    async def _wait(self, unavailable: type[Exception], patience: float = 60.0) -> RemoteOutcome:
        """The worker's outcome; a worker out of reach for a moment (a network blip) is asked again."""
        since = None
        while True:
            try:
                return await await_ref(self.actor.wait.remote())
            except unavailable:
                since = since or time.monotonic()
                if time.monotonic() - since > patience:
                    raise
                await asyncio.sleep(1.0)

    def _kill(self) -> None:
        import ray

        if self.actor is not None:
            with contextlib.suppress(Exception):
                ray.kill(self.actor)
            self.actor = None

    async def _after(self, status: str) -> None:
        """The run branch fetched to the head, and a worktree of it there for what a person may do next: review and
        merge it, look at its diff, roll a paused run back (its next worker starts where the rollback left it)."""
        backend, worktree = self.backend, Path(self.row.worktree)
        try:
            await asyncio.to_thread(backend.fetch_branch, self.row.branch, worktree)
            if status in (RunStatus.NEEDS_REVIEW, RunStatus.FAILED, RunStatus.KILLED, RunStatus.PAUSED,
                          RunStatus.BUDGET_EXCEEDED):
                await asyncio.to_thread(backend.materialize, self.row.branch, worktree)
        except WorkspaceError as e:
            backend.say(f"run {self.row.id}: could not bring its branch to the head: {e}")

    async def _merge(self) -> LoopOutcome:
        runner, run, task = self.runner, self.row, self.task
        store, backend = runner.store, self.backend
        worktree = Path(run.worktree)
        try:
            await asyncio.to_thread(backend.fetch_branch, run.branch, worktree)
        except WorkspaceError as e:
            return LoopOutcome(RunStatus.NEEDS_REVIEW, f"check passed, but the branch could not be fetched ({e})")
        on_success = store.task(task.id).options.get("on_success") or self.config.on_success
        if on_success == "keep":
            return LoopOutcome(RunStatus.SUCCEEDED, f"check passed; branch {run.branch} kept")
        ws = Workspace.open(runner.project.root, run.id, worktree, run.branch, run.base_commit)
        try:
            merge = await asyncio.to_thread(merge_run, store, ws, task, run)
        except WorkspaceError as e:
            await self._after(RunStatus.NEEDS_REVIEW)
            return LoopOutcome(RunStatus.NEEDS_REVIEW, f"merge failed ({e}); branch {run.branch} kept")
        if merge.status == "conflict":
            store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
            await self._after(RunStatus.NEEDS_REVIEW)
            return LoopOutcome(RunStatus.NEEDS_REVIEW, f"merge conflict ({merge.detail}); branch {run.branch} kept")
        if merge.status == "nothing":
            return LoopOutcome(RunStatus.SUCCEEDED, "check passed; no changes to merge")
        return LoopOutcome(RunStatus.SUCCEEDED, f"merged into {run.target_branch} as {(merge.commit or '')[:10]}")
