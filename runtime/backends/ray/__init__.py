"""The ray backend: the fleet's agent runs on a Ray cluster, while the head (the daemon) keeps the store.

The daemon (`loopwright serve --backend ray`) runs on a node of the cluster — the head — and keeps what the
local backend keeps: the SQLite store, the scheduler, the budgets, the chat and the merges. Each run executes
on a Ray worker in its own actor (`RunActor`, detached and named after the run), which:

- clones the project's git remote into a cache on its machine (once; later runs fetch), checks out the
  run's branch `lw/<run>` at the commit the head says, and pushes the branch at every checkpoint (and
  rollback), so the head and every other node see every checkpoint on the remote;
- drives the same `AgentLoop` as the local backend against a store proxy: events, model-call records,
  progress and scratch pad writes are batched and sent to `HeadService`, an actor pinned to the head node
  that writes them through the real store, in order per run (a batch sequence number makes a retried batch
  harmless). Commands (pause, kill, rollback, messages) come back with the batch at each model boundary; a
  pause or kill from the daemon also reaches the actor at once, interrupting a model call in flight;
- asks the head for permission before every model call: the head applies the run's pending batch, then
  checks the fleet budget and the run's own limits on the store (one round trip, shared with the commands);
  the provider's rate-limit gate lives in the store too and is reached through the head;
- runs the acceptance check in its worktree; the merge into the target branch happens on the head, which
  fetches the run branch from the remote and squash-merges as the local backend does.

Failures: a worker (or its whole node) that dies makes the head start the run again on another node from its
last checkpoint recorded in the store (up to `ray.max_node_failures` times); a head that restarts finds the
runs' actors still alive on the cluster by name and reattaches to them, or resumes the runs from their last
checkpoints when the cluster went down with it (a local cluster does).

What stays on the head: reflection after a run (a model call of its own), recalled lessons (sent with the run),
the chat, and merges. Not on workers yet: skills (their folders live on the head's disk), so a run on the
cluster gets the standard, memory and artifact tools (and `fan_out` for a chat request) but no `use_skill`.
`loopwright run` (one task in the foreground) stays local.

Ray is optional (`pip install 'loopwright[ray]'`): this module imports it only when the backend starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import git

from loopwright.harness.events import CheckRan, MergeConflict, Merged, RunStarted, TaskUpdated
from loopwright.harness.loop import (
    AgentLoop,
    BudgetExceeded,
    FinishVerdict,
    FleetBudgetSpent,
    LoopOutcome,
    LoopSettings,
    rollback_notice,
)
from loopwright.harness.messages import Message
from loopwright.harness.retry import RetryPolicy
from loopwright.harness.script import Script
from loopwright.harness.scripted import ScriptedModel
from loopwright.harness.tools import STANDARD_TOOLS, Toolbox, ToolError, ToolOutcome, resolve_in
from loopwright.memory.artifacts import ArtifactTool
from loopwright.memory.run import RunMemory
from loopwright.memory.store import Command, Run, StoreError, Task, new_run_id
from loopwright.runtime.chat.threads import FanOut
from loopwright.runtime.config import (
    KEY_VARIABLES,
    BudgetConfig,
    Config,
    ConfigError,
    FleetBudgetConfig,
    MemoryConfig,
    QuotaConfig,
)
from loopwright.runtime.fleet.budget import FleetBudget, budget_day
from loopwright.runtime.fleet.quota import StoreQuotaGate, gate_key
from loopwright.runtime.project import Project
from loopwright.runtime.runner import (
    GIT_LOCK,
    MEMORY_PROMPT,
    SYSTEM_PROMPT,
    Runner,
    RunResult,
    _merge,
    merge_message,
    resumable,
    run_check,
    task_text,
)
from loopwright.runtime.sandboxing import (
    Redactor,
    check_worktree,
    chosen_event,
    make_sandbox,
    run_sandbox,
    setup_sandbox,
)
from loopwright.workspaces.git import (
    Workspace,
    WorkspaceError,
    _clean_env,
    _commit_of_branch,
    _git,
    _git_message,
    current_branch,
)

RAY_HINT = "the ray backend needs Ray, which is not installed: pip install 'loopwright[ray]'"
HEAD_ACTOR = "lw-head"
PERMIT_SECONDS = 1.0  # a permission fetched at a model boundary serves the model call that follows within this
GIT_TIMEOUT = 300.0  # clone, fetch and push
PROBE_TIMEOUT = 120.0
SYNC_ATTEMPTS = 6  # a batch the head could not take is sent again (the head applies each batch once)


def _daemon_error(message: str) -> Exception:
    from loopwright.runtime.fleet.daemon import DaemonError

    return DaemonError(message)


def import_ray():
    """Ray, or the one-line hint to install the extra."""
    try:
        import ray
    except ImportError:
        raise _daemon_error(RAY_HINT) from None
    return ray


def run_actor_name(run_id: str) -> str:
    return f"lw-run-{run_id}"


def namespace_of(root: Path) -> str:
    """One Ray namespace per project, so two projects on one cluster never mix up their actors."""
    return "loopwright-" + hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]


# -- git against the remote (head and workers) ----------------------------------------------------------------


def _remote_git(cwd: Path | None, *args: str, what: str, timeout: float = GIT_TIMEOUT) -> str:
    """A git command that talks to a remote (clone, fetch, push, ls-remote): with a timeout, one-line errors."""
    env = _clean_env() | {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": os.environ.get(
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=20")}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WorkspaceError(f"{what} timed out after {timeout:.0f}s") from None
    except OSError as e:
        raise WorkspaceError(f"{what} failed: could not run git: {e}") from None
    if proc.returncode != 0:
        raise WorkspaceError(f"{what} failed: {_git_message(proc.stderr, proc.stdout, proc.returncode)}")
    return proc.stdout.strip()


def check_remote(url: str, where: str) -> None:
    """Raise a WorkspaceError saying that `url` cannot be reached from `where`."""
    try:
        _remote_git(None, "ls-remote", "--heads", url, what=f"reaching the git remote {url}", timeout=60)
    except WorkspaceError as e:
        raise WorkspaceError(f"the git remote {url} is not reachable from {where}: {e} (set [ray] remote to a URL "
                             f"every node can reach: a bare repository on a shared path, or ssh)") from None


def _probe_node(url: str) -> str:
    """Run on one node by the startup probe: '' when the remote answers, else the one-line reason."""
    try:
        check_remote(url, f"the Ray node on {socket.gethostname()}")
    except WorkspaceError as e:
        return str(e)
    return ""


@contextlib.contextmanager
def _flock(path: Path):
    """A lock shared by every process on this machine (the runs of all nodes here share the clone cache)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- the worker's workspace -------------------------------------------------------------------------------------


