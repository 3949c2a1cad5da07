"""The head's actor: the store, written in order per run, and the questions workers ask of it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from loopwright.harness.budget import BudgetConfig, BudgetExceeded, check_run_limits
from loopwright.harness.retry import RetryPolicy
from loopwright.memory.store import Store, StoreError
from loopwright.runtime.config import FleetBudgetConfig, MemoryConfig, QuotaConfig
from loopwright.runtime.fleet.budget import FleetBudget
from loopwright.runtime.fleet.quota import StoreQuotaGate


class HeadService:
    """On the head node: applies the workers' batches to the store and answers their questions.

    One call at a time (a Ray actor's default), so the batches of one run land in the order sent.
    """

    def __init__(self, db_path: str, project_dir: str):

        self.store = Store(db_path)
        self.project_dir = Path(project_dir)
        self.applied: dict[str, int] = {}
        self._lessons: dict[str, Any] = {}

    def ping(self) -> str:
        return str(self.store.path)

    def sync(self, run_id: str, sender: str, seq: int, ops: list, take: bool, check: tuple | None):
        if seq > self.applied.get(sender, 0):  # a retried batch is applied once
            with self.store.transaction():
                for name, args, kwargs in ops:
                    self._apply(name, args, kwargs)
            self.applied[sender] = seq
        commands = self.store.take_commands(run_id) if take else []
        verdict = self._verdict(run_id, *check) if check is not None else None
        return commands, verdict

    def _apply(self, name: str, args: tuple, kwargs: dict) -> None:
        if name == "scratch_append":
            self.store.scratchpad(args[0]).append(args[1])
        elif name == "scratch_replace":
            self.store.scratchpad(args[0]).replace(args[1])
        elif name in ("append", "record_model_call", "update_run", "add_checkpoint", "finish_command"):
            getattr(self.store, name)(*args, **kwargs)
        else:
            raise ValueError(f"unknown store operation {name!r}")

    def _verdict(self, run_id: str, budget: BudgetConfig, fleet: FleetBudgetConfig) -> tuple[str, str] | None:
        """The checks the local call permit makes before a model call, on the store (the time limit is the
        worker's: its clock)."""
        if why := FleetBudget(self.store, fleet).exhausted():
            return ("fleet", why)
        try:
            check_run_limits(self.store.run(run_id), budget)
        except BudgetExceeded as e:
            return ("budget", str(e))
        return None

    def gate(self, op: str, key: str, config: QuotaConfig, policy: RetryPolicy, *args):
        gate = StoreQuotaGate(self.store, key, config, policy)
        if op == "row":
            row = gate._row()
            return dict(row) if row is not None else None
        if op == "take_slot":
            return gate._take_slot()
        if op == "close":
            return gate.close(*args)
        if op == "opened":
            gate._hits_seen = 1
            return gate.opened()
        raise ValueError(f"unknown gate operation {op!r}")

    def lessons(self, op: str, config: MemoryConfig, *args, **kwargs):
        from loopwright.memory.lesson_model import LessonError
        from loopwright.memory.lessons import Lessons

        key = config.model_dump_json()
        if key not in self._lessons:
            self._lessons[key] = Lessons(self.store, config)
        lessons = self._lessons[key]
        try:
            if op == "add":
                return True, lessons.project.add(*args, **kwargs)
            if op == "recall":
                return True, lessons.recall(*args, **kwargs)
            if op == "record_shown":
                return True, lessons.record_shown(*args, **kwargs)
        except LessonError as e:
            return False, str(e)
        raise ValueError(f"unknown lessons operation {op!r}")

    def fan_out(self, task_id: int, items: list[str], plan: str) -> tuple[bool, str, str | None]:
        """What `runtime.chat.FanOut` does, on the head's store."""
        from loopwright.runtime.chat.threads import fan_out

        task = self.store.task(task_id)
        chat = task.options.get("chat")
        if not chat or chat.get("parent"):
            return False, "fan_out works only for a chat request (and not inside a part of one)", None
        cap = int(chat.get("max_fanout", 10))
        items = [i.strip() for i in items if i.strip()]
        capped = len(items) > cap
        created = fan_out(self.store, task, items[:cap], plan)
        note = f" (capped: {len(items)} asked, at most {cap} run at once per request)" if capped else ""
        return True, f"started {len(created)} runs{note}", f"Split into {len(created)}: {plan}{note}"

    def parts(self, task_id: int) -> int:
        from loopwright.runtime.chat.threads import children

        return len(children(self.store, task_id))

    def artifact(self, run_id: str, kind: str, title: str, name: str | None, data, is_text: bool):
        from loopwright.memory.artifacts import ArtifactError, register, register_text

        root = self.project_dir / "artifacts"
        try:
            if is_text:
                art = register_text(self.store, root, run_id, data, kind=kind, title=title, name=name)
            else:
                with tempfile.TemporaryDirectory(prefix="lw-artifact-") as tmp:
                    source = Path(tmp) / (name or "artifact")
                    source.write_bytes(data)
                    art = register(self.store, root, run_id, source, kind=kind, title=title)
        except (ArtifactError, StoreError) as e:
            return False, str(e)
        return True, f"registered artifact {art.id}: {art.kind} '{art.title}' ({art.size:,} bytes)"
