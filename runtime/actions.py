"""What a person supervising the fleet can do, as the TUI (and scripts) do it: every action is a row in the store.

Run actions go into the `commands` table for whoever owns the run: pause and
kill are applied by the daemon (a pause waits for the tool call running now, a
kill ends it), a message and a rollback by the run itself at its next model
boundary (never in the middle of a tool call), resume, merge, keep, priority
and cancel by the daemon, which logs each as an event. Nothing here calls into
the daemon's memory. A second identical action while the first is still
pending (a kill key pressed five times) queues nothing new.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loopwright.harness.statuses import RUN_FINAL, CommandKind, RunStatus, TaskStatus
from loopwright.memory import commands
from loopwright.memory.store import Run, StoreError, Task
from loopwright.runtime.display import running_tool_call
from loopwright.runtime.project import Project

STOPPING_SECONDS = 60.0  # a pause carried out this recently, its run still running, is still taking effect


@dataclass(frozen=True)
class Done:
    """What an action did: the command queued (or None when it was done here, or was already pending), in words."""

    command: int | None
    said: str


class Actions:
    """`by` names who acts, in what the run logs (a rollback "by tui (ana)")."""

    def __init__(self, project: Project, by: str = "tui"):
        self.project, self.store, self.by = project, project.store, by

    # -- runs ----------------------------------------------------------------------------------

    def _queue(self, run: Run, kind: CommandKind, args: dict | None = None) -> Done:
        if kind not in (CommandKind.NOTIFY, CommandKind.ROLLBACK):
            # still to be done, or done and the run not yet stopped (a kill is final: one is enough)
            earlier = commands.under_way(self.store, run.id, kind, run_status=run.status,
                                         done_since=time.time() - STOPPING_SECONDS)
            if earlier is not None:
                return Done(None, f"{kind} of run {run.id} is already under way (command {earlier})")
        command = self.store.enqueue_command(run.id, kind, args or {})
        return Done(command, f"{kind} queued for run {run.id}")

    def _live(self, run_id: str, verb: str) -> Run:
        run = self.store.run(run_id)
        if run.status != RunStatus.RUNNING:
            raise StoreError(f"run {run.id} is {run.status}; only a running run can be {verb}")
        return run

    def pause(self, run_id: str) -> Done:
        """Pause at the next safe point: when the tool call running now (named in what is said) ends."""
        run = self._live(run_id, "paused")
        done = self._queue(run, CommandKind.PAUSE, {"reason": "paused from the TUI"})
        waits = running_tool_call(self.store, run.id)
        if done.command is None or waits is None:
            return done
        return Done(done.command, f"{done.said}: it pauses when the current tool call ends ({waits[0]})")

    def killable(self, run_id: str) -> Run:
        """The run, when it can be killed (asked before a confirmation); else a StoreError saying why."""
        run = self.store.run(run_id)
        if run.status in RUN_FINAL:
            raise StoreError(f"run {run.id} is {run.status} already")
        return run

    def kill(self, run_id: str) -> Done:
        return self._queue(self.killable(run_id), CommandKind.KILL, {"reason": "killed from the TUI"})

    def resume(self, run_id: str) -> Done:
        run = self.store.run(run_id)
        if run.status not in (RunStatus.PAUSED, RunStatus.BUDGET_EXCEEDED):
            raise StoreError(f"run {run.id} is {run.status}; only a paused or budget-stopped run can be resumed")
        return self._queue(run, CommandKind.RESUME)

    def message(self, run_id: str, text: str) -> Done:
        """A message the agent reads at its next model boundary."""
        text = text.strip()
        if not text:
            raise StoreError("the message is empty")
        run = self.store.run(run_id)
        if run.status in RUN_FINAL:
            raise StoreError(f"run {run.id} is {run.status}; nobody would read the message")
        done = self._queue(run, CommandKind.NOTIFY, {"text": f"Message from the person supervising you: {text}"})
        return Done(done.command, f"message queued for run {run.id}: the agent reads it at its next model call")

    def rollbackable(self, run_id: str) -> Run:
        """The run, when it can be rolled back (asked before a confirmation); else a StoreError saying why."""
        from loopwright.runtime.runner import rollback_allowed

        return rollback_allowed(self.store.run(run_id))

    def rollback(self, run_id: str, to: str) -> Done:
        """Roll back to a checkpoint (number or sha): the run applies it, or it is done here for a stopped run."""
        from loopwright.runtime.runner import rollback
        from loopwright.workspaces.repository import WorkspaceError

        try:
            run, seq, sha, how = rollback(self.project, run_id, to=to, wait_seconds=0, by=self.by)
        except WorkspaceError as e:
            raise StoreError(f"cannot roll back run {run_id}: {e}") from None
        return Done(None, f"run {run.id} rolled back to checkpoint {seq} ({sha[:10]}): {how}")

    def merge(self, run_id: str) -> Done:
        """Merge now: a run kept for review is squash-merged by the daemon; a running one merges when accepted."""
        run = self.store.run(run_id)
        if run.status not in (RunStatus.NEEDS_REVIEW, RunStatus.RUNNING, RunStatus.PAUSED):
            raise StoreError(f"run {run.id} is {run.status}; only a run kept for review (or still going) can merge")
        return self._queue(run, CommandKind.MERGE)

    def keep(self, run_id: str) -> Done:
        """Keep for review: when accepted, the run's branch is kept instead of merged."""
        run = self.store.run(run_id)
        if run.status not in (RunStatus.RUNNING, RunStatus.PAUSED):
            raise StoreError(f"run {run.id} is {run.status}; only a run still going can be kept for review")
        return self._queue(run, CommandKind.KEEP)

    # -- tasks ---------------------------------------------------------------------------------

    def _task_command(self, task: Task, kind: CommandKind, args: dict) -> Done:
        pending = commands.pending_for_task(self.store, kind, task.id)
        if pending is not None and kind == CommandKind.CANCEL:
            return Done(None, f"cancel of task {task.id} is already queued (command {pending})")
        command = self.store.enqueue_command(None, kind, {"task": task.id, **args})
        return Done(command, f"{kind} queued for task {task.id}")

    def prioritise(self, task_id: int, priority: int) -> Done:
        task = self.store.task(task_id)
        if task.status != TaskStatus.QUEUED:
            raise StoreError(f"task {task.id} is {task.status}; only a queued task can be reprioritised")
        return self._task_command(task, CommandKind.PRIORITY, {"priority": int(priority)})

    def cancel(self, task_id: int) -> Done:
        task = self.store.task(task_id)
        if task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.PAUSED):
            raise StoreError(f"task {task.id} is {task.status}; there is nothing to cancel")
        return self._task_command(task, CommandKind.CANCEL, {})

    def post(self, goal: str, *, check: str | None = None, priority: int = 0, until: str | None = None,
             max_attempts: int | None = None) -> Task:
        """A new task in the queue (the same checks as `loopwright post`)."""
        from loopwright.runtime.posting import parse_request, post_task

        request = parse_request({"goal": goal, "check": check or None, "priority": priority, "until": until or None,
                                 "max_attempts": max_attempts})
        return post_task(self.project, request)
