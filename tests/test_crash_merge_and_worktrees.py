"""Issue 27, items 1 and 2: the daemon killed (kill -9) while a merge moves the target branch, and while a new
run's worktree is being made; real daemons, real git hooks, real kills."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import pytest
from support import git, until
from test_daemon import post, wait_until_done

from loopwright.memory.intents import merge_intent
from loopwright.memory.store import Store


@pytest.mark.parametrize("moved", [True, False], ids=["main-moved", "main-not-moved"])
def test_kill_9_in_the_middle_of_a_merge_merges_once(repo, cli, tmp_path, daemon, moved):
    """Killed after main moved but before the store heard (the merge is recognised by its commit), or after the
    user's checkout followed but before main moved (the merge is finished)."""
    marker = tmp_path / "hook-slept"
    hook = repo / ".git" / "hooks" / "reference-transaction"
    # once, git waits 8 s in the hook as main moves (committed) or is about to (prepared, then refused): the daemon
    # is killed meanwhile
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
