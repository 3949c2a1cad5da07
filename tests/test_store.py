"""The store: migrations, append-only events, guarded transitions, conversation replay, commands, O(1) appends."""

import json
import multiprocessing
import sqlite3
import time

import pytest
from pydantic import ValidationError
from support import claim_run_in_child, fill

from loopwright.harness.events import ConversationReset, MessageAdded, ModelCalled, Notice, parse_event
from loopwright.harness.messages import Message, TextBlock, Usage
from loopwright.harness.statuses import RUN_TRANSITIONS, TASK_TRANSITIONS, CommandKind, RunStatus, TaskStatus
from loopwright.memory.database import disk_full_error
from loopwright.memory.store import SCHEMA_VERSION, Store, StoreError


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "state.db")
    yield s
    s.close()


def _run(store):
    task = store.create_task("fix the parser\nwith details", check="pytest -q")
    return task, store.create_run(task.id, provider="scripted", model="m", worktree="/w", branch="lw/x",
                                  base_commit="abc", target_branch="main")


def test_wal_and_schema_version(store, tmp_path):
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.schema_version == SCHEMA_VERSION
    store.close()
    again = Store(tmp_path / "state.db")  # reopening does not re-run migrations
    assert again.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "state.db")
    conn.execute("PRAGMA user_version = 999")
    conn.close()
    with pytest.raises(StoreError, match="newer than this loopwright"):
        Store(tmp_path / "state.db")


def test_events_are_append_only(store):
    _, run = _run(store)
    store.append(run.id, Notice(text="hello"))
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("UPDATE events SET data = '{}'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.conn.execute("DELETE FROM events")
    kinds = [e.type for _, _, e in store.events(run.id)]
    assert kinds == ["notice"]


def test_events_are_frozen_and_round_trip(store):
    event = Notice(text="x")
    with pytest.raises(ValidationError):
        event.text = "y"  # type: ignore[misc]
    assert parse_event(event.model_dump_json()) == event


def test_task_title_and_run_prefix_lookup(store):
    task, run = _run(store)
    assert task.title == "fix the parser"
    assert store.run(run.id[:4]).id == run.id
    with pytest.raises(StoreError, match="no run"):
        store.run("zzzz")


def test_guarded_transition_only_once(store):
    task, run = _run(store)
    assert store.transition_run(run.id, "paused", only_from=("running",), reason="Ctrl-C")
    assert not store.transition_run(run.id, "paused", only_from=("running",))
    assert store.task(task.id).status == "paused"
    kinds = [(e.status, e.reason) for _, _, e in store.events(run.id, types=("status",))]
    assert kinds == [("paused", "Ctrl-C")]


def test_the_transition_table_refuses_a_move_it_does_not_allow(store):
    task, run = _run(store)
    # a finished run does not start again, even when the caller would allow it
    assert store.transition_run(run.id, RunStatus.SUCCEEDED, only_from=(RunStatus.RUNNING,))
    assert not store.transition_run(run.id, RunStatus.PAUSED, only_from=tuple(RunStatus))
    assert not store.claim_run(run.id, only_from=tuple(RunStatus))
    assert store.run(run.id).status == RunStatus.SUCCEEDED and store.task(task.id).status == "succeeded"
    # a task's own moves: a running task is not cancelled (its run is killed instead), a queued one is
    assert not store.set_task_status(task.id, TaskStatus.CANCELLED)
    queued = store.create_task("later")
    assert store.set_task_status(queued.id, TaskStatus.CANCELLED, reason="not needed")
    assert not store.set_task_status(queued.id, TaskStatus.RUNNING)
    assert not store.claim_task(queued.id)
    # every target's statuses are real ones; the stored strings and JSON are the plain words
    assert all(set(froms) <= set(RunStatus) for froms in RUN_TRANSITIONS.values())
    assert all(set(froms) <= set(TaskStatus) for froms in TASK_TRANSITIONS.values())
    assert store.conn.execute("SELECT status FROM tasks WHERE id = ?", (queued.id,)).fetchone()[0] == "cancelled"
    assert json.loads(store.task(queued.id).model_dump_json())["status"] == "cancelled"
    assert f"{RunStatus.NEEDS_REVIEW}" == "needs_review" and json.dumps([CommandKind.KILL]) == '["kill"]'


def test_two_processes_cannot_both_transition(tmp_path):
    s = Store(tmp_path / "state.db")
    _, run = _run(s)
    q = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=claim_run_in_child,
                                                          args=(tmp_path / "state.db", run.id, q))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results == [False, False, False, True]


