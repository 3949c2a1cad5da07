"""What is recorded before a step a kill could cut in half, so that recovery can finish or undo it: a new run's
worktree being made (claimed by its process before git makes it; the claim ends when the run's row is written) and
a merge begun (its squash commit recorded before the target branch moves).

How recovery uses them is runtime/merging.py's and runtime/fleet/hygiene.py's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loopwright.harness.events import Merged
from loopwright.memory.store import Store, owner, owner_alive

# -- worktrees being made --------------------------------------------------------------------------------------


def claim_worktree(store: Store, run_id: str) -> None:
    """This process is about to make the worktree and branch of `run_id` (before its run row exists)."""
    store.conn.execute("INSERT OR REPLACE INTO worktree_claims (run_id, owner_pid, owner_host, owner_boot, created_at)"
                       " VALUES (?, ?, ?, ?, ?)", (run_id, *owner(), time.time()))


def release_worktree(store: Store, run_id: str) -> None:
    """The claim ends without a run (the worktree could not be made, or what is left of it is removed)."""
    store.conn.execute("DELETE FROM worktree_claims WHERE run_id = ?", (run_id,))


def worktree_claims(store: Store) -> dict[str, bool]:
    """The run ids whose worktree is being made, each with whether the process making it is alive."""
    rows = store.conn.execute("SELECT run_id, owner_pid, owner_host, owner_boot FROM worktree_claims").fetchall()
    return {r[0]: owner_alive(r[1], r[2], r[3]) for r in rows}


def drop_dead_claims(store: Store) -> None:
    """Forget the claims of processes that died: they protect nothing (what they left is an orphan either way)."""
    for run_id, alive in worktree_claims(store).items():
        if not alive:
            release_worktree(store, run_id)


# -- merges begun ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MergeIntent:
    run_id: str
    target_branch: str
    onto: str  # the target's head the squash commit was made on
    commit: str  # the squash commit the target moves to


def record_merge_intent(store: Store, run_id: str, target_branch: str, onto: str, commit: str) -> None:
    """The run's merge is about to move `target_branch` from `onto` to `commit` (a later attempt replaces it)."""
    store.conn.execute("INSERT OR REPLACE INTO merge_intents (run_id, target_branch, onto, commit_sha, created_at)"
                       " VALUES (?, ?, ?, ?, ?)", (run_id, target_branch, onto, commit, time.time()))


def merge_intent(store: Store, run_id: str) -> MergeIntent | None:
    """The run's merge that began and was not recorded as done (or as given up), if any."""
    row = store.conn.execute("SELECT run_id, target_branch, onto, commit_sha FROM merge_intents WHERE run_id = ?",
                             (run_id,)).fetchone()
    return None if row is None else MergeIntent(*row)


def drop_merge_intent(store: Store, run_id: str) -> None:
    """The merge did not move the target (a conflict, nothing to merge, git refused): nothing is left to finish."""
    store.conn.execute("DELETE FROM merge_intents WHERE run_id = ?", (run_id,))


def record_merged(store: Store, run_id: str, target_branch: str, commit: str) -> None:
    """The merge is done: its `merged` event and the run's merge commit, at once, and its intent ends."""
    with store.transaction() as conn:
        store.append(run_id, Merged(target_branch=target_branch, commit=commit))
        conn.execute("UPDATE runs SET merge_commit = ?, heartbeat_at = ? WHERE id = ?", (commit, time.time(), run_id))
        conn.execute("DELETE FROM merge_intents WHERE run_id = ?", (run_id,))
