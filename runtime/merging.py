"""Merging a run into its target branch, one run of this process at a time."""

from __future__ import annotations

import threading

from loopwright.memory.store import Run, Task
from loopwright.workspaces.git import MergeResult, Workspace, WorkspaceError

# The runs of one process share the repository: worktrees are added and target branches moved one at a
# time (git's own lock files would make the losers fail). Another process moving the branch in between
# is retried.
GIT_LOCK = threading.Lock()
MERGE_ATTEMPTS = 3


def squash_merge(ws: Workspace, target: str, message: str) -> MergeResult:
    """Squash-merge the run's work into `target`; a target another process moved meanwhile is tried again."""
    for _ in range(MERGE_ATTEMPTS - 1):
        try:
            return ws.squash_merge(target, message, git_lock=GIT_LOCK)
        except WorkspaceError as e:
            if "moved while merging" not in str(e):
                raise
    return ws.squash_merge(target, message, git_lock=GIT_LOCK)


def merge_message(task: Task, run: Run) -> str:
    return (f"loopwright: {task.title}\n\nTask {task.id}: {task.goal}\n\n"
            f"Loopwright-Task: {task.id}\nLoopwright-Run: {run.id}")
