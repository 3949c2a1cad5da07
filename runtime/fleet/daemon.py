"""`loopwright serve`: the daemon that runs queued tasks in parallel, from the store, until stopped.

One daemon per project, held by an flock on `.loopwright/daemon.pid`. It
resumes the runs a previous owner left behind (a crash, a reboot, a graceful
stop), starts queued tasks by priority then age once their dependencies
succeeded, up to `max_parallel` at once (asyncio tasks in this process; tools
are subprocesses and git work runs off the event loop), and obeys the commands
the CLI and TUI write into the store. SIGTERM or SIGINT stops scheduling and
pauses every run now: a command a tool is running is ended and recorded as
interrupted (waiting up to `stop_timeout` for the runs to stop), and the next
`serve` picks them up again. With `workers` > 1 (by default on a large fleet) its runs are spread over worker
processes it starts and supervises (runtime/fleet/workers.py). With `[http] listen` (`serve --http`) it also serves
the chat API (runtime/http/) on its event loop. A full disk pauses every run (`watch_disk`) and the
daemon stays up; the runs go on by themselves once there is room again.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import os
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loopwright.errors import LoopwrightError
from loopwright.harness.events import TaskUpdated
from loopwright.harness.statuses import DAEMON_COMMANDS, RUN_FINAL, STOP_COMMANDS, CommandKind, RunStatus, TaskStatus
from loopwright.memory import commands
from loopwright.memory import stream as feed
from loopwright.memory.database import disk_full_error
from loopwright.memory.intents import drop_dead_claims
from loopwright.memory.store import Store, StoreError, Task
from loopwright.runtime.chat.bridge import Bridges
from loopwright.runtime.chat.threads import ChatHub
from loopwright.runtime.display import ProgressPrinter
from loopwright.runtime.fleet.budget import SPENT, FleetBudget
from loopwright.runtime.fleet.hygiene import (
    DISK_FULL,
    disk_floor,
    disk_full,
    disk_room,
    expired_worktrees,
    free_mb,
    orphans,
    remove_orphan,
    remove_worktree,
)
from loopwright.runtime.fleet.workers import Workers, shares, worker_count
from loopwright.runtime.merging import GIT_LOCK
from loopwright.runtime.project import Project
from loopwright.runtime.runner import Runner, RunResult, merge_reviewed
from loopwright.workspaces.repository import WorkspaceError

DEPENDENCY_FAILED = (TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.KILLED, TaskStatus.BUDGET_EXCEEDED)
GRACEFUL_STOP = "daemon stopped; the next `loopwright serve` resumes it"


class DaemonError(LoopwrightError):
    """The daemon cannot start; said in one line."""


class DaemonLock:
    """The project's one-daemon lock: an flock held for the daemon's lifetime, the pid written inside."""

    def __init__(self, project: Project):
        self.path = project.dir / "daemon.pid"
        self.fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DaemonError(f"a daemon already runs for this project (pid {holder(self.path) or '?'}); "
                              f"stop it with: kill {holder(self.path) or '<pid>'}") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def holder(path: Path) -> int | None:
    """The pid of the daemon holding the lock at `path`, or None when no daemon runs."""
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = path.read_text().strip()
        return int(text) if text.isdigit() else -1
    else:
        return None
    finally:
        os.close(fd)  # closing drops our shared lock, if we got it


def daemon_pid(project: Project) -> int | None:
    return holder(project.dir / "daemon.pid")


class Daemon:
    def __init__(self, project: Project, *, poll_interval: float = 0.2, stop_timeout: float = 30.0, log=sys.stdout,
                 worker: tuple[int, int] | None = None):
        """`worker`: (its number, its share of max_parallel) when this process is one of a daemon's workers."""
        self.project, self.store = project, project.store
        self.worker = worker
        # `serve --max-parallel` is a config override; with workers, this process's share of it
        split = [worker[1]] if worker else shares(project.config.max_parallel, worker_count(project.config))
        self.max_parallel = split[0]
        self.workers = Workers(project.root, split[1:], self.say) if len(split) > 1 else None
        self.poll_interval, self.stop_timeout, self.log = poll_interval, stop_timeout, log
        self.live: dict[int, tuple[Runner, asyncio.Task]] = {}  # task id -> its runner
        self.stopping = asyncio.Event()
        self.budget = FleetBudget(self.store, project.config.fleet)
        self.backend = None  # runtime.backends.ray.RayBackend when config.backend is "ray" (started by serve)
        self.sandbox = None  # harness.sandbox.Sandbox, made by serve
        self._held_said: str | None = None
        self._sweep: asyncio.Task | None = None
        self._next_sweep = 0.0
        self._next_prune = 0.0
        self._practice: asyncio.Task | None = None
        self._idle_since = time.monotonic()
        self.disk_full: str | None = None  # "disk full (N MB free)" while every run is paused for it
        self._disk_error = False  # a write failed for lack of disk since the last look
        self._stranded: set[str] = set()  # runs a full disk stopped before they could record their pause

    def say(self, text: str) -> None:
        who = f"[worker {self.worker[0]}] " if self.worker else ""
        with contextlib.suppress(OSError):  # a log on a full disk
            print(f"{time.strftime('%H:%M:%S')} {who}{text}", file=self.log, flush=True)

    async def serve(self, ready: Callable[[], Awaitable[bool]] | None = None) -> None:
        """Until stopped. A worker process awaits `ready()` (runtime/fleet/workers.py) before it takes tasks."""
        from loopwright.runtime.sandboxing import describe, make_sandbox

        self.sandbox = make_sandbox(self.project.config)  # once: every run of this process is jailed in it
        if self.worker is not None:
            await self._serve_as_worker(ready)
            return
        lock = DaemonLock(self.project)
        lock.acquire()
        if self.workers is not None:  # now: they load what they need while this process does
            self.workers.start()
        loop = self._prepare()
        spread = (f"; {self.max_parallel} in this process, the rest in {len(self.workers.shares)} worker "
                  f"process(es)" if self.workers is not None else "")
        self.say(f"daemon {os.getpid()} serving {self.project.root} "
                 f"(max_parallel {self.project.config.max_parallel}{spread})")
        if self.sandbox.warning:  # loud: in the log and on stderr
            self.say(f"WARNING: {self.sandbox.warning}")
            if self.log is not sys.stderr:
                print(f"loopwright: WARNING: {self.sandbox.warning}", file=sys.stderr, flush=True)
        else:
            self.say(f"sandbox: {describe(self.sandbox)}")
        from loopwright.runtime.fleet.inbox import Inbox
        from loopwright.runtime.fleet.notify import Notifier

        inbox = Inbox(self.project, self.say) if self.project.config.inbox.enabled else None
        notifier = Notifier(self.project, self.say)  # its baseline: the tasks as they are before recovery
        chat = ChatHub(self.project, stop_run=self._stop_task, say=self.say)
        bridges = Bridges(self.project, self.say)  # replies out; requests in come through the web app
        http = None
        # what is loaded by now lives as long as the daemon: kept out of the collector's full passes, which
        # would otherwise walk it every few seconds (a 128-run fleet paused ~150 ms each time)
        gc.collect()
        gc.freeze()
        try:
            if self.project.config.backend == "ray":
                from loopwright.runtime.backends.ray import RayBackend

                self.backend = RayBackend(self.project, self.say)
                self.backend.start()
            self.recover()
            if self.workers is not None:  # after the recovery: the runs a dead daemon left are this process's
                await self.workers.ready()
                self.workers.go()
            if inbox is not None:
                inbox.start()
            if (address := self.project.config.http.address()) is not None:
                from loopwright.runtime.http.app import Api

                http = await Api(Store(self.store.path), self.project.config, self.say, bridges).serve(*address)
            while not self.stopping.is_set():
                self._poll(self.watch_disk, self.obey_commands, *([inbox.drain] if inbox is not None else []),
                           chat.poll, self.schedule, self.practise, self.prune_feed)
                notifier.poll()
                bridges.poll()
                self.watch_workers()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.poll_interval)
            if self.workers is not None:
                self.workers.stop()
            await self.shutdown()
            await notifier.aclose()
            await bridges.aclose()
        finally:
            if self.workers is not None:  # they pause their runs as this process does (or are killed after)
                self.workers.stop()
                await self.workers.wait(self.stop_timeout + 15)
            if http is not None:
                await http.stop()
            if inbox is not None:
                inbox.stop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            if self.backend is not None:
                self.backend.stop(runs_left=bool(self.live))
            GIT_LOCK.share(None)
            lock.release()
            self.say("daemon stopped")

    def _prepare(self) -> asyncio.AbstractEventLoop:
        """What the daemon and each worker set up before their runs: the shared git lock, the thread pool,
        the stop signals, the SDK, the event log."""
        GIT_LOCK.share(self.project.dir / "git.lock")  # shared with the workers, and the other daemon's processes
        loop = asyncio.get_running_loop()
        # file tools, checkpoints and worktrees run in threads: asyncio's default pool (cores + 4 threads)
        # would queue every run's tool behind a few slow git commands; far more threads cost more to start
        # (each start waits for the GIL) than they save
        loop.set_default_executor(ThreadPoolExecutor(max_workers=2 * self.max_parallel + 4,
                                                     thread_name_prefix="loopwright-io"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        from loopwright.harness.adapters import import_sdk

        import_sdk(self.project.config.provider)  # now, not in the first runs' setup (each would wait for it)
        printer = ProgressPrinter(self.store)
        self.store.listeners.append(lambda run_id, e: self._log_event(printer, run_id, e))
        return loop

    async def _serve_as_worker(self, ready: Callable[[], Awaitable[bool]] | None) -> None:
        """A worker process (runtime/fleet/workers.py): queued tasks up to its share, and the pause and kill
        commands of its own runs; the rest is the daemon's."""
        loop = self._prepare()
        gc.collect()
        gc.freeze()
        try:
            if ready is not None and not await ready():
                return  # the daemon stopped (or died) before it let this worker take tasks
            self.say(f"worker {os.getpid()} of daemon {os.getppid()} (max_parallel {self.max_parallel})")
            while not self.stopping.is_set():
                self._poll(self.watch_disk, self.obey_commands, self.schedule)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self.poll_interval)
            await self.shutdown()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            GIT_LOCK.share(None)
            self.say("worker stopped")

    def _poll(self, *steps: Callable[[], object]) -> None:
        """One poll's work on the store, in order; a write that failed for lack of disk ends it (the store is as it
        was before the write) and `watch_disk` pauses the runs at the next poll."""
        try:
            for step in steps:
                step()
        except Exception as e:
            if not disk_full_error(e):
                raise
            self._disk_error = True

    def watch_workers(self) -> None:
        """A worker that died (killed, out of memory): its runs are resumed here, and it is started again."""
        if self.workers is None:
            return
        for line in self.workers.poll():
            self.say(f"{line}; its runs are resumed here")
            self.resume_orphans()

    def _log_event(self, printer: ProgressPrinter, run_id: str | None, event) -> None:
        line = printer.line(run_id, event)
        if line:
            self.say(f"{run_id} {line.strip()}")

    # -- runs --------------------------------------------------------------------------------

    def _spawn(self, task_id: int, start: Callable[[Runner], Awaitable[RunResult]]) -> None:
        runner = (self.backend.runner(asyncio.Event()) if self.backend is not None
                  else Runner(self.project, stop=asyncio.Event(), key_missing_pauses=True, sandbox=self.sandbox))

        async def guarded() -> None:
            try:
                result = await start(runner)
                self.say(f"task {task_id}: {result.run.status}"
                         + (f" ({result.run.reason})" if result.run.reason else ""))
            except Exception as e:  # one bad task must never take the fleet down
                if disk_full_error(e) and runner.loop is not None:  # the run is left as it was: paused when room
                    self.say(f"task {task_id}: stopped by a full disk ({e}); it goes on when there is room")
                    self._stranded.add(runner.loop.run_id)
                    self._disk_error = True
                    return
                self.say(f"task {task_id} failed to run: {type(e).__name__}: {e}")
                self.store.set_task_status(task_id, TaskStatus.FAILED, reason=f"{type(e).__name__}: {e}",
                                           only_from=(TaskStatus.RUNNING, TaskStatus.QUEUED))
                if runner.loop is not None:
                    self.store.transition_run(runner.loop.run_id, RunStatus.FAILED, only_from=(RunStatus.RUNNING,),
                                              reason=str(e))
                traceback.print_exc(file=self.log)
            finally:
                self.live.pop(task_id, None)

        self.live[task_id] = (runner, asyncio.ensure_future(guarded()))

    def _stop_task(self, task_id: int, reason: str) -> bool:
        """Kill the task's run, here or (a kill command) in the worker process that owns it; False if none runs."""
        entry = self.live.get(task_id)
        if entry is not None:
            entry[0].request_stop(RunStatus.KILLED, reason, True)
            return True
        running = self.store.runs(task_id=task_id, statuses=(RunStatus.RUNNING,))
        for run in running:
            self.store.enqueue_command(run.id, CommandKind.KILL, {"reason": reason})
        return bool(running)

    def recover(self) -> None:
        """Resume what a dead owner or a graceful stop left behind; requeue tasks claimed but never started; merge
        again a run whose merge by hand was cut short; remove orphaned worktrees and branches. Before the workers
        start: a task one of them claimed has no run yet for a moment."""
        self.resume_orphans()
        for task in self.store.tasks(statuses=(TaskStatus.RUNNING,)):
            if task.id in self.live:
                continue
            if not any(r.status not in RUN_FINAL for r in self.store.runs(task_id=task.id)):
                self.store.set_task_status(task.id, TaskStatus.QUEUED, reason="requeued: its run never started",
                                           only_from=(TaskStatus.RUNNING,))
        for cmd in commands.retake(self.store, CommandKind.MERGE):  # merges by hand its dead owner did not finish
            self.say(f"run {cmd.run_id}: a merge by hand was cut short (command {cmd.id}); merging again")
        self.remove_orphans()

    def resume_orphans(self) -> None:
        """Resume the runs whose owner died (a crash, a killed worker) or that a graceful stop paused."""
        for run in self.store.runs(statuses=(RunStatus.RUNNING, RunStatus.PAUSED)):
            orphaned = run.status == RunStatus.RUNNING and not run.owner_alive()
            stopped = run.status == RunStatus.PAUSED and run.reason == GRACEFUL_STOP
            if (orphaned or stopped) and run.task_id not in self.live:
                self.say(f"resuming run {run.id} (task {run.task_id}): "
                         f"{'its owner died' if orphaned else 'daemon restart'}")
                self._spawn(run.task_id, lambda r, rid=run.id: r.resume(rid))

    def remove_orphans(self) -> None:
        """In the background, remove the worktrees and branches a kill left while a new run's were being made."""
        def remove() -> None:
            try:
                for orphan in orphans(self.project):
                    with GIT_LOCK:
                        freed = remove_orphan(self.project, orphan)
                    what = " and ".join(w for w, there in (("worktree", orphan.worktree), ("branch", orphan.branch))
                                        if there)
                    self.say(f"removed the orphaned {what} of run {orphan.run_id} ({freed / 1e6:.1f} MB): "
                             f"no run owns it (a kill while it was being made)")
                drop_dead_claims(self.store)
            except WorkspaceError as e:
                self.say(f"could not remove orphaned worktrees: {e}")
        self._sweep = asyncio.ensure_future(asyncio.to_thread(remove))

    def watch_disk(self) -> None:
        """Pause every run while the disk is full (or a write failed for lack of it); once free space is back above
        the floor, record the pause of the runs it stopped first, and let `schedule` resume them all."""
        full = disk_full(self.project, failed=self._disk_error)
        if full:
            self._disk_error = False
            if self.disk_full is None:  # the reason of every pause until there is room again: as first seen
                self.disk_full = full
                self.say(f"{full}: pausing every run, and no task is posted, until there is room again "
                         "(free space or run `loopwright gc`)")
            for runner, _ in list(self.live.values()):
                if runner.stop_request is None:
                    runner.request_stop(RunStatus.PAUSED, self.disk_full, True)
            return
        if self.disk_full is None or not disk_room(self.project):
            return
        for run_id in list(self._stranded):
            self.store.transition_run(run_id, RunStatus.PAUSED, only_from=(RunStatus.RUNNING,), reason=self.disk_full)
            self._stranded.discard(run_id)
        self.say(f"room on the disk again ({free_mb(self.project):,.0f} MB free): runs paused by a full disk go on")
        self.disk_full = None

    def schedule(self) -> None:
        if self.worker is None:
            self.sweep_worktrees()
        held = self.disk_full or self.budget.exhausted() or disk_floor(self.project)
        if held != self._held_said:  # say it once when it changes, not every poll (a full disk: `watch_disk` does)
            if held != self.disk_full:
                self.say(held or "new runs may start again")
            self._held_said = held
        if held:
            return  # no new work starts while the fleet budget is spent or the disk is too full
        for run in self.store.runs(statuses=(RunStatus.PAUSED,)) if self.worker is None else ():
            if len(self.live) >= self.max_parallel:
                return
            if run.reason.startswith((SPENT, DISK_FULL)) and run.task_id not in self.live:
                why = "the fleet budget allows it again" if run.reason.startswith(SPENT) else "room on the disk again"
                self.say(f"resuming run {run.id}: {why}")
                self._spawn(run.task_id, lambda r, rid=run.id: r.resume(rid))
        for task in self.store.queue():
            if len(self.live) >= self.max_parallel:
                return
            state = self._dependencies(task)
            if state == "wait":
                continue
            if state != "ready":
                self.store.set_task_status(task.id, TaskStatus.FAILED, reason=state, only_from=(TaskStatus.QUEUED,))
                self.say(f"task {task.id} failed: {state}")
                continue
            if self.store.claim_task(task.id):
                self.say(f"starting task {task.id}: {task.title}")
                self._spawn(task.id, lambda r, t=self.store.task(task.id): r.run_task(t))  # noqa: B008 (bound now)

    def practise(self) -> None:
        """Practice mode: one self-play round in the background when nothing has been queued or run for a while."""
        config = self.project.config.practice
        if not config.enabled or self.stopping.is_set():
            return
        if self._practice is not None and not self._practice.done():
            return
        if self.live or self.store.queue() or (self.workers is not None
                                               and self.store.runs(statuses=(RunStatus.RUNNING,))):
            self._idle_since = time.monotonic()
            return
        if time.monotonic() - self._idle_since < config.idle_seconds or self.budget.exhausted():
            return

        async def round_() -> None:
            from loopwright.runtime.learning.selfplay import practice

            try:
                report = await practice.practice_round(self.project, domain=config.domain,
                                                       budget_usd=config.budget_usd)
            except Exception as e:  # noqa: BLE001 — practice must never take the fleet down
                self.say(f"practice failed: {type(e).__name__}: {e}")
                report = None
            if report is None:
                self.say(f"practice skipped: {practice.last_skip or 'see the log above'}")
                self._idle_since = time.monotonic() + 3600  # try again in an hour, not at every poll
            else:
                from loopwright.runtime.learning.selfplay.engine import round_line

                self.say(f"practice {round_line(report)}")
                self._idle_since = time.monotonic()
        self.say(f"practising ({config.domain}): the queue has been idle for {config.idle_seconds:.0f}s")
        self._practice = asyncio.ensure_future(round_())

    def sweep_worktrees(self, every: float = 30.0) -> None:
        """Now and then, remove in the background the worktrees of runs that ended `remove_after_seconds` ago."""
        if self._sweep is not None and not self._sweep.done() or time.monotonic() < self._next_sweep:
            return
        delay = self.project.config.workspace.remove_after_seconds
        self._next_sweep = time.monotonic() + max(1.0, min(every, delay if delay is not None else every))
        expired = expired_worktrees(self.project)
        if not expired:
            return

        def remove() -> None:
            for run in expired:
                try:
                    with GIT_LOCK:
                        freed = remove_worktree(self.project, run)
                    self.say(f"removed the worktree of run {run.id} ({freed / 1e6:.1f} MB; it ended "
                             f"{(time.time() - (run.ended_at or 0)) / 60:.0f} min ago)")
                except WorkspaceError as e:
                    self.say(f"could not remove the worktree of run {run.id}: {e}")
        self._sweep = asyncio.ensure_future(asyncio.to_thread(remove))

    def prune_feed(self, every: float = 60.0, batch: int = 500) -> None:
        """Now and then, delete the live stream's changes older than [http] feed_hours: `batch` rows a poll (a short
        write, never a long stall of the loop or the store) until none is left that old."""
        if time.monotonic() < self._next_prune:
            return
        before = time.time() - self.project.config.http.feed_hours * 3600
        full = feed.prune_changes(self.store, before, batch) == batch
        self._next_prune = 0.0 if full else time.monotonic() + every

    def _dependencies(self, task: Task) -> str:
        waiting = False
        for dep in self.store.dependencies(task.id):
            if dep.status in DEPENDENCY_FAILED:
                return f"dependency task {dep.id} {dep.status}"
            waiting |= dep.status != TaskStatus.SUCCEEDED
        return "wait" if waiting else "ready"

    def obey_commands(self) -> None:
        """Commands from the CLI and the TUI; rollbacks and messages are taken by the runs themselves."""
        mine = [r.loop.run_id for r, _ in self.live.values() if r.loop is not None]
        theirs = self.store.claim_commands(DAEMON_COMMANDS) if self.worker is None else []
        for cmd in self.store.claim_commands(STOP_COMMANDS, mine) + theirs:
            try:
                said = self._obey(cmd)
            except StoreError as e:
                self.store.finish_command(cmd.id, ok=False, result=str(e))
                continue
            if asyncio.iscoroutine(said):  # work off the event loop: it finishes the command itself
                asyncio.ensure_future(said)
            else:
                self.store.finish_command(cmd.id, ok=True, result=said or "done")

    def _obey(self, cmd) -> str | Coroutine | None:
        if cmd.kind in (CommandKind.PRIORITY, CommandKind.CANCEL):
            return self._obey_task(cmd)
        run = self.store.run(cmd.run_id or "")
        if cmd.kind in (CommandKind.PAUSE, CommandKind.KILL):
            entry = self.live.get(run.task_id)
            if entry is None:
                raise StoreError(f"run {run.id} is not running in this daemon")
            entry[0].obey(cmd)
        elif cmd.kind == CommandKind.RESUME:
            if run.task_id in self.live:
                raise StoreError(f"run {run.id} is already running")
            self._spawn(run.task_id, lambda r, rid=run.id: r.resume(rid))
        elif cmd.kind == CommandKind.KEEP or (cmd.kind == CommandKind.MERGE and run.status != RunStatus.NEEDS_REVIEW):
            policy = "keep" if cmd.kind == CommandKind.KEEP else "merge"
            if not self.store.update_task(run.task_id, options={"on_success": policy}):
                raise StoreError(f"task {run.task_id} is gone")
            change = "kept for review when accepted" if policy == "keep" else "merged when accepted"
            self.store.append(run.id, TaskUpdated(task_id=run.task_id, change=change))
            return change
        else:  # merge a run kept for review: git work, off the event loop
            if run.task_id in self.live:
                raise StoreError(f"task {run.task_id} is running again; merge when it stops")

            async def merge() -> None:
                try:
                    said = await asyncio.to_thread(merge_reviewed, self.project, run.id)
                    self.store.append(run.id, TaskUpdated(task_id=run.task_id, change=said))
                    self.store.finish_command(cmd.id, ok=True, result=said)
                    self.say(f"run {run.id}: {said}")
                except (StoreError, WorkspaceError) as e:
                    self.store.finish_command(cmd.id, ok=False, result=str(e))
            return merge()
        return None

    def _obey_task(self, cmd) -> str:
        task = self.store.task(int(cmd.args.get("task", 0)))
        if cmd.kind == CommandKind.PRIORITY:
            priority = int(cmd.args["priority"])
            if not self.store.update_task(task.id, priority=priority, only_from=(TaskStatus.QUEUED,)):
                raise StoreError(f"task {task.id} is {self.store.task(task.id).status}, no longer queued")
            change = f"priority {task.priority} -> {priority}"
        elif self.store.set_task_status(task.id, TaskStatus.CANCELLED, reason="cancelled by a person",
                                        only_from=(TaskStatus.QUEUED,)):
            change = "cancelled (it had not started)"
        elif self._stop_task(task.id, "task cancelled"):
            change = "cancelled: its run stops at its next safe point"
        else:
            raise StoreError(f"task {task.id} is {task.status}; there is nothing to cancel")
        self.store.append(None, TaskUpdated(task_id=task.id, change=change))
        return change

    async def shutdown(self) -> None:
        if not self.live:
            return
        self.say(f"stopping: pausing {len(self.live)} run(s); commands their tools run are interrupted")
        for runner, _ in list(self.live.values()):
            runner.request_stop(RunStatus.PAUSED, GRACEFUL_STOP, True)
        tasks = [t for _, t in self.live.values()]
        done, pending = await asyncio.wait(tasks, timeout=self.stop_timeout)
        for t in pending:  # still going after the timeout (a slow git command): cancel (the loop checkpoints, pauses)
            t.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)
