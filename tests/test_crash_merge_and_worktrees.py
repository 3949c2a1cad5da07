"""Issue 27, items 1 and 2: the daemon killed (kill -9) while a merge moves the target branch, and while a new
run's worktree is being made; real daemons, real git hooks, real kills."""

from __future__ import annotations

import signal
import sqlite3
import stat
from pathlib import Path

import pytest
from support import FINISH, FIX_ADD, git, processes, until, write_script
from test_daemon import post, wait_until_done

from loopwright.memory.intents import merge_intent
from loopwright.memory.store import Store
from loopwright.runtime.actions import Actions
from loopwright.runtime.project import open_project


def _hook_on_main(repo: Path, marker: Path, moved: bool) -> None:
    """Once, git waits 8 s in a hook as main moves (committed) or is about to (prepared, then refused); `marker` is
    made as it starts waiting, `<marker>.done` as it stops."""
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f"""#!/bin/sh
[ "$1" = {'committed' if moved else 'prepared'} ] || exit 0
grep -q ' refs/heads/main$' || exit 0
[ -e '{marker}' ] && exit 0
touch '{marker}'
sleep 8
touch '{marker}.done'
exit {0 if moved else 1}
""")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize("moved", [True, False], ids=["main-moved", "main-not-moved"])
def test_kill_9_in_the_middle_of_a_merge_merges_once(repo, cli, tmp_path, daemon, moved):
    """Killed after main moved but before the store heard (the merge is recognised by its commit), or after the
    user's checkout followed but before main moved (the merge is finished)."""
    marker = tmp_path / "hook-slept"
    _hook_on_main(repo, marker, moved)
    initial = git(repo, "rev-parse", "main")
    task = post(cli, repo, tmp_path, "m")
    d = daemon()
    until(marker.exists, "the merge to move main", timeout=60)
    d.stop(signal.SIGKILL)
    (begun,) = Store(repo / ".loopwright" / "state.db").runs(task_id=task)
    intent = merge_intent(Store(repo / ".loopwright" / "state.db"), begun.id)
    assert intent is not None and intent.onto == initial  # recorded before git moved
    if not moved:
        until(Path(f"{marker}.done").exists, "git to give up moving main", timeout=30)
        assert git(repo, "rev-parse", "main") == initial
    daemon()
    store = wait_until_done(repo, 1)
    merge = git(repo, "rev-parse", "main")
    assert merge == intent.commit  # finished, or recognised as done, by its commit
    assert git(repo, "log", "--format=%s", f"{initial}..main").splitlines() == ["loopwright: write m"]
    (run,) = store.runs(task_id=task)
    assert store.task(task).status == "succeeded" and run.status == "succeeded", run.reason
    merged = [e for _, _, e in store.events(run.id, types=("merged",))]
    assert [(e.target_branch, e.commit) for e in merged] == [("main", merge)]
    assert run.merge_commit == merge and run.reason == f"merged into main as {merge[:10]}"
    assert git(repo, "status", "--porcelain") == ""  # the user's checkout followed main
    removed = cli.json(repo, "gc")["removed"]
    assert [(r["run"], r["branch_deleted"]) for r in removed] == [(run.id, True)]  # gc: merged, branch goes
    assert git(repo, "branch", "--list", run.branch) == ""


