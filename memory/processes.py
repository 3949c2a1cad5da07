"""The `tool_processes` table: the process groups a run's commands started that may still be alive.

What a group is and how one is ended safely is harness/processes.py's; these are its reads and writes.
"""

from __future__ import annotations

from loopwright.harness.processes import ProcessGroup
from loopwright.memory.store import Store


class ToolProcesses:
    """One run's `ProcessLedger` in the store."""

    def __init__(self, store: Store, run_id: str):
        self.store, self.run_id = store, run_id

    def started(self, group: ProcessGroup) -> None:
        self.store.conn.execute(
            "INSERT OR REPLACE INTO tool_processes (run_id, pgid, leader_start, boot_id) VALUES (?, ?, ?, ?)",
            (self.run_id, group.pgid, group.leader_start, group.boot_id))

    def ended(self, group: ProcessGroup) -> None:
        self.store.conn.execute("DELETE FROM tool_processes WHERE run_id = ? AND pgid = ? AND leader_start = ?",
                                (self.run_id, group.pgid, group.leader_start))

    def recorded(self) -> list[ProcessGroup]:
        rows = self.store.conn.execute(
            "SELECT pgid, leader_start, boot_id FROM tool_processes WHERE run_id = ? ORDER BY pgid",
            (self.run_id,)).fetchall()
        return [ProcessGroup(pgid, start, boot) for pgid, start, boot in rows]
