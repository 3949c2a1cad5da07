"""The process groups a run's commands start, named so that another process can end them after a crash.

A shell tool's command runs in a process group of its own (its own session, jail included). If the daemon
dies (kill -9), nothing ends that group: it keeps running and writing into the worktree. So each group is
recorded when it starts (`ProcessLedger.started`, kept in the store) and forgotten once nothing of it is
left (`ended`); before a run resumes, `end_group` kills what is recorded and waits for it to be gone.

A group is named by its id, the start time of its leader and the boot it ran in, so a pid reused since
(another boot, another machine, another process) is never killed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class ProcessGroup:
    pgid: int
    leader_start: int  # the leader's start time, in clock ticks after boot (field 22 of /proc/<pid>/stat)
    boot_id: str


class ProcessLedger(Protocol):
    """Where a run's process groups are recorded while they may be alive (the store, for a local run)."""

    def started(self, group: ProcessGroup) -> None: ...
    def ended(self, group: ProcessGroup) -> None: ...


@functools.cache
def boot_id() -> str:
    """This boot of this machine ('' where /proc does not say)."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), None if there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode(errors="replace")
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()  # the name may hold spaces and parentheses


def group_of(pid: int) -> ProcessGroup | None:
    """The group `pid` leads (a command started with `start_new_session`), None if it is gone already."""
    fields = _stat(pid)
    return ProcessGroup(pid, int(fields[19]), boot_id()) if fields else None


def members(pgid: int) -> list[int]:
    """The live (not zombie) processes in group `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return found


def end_group(group: ProcessGroup, timeout: float = 10.0) -> int | None:
    """SIGKILL what is left of `group` and wait until it is gone: how many live processes it had, or None if
    some would not die within `timeout`.

    Nothing is killed when the group is not this boot's, or its id now names another process: a pid is
    never reused while a group of that id has members, so a leader with another start time means the
    group is gone."""
    if group.boot_id != boot_id():
        return 0
    leader = _stat(group.pgid)
    if leader is not None and int(leader[19]) != group.leader_start:
        return 0
    found = len(members(group.pgid))
    deadline = time.monotonic() + timeout
    while members(group.pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group.pgid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return None
        time.sleep(0.02)
    return found