@pytest.mark.parametrize("moved", [True, False], ids=["main-moved", "main-not-moved"])
def test_kill_9_in_the_middle_of_a_merge_by_hand_merges_once(repo, cli, tmp_path, daemon, moved):
    """The same for a run kept for review and merged by a person: the next daemon takes the merge command again."""
    script = write_script(tmp_path / "r.json", [FIX_ADD, FINISH])
    task = cli.json(repo, "post", "fix add, for review", "--script", script)["task"]  # no check: kept for review
    d = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.task(task).status == "needs_review", "the review state", timeout=60)
    (run,) = store.runs(task_id=task)
    marker = tmp_path / "hook-slept"
    _hook_on_main(repo, marker, moved)
    initial = git(repo, "rev-parse", "main")
    assert Actions(open_project(repo)).merge(run.id).command is not None
    until(marker.exists, "the merge to move main", timeout=60)
    d.stop(signal.SIGKILL)
    if not moved:
        until(Path(f"{marker}.done").exists, "git to give up moving main", timeout=30)
    daemon()
    until(lambda: store.run(run.id).status == "succeeded", "the merge", timeout=60)
    merge = git(repo, "rev-parse", "main")
    assert git(repo, "log", "--format=%s", f"{initial}..main").splitlines() == ["loopwright: fix add, for review"]
    merged = [e for _, _, e in store.events(run.id, types=("merged",))]
    assert [(e.target_branch, e.commit) for e in merged] == [("main", merge)]
    run = store.run(run.id)
    assert run.merge_commit == merge and run.reason == f"merged by hand into main as {merge[:10]}"
    assert git(repo, "status", "--porcelain") == ""
    assert [r[0] for r in store.conn.execute("SELECT status FROM commands WHERE kind = 'merge'")] == ["done"]


def _worktrees(repo: Path) -> list[str]:
    where = repo / ".loopwright" / "worktrees"
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


def test_kill_9_while_a_new_runs_worktree_is_made_leaves_nothing_behind(repo, cli, tmp_path, daemon, monkeypatch):
    cli(repo, "init")
    setup = "sleep 6.0127"
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__SETUP_COMMAND", setup)
    first = post(cli, repo, tmp_path, "w1")
    d = daemon()
    until(lambda: processes(setup), "the setup command of the first worktree", timeout=60)
    (making,) = _worktrees(repo)
    # while a live daemon makes it, the worktree is nobody's orphan: status does not count it, gc leaves it
    assert cli.json(repo, "status")["orphans"] == {"worktrees": 0, "branches": 0}
    assert cli.json(repo, "gc")["removed"] == []
    assert _worktrees(repo) == [making] and git(repo, "branch", "--list", f"lw/{making}")
    d.stop(signal.SIGKILL)

    assert cli.json(repo, "status")["orphans"] == {"worktrees": 1, "branches": 1}
    code, out, _ = cli(repo, "status")
    assert code == 0 and "1 orphaned worktree, 1 orphaned branch" in out
    dry = cli.json(repo, "gc", "--dry-run")
    assert [(r["run"], r["orphan"], r["branch_deleted"]) for r in dry["would_remove"]] == [(making, True, True)]
    assert _worktrees(repo) == [making]
    done = cli.json(repo, "gc")
    assert [(r["run"], r["orphan"], r["branch_deleted"]) for r in done["removed"]] == [(making, True, True)]
    assert _worktrees(repo) == [] and git(repo, "branch", "--list", "lw/*") == ""
    assert cli.json(repo, "status")["orphans"] == {"worktrees": 0, "branches": 0}

    # killed again while the requeued task's worktree is made: this time the next daemon's recovery removes it
    setup = "sleep 6.0128"  # the first one may still be running: it outlives the daemon (issue 27, item 3)
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__SETUP_COMMAND", setup)
    d = daemon()
    until(lambda: processes(setup), "the setup command of the second worktree", timeout=60)
    (making,) = _worktrees(repo)
    d.stop(signal.SIGKILL)
    monkeypatch.delenv("LOOPWRIGHT_WORKSPACE__SETUP_COMMAND")
    daemon()
    store = wait_until_done(repo, 1)
    (run,) = store.runs(task_id=first)
    assert store.task(first).status == "succeeded" and run.id != making
    log = (tmp_path / "daemon.log").read_text()
    assert f"removed the orphaned worktree and branch of run {making}" in log
    assert making not in _worktrees(repo) and git(repo, "branch", "--list", f"lw/{making}") == ""
    assert cli.json(repo, "status")["orphans"] == {"worktrees": 0, "branches": 0}
    store = Store(repo / ".loopwright" / "state.db")
    assert [r.id for r in store.runs()] == [run.id]


