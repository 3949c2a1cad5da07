"""Worktree hygiene under the daemon: finished worktrees removed after the delay; the free-disk floor."""

from __future__ import annotations

from pathlib import Path

from support import git, until
from test_daemon import post, wait_until_done


def test_finished_worktrees_are_removed_after_the_delay(repo, cli, tmp_path, daemon, monkeypatch):  # noqa: F811
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__REMOVE_AFTER_SECONDS", "1")
    cli(repo, "init")
    task = post(cli, repo, tmp_path, "a")
    d = daemon()
    store = wait_until_done(repo, 1)
    run = store.runs(task_id=task)[0]
    assert store.task(task).status == "succeeded"
    log = tmp_path / "daemon.log"
    until(lambda: f"removed the worktree of run {run.id}" in log.read_text(), "the worktree to be removed", timeout=20)
    assert not Path(run.worktree).exists()
    assert run.branch not in git(repo, "branch", "--list")  # merged, and gc_keep_branches = unmerged
    assert "a.txt" in git(repo, "ls-tree", "--name-only", "main")  # the work itself is kept
    d.stop()


def test_no_new_run_starts_below_the_free_disk_floor(repo, cli, tmp_path, daemon, monkeypatch):  # noqa: F811
    cli(repo, "init")
    task = post(cli, repo, tmp_path, "b")
    monkeypatch.setenv("LOOPWRIGHT_WORKSPACE__MIN_FREE_DISK_MB", "1000000000000")
    d = daemon()
    log = tmp_path / "daemon.log"
    until(lambda: "below the floor" in log.read_text(), "the daemon to say the disk floor holds it")
    code, out, _ = cli(repo, "status")
    assert code == 0 and "held: free disk" in out and "min_free_disk_mb" in out
    assert cli.json(repo, "tasks")[0]["status"] == "queued"
    d.stop()
    monkeypatch.delenv("LOOPWRIGHT_WORKSPACE__MIN_FREE_DISK_MB")
    d = daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    d.stop()
