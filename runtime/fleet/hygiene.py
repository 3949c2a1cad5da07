"""Worktree hygiene: removing finished runs' worktrees (`loopwright gc`, and the daemon after a delay), the
free-disk floor below which no new run starts, and a full disk, on which every run pauses and no task is posted."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from loopwright.memory.store import RUN_FINAL, Run
from loopwright.runtime.project import Project
from loopwright.workspaces.git import Workspace

DISK_FULL = "disk full"
FULL_MB = 5.0  # less free than this and the disk is full, whatever the floor: the store's writes may fail any moment


def free_mb(project: Project) -> float:
    """The free space where the store and the worktrees live (the least of the two)."""
    places = {project.dir if project.dir.exists() else project.root}
    if project.worktrees.exists():
        places.add(project.worktrees)
    return min(shutil.disk_usage(p).free for p in places) / 1e6


def disk_full(project: Project, *, failed: bool = False) -> str | None:
    """"disk full (N MB free)" when less than FULL_MB is free, or when a write `failed` for lack of space; else None."""
    free = free_mb(project)
    return f"{DISK_FULL} ({free:,.0f} MB free)" if free < FULL_MB or failed else None


def disk_room(project: Project) -> bool:
    """Whether runs paused by a full disk may go on: free space back above the floor (and well above full)."""
    return free_mb(project) >= max(project.config.workspace.min_free_disk_mb, 2 * FULL_MB)


def disk_floor(project: Project) -> str | None:
    """Why no new run may start for lack of disk, or None."""
    floor_mb = project.config.workspace.min_free_disk_mb
    free = free_mb(project)
    if free >= floor_mb:
        return None
    return (f"free disk {free:,.0f} MB is below the floor of {floor_mb:,.0f} MB (workspace.min_free_disk_mb): "
            f"no new run starts; free space or run `loopwright gc`")


def finished_worktrees(project: Project, *, ended_before: float | None = None) -> list[Run]:
    """Finished runs whose worktree still exists and no unfinished run shares (loop-until-done attempts do)."""
    runs = project.store.runs()
    in_use = {r.worktree for r in runs if r.status not in RUN_FINAL}
    return [r for r in runs if r.status in RUN_FINAL and r.worktree not in in_use and Path(r.worktree).exists()
            and (ended_before is None or (r.ended_at or 0) < ended_before)]


def deletes_branch(project: Project, run: Run) -> bool:
    policy = project.config.gc_keep_branches
    return policy == "none" or (policy == "unmerged" and bool(run.merge_commit))


def _workspace(project: Project, run: Run) -> Workspace:
    return Workspace.open(project.root, run.id, Path(run.worktree), run.branch, run.base_commit)


def worktree_bytes(project: Project, run: Run) -> int:
    """The bytes removing the run's worktree would free (`gc --dry-run`)."""
    return _workspace(project, run).disk_bytes()


def remove_worktree(project: Project, run: Run) -> int:
    """Remove the run's worktree (and its branch, as `gc_keep_branches` says); the bytes freed."""
    return _workspace(project, run).remove(delete_branch=deletes_branch(project, run))


def expired_worktrees(project: Project, now: float | None = None) -> list[Run]:
    """What the daemon removes now: worktrees of runs that ended more than `workspace.remove_after_seconds` ago."""
    delay = project.config.workspace.remove_after_seconds
    if delay is None:
        return []
    return finished_worktrees(project, ended_before=(time.time() if now is None else now) - delay)
