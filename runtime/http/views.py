"""Messages and tasks as the HTTP API shows them (runtime/http/models.py describes the shapes)."""

from __future__ import annotations

import json
from typing import Any

from loopwright.harness.statuses import TASK_FINAL
from loopwright.memory import stream
from loopwright.memory.chat import Message, MessageState
from loopwright.memory.store import Store, StoreError
from loopwright.runtime.chat.threads import answer


def message(m: Message) -> dict[str, Any]:
    deleted = m.state == MessageState.DELETED
    return {"id": m.id, "thread": m.thread, "author": m.author, "author_name": m.author_name,
            "text": "" if deleted else m.text, "kind": m.kind, "state": m.state, "task_id": m.task_id,
            "reply_to": m.reply_to, "mentions": m.mentions, "created_at": m.ts, "edited": m.edited,
            "edited_at": m.updated_at if m.edited else None, "deleted": deleted}


def task(store: Store, task_id: int) -> dict[str, Any] | None:
    """The task and its newest run; None when there is no such task."""
    try:
        t = store.task(task_id)
    except StoreError:
        return None
    run = stream.last_run(store, task_id)
    view = None
    if run is not None:
        summary = answer(store, t) if t.status in TASK_FINAL else run["last_checkpoint"]
        view = {"status": run["status"], "checkpoints": run["checkpoints"], "cost_usd": run["cost_usd"],
                "last_summary": summary or None}
    return {"id": t.id, "status": t.status, "title": t.title, "reason": t.reason,
            "thread": stream.task_thread(store, task_id), "run": view}


def thread(info: dict, last_message_id: int | None) -> dict[str, Any]:
    return {"name": info["name"], "owner": info["owner"], "allow": json.loads(info["allow"]) if info["allow"] else None,
            "mode": info["mode"], "last_message_id": last_message_id}