class RemoteWorkspace(Workspace):
    """A run's worktree in a node's clone of the remote; every checkpoint and rollback is pushed to the remote."""

    def __init__(self, root: Path, run_id: str, path: Path, branch: str, base_commit: str, *,
                 files: dict[str, bytes], remote: str):
        super().__init__(root, run_id, path, branch, base_commit, copy_files=tuple(files))
        self.files, self.remote = files, remote

    def checkpoint(self, message: str, *, step: int):
        cp = super().checkpoint(message, step=step)
        if cp is not None:
            self.push()
        return cp

    def reset_to(self, sha: str) -> None:
        super().reset_to(sha)
        self.push()

    def push(self) -> None:
        """The run branch to the remote (forced: a rollback moves it back)."""
        last: WorkspaceError | None = None
        for attempt in range(3):
            try:
                _remote_git(self.path, "push", "--quiet", "--force", "--no-verify", "origin",
                            f"refs/heads/{self.branch}:refs/heads/{self.branch}",
                            what=f"pushing {self.branch} to the git remote {self.remote}")
                return
            except WorkspaceError as e:  # another run's push on this node may hold a ref lock for a moment
                last = e
                time.sleep(0.2 * (attempt + 1))
        assert last is not None
        raise last

    def _copy_in(self) -> None:
        """The project's copied files (`workspace.copy_files`) come from the head, with the run."""
        for rel, data in self.files.items():
            dst = self.path / rel
            try:
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(data)
            except OSError as e:
                raise WorkspaceError(f"could not copy {rel} into the worktree: {e.strerror or e}") from None


def _clone_dir(cache_dir: str, remote: str) -> Path:
    return Path(os.path.expanduser(cache_dir)) / hashlib.sha1(remote.encode()).hexdigest()[:12]


def open_workspace(spec: RunSpec, jail=None, redact=None) -> RemoteWorkspace:
    """The run's worktree on this node: the cache clone fetched, the run branch checked out at `spec.start_sha`;
    the setup command runs in `jail` (workspaces.git.Jail) when given."""
    cache = _clone_dir(spec.cache_dir, spec.remote)
    clone = cache / "repo"
    path = cache / "worktrees" / spec.branch.removeprefix("lw/")
    with _flock(cache / ".lock"):
        if not (clone / ".git").exists():
            tmp = Path(tempfile.mkdtemp(prefix="clone-", dir=cache))
            try:
                _remote_git(None, "clone", "--quiet", "--no-checkout", spec.remote, str(tmp / "repo"),
                            what=f"cloning the git remote {spec.remote}")
                os.replace(tmp / "repo", clone)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        g = git.Git(clone)
        _discard_worktree(clone, path)
        _remote_git(clone, "fetch", "--quiet", "origin", f"+refs/heads/{spec.branch}:refs/heads/{spec.branch}",
                    what=f"fetching {spec.branch} from the git remote {spec.remote}")
        start = spec.start_sha or _git(g, "rev-parse", f"refs/heads/{spec.branch}")
        if _git(g, "cat-file", "-t", start, what=f"looking for commit {start[:10]}") != "commit":
            raise WorkspaceError(f"commit {start[:10]} of run {spec.run_id} is not on the git remote")
        _git(g, "update-ref", f"refs/heads/{spec.branch}", start, what="moving the run branch")
        _git(g, "worktree", "add", "--quiet", str(path), spec.branch, what=f"creating the worktree {path}")
    ws = RemoteWorkspace(clone, spec.run_id, path, spec.branch, spec.base_commit, files=spec.copy_files,
                         remote=spec.remote)
    ws._copy_in()
    if spec.setup_command:
        ws._setup(spec.setup_command, spec.setup_timeout, jail=jail, redact=redact)
    return ws


def _discard_worktree(clone: Path, path: Path) -> None:
    g = git.Git(clone)
    with contextlib.suppress(git.GitCommandError):
        g.execute(["git", "worktree", "remove", "--force", str(path)], with_extended_output=True,
                  with_exceptions=False)
    if path.exists():
        shutil.rmtree(path, ignore_errors=True)
    g.execute(["git", "worktree", "prune"], with_extended_output=True, with_exceptions=False)


def remove_workspace(ws: RemoteWorkspace) -> None:
    """The run is over on this node (its work is on the remote): free the disk, drop the branch from the clone."""
    with _flock(ws.root.parent / ".lock"):
        _discard_worktree(ws.root, ws.path)
        git.Git(ws.root).execute(["git", "branch", "-D", ws.branch], with_extended_output=True,
                                 with_exceptions=False)


# -- what crosses from the head to a worker, and back -------------------------------------------------------------


@dataclass
class RunSpec:
    """Everything a worker needs to drive one run (the head computes what needs its store or disk)."""

    run_id: str
    task_id: int
    branch: str
    base_commit: str
    start_sha: str | None  # None: the branch's tip on the remote (a fresh attempt of loop-until-done)
    remote: str
    cache_dir: str
    fresh: bool
    notices: list[str]
    system_prompt: str
    task_text: str
    config: Config
    script: Script | None
    start_at: int
    check: str | None
    until: bool
    run: Run
    conversation: list[Message]
    scratchpad: str
    copy_files: dict[str, bytes]
    setup_command: str | None
    setup_timeout: float
    flush_interval: float
    memory_tools: bool
    fan_out: bool = False  # a chat request: the agent may split it into parts (runtime.chat.FanOut)


@dataclass
class RemoteOutcome:
    status: str
    reason: str = ""
    again: bool = False
    accepted: bool = False  # the acceptance check passed: the head merges (or keeps) the branch


# -- the worker's side of the store ------------------------------------------------------------------------------


async def _await(ref):
    """An ObjectRef awaited on any event loop (the worker's loop runs in its own thread)."""
    return await asyncio.wrap_future(ref.future())


