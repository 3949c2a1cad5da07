"""A supervisor's actions (runtime/actions.py) as rows in the commands table, carried out by a real daemon."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import FINISH, FIX_ADD, call, git, turn, until, write_script

from loopwright.memory.store import StoreError
from loopwright.runtime.actions import Actions
from loopwright.runtime.project import open_project


def _actions(repo: Path) -> Actions:
    return Actions(open_project(repo, create=True))


def _slow(tmp_path: Path, name: str = "slow") -> Path:
    return write_script(tmp_path / f"{name}.json", [turn(call("shell", command="sleep 3")), FIX_ADD,
                                                   turn(call("shell", command="sleep 3")), FINISH])


def _commands(actions: Actions, kind: str) -> list:
    return actions.store.conn.execute("SELECT status, result FROM commands WHERE kind = ?", (kind,)).fetchall()


def test_queue_actions_reprioritise_and_cancel_through_the_daemon(repo, cli, daemon, tmp_path):
    actions = _actions(repo)
    first = cli.json(repo, "post", "slow one", "--script", _slow(tmp_path), "--check", "true")["task"]
    waiting = cli.json(repo, "post", "waits for the first", "--after", str(first), "--script",
                       _slow(tmp_path, "w"), "--check", "true")["task"]
    actions.prioritise(waiting, 7)
    assert actions.cancel(waiting).command is not None
    assert actions.cancel(waiting).command is None  # the second press queues nothing
    daemon(max_parallel=1)
    until(lambda: actions.store.task(waiting).status == "cancelled", "the cancel")
    assert actions.store.task(waiting).priority == 7
    assert [r[0] for r in _commands(actions, "cancel")] == ["done"]
    changes = [json.loads(r[0])["change"] for r in actions.store.conn.execute(
        "SELECT data FROM events WHERE type = 'task_updated' AND run_id IS NULL ORDER BY id")]
    assert changes == ["priority 0 -> 7", "cancelled (it had not started)"]
    with pytest.raises(StoreError, match="only a queued task"):
        actions.prioritise(waiting, 1)


def test_pause_message_resume_and_a_kill_pressed_five_times(repo, cli, daemon, tmp_path):
    actions = _actions(repo)
    script = write_script(tmp_path / "s.json", [turn(call("shell", command="sleep 2")),
                                                turn(call("shell", command="sleep 2"), expect="supervising you: hurry"),
                                                turn(call("shell", command="sleep 30"))])
    task = cli.json(repo, "post", "slow", "--script", script, "--check", "true")["task"]
    daemon()
    until(lambda: actions.store.runs(task_id=task), "the run to start")
    run_id = actions.store.runs(task_id=task)[0].id
    actions.message(run_id, "hurry")
    until(lambda: actions.store.events(run_id, types=("notice",)), "the message to be delivered")
    for _ in range(5):
        actions.kill(run_id)
    assert len(_commands(actions, "kill")) == 1
    until(lambda: actions.store.run(run_id).status == "killed", "the kill", timeout=60)
    with pytest.raises(StoreError, match="killed already"):
        actions.kill(run_id)


def test_keep_then_merge_now_of_a_run_kept_for_review(repo, cli, daemon, tmp_path):
    actions = _actions(repo)
    task = cli.json(repo, "post", "fix add", "--script", _slow(tmp_path), "--check", "true")["task"]
    daemon()
    until(lambda: actions.store.runs(task_id=task), "the run to start")
    run_id = actions.store.runs(task_id=task)[0].id
    actions.keep(run_id)
    until(lambda: actions.store.run(run_id).status == "succeeded", "the run to be accepted", timeout=60)
    assert "kept" in actions.store.run(run_id).reason
    assert "return a - b" in (repo / "calc.py").read_text()  # kept, not merged

    other = cli.json(repo, "post", "fix add, for review", "--script",
                     write_script(tmp_path / "r.json", [FIX_ADD, FINISH]))["task"]  # no check: kept for review
    until(lambda: actions.store.task(other).status == "needs_review", "the review state", timeout=60)
    review = actions.store.runs(task_id=other)[0].id
    assert actions.merge(review).command is not None
    until(lambda: actions.store.run(review).status == "succeeded", "the merge", timeout=30)
    assert "merged by hand into main" in actions.store.run(review).reason
    assert "return a + b" in git(repo, "show", "main:calc.py")
    with pytest.raises(StoreError, match="only a run kept for review"):
        actions.merge(review)


def test_actions_refuse_what_cannot_be_done_in_one_line(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FINISH])
    (repo / "loopwright.toml").write_text(f'provider = "scripted"\nscript = "{script}"\n')
    actions = _actions(repo)
    with pytest.raises(StoreError, match="no run"):
        actions.pause("nope")
    task = cli.json(repo, "post", "queued", "--check", "true")["task"]
    actions.store.set_task_status(task, "failed")
    with pytest.raises(StoreError, match="nothing to cancel"):
        actions.cancel(task)
    with pytest.raises(Exception, match="goal is empty"):
        actions.post("   ")
    posted = actions.post("a new task", priority=3, until="true", max_attempts=2)
    assert posted.status == "queued" and posted.priority == 3 and posted.options["max_attempts"] == 2


def test_a_run_takes_only_its_own_commands_and_a_kill_queued_while_stopped_is_obeyed(repo, cli, tmp_path):
    (repo / "loopwright.toml").write_text("[budget]\nmax_turns = 1\n")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    first = cli.json(repo, "run", "fix add", "--check", "false", "--script", script)
    assert first["status"] == "budget_exceeded"
    actions = _actions(repo)
    store = actions.store
    keep = store.enqueue_command(first["run"], "keep")
    kill = store.enqueue_command(first["run"], "kill", {"reason": "killed while it was stopped"})
    assert [c.kind for c in store.take_commands(first["run"])] == ["kill"]  # keep is the daemon's
    assert [c.id for c in store.pending_commands(first["run"])] == [keep]
    store.conn.execute("UPDATE commands SET status = 'pending' WHERE id = ?", (kill,))
    (repo / "loopwright.toml").write_text("[budget]\nmax_turns = 5\n")
    resumed = cli.json(repo, "resume", first["run"])
    assert resumed["status"] == "killed" and "killed while it was stopped" in resumed["reason"]