def test_conversation_replays_from_last_reset(store):
    _, run = _run(store)
    store.append(run.id, ConversationReset(reason="start", messages=[Message.user("task")]))
    store.append(run.id, MessageAdded(message=Message(role="assistant", content=[TextBlock(text="a1")])))
    store.append(run.id, ConversationReset(reason="compaction", messages=[Message.user("task + note")]))
    store.append(run.id, MessageAdded(message=Message(role="assistant", content=[TextBlock(text="a2")])))
    assert [m.text for m in store.conversation(run.id)] == ["task + note", "a2"]


def test_model_call_updates_counters_atomically(store):
    _, run = _run(store)
    call = ModelCalled(model="m", usage=Usage(input_tokens=100, output_tokens=7, cache_read_tokens=3), cost_usd=0.5,
                       stop_reason="end_turn", duration_ms=1.0)
    store.record_model_call(run.id, call, Message(role="assistant", content=[TextBlock(text="hi")]))
    r = store.run(run.id)
    assert (r.model_calls, r.input_tokens, r.output_tokens, r.cost_usd) == (1, 103, 7, 0.5)
    assert [e.type for _, _, e in store.events(run.id)] == ["model_called", "message"]


def test_model_call_writes_the_runs_progress_in_its_own_commit(store):
    _, run = _run(store)
    call = ModelCalled(model="m", usage=Usage(input_tokens=1, output_tokens=1), cost_usd=0.0, stop_reason="end_turn",
                       duration_ms=1.0)
    before = store.conn.total_changes
    store.record_model_call(run.id, call, None, progress={"step": 4, "last_action": "read_file a.py"})
    r = store.run(run.id)
    assert (r.model_calls, r.step, r.last_action) == (1, 4, "read_file a.py")
    assert store.conn.total_changes - before == 2  # the event and the run row: no separate progress update


def test_commands_are_taken_once(store):
    _, run = _run(store)
    store.enqueue_command(run.id, "notify", {"text": "a"})
    store.enqueue_command(run.id, "notify", {"text": "b"})
    taken = store.take_commands(run.id)
    assert [c.args["text"] for c in taken] == ["a", "b"]
    assert store.take_commands(run.id) == []


def test_scratchpad(store):
    _, run = _run(store)
    pad = store.scratchpad(run.id)
    assert pad.read() == ""
    pad.append("one")
    pad.append("two")
    assert pad.read() == "one\ntwo"
    pad.replace("fresh")
    assert pad.read() == "fresh"


def test_checkpoint_sequence(store):
    _, run = _run(store)
    assert store.add_checkpoint(run.id, sha="a" * 40, step=1, message="m1").seq == 1
    assert store.add_checkpoint(run.id, sha="b" * 40, step=3, message="m2").seq == 2
    assert [c.step for c in store.checkpoints(run.id)] == [1, 3]


def test_append_cost_does_not_grow_with_run_length(store):
    """Writing an event is one INSERT: the 20,000th costs about what the 1st did (a generous bound, not a timing)."""
    _, run = _run(store)

    def batch():
        t0 = time.perf_counter()
        for _ in range(500):
            store.append(run.id, Notice(text="x" * 200))
        return time.perf_counter() - t0

    first = min(batch() for _ in range(3))
    for _ in range(30):
        batch()
    last = min(batch() for _ in range(3))
    assert last < first * 3


def test_a_transaction_that_a_full_disk_stops_leaves_nothing_and_the_store_usable(small_disk):
    store = Store(small_disk / "state.db")
    task = store.create_task("before the disk filled")
    filler = fill(small_disk, 0)
    # SQLite rolls back on its own: at the COMMIT (a small write) or at the statement (one that spills to disk);
    # the error said is the disk's, and the connection is never left inside the transaction
    for size in (100_000, 3_000_000, 100_000):
        with pytest.raises(sqlite3.OperationalError) as failed, store.transaction():
            queued = store.create_task("x" * size)
            store.add_dependencies(queued.id, [task.id])
        assert str(failed.value) == "database or disk is full" and disk_full_error(failed.value)
        assert not store.conn.in_transaction
    filler.unlink()
    assert [t.title for t in store.tasks()] == ["before the disk filled"]
    assert store.conn.execute("SELECT count(*) FROM task_deps").fetchone()[0] == 0
    assert store.create_task("after").id == task.id + 1
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