class ProxyScratchpad:
    def __init__(self, proxy: StoreProxy):
        self.proxy = proxy

    def read(self) -> str:
        return self.proxy.pad

    def append(self, text: str) -> None:
        self.proxy.pad = f"{self.proxy.pad}\n{text}" if self.proxy.pad else text
        self.proxy.ops.append(("scratch_append", (self.proxy.run_id, text), {}))

    def replace(self, text: str) -> None:
        self.proxy.pad = text
        self.proxy.ops.append(("scratch_replace", (self.proxy.run_id, text), {}))


class StoreProxy:
    """The part of `Store` an `AgentLoop` uses, on a worker: writes are batched to the head, reads are local.

    The head sent the run's row, conversation and scratch pad with the run; from then on this worker is the
    only writer of them, so its own copy is the truth and reading it costs nothing.
    """

    def __init__(self, head, spec: RunSpec):
        self.head, self.run_id, self.interval = head, spec.run_id, spec.flush_interval
        self._run, self._conversation, self.pad = spec.run, list(spec.conversation), spec.scratchpad
        self.ops: list[tuple[str, tuple, dict]] = []
        self.seq = 0
        self.sender = f"{spec.run_id}/{os.getpid()}/{time.time_ns()}"  # batches are numbered per worker
        self.listeners: list = []
        self._commands: list[Command] = []
        self._lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task | None = None
        self.round_trips = 0

    # reads
    def run(self, run_id: str) -> Run:
        return self._run

    def conversation(self, run_id: str) -> list[Message]:
        return list(self._conversation)

    def scratchpad(self, run_id: str) -> ProxyScratchpad:
        return ProxyScratchpad(self)

    def take_commands(self, run_id: str) -> list[Command]:
        """The commands the last `sync(take=True)` brought from the head."""
        taken, self._commands = self._commands, []
        return taken

    # writes
    def append(self, run_id: str | None, event) -> int:
        self.ops.append(("append", (run_id, event), {}))
        return 0

    def record_model_call(self, *args, **kwargs) -> None:
        self.ops.append(("record_model_call", args, kwargs))

    def update_run(self, run_id: str, **fields) -> None:
        self.ops.append(("update_run", (run_id,), fields))

    def add_checkpoint(self, run_id: str, **kwargs) -> None:
        self.ops.append(("add_checkpoint", (run_id,), kwargs))

    def finish_command(self, command_id: int, **kwargs) -> None:
        self.ops.append(("finish_command", (command_id,), kwargs))

    # the wire
    async def sync(self, *, take: bool = False, check: tuple | None = None):
        """Send the pending batch (in order: one call at a time); take commands and ask permission if asked."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            ops, self.ops = self.ops, []
            if not ops and not take and check is None:
                return None
            self.seq += 1
            self.round_trips += 1
            for attempt in range(SYNC_ATTEMPTS):
                try:
                    commands, verdict = await _await(self.head.sync.remote(self.run_id, self.sender, self.seq, ops,
                                                                           take, check))
                    break
                except Exception as e:  # noqa: BLE001 — the head's actor restarting: the same batch again
                    if attempt == SYNC_ATTEMPTS - 1 or type(e).__name__ not in ("ActorUnavailableError",
                                                                                "RayActorError", "ActorDiedError"):
                        raise
                    await asyncio.sleep(0.5 * 2 ** attempt)
        if take:
            self._commands += commands
        return verdict

    def start(self) -> None:
        async def flusher() -> None:
            while True:
                await asyncio.sleep(self.interval)
                if self.ops:
                    await self.sync()
        self._flusher = asyncio.ensure_future(flusher())

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flusher
        await self.sync()


class WorkerFleet:
    """The fleet gate as a worker sees it: spend goes to the budget day; whether any is left, the head says."""

    def __init__(self, config: FleetBudgetConfig):
        self.config = config

    def day(self) -> str:
        return budget_day(self.config.resets_at)

    def exhausted(self) -> str | None:
        return None


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

    def opened(self) -> None:
        if self._hits_seen:
            self._call("opened")
            self._hits_seen = 0


class RemoteLessons:
    """What the memory tools use of `memory.lessons.Lessons`, answered by the head's store."""

    def __init__(self, head, config: MemoryConfig):
        self.head, self.config = head, config
        self.project = SimpleNamespace(add=lambda *a, **k: self._call("add", *a, **k))

    def _call(self, op: str, *args, **kwargs):
        import ray

        from loopwright.memory.lessons import LessonError

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
        ok, said, summary = await _await(self.head.fan_out.remote(ctx.memory.task_id, a.items, a.plan))
        if not ok:
            raise ToolError(said)
        return ToolOutcome(said, finish_summary=summary)


class RemoteAgentLoop(AgentLoop):
    """The agent loop on a worker: the head decides, before every model call, whether the call may start."""

    def __init__(self, *args, check_args: tuple, **kwargs):
        super().__init__(*args, **kwargs)
        self.check_args = check_args
        self.accepted = False
        self._permit: tuple[float, Any] | None = None
        self._verdict: tuple[str, str] | None = None

    async def _take_commands(self):
        verdict = await self.store.sync(take=True, check=self.check_args)  # type: ignore[attr-defined]
        self._permit = (time.monotonic(), verdict)
        return await super()._take_commands()

    async def _call(self, **kwargs):
        permit, self._permit = self._permit, None
        if permit is not None and time.monotonic() - permit[0] <= PERMIT_SECONDS:
            self._verdict = permit[1]
        else:
            self._verdict = await self.store.sync(check=self.check_args)  # type: ignore[attr-defined]
        return await super()._call(**kwargs)

    def _check_budget(self) -> None:
        verdict, self._verdict = self._verdict, None
        if verdict is not None:
            kind, why = verdict
            raise FleetBudgetSpent(why) if kind == "fleet" else BudgetExceeded(why)
        b = self.settings.budget
        elapsed = self._active_before + time.monotonic() - self._session_start
        if elapsed >= b.max_wall_seconds:
            raise BudgetExceeded(f"time limit reached ({elapsed:.0f}s of {b.max_wall_seconds:.0f}s)")


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
                         timeout=config.request_timeout)


