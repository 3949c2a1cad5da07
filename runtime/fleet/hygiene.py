"""Worktree hygiene: removing finished runs' worktrees (`loopwright gc`, and the daemon after a delay), orphaned
worktrees and run branches (`gc`, and the daemon's recovery), the CLI agents' per-run config folders no run can
resume with (`gc`), the free-disk floor below which no new run starts, and a full disk, on which every run pauses
and no task is posted."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from loopwright.memory import intents
from loopwright.memory.store import RUN_FINAL, Run
from loopwright.runtime.agents import agent_homes, home_run_id
from loopwright.runtime.project import Project
from loopwright.workspaces.git import Workspace
from loopwright.workspaces.repository import RUN_BRANCHES, discard, holds_nothing_new, tree_bytes, worktree_paths
from loopwright.workspaces.repository import run_branches as git_run_branches

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
    return policy == "none" or (policy == "unmerged" and (bool(run.merge_commit) or holds_nothing_new(
        project.root, run.branch, run.target_branch)))  # e.g. a run whose check passed with nothing to merge


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


def finished_agent_homes(project: Project) -> list[str]:
    """The runs whose copy of their CLI agent's config folder no resume needs: finished runs, and runs the store
    does not know (its `.loopwright` made anew)."""
    where = agent_homes(project.root)
    if not where.is_dir():
        return []
    status = {r.id: r.status for r in project.store.runs()}
    return sorted({run_id for run_id in map(home_run_id, where.iterdir())
                   if status.get(run_id) is None or status[run_id] in RUN_FINAL})


@dataclass(frozen=True)
class Orphan:
    """A worktree and/or run branch of `run_id` that no run owns and no live process is making."""

    run_id: str
    worktree: Path | None
    branch: str | None


def orphans(project: Project) -> list[Orphan]:
    """What a kill while a new run's worktree was being made leaves: worktrees in the project's worktrees folder that
    no run (of any status) names and no live process is making, with their `lw/` branch; and the branch alone of a
    run id a dead process claimed (killed before its worktree was added, or half-way through removing it).

    Another branch no run of this store names is left alone: a second checkout of the repository may be another
    project, with the same branches. Git is read before the store: a worktree is claimed in the store before git
    makes it, so one being made now is always seen claimed, or owned by its run."""
    where = project.worktrees.resolve()
    paths = {p.resolve() for p in worktree_paths(project.root) if p.resolve().parent == where}
    if where.is_dir():
        paths |= {p.resolve() for p in where.iterdir() if p.is_dir()}
    branches = set(git_run_branches(project.root))
    claims = intents.worktree_claims(project.store)  # before the runs: a claim ends as its run's row is written
    runs = project.store.runs()
    owned_paths = {Path(r.worktree).resolve() for r in runs}
    owned_branches = {r.branch for r in runs}
    found = {path.name: path for path in paths - owned_paths if not claims.get(path.name)}
    dead = {run_id for run_id, alive in claims.items() if not alive}
    result = []
    for run_id in sorted(set(found) | dead):
        branch = f"{RUN_BRANCHES}{run_id}"
        branch = branch if branch in branches and branch not in owned_branches else None
        if run_id in found or branch is not None:
            result.append(Orphan(run_id, found.get(run_id), branch))
    return result


def orphan_bytes(orphan: Orphan) -> int:
    """The bytes removing an orphan would free (its worktree's files; git's admin folder is small)."""
    return tree_bytes(orphan.worktree) if orphan.worktree is not None and orphan.worktree.exists() else 0


def remove_orphan(project: Project, orphan: Orphan) -> int:
    """Remove an orphaned worktree and its branch (a run that never had a row never made a checkpoint); the bytes
    freed."""
    freed = orphan_bytes(orphan)
    discard(project.root, orphan.worktree, orphan.branch)
    return freed
