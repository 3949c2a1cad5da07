"""What is recorded before a step a kill could cut in half, so that recovery can finish or undo it: a merge begun
(its squash commit recorded before the target branch moves).

How recovery uses it is runtime/merging.py's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from loopwright.harness.events import Merged
from loopwright.memory.store import Store

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
    """The merge did not move the target (a conflict, nothing to merge): nothing is left to finish."""
    store.conn.execute("DELETE FROM merge_intents WHERE run_id = ?", (run_id,))


def record_merged(store: Store, run_id: str, target_branch: str, commit: str) -> None:
    """The merge is done: its `merged` event and the run's merge commit, at once, and its intent ends."""
    with store.transaction() as conn:
        store.append(run_id, Merged(target_branch=target_branch, commit=commit))
        conn.execute("UPDATE runs SET merge_commit = ?, heartbeat_at = ? WHERE id = ?", (commit, time.time(), run_id))
        conn.execute("DELETE FROM merge_intents WHERE run_id = ?", (run_id,))