async def _accept(spec: RunSpec, ws: RemoteWorkspace, proxy: StoreProxy, head, loop_ref: list) -> FinishVerdict:
    """The acceptance check, in the worker's worktree; the head merges when it passed."""
    config, check = spec.config, spec.check
    if spec.fan_out:
        parts = await _await(head.parts.remote(spec.task_id))
        if parts:  # a chat request split into parts: it is done when they are (the daemon follows them)
            return FinishVerdict("succeeded", f"Started {parts} parts; their results are posted as replies.",
                                 reason=f"split into {parts} parts")
    if not check:
        return FinishVerdict("needs_review", "Finished. No acceptance check is configured; kept for review.",
                             reason=f"no acceptance check; branch {ws.branch} kept for review")
    result = await run_check(check, ws.path, config, loop_ref[0].tool_context)  # in the run's jail, redacted
    passed = result.exit_code == 0 and not result.timed_out
    proxy.append(spec.run_id, CheckRan(command=check, passed=passed, exit_code=result.exit_code,
                                       output_tail=result.output[-4000:], duration_ms=result.duration_ms))
    if not passed:
        why = f"timed out after {config.check_timeout:.0f}s" if result.timed_out else f"exit {result.exit_code}"
        feedback = f"The acceptance check `{check}` failed ({why}). Its output:\n{result.output}\n"
        if spec.until:
            return FinishVerdict("failed", feedback, reason=f"`{check}` failed ({why})", again=True)
        return FinishVerdict(None, feedback + "Fix the cause, then call finish again.")
    loop_ref[0].accepted = True
    return FinishVerdict("succeeded", "Accepted: the check passed. The head merges the branch (or keeps it for "
                                      "review, as the task says).", reason="check passed")


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
        self._agent: RemoteAgentLoop | None = None

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
            self._result = RemoteOutcome("failed", f"on the Ray worker ({socket.gethostname()}): "
                                                   f"{type(e).__name__}: {e}")
        finally:
            self._done.set()


async def _work(actor: RunActor, spec: RunSpec, head, api_key: str | None) -> RemoteOutcome:
    """The run, in the actor's thread. Not a method: a Ray actor class with a coroutine method becomes an async
    actor, whose blocking `wait` would hold back `stop`."""
    actor._loop, actor._stop = asyncio.get_running_loop(), asyncio.Event()
    proxy = StoreProxy(head, spec)
    # the model's SDK is imported (a second of CPU) while git fetches and checks out
    making = asyncio.ensure_future(asyncio.to_thread(_adapter, spec, api_key))
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
        with contextlib.suppress(Exception):
            await (await making).aclose()
        return RemoteOutcome("failed", f"on the Ray worker ({socket.gethostname()}): {e}")
    adapter = None
    box = base
    try:
        adapter = await making
        config = spec.config
        check_worktree(base, ws.path, ws.root)
        box = run_sandbox(base, lambda event: proxy.append(spec.run_id, event))
        loop_ref: list = [None]
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
        memory = RunMemory(store=proxy, run_id=spec.run_id, task_id=spec.task_id,  # type: ignore[arg-type]
                           artifacts_root=Path("/nonexistent"),
                           lessons=RemoteLessons(head, config.memory) if memory_on else None)
        settings = LoopSettings(
            system_prompt=spec.system_prompt + (f"\n\n{rules}" if (rules := box.rules(ws.path)) else ""),
            task_text=spec.task_text,
            max_output_tokens=config.max_output_tokens, model_info=config.model_info(), budget=config.budget,
            retry=config.retry.policy(), compact_at=config.context.compact_at,
            keep_recent=config.context.keep_recent, fleet=WorkerFleet(config.fleet),
            quota_gate=None if config.provider == "scripted" else RemoteQuotaGate(
                head, gate_key(config.provider, config.model, config.base_url), config.quota,
                config.retry.policy()),
            tool_context={"shell_timeout": config.tools.shell_timeout,
                          "max_shell_timeout": config.tools.max_shell_timeout,
                          "output_cap": config.tools.output_cap,
                          "env": {"LOOPWRIGHT_RUN_ID": spec.run_id, "LOOPWRIGHT_TASK_ID": str(spec.task_id)},
                          "memory": memory, "sandbox": box, "repo_root": ws.root, "redact": redactor})

        async def on_finish(summary: str) -> FinishVerdict:
            return await _accept(spec, ws, proxy, head, loop_ref)

        agent = RemoteAgentLoop(store=proxy, run_id=spec.run_id, adapter=adapter,  # type: ignore[arg-type]
                                toolbox=Toolbox(tools), workspace=ws, settings=settings, on_finish=on_finish,
                                stop=actor._stop, check_args=(config.budget, config.fleet))
        loop_ref[0] = actor._agent = agent
        actor._apply_stop()
        proxy.start()
        if spec.fresh:
            agent.start()
        else:
            await agent.prepare_resume(spec.notices)
        outcome = await agent.run()
        if isinstance(adapter, ScriptedModel) and adapter.unused and outcome.status in ("succeeded",
                                                                                        "needs_review"):
            outcome = LoopOutcome("failed", f"scripted model: the run ended with {adapter.unused} script "
                                            f"turn(s) unused — the script and the run disagree")
        return RemoteOutcome(outcome.status, outcome.reason, outcome.again,
                             accepted=agent.accepted and outcome.status == "succeeded")
    finally:
        if adapter is not None:
            with contextlib.suppress(Exception):
                await adapter.aclose()
        if box is not base:
            box.close()
        await proxy.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(remove_workspace, ws)


# -- the head's actor: the store, written in order per run ----------------------------------------------------