def _sleep_once_as_a_run_branch_moves(repo: Path, marker: Path, match: str) -> None:
    """Once, git waits 8 s in a hook after a ref update whose lines (stdin) `match` (a shell filter) was committed;
    `marker` is made as it starts waiting."""
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.write_text(f"""#!/bin/sh
[ "$1" = committed ] || exit 0
{match} || exit 0
[ -e '{marker}' ] && exit 0
touch '{marker}'
sleep 8
""")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


def test_kill_9_after_the_run_branch_was_made_before_its_worktree(repo, cli, tmp_path, daemon):
    git(repo, "branch", "lw/elsewhere")  # no run of this project's names it: another checkout's project may own it
    marker = tmp_path / "hook-slept"
    _sleep_once_as_a_run_branch_moves(repo, marker, "grep -q ' refs/heads/lw/'")
    task = post(cli, repo, tmp_path, "b")
    d = daemon()
    until(marker.exists, "the run branch to be made", timeout=60)
    d.stop(signal.SIGKILL)
    (made,) = set(git(repo, "branch", "--list", "--format=%(refname:short)", "lw/*").split()) - {"lw/elsewhere"}
    assert _worktrees(repo) == []
    assert cli.json(repo, "status")["orphans"] == {"worktrees": 0, "branches": 1}
    code, out, _ = cli(repo, "gc")
    assert code == 0 and f"removed branch {made}" in out
    assert git(repo, "branch", "--list", "--format=%(refname:short)", "lw/*").split() == ["lw/elsewhere"]
    daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    assert cli.json(repo, "status")["orphans"] == {"worktrees": 0, "branches": 0}


def test_kill_9_after_a_checkpoint_commit_before_its_row_keeps_the_checkpoint(repo, cli, tmp_path, daemon):
    """The run's branch moved to a checkpoint but the store never heard: the resumed run records it."""
    marker = tmp_path / "hook-slept"
    # the first update of a run branch that is not its creation: a checkpoint
    _sleep_once_as_a_run_branch_moves(repo, marker, "grep -v '^0* ' | grep -q ' refs/heads/lw/'")
    task = post(cli, repo, tmp_path, "c")
    d = daemon()
    until(marker.exists, "a checkpoint to move the run branch", timeout=60)
    d.stop(signal.SIGKILL)
    store = Store(repo / ".loopwright" / "state.db")
    (run,) = store.runs(task_id=task)
    moved_to = git(repo, "rev-parse", run.branch)
    assert moved_to not in [c.sha for c in store.checkpoints(run.id)]  # the hole
    daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    assert moved_to in [c.sha for c in store.checkpoints(run.id)]


def test_a_crash_after_the_merge_before_the_runs_status_ends_the_run_without_a_model_call(repo, cli, tmp_path):
    """Killed after the merge and the finish's answer were stored, before the run's status was (seen in the kill
    torture): the resumed run ends as succeeded from the merge it made. The agent is not asked to go on (the script
    has no turn for it; a real model's further work would never be merged) and main is merged into once."""
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    first = cli.json(repo, "run", "fix add", "--check", "true", "--script", script)
    db = repo / ".loopwright" / "state.db"
    (run,) = Store(db).runs()
    assert first["status"] == "succeeded" and run.merge_commit
    merged_main = git(repo, "rev-parse", "main")
    with sqlite3.connect(db) as conn:  # the rows a kill leaves between the finish's answer and the status
        conn.execute("UPDATE runs SET status = 'running', owner_pid = NULL WHERE id = ?", (run.id,))  # its owner died
        conn.execute("UPDATE tasks SET status = 'running' WHERE id = ?", (run.task_id,))
    code, out, err = cli(repo, "resume", run.id)
    store = Store(db)
    resumed = store.run(run.id)
    assert resumed.status == "succeeded", (resumed.reason, out, err)
    assert store.task(run.task_id).status == "succeeded"
    assert git(repo, "rev-parse", "main") == merged_main  # not merged again
    assert len(store.events(run.id, types=("model_called",))) == 2  # the two turns of the first process only
