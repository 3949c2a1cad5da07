"""Merging a run into its target branch, one run of this process at a time, as an intent recorded before git moves."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loopwright.memory import intents
from loopwright.memory.store import Run, Store, Task
from loopwright.workspaces.git import MergeResult, SquashPlan, Workspace, land_together
from loopwright.workspaces.repository import WorkspaceError


class GitLock:
    """Held while a worktree is added or a target branch moved: the runs share the repository, and git's own lock
    files would make the losers fail. One thread of this process holds it at a time and, once `share`d through a
    lock file, one process of those sharing that file (a daemon and its worker processes). Another process moving
    a branch in between is retried (`squash_merge`)."""

    def __init__(self) -> None:
        self._thread = threading.Lock()
        self._fd: int | None = None

    def share(self, path: Path | None) -> None:
        """Also lock `path` (an flock, so a killed holder releases it) from now on; None: this process alone."""
        with self._thread:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if path is not None:
                self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def __enter__(self) -> GitLock:
        self._thread.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread.release()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()


GIT_LOCK = GitLock()
MERGE_ATTEMPTS = 3


def merge_run(store: Store, ws: Workspace, task: Task, run: Run) -> MergeResult:
    """Squash-merge the run into its target branch and record it (its `merged` event and merge commit) once.

    The squash commit is recorded in the store before the target moves, so a merge a kill cut short is finished
    here, or recognised as done by that commit, instead of being found to have nothing to merge. It runs in a
    worker thread, so it writes through a connection of its own: a transaction open on the caller's connection
    in another thread must neither take in nor lose these writes."""
    own = Store(store.path)
    try:
        return _merge_run(own, ws, task, run)
    finally:
        own.close()


def _merge_run(store: Store, ws: Workspace, task: Task, run: Run) -> MergeResult:
    merged = store.events(run.id, types=("merged",))
    if merged:  # recorded already (a kill came after): not merged again
        done = merged[-1][2]
        return MergeResult("merged", done.commit, f"{done.target_branch} is at {done.commit[:10]}")
    intent = intents.merge_intent(store, run.id)
    merge = None
    if intent is not None:
        merge = ws.finish_merge(intent.target_branch, intent.onto, intent.commit, git_lock=GIT_LOCK)
    if merge is None:
        def begin(onto: str, commit: str) -> None:
            intents.record_merge_intent(store, run.id, run.target_branch, onto, commit)

        try:
            merge = squash_merge(ws, run.target_branch, merge_message(task, run), before_move=begin)
        except WorkspaceError:
            intents.drop_merge_intent(store, run.id)  # the target did not move
            raise
    if merge.status == "merged":
        intents.record_merged(store, run.id, run.target_branch, merge.commit or "")
    else:
        intents.drop_merge_intent(store, run.id)
    return merge


def squash_merge(ws: Workspace, target: str, message: str,
                 before_move: Callable[[str, str], None] | None = None) -> MergeResult:
    """Squash-merge the run's work into `target` (with the other runs of this process merging into it at the same
    time: `MergeTrain`); a target another process moved meanwhile is tried again."""
    for _ in range(MERGE_ATTEMPTS - 1):
        try:
            return TRAIN.merge(ws, target, message, before_move)
        except WorkspaceError as e:
            if "moved while merging" not in str(e):
                raise
    return TRAIN.merge(ws, target, message, before_move)


@dataclass
class _Rider:
    plan: SquashPlan
    before_move: Callable[[str, str], None] | None
    result: MergeResult | Exception | None = None


class MergeTrain:
    """The runs of this process that merge into one target at the same time take the git lock once between them.

    Each works its merge out before the lock (a conflict, or nothing to merge, needs no lock) and waits in line;
    whichever thread gets the lock lands every run waiting then (`land_together`: each squashed onto the one
    before, one checkout update and one branch move for all), and the others find theirs done when the lock
    comes to them. A fleet whose runs finish together then moves the branch once per train instead of once per
    run, each move several git processes under the lock."""

    def __init__(self) -> None:
        self._line = threading.Lock()
        self._waiting: dict[tuple[str, str], list[_Rider]] = {}

    def merge(self, ws: Workspace, target: str, message: str,
              before_move: Callable[[str, str], None] | None) -> MergeResult:
        plan = ws.plan_squash(target, message)
        if isinstance(plan, MergeResult):
            return plan
        rider = _Rider(plan, before_move)
        key = (str(ws.root), plan.target_branch)
        with self._line:
            self._waiting.setdefault(key, []).append(rider)
        with GIT_LOCK:
            with self._line:
                train = self._waiting.pop(key, [])
            if train:
                results = land_together([(r.plan, r.before_move) for r in train])
                for r, result in zip(train, results, strict=True):
                    r.result = result
        # in this train, or in one a thread that had the lock before landed
        assert rider.result is not None, "a rider waits in line until a holder of the lock lands it"
        if isinstance(rider.result, Exception):
            raise rider.result
        return rider.result


TRAIN = MergeTrain()


def merge_message(task: Task, run: Run) -> str:
    return (f"loopwright: {task.title}\n\nTask {task.id}: {task.goal}\n\n"
            f"Loopwright-Task: {task.id}\nLoopwright-Run: {run.id}")