class HeadService:
    """On the head node: applies the workers' batches to the store and answers their questions.

    One call at a time (a Ray actor's default), so the batches of one run land in the order sent.
    """

    def __init__(self, db_path: str, project_dir: str):
        from loopwright.memory.store import Store

        self.store = Store(db_path)
        self.project_dir = Path(project_dir)
        self.applied: dict[str, int] = {}
        self._lessons: dict[str, Any] = {}

    def ping(self) -> str:
        return str(self.store.path)

    def sync(self, run_id: str, sender: str, seq: int, ops: list, take: bool, check: tuple | None):
        if seq > self.applied.get(sender, 0):  # a retried batch is applied once
            with self.store.transaction():
                for name, args, kwargs in ops:
                    self._apply(name, args, kwargs)
            self.applied[sender] = seq
        commands = self.store.take_commands(run_id) if take else []
        verdict = self._verdict(run_id, *check) if check is not None else None
        return commands, verdict

    def _apply(self, name: str, args: tuple, kwargs: dict) -> None:
        if name == "scratch_append":
            self.store.scratchpad(args[0]).append(args[1])
        elif name == "scratch_replace":
            self.store.scratchpad(args[0]).replace(args[1])
        elif name in ("append", "record_model_call", "update_run", "add_checkpoint", "finish_command"):
            getattr(self.store, name)(*args, **kwargs)
        else:
            raise ValueError(f"unknown store operation {name!r}")

    def _verdict(self, run_id: str, budget: BudgetConfig, fleet: FleetBudgetConfig) -> tuple[str, str] | None:
        """The checks `AgentLoop` makes before a model call, on the store (the wall clock stays with the worker)."""
        shim = SimpleNamespace(settings=SimpleNamespace(fleet=FleetBudget(self.store, fleet), budget=budget),
                               store=self.store, run_id=run_id, _active_before=0.0,
                               _session_start=time.monotonic() + 1e12)  # elapsed < 0: the time limit is not ours
        try:
            AgentLoop._check_budget(shim)  # type: ignore[arg-type]
        except FleetBudgetSpent as e:
            return ("fleet", str(e))
        except BudgetExceeded as e:
            return ("budget", str(e))
        return None

    def gate(self, op: str, key: str, config: QuotaConfig, policy: RetryPolicy, *args):
        gate = StoreQuotaGate(self.store, key, config, policy)
        if op == "row":
            row = gate._row()
            return dict(row) if row is not None else None
        if op == "take_slot":
            return gate._take_slot()
        if op == "close":
            return gate.close(*args)
        if op == "opened":
            gate._hits_seen = 1
            return gate.opened()
        raise ValueError(f"unknown gate operation {op!r}")

    def lessons(self, op: str, config: MemoryConfig, *args, **kwargs):
        from loopwright.memory.lessons import LessonError, Lessons

        key = config.model_dump_json()
        if key not in self._lessons:
            self._lessons[key] = Lessons(self.store, config)
        lessons = self._lessons[key]
        try:
            if op == "add":
                return True, lessons.project.add(*args, **kwargs)
            if op == "recall":
                return True, lessons.recall(*args, **kwargs)
            if op == "record_shown":
                return True, lessons.record_shown(*args, **kwargs)
        except LessonError as e:
            return False, str(e)
        raise ValueError(f"unknown lessons operation {op!r}")

    def fan_out(self, task_id: int, items: list[str], plan: str) -> tuple[bool, str, str | None]:
        """What `runtime.chat.FanOut` does, on the head's store."""
        from loopwright.runtime.chat.threads import fan_out

        task = self.store.task(task_id)
        chat = task.options.get("chat")
        if not chat or chat.get("parent"):
            return False, "fan_out works only for a chat request (and not inside a part of one)", None
        cap = int(chat.get("max_fanout", 10))
        items = [i.strip() for i in items if i.strip()]
        capped = len(items) > cap
        created = fan_out(self.store, task, items[:cap], plan)
        note = f" (capped: {len(items)} asked, at most {cap} run at once per request)" if capped else ""
        return True, f"started {len(created)} runs{note}", f"Split into {len(created)}: {plan}{note}"

    def parts(self, task_id: int) -> int:
        from loopwright.runtime.chat.threads import children

        return len(children(self.store, task_id))

    def artifact(self, run_id: str, kind: str, title: str, name: str | None, data, is_text: bool):
        from loopwright.memory.artifacts import ArtifactError, register, register_text

        root = self.project_dir / "artifacts"
        try:
            if is_text:
                art = register_text(self.store, root, run_id, data, kind=kind, title=title, name=name)
            else:
                with tempfile.TemporaryDirectory(prefix="lw-artifact-") as tmp:
                    source = Path(tmp) / (name or "artifact")
                    source.write_bytes(data)
                    art = register(self.store, root, run_id, source, kind=kind, title=title)
        except (ArtifactError, StoreError) as e:
            return False, str(e)
        return True, f"registered artifact {art.id}: {art.kind} '{art.title}' ({art.size:,} bytes)"


# -- the daemon's side ----------------------------------------------------------------------------------------


def _run_options(config: Config, task_options: dict) -> dict:
    """Ray's resource options for a run: `[ray]` defaults, the task's own `resources` option on top."""
    ray_cfg = config.ray
    wanted: dict[str, float] = {"cpu": ray_cfg.num_cpus, **({"memory_mb": ray_cfg.memory_mb} if ray_cfg.memory_mb
                                                             else {}), **ray_cfg.resources}
    wanted.update(task_options.get("resources") or {})
    options: dict[str, Any] = {"num_cpus": 0.0, "resources": {}}
    for name, amount in wanted.items():
        key = name.lower()
        if key in ("cpu", "cpus", "num_cpus"):
            options["num_cpus"] = float(amount)
        elif key in ("gpu", "gpus", "num_gpus"):
            options["num_gpus"] = float(amount)
        elif key in ("memory_mb", "memory"):
            options["memory"] = int(float(amount) * 2**20)
        else:
            options["resources"][name] = float(amount)
    return options


def _describe(options: dict) -> str:
    parts = [f"CPU {options['num_cpus']:g}"]
    if options.get("num_gpus"):
        parts.append(f"GPU {options['num_gpus']:g}")
    if options.get("memory"):
        parts.append(f"memory {options['memory'] / 2**20:.0f} MB")
    parts += [f"{k} {v:g}" for k, v in options["resources"].items()]
    return ", ".join(parts)


