"""What one run's memory tools work on: the store, the run and task, the lessons and the artifacts folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwright.memory.store import Store


@dataclass
class RunMemory:
    store: Store | None  # None on a Ray worker: the store is the head's (its artifact and fan_out tools ask the head)
    run_id: str
    task_id: int
    artifacts_root: Path  # <project>/.loopwright/artifacts; a run's files go in <artifacts_root>/<run_id>/
    lessons: Any = None  # memory.lessons.Lessons (project and global lessons), None when memory is off