class RayBackend:
    """The daemon's handle on the cluster: started in `serve`, it makes a `RemoteRunner` for every run."""

    def __init__(self, project: Project, say: Callable[[str], None] = print, *, address: str | None = None):
        self.project, self.say = project, say
        cfg = project.config.ray
        self.address = address if address is not None else cfg.address
        self.namespace = namespace_of(project.root)
        self.remote = cfg.remote
        self.head_remote = cfg.head_remote
        self.ray: Any = None
        self.head: Any = None
        self.local_cluster = False
        self.node_id = ""

    # -- starting and stopping ----------------------------------------------------------------------------------

    def start(self) -> None:
        ray = import_ray()
        self._remotes()
        self._connect(ray)
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            self.node_id = ray.get_runtime_context().get_node_id()
            head_cls = ray.remote(HeadService)
            self.head = head_cls.options(
                name=HEAD_ACTOR, namespace=self.namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
                max_restarts=-1, scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            ).remote(str(self.project.db_path), str(self.project.dir))
            where = ray.get(self.head.ping.remote(), timeout=120)
            if Path(where) != self.project.db_path:
                raise _daemon_error(f"the Ray namespace {self.namespace} already serves another store ({where})")
            self._probe(ray)
        except BaseException:
            self.stop()
            raise
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        self.say(f"ray backend: {'a local cluster' if self.local_cluster else 'cluster ' + str(self.address)} "
                 f"({len(nodes)} node(s), {cpus:g} CPUs); git remote {self.remote}")

    def _remotes(self) -> None:
        if self.remote is None:
            bare = self.project.dir / "remote.git"
            if not (bare / "HEAD").exists():
                _git(git.Git(self.project.root), "init", "--quiet", "--bare", str(bare),
                     what="creating the git remote .loopwright/remote.git")
            self.remote = str(bare)
        self.head_remote = self.head_remote or self.remote
        try:
            check_remote(self.head_remote, "the head")
        except WorkspaceError as e:
            raise _daemon_error(str(e)) from None

    def _connect(self, ray) -> None:
        import logging

        address = self.address
        if address and address.startswith("ray://"):
            raise _daemon_error(f"Ray Client addresses ({address}) are not supported: run `loopwright serve` on a "
                                f"node of the cluster (the head keeps the store), with --address HOST:PORT")
        if address and address != "auto":
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                    pass
            except (OSError, ValueError) as e:
                raise _daemon_error(f"cannot reach the Ray cluster at {address}: {getattr(e, 'strerror', None) or e} "
                                    f"(start one with `ray start --head`, or leave --address out for a local "
                                    f"cluster)") from None
        kwargs: dict[str, Any] = {"namespace": self.namespace, "log_to_driver": False,
                                  "logging_level": logging.WARNING, "ignore_reinit_error": True}
        # ray.init takes SIGTERM and SIGINT over (exit at once, with a stack dump): the daemon's own handlers
        # (pause every run, then stop) are put back after it
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                self.local_cluster = True
                ray.init(address="local", include_dashboard=False, **kwargs)  # its own, not one found here
        except Exception as e:  # noqa: BLE001 — Ray's many ways of failing, said in one line
            text = " ".join(str(e).split())[:300]
            raise _daemon_error(f"cannot connect to the Ray cluster at {address or '(local)'}: "
                                f"{type(e).__name__}: {text}") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in saved.items():
                    if handler is not None:
                        signal.signal(sig, handler)

    def _probe(self, ray) -> None:
        """Every node a run could land on must reach the git remote: find out now, not in the middle of runs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        default = _run_options(self.project.config, {})
        probe = ray.remote(num_cpus=0)(_probe_node)
        refs = {}
        for node in ray.nodes():
            if node.get("Alive") and _fits(node.get("Resources", {}), default):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                refs[node["NodeID"]] = probe.options(scheduling_strategy=strategy).remote(self.remote)
        for node_id, ref in refs.items():
            try:
                said = ray.get(ref, timeout=PROBE_TIMEOUT)
            except Exception as e:  # noqa: BLE001
                said = f"the probe on Ray node {node_id[:8]} failed: {type(e).__name__}: {e}"
            if said:
                raise _daemon_error(said.replace("the Ray node on", f"Ray node {node_id[:8]} on"))

    def stop(self, *, runs_left: bool = False) -> None:
        ray = self.ray_module()
        if ray is None or not ray.is_initialized():
            return
        if self.head is not None and not runs_left and not self.local_cluster:
            with contextlib.suppress(Exception):
                ray.kill(self.head)  # nothing of ours runs on the cluster any more
        with contextlib.suppress(Exception):
            ray.shutdown()

    @staticmethod
    def ray_module():
        try:
            import ray
        except ImportError:
            return None
        return ray

    # -- runs -------------------------------------------------------------------------------------------------

    def runner(self, stop: asyncio.Event) -> RemoteRunner:
        return RemoteRunner(self.project, self, stop=stop)

    def check_feasible(self, options: dict) -> None:
        """A run asking for more than any node has would wait for ever: fail it now, saying what it asked for."""
        import ray

        if not any(n.get("Alive") and _fits(n.get("Resources", {}), options) for n in ray.nodes()):
            raise StoreError(f"no node of the Ray cluster has what this run asks for ({_describe(options)})")

    def new_branch(self, run_id: str, target: str) -> str:
        """The run branch `lw/<run>` at the head of `target`, here and on the remote; its base commit."""
        g = git.Git(self.project.root)
        branch = f"lw/{run_id}"
        with GIT_LOCK:
            base = _commit_of_branch(g, target)
            if base is None:
                raise WorkspaceError(f"no branch '{target}' in {self.project.root} "
                                     f"(pass --target BRANCH with an existing branch)")
            _git(g, "branch", branch, base, what=f"creating the branch {branch}")
        _remote_git(self.project.root, "push", "--quiet", "--no-verify", self.head_remote,
                    f"{base}:refs/heads/{branch}", what=f"pushing {branch} to the git remote {self.head_remote}")
        return base

    def fetch_branch(self, branch: str, worktree: Path) -> str:
        """The run branch as the remote has it, here too (the head's worktree of it follows, if it has one)."""
        g = git.Git(self.project.root)
        ref = f"refs/loopwright/fetched/{branch}"
        _remote_git(self.project.root, "fetch", "--quiet", self.head_remote, f"+refs/heads/{branch}:{ref}",
                    what=f"fetching {branch} from the git remote {self.head_remote}")
        sha = _git(g, "rev-parse", ref)
        _git(g, "update-ref", "-d", ref, sha, what=f"dropping {ref}")
        with GIT_LOCK:
            if (worktree / ".git").exists():
                _git(git.Git(worktree), "reset", "--quiet", "--hard", sha, what=f"updating the worktree {worktree}")
            else:
                _git(g, "update-ref", f"refs/heads/{branch}", sha, what=f"updating {branch}")
        return sha

    def materialize(self, branch: str, worktree: Path) -> None:
        """A worktree of the run branch on the head, for a person to review (`merge`, the TUI's diff)."""
        if (worktree / ".git").exists():
            return
        with GIT_LOCK:
            _git(git.Git(self.project.root), "worktree", "add", "--quiet", str(worktree), branch,
                 what=f"creating the worktree {worktree}")

    async def find_actor(self, run_id: str):
        """The actor of a run still alive on the cluster (a head that restarted reattaches to it), or None."""
        import ray

        try:
            actor = ray.get_actor(run_actor_name(run_id), namespace=self.namespace)
        except ValueError:
            return None
        try:
            await asyncio.wait_for(_await(actor.ping.remote()), 10)
        except Exception:  # noqa: BLE001 — dead, or gone with its node
            with contextlib.suppress(Exception):
                ray.kill(actor)
            return None
        return actor

    def new_actor(self, run_id: str, options: dict):
        import ray

        with contextlib.suppress(ValueError):  # a dead namesake from an earlier attempt
            ray.kill(ray.get_actor(run_actor_name(run_id), namespace=self.namespace))
        cls = ray.remote(RunActor)
        return cls.options(name=run_actor_name(run_id), namespace=self.namespace, lifetime="detached",
                           max_restarts=0, max_concurrency=8, **options).remote()


def _fits(resources: dict, options: dict) -> bool:
    if resources.get("CPU", 0) < options["num_cpus"]:
        return False
    if options.get("num_gpus") and resources.get("GPU", 0) < options["num_gpus"]:
        return False
    if options.get("memory") and resources.get("memory", 0) < options["memory"]:
        return False
    return all(resources.get(k, 0) >= v for k, v in options["resources"].items())


class _Closable:
    """What `Runner._drive` closes after the loop: the model lives on the worker."""

    async def aclose(self) -> None:
        return None


class RemoteRunner(Runner):
    """`Runner` for the ray backend: the same runs, tasks, attempts and merges, the loop on a Ray worker."""

    def __init__(self, project: Project, backend: RayBackend, *, stop: asyncio.Event | None = None):
        super().__init__(project, stop=stop)
        self.backend = backend
        self.loop: _RemoteLoop | None = None  # type: ignore[assignment]

    def _worktree(self, branch: str) -> Path:
        return self.project.worktrees / branch.removeprefix("lw/")

    async def run_task(self, task: Task) -> RunResult:
        config = self._task_config(task)
        try:
            if config.provider == "scripted":
                Script.load(config.script)  # type: ignore[arg-type]
            else:
                config.model_info()  # the key may live on the workers only
            self.backend.check_feasible(_run_options(config, task.options))
            run_id = new_run_id()
            target = task.target_branch or config.target_branch or current_branch(self.project.root)
            base = await asyncio.to_thread(self.backend.new_branch, run_id, target)
        except Exception as e:
            self.store.set_task_status(task.id, "failed", reason=str(e))
            raise
        return await self._remote_attempts(task, config, f"lw/{run_id}", base, target, run_id, start_sha=base)

    async def _remote_attempts(self, task: Task, config: Config, branch: str, base: str, target: str, run_id: str,
                               *, start_sha: str | None) -> RunResult:
        """One run, or (loop-until-done) a fresh run per attempt on the same branch until the check passes."""
        while True:
            worktree = str(self._worktree(branch))
            run = self.store.create_run(task.id, provider=config.provider, model=config.model, worktree=worktree,
                                        branch=branch, base_commit=base, target_branch=target, run_id=run_id)
            self.store.append(run.id, RunStarted(task_id=task.id, goal=task.goal, provider=config.provider,
                                                 model=config.model, worktree=worktree, branch=branch,
                                                 base_commit=base))
            self.loop = _RemoteLoop(self, run, task, config, fresh=True, notices=[], start_sha=start_sha)
            result = await self._drive(self.loop, run, task, _Closable(), config)  # type: ignore[arg-type]
            if not result.again:
                return result
            run_id, start_sha = new_run_id(), None
            config = self._task_config(task)

    async def resume(self, run_id: str) -> RunResult:
        run = resumable(self.store, run_id)
        task = self.store.task(run.task_id)
        config = self._task_config(task)
        actor = await self.backend.find_actor(run.id)
        if not self.store.claim_run(run.id, only_from=("paused", "running", "budget_exceeded")):
            raise StoreError(f"run {run.id} was taken by another process")
        was = "crashed (its head died)" if run.status == "running" else run.status
        self.loop = _RemoteLoop(self, self.store.run(run.id), task, config, fresh=False,
                                notices=[f"Notice: this run was {was} and has been resumed."],
                                start_sha=None, attach=actor)
        result = await self._drive(self.loop, run, task, _Closable(), config)  # type: ignore[arg-type]
        if result.again:
            return await self._remote_attempts(task, config, run.branch, run.base_commit, run.target_branch,
                                               new_run_id(), start_sha=None)
        return result

    def resume_point(self, run: Run) -> tuple[str, int]:
        """Where a resumed run starts: its last checkpoint or rollback recorded in the store (sha, seq)."""
        sha, seq = run.base_commit, 0
        for _, _, event in self.store.events(run.id, types=("checkpoint", "rolled_back")):
            if event.type == "checkpoint":
                sha, seq = event.sha, event.seq
            else:
                sha, seq = event.to_sha, event.to_seq
        return sha, seq

    def spec(self, run: Run, task: Task, config: Config, *, fresh: bool, notices: list[str],
             start_sha: str | None) -> RunSpec:
        lessons = self.lessons(config) if config.memory.recall else None
        recalled = self._recalled(run, task, config, fresh) if lessons is not None else ""
        ws_cfg = config.workspace
        files: dict[str, bytes] = {}
        for rel in ws_cfg.copy_files:
            src = self.project.root / rel
            if src.is_file():
                files[rel] = src.read_bytes()
            elif src.is_dir():
                for p in sorted(src.rglob("*")):
                    if p.is_file():
                        files[str(p.relative_to(self.project.root))] = p.read_bytes()
        return RunSpec(
            run_id=run.id, task_id=task.id, branch=run.branch, base_commit=run.base_commit, start_sha=start_sha,
            remote=self.backend.remote or "", cache_dir=config.ray.cache_dir, fresh=fresh, notices=notices,
            system_prompt=SYSTEM_PROMPT + (MEMORY_PROMPT if lessons is not None else ""),
            task_text=task_text(task, task.check_cmd) + recalled + self._progress(task, run),
            config=config,
            script=Script.load(config.script) if config.provider == "scripted" else None,  # type: ignore[arg-type]
            start_at=self._script_position(task), check=task.check_cmd, until=bool(task.options.get("until")),
            run=self.store.run(run.id), conversation=[] if fresh else self.store.conversation(run.id),
            scratchpad=self.store.scratchpad(run.id).read(), copy_files=files,
            setup_command=ws_cfg.setup_command, setup_timeout=ws_cfg.setup_timeout,
            flush_interval=config.ray.flush_interval, memory_tools=lessons is not None,
            fan_out=bool(task.options.get("chat")) and not task.options["chat"].get("parent"))


class _RemoteLoop:
    """What `Runner._drive` drives: the run on the cluster, then the merge on the head."""

    def __init__(self, runner: RemoteRunner, row: Run, task: Task, config: Config, *, fresh: bool,
                 notices: list[str], start_sha: str | None, attach: Any = None):
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

    def _stopped(self) -> LoopOutcome:
        status, reason, _ = self.runner.stop_request or ("paused", "stopped", False)
        return LoopOutcome(status, reason)

    async def run(self) -> LoopOutcome:
        store = self.runner.store
        merged = store.events(self.row.id, types=("merged",))
        if merged:  # exactly once: a head that died after the merge must not merge again
            done = merged[-1][2]
            return LoopOutcome("succeeded", f"merged into {done.target_branch} as {done.commit[:10]}")
        if not self.fresh and self.attach is None and self._accepted_before():
            outcome = RemoteOutcome("succeeded", "check passed", accepted=True)
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

        runner, backend = self.runner, self.runner.backend
        store = runner.store
        options = _run_options(self.config, self.task.options)
        fresh, notices, start_sha = self.fresh, list(self.notices), self.start_sha
        if not fresh:
            start_sha = runner.resume_point(self.row)[0]
        if self.attach is not None:
            backend.say(f"run {self.row.id}: reattached to its worker on the cluster")
            self.actor = self.attach
        while True:
            try:
                if self.actor is None:
                    if runner.stop_request is not None and runner.stop.is_set():
                        return RemoteOutcome(*runner.stop_request[:2])
                    spec = runner.spec(store.run(self.row.id), self.task, self.config, fresh=fresh, notices=notices,
                                       start_sha=start_sha)
                    self.actor = backend.new_actor(self.row.id, options)
                    key = None
                    if self.config.provider != "scripted":
                        with contextlib.suppress(ConfigError):
                            key = self.config.api_key()
                    started = asyncio.ensure_future(_await(self.actor.start.remote(spec, backend.head, key)))
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
                        return RemoteOutcome(*(runner.stop_request or ("paused", "stopped"))[:2])
                    where = started.result()
                    store.append(self.row.id, TaskUpdated(
                        task_id=self.task.id, by="ray",
                        change=f"running on Ray node {where['node'][:8]} ({where['host']}, pid {where['pid']})"))
                    self.forward_stop()
                outcome = await self._wait(ActorUnavailableError)
                if self.attach is not None and outcome.status == "paused" and outcome.reason == GRACEFUL_STOP:
                    # it paused because the last head stopped: go on, from where it paused
                    self.attach = None
                    self._kill()
                    fresh, start_sha = False, runner.resume_point(store.run(self.row.id))[0]
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
                    return RemoteOutcome("failed", f"its Ray worker died {self.failures} times (last: {why})")
                sha, seq = runner.resume_point(store.run(self.row.id))
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
                return RemoteOutcome("paused", (runner.stop_request or ("paused", "interrupted"))[1])

    async def _wait(self, unavailable: type[Exception], patience: float = 60.0) -> RemoteOutcome:
        """The worker's outcome; a worker out of reach for a moment (a network blip) is asked again."""
        since = None
        while True:
            try:
                return await _await(self.actor.wait.remote())
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
        backend, worktree = self.runner.backend, Path(self.row.worktree)
        try:
            await asyncio.to_thread(backend.fetch_branch, self.row.branch, worktree)
            if status in ("needs_review", "failed", "killed", "paused", "budget_exceeded"):
                await asyncio.to_thread(backend.materialize, self.row.branch, worktree)
        except WorkspaceError as e:
            backend.say(f"run {self.row.id}: could not bring its branch to the head: {e}")

    async def _merge(self) -> LoopOutcome:
        runner, run, task = self.runner, self.row, self.task
        store, backend = runner.store, runner.backend
        worktree = Path(run.worktree)
        try:
            await asyncio.to_thread(backend.fetch_branch, run.branch, worktree)
        except WorkspaceError as e:
            return LoopOutcome("needs_review", f"check passed, but the branch could not be fetched ({e})")
        on_success = store.task(task.id).options.get("on_success") or self.config.on_success
        if on_success == "keep":
            return LoopOutcome("succeeded", f"check passed; branch {run.branch} kept")
        ws = Workspace.open(runner.project.root, run.id, worktree, run.branch, run.base_commit)
        try:
            merge = await asyncio.to_thread(_merge, ws, run.target_branch, merge_message(task, run))
        except WorkspaceError as e:
            await self._after("needs_review")
            return LoopOutcome("needs_review", f"merge failed ({e}); branch {run.branch} kept")
        if merge.status == "conflict":
            store.append(run.id, MergeConflict(target_branch=run.target_branch, detail=merge.detail))
            await self._after("needs_review")
            return LoopOutcome("needs_review", f"merge conflict ({merge.detail}); branch {run.branch} kept")
        if merge.status == "nothing":
            return LoopOutcome("succeeded", "check passed; no changes to merge")
        store.append(run.id, Merged(target_branch=run.target_branch, commit=merge.commit or ""))
        store.update_run(run.id, merge_commit=merge.commit)
        return LoopOutcome("succeeded", f"merged into {run.target_branch} as {(merge.commit or '')[:10]}")
