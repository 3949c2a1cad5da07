"""The fleet: `loopwright serve` as a real subprocess running queued tasks in parallel from the store."""

from __future__ import annotations

import gc
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import (
    CHECK,
    FINISH,
    FIX_ADD,
    DaemonProcess,
    call,
    fill,
    git,
    loopwright_subprocess,
    needs_bwrap,
    processes,
    turn,
    until,
    write_script,
)

from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.messages import ToolResult
from loopwright.harness.script import Script
from loopwright.harness.statuses import CommandKind
from loopwright.memory.processes import ToolProcesses
from loopwright.memory.store import Store
from loopwright.runtime.fleet.daemon import GRACEFUL_STOP

TERMINAL = ("succeeded", "failed", "needs_review", "cancelled", "killed", "budget_exceeded")


def task_script(tmp_path: Path, name: str, *, sleep: float = 0) -> Path:
    steps = [turn(call("write_file", path=f"{name}.txt", content=name))]
    if sleep:
        steps.append(turn(call("shell", command=f"sleep {sleep}")))
    steps.append(turn(call("finish", summary=f"wrote {name}")))
    return write_script(tmp_path / f"{name}.json", steps)


def post(cli, repo: Path, tmp_path: Path, name: str, *extra: str, sleep: float = 0) -> int:
    script = task_script(tmp_path, name, sleep=sleep)
    out = cli.json(repo, "post", f"write {name}", "--script", script, "--check", f"test -f {name}.txt", *extra)
    return out["task"]


def wait_until_done(repo: Path, count: int, timeout: float = 120) -> Store:
    store = Store(repo / ".loopwright" / "state.db")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = store.tasks()
        if len(tasks) == count and all(t.status in TERMINAL for t in tasks):
            return store
        time.sleep(0.2)
    raise AssertionError(f"not done: {[(t.id, t.status, t.reason) for t in store.tasks()]}")


def test_posting_without_a_daemon_queues_and_status_says_so(repo, cli, tmp_path):
    task = post(cli, repo, tmp_path, "a")
    code, out, _ = cli(repo, "post", "x", "--script", task_script(tmp_path, "b"))
    assert code == 0 and "no daemon is running" in out
    status = cli.json(repo, "status")
    assert status["daemon"] is None and status["tasks"] == {"queued": 2} and status["active_runs"] == []
    assert [t["task"] for t in cli.json(repo, "tasks")] == [task, task + 1]


def test_unknown_dependency_is_refused_and_nothing_is_queued(repo, cli, tmp_path):
    code, _, err = cli(repo, "post", "x", "--script", task_script(tmp_path, "a"), "--after", "42")
    assert code == 2 and "there is no task 42" in err and err.count("\n") == 1
    assert cli.json(repo, "tasks") == []


def test_a_second_daemon_says_which_pid_holds_the_project(repo, cli, daemon):
    cli(repo, "init")
    first = daemon()
    second = subprocess.run([sys.executable, "-m", "loopwright.cli.main", "serve"], cwd=repo, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode == 2
    assert f"a daemon already runs for this project (pid {first.proc.pid})" in second.stderr
    assert cli.json(repo, "status")["daemon"] == first.proc.pid
    assert first.stop() == 0
    assert cli.json(repo, "status")["daemon"] is None


def test_twenty_tasks_with_priorities_and_dependencies(repo, cli, tmp_path, daemon):
    ids = {}
    for i in range(20):
        extra = ["--priority", str(i % 3)]
        if i >= 5:
            extra += ["--after", str(ids[i - 5])]  # five chains of four
        ids[i] = post(cli, repo, tmp_path, f"t{i}", *extra)
    daemon(max_parallel=4)
    store = wait_until_done(repo, 20)
    tasks = store.tasks()
    assert [t.status for t in tasks] == ["succeeded"] * 20, [(t.id, t.reason) for t in tasks]
    runs = {t.id: store.runs(task_id=t.id) for t in tasks}
    assert all(len(r) == 1 for r in runs.values())  # each task ran exactly once
    for i in range(5, 20):
        dep, me = runs[ids[i - 5]][0], runs[ids[i]][0]
        assert me.started_at >= dep.ended_at, f"t{i} started before its dependency finished"
    spans = sorted((r[0].started_at, r[0].ended_at) for r in runs.values())
    most = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert most <= 4
    assert sorted(p.name for p in repo.glob("t*.txt")) == sorted(f"t{i}.txt" for i in range(20))
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sum(m.startswith("loopwright: write t") for m in merges) == 20  # every merge once


def test_priority_then_fifo_with_one_slot(repo, cli, tmp_path, daemon):
    low = post(cli, repo, tmp_path, "low")
    high = post(cli, repo, tmp_path, "high", "--priority", "5")
    mid = post(cli, repo, tmp_path, "mid", "--priority", "1")
    low2 = post(cli, repo, tmp_path, "low2")
    daemon(max_parallel=1)
    store = wait_until_done(repo, 4)
    order = [r.task_id for r in sorted(store.runs(), key=lambda r: r.started_at)]
    assert order == [high, mid, low, low2]


def test_failed_dependency_fails_the_dependent_with_the_reason(repo, cli, tmp_path, daemon):
    bad = write_script(tmp_path / "bad.json", [turn(call("finish", summary="nothing"))])
    first = cli.json(repo, "post", "will fail", "--script", bad, "--check", "false")["task"]
    # after the failing check the script has no turns left: the run fails loudly
    second = post(cli, repo, tmp_path, "later", "--after", str(first))
    daemon()
    store = wait_until_done(repo, 2)
    assert store.task(first).status == "failed"
    assert store.task(second).status == "failed" and store.task(second).reason == f"dependency task {first} failed"
    assert store.runs(task_id=second) == []


def test_sigterm_pauses_in_flight_runs_and_the_next_serve_resumes_them(repo, cli, tmp_path, daemon):
    for i in range(8):
        post(cli, repo, tmp_path, f"s{i}", sleep=1.5)
    d = daemon(max_parallel=8)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len([r for r in store.runs() if r.last_action.startswith("write_file")]) == 8, "eight runs to start")
    assert d.stop(signal.SIGTERM) == 0
    runs = store.runs()
    assert [r.status for r in runs] == ["paused"] * 8 and all("daemon stopped" in r.reason for r in runs)
    daemon(max_parallel=8)
    store = wait_until_done(repo, 8)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 8
    assert all(len(store.runs(task_id=t.id)) == 1 for t in store.tasks())


def _in_sleep(store: Store, command: str) -> str:
    """The run whose tool call is running `command`, once it is."""
    found: list[str] = []

    def started() -> bool:
        found[:] = [r.id for r in store.runs() if any(e.arguments.get("command") == command
                                                     for _, _, e in store.events(r.id, types=("tool_started",)))]
        return bool(found) and bool(processes(command))
    until(started, f"a run to be in `{command}`")
    return found[0]


def test_kill_ends_the_running_command_at_once_and_records_the_call(repo, cli, tmp_path, daemon):
    script = write_script(tmp_path / "k.json", [turn(call("shell", command="sleep 40.1")),
                                                turn(call("finish", summary="never reached"))])
    task = cli.json(repo, "post", "sleeps", "--script", script, "--check", "true")["task"]
    daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _in_sleep(store, "sleep 40.1")
    t0 = time.monotonic()
    assert cli.json(repo, "kill", str(task))["command"] == "kill"
    until(lambda: store.run(run_id).status == "killed", "the kill", timeout=30)
    assert time.monotonic() - t0 < 10  # not the 40 s of the sleep
    assert processes("sleep 40.1") == []
    finished = store.events(run_id, types=("tool_finished",))[-1][2]
    assert finished.is_error and "interrupted" in finished.preview
    answer = store.conversation(run_id)[-1]
    assert answer.role == "user" and "interrupted: the run was stopped" in answer.content[0].content
    assert store.task(task).status == "killed"


def test_kill_during_the_acceptance_check_ends_the_check_at_once(repo, cli, tmp_path, daemon):
    script = write_script(tmp_path / "c.json", [turn(call("finish", summary="done"))])
    task = cli.json(repo, "post", "checked slowly", "--script", script, "--check", "sleep 40.6")["task"]
    daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: processes("sleep 40.6"), "the check to run")
    t0 = time.monotonic()
    cli.json(repo, "kill", str(task))
    until(lambda: store.task(task).status == "killed", "the kill", timeout=30)
    assert time.monotonic() - t0 < 10 and processes("sleep 40.6") == []
    (run,) = store.runs(task_id=task)
    assert store.events(run.id, types=("check_ran",)) == []  # cut short, not a failed check


def test_sigterm_interrupts_a_running_command_and_the_next_serve_resumes_the_run(repo, cli, tmp_path, daemon):
    script = write_script(tmp_path / "t.json", [turn(call("shell", command="sleep 40.2")),
                                                turn(call("finish", summary="done"), expect="interrupted")])
    task = cli.json(repo, "post", "sleeps", "--script", script, "--check", "true")["task"]
    d = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _in_sleep(store, "sleep 40.2")
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 10  # neither the sleep nor the daemon's stop timeout
    assert processes("sleep 40.2") == []
    run = store.run(run_id)
    assert run.status == "paused" and run.reason == GRACEFUL_STOP
    daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded" and len(store.runs(task_id=task)) == 1  # told, then resumed


def test_a_task_posted_without_a_key_pauses_in_a_daemon_without_one_and_resumes_once_it_has_it(
        repo, cli, daemon, monkeypatch):
    code, out, err = cli(repo, "post", "fix add", "--check", CHECK)  # the default provider; no key here
    assert code == 0 and "queued" in out, err
    task = cli.json(repo, "tasks")[0]["task"]
    first = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.runs(task_id=task) and store.runs(task_id=task)[0].status == "paused", "the run to pause")
    run = store.runs(task_id=task)[0]
    assert "ANTHROPIC_API_KEY is not set in the daemon's environment" in run.reason
    assert store.task(task).status == "paused"
    assert first.stop() == 0
    with LoopbackServer(Script.parse([FIX_ADD, FINISH])) as server:  # the person exports the key, restarts
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-a-real-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        daemon()
        assert cli.json(repo, "resume", run.id)["command"] == "resume"
        store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded" and [r.id for r in store.runs(task_id=task)] == [run.id]
    assert "return a + b" in (repo / "calc.py").read_text()


def test_kill_9_of_the_daemon_then_restart_finishes_each_task_once(repo, cli, tmp_path, daemon):
    for i in range(3):
        post(cli, repo, tmp_path, f"k{i}", sleep=3)
    d = daemon(max_parallel=3)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len(store.runs(statuses=("running",))) == 3
          and all(r.last_action.startswith("write_file") for r in store.runs()), "three runs in their first step")
    time.sleep(0.5)  # inside the sleeping tool call
    d.stop(signal.SIGKILL)
    daemon(max_parallel=3)
    store = wait_until_done(repo, 3)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 3
    for t in store.tasks():
        (run,) = store.runs(task_id=t.id)
        shown = json.dumps([e.model_dump() for _, _, e in store.events(run.id)])
        assert "interrupted" in shown  # the agent was told, the tool was not silently re-run
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sum(m.startswith("loopwright: write k") for m in merges) == 3


@pytest.mark.parametrize("mode,sleep", [("none", "sleep 30.31"),
                                        pytest.param("bwrap", "sleep 30.32", marks=needs_bwrap)])
def test_a_command_left_running_by_a_kill_9_is_ended_before_its_run_resumes(
        repo, cli, tmp_path, daemon, monkeypatch, mode, sleep):
    """The tool's process group outlives the daemon (its own session); the next daemon kills it before resuming."""
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", mode)
    script = write_script(tmp_path / "late.json", [turn(call("shell", command=f"{sleep}; echo late > late.txt")),
                                                   turn(call("finish", summary="done"), expect="interrupted")])
    task = cli.json(repo, "post", "late writer", "--script", script, "--check", "true")["task"]
    d = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _in_sleep(store, f"{sleep}; echo late > late.txt")
    d.stop(signal.SIGKILL)
    if mode == "none":
        assert processes(sleep)  # the hole: nothing ends it with the daemon (a jail dies with its parent)
    daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    assert processes(sleep) == []  # killed before the run resumed, not left to write into the worktree
    assert ToolProcesses(store, run_id).recorded() == []
    told = json.dumps([m.model_dump() for m in store.conversation(run_id)])
    killed = "1 command(s) started before the crash were still running; they were killed"
    assert (killed in told) == (mode == "none")  # a jail dies with the daemon (--die-with-parent): nothing was left
    assert "late.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")


def test_a_tool_call_a_kill_9_left_unstarted_is_run_on_resume(repo, cli, tmp_path, daemon):
    """Of one answer's two calls the first was running at the kill (interrupted); the second never began: it runs."""
    script = write_script(tmp_path / "two.json", [
        turn(call("shell", command="sleep 30.41"), call("write_file", path="b.txt", content="b\n")),
        turn(call("finish", summary="done"), expect="interrupted")])
    task = cli.json(repo, "post", "two calls", "--script", script, "--check", "test -f b.txt")["task"]
    d = daemon()
    store = Store(repo / ".loopwright" / "state.db")
    run_id = _in_sleep(store, "sleep 30.41")
    d.stop(signal.SIGKILL)
    daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded"
    assert [e.name for _, _, e in store.events(run_id, types=("tool_started",))] == ["shell", "write_file", "finish"]
    results = [b for m in store.conversation(run_id) for b in m.content if isinstance(b, ToolResult)]
    assert [r.is_error for r in results[:2]] == [True, False] and "interrupted" in results[0].content
    assert git(repo, "show", "main:b.txt") == "b"


def test_pause_resume_kill_and_cancel_through_the_daemon(repo, cli, tmp_path, daemon):
    first = post(cli, repo, tmp_path, "p", sleep=1)
    daemon(max_parallel=1)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.runs(task_id=first), "the first run")
    queued = post(cli, repo, tmp_path, "q")
    assert cli.json(repo, "cancel", str(queued))["result"].startswith("cancelled")
    assert cli.json(repo, "pause", str(first))["command"] == "pause"
    until(lambda: store.runs(task_id=first)[0].status == "paused", "the pause")
    cli.json(repo, "resume", str(first))
    store = wait_until_done(repo, 2)
    assert store.task(first).status == "succeeded" and store.task(queued).status == "cancelled"
    assert store.runs(task_id=queued) == []

    third = post(cli, repo, tmp_path, "z", sleep=5)
    until(lambda: store.runs(task_id=third) and store.runs(task_id=third)[0].last_action, "the third run's first step")
    cli.json(repo, "kill", str(third))
    store = wait_until_done(repo, 3)
    assert store.task(third).status == "killed"


def test_pause_of_a_run_that_is_not_running_is_refused(repo, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "1")
    run = cli.json(repo, "run", "x", "--script", task_script(tmp_path, "a"))["run"]
    code, _, err = cli(repo, "pause", run)
    assert code == 2 and "not running" in err
    assert cli.json(repo, "kill", run)["status"] == "killed"


@pytest.mark.timeout(400)  # its own wait for the tasks is 180 s, after the 20 restarts
@pytest.mark.parametrize("workers", [1, 2])
def test_kill_9_at_random_moments_twenty_times(repo, cli, tmp_path, daemon, monkeypatch, workers):
    """The daemon is killed 20 times at random moments (model calls, tools, checkpoints, merges) and restarted; with
    two workers, the kill takes the worker too (each kill lands wherever each process is)."""
    import random
    import sqlite3

    monkeypatch.setenv("LOOPWRIGHT_WORKERS", str(workers))
    rng = random.Random(20261125)
    tasks = []
    for i in range(6):
        steps = [turn(call("write_file", path=f"r{i}/a.txt", content="a")),
                 turn(call("shell", command="sleep 0.2; echo b > b.txt", timeout_seconds=30)),
                 turn(call("write_file", path=f"r{i}/c.txt", content="c")),
                 turn(call("finish", summary="done"))]
        script = write_script(tmp_path / f"r{i}.json", steps)
        tasks.append(cli.json(repo, "post", f"task r{i}", "--script", script, "--check", "true")["task"])
    survived = 0
    for _ in range(20):
        d = daemon(max_parallel=3)
        if workers > 1:  # from when both processes take tasks (the daemon waits for its worker to be ready)
            said = f"of daemon {d.proc.pid} "
            until(lambda: said in (tmp_path / "daemon.log").read_text(), "the worker")  # noqa: B023 (waited here)
        time.sleep(rng.uniform(0.05, 1.2))
        d.stop(signal.SIGKILL)
        survived += 1
    daemon(max_parallel=3)
    store = wait_until_done(repo, 6, timeout=180)
    assert survived == 20
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 6, [store.task(t).reason for t in tasks]
    for t in tasks:
        runs = store.runs(task_id=t)
        assert [r.status for r in runs].count("succeeded") == 1 and len(runs) == 1
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert (sorted(m for m in merges if m.startswith("loopwright: task r"))
            == [f"loopwright: task r{i}" for i in range(6)])
    conn = sqlite3.connect(repo / ".loopwright" / "state.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_fleet_budget_stops_the_whole_fleet_until_raised(repo, cli, tmp_path, daemon):
    # a scripted model priced at $1 a call (100 input tokens at $10,000 per million), $1.5 a day for the fleet
    (repo / "loopwright.toml").write_text("[models.priced]\ninput_usd_per_mtok = 10000\noutput_usd_per_mtok = 0\n"
                                          "[fleet]\nusd_per_day = 1.5\n")
    first = post(cli, repo, tmp_path, "b1", "--model", "priced")
    second = post(cli, repo, tmp_path, "b2", "--model", "priced")
    third = post(cli, repo, tmp_path, "b3", "--model", "priced")
    daemon(max_parallel=2)  # the first two start together; four $1 calls do not fit in $1.5
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: any(r.status == "paused" for r in store.runs()) and not store.runs(statuses=("running",)),
          "the budget to pause the fleet", timeout=60)
    time.sleep(1.0)  # the daemon must not start the third task meanwhile
    paused = [r for r in store.runs() if r.status == "paused"]
    assert paused and all("fleet budget spent today" in r.reason for r in paused)
    assert store.task(third).status == "queued" and store.runs(task_id=third) == []
    shown = cli.json(repo, "budget")
    assert shown["day_usd"] >= 1.5 and shown["spent"].startswith("fleet budget spent")
    raised = cli.json(repo, "budget", "raise", "--usd", "10")
    assert raised["day_usd_limit"] == 11.5 and raised["spent"] is None
    store = wait_until_done(repo, 3)
    assert [store.task(t).status for t in (first, second, third)] == ["succeeded"] * 3
    assert all(len(store.runs(task_id=t)) == 1 for t in (first, second, third))  # resumed, not restarted


def test_each_runs_progress_clock_starts_at_its_own_start(repo, cli, tmp_path, daemon):
    first = post(cli, repo, tmp_path, "first", sleep=3)
    post(cli, repo, tmp_path, "second", "--after", str(first))
    d = daemon(max_parallel=1)
    store = wait_until_done(repo, 2)
    d.stop()
    log = d.log.read_text()
    for run in store.runs():
        clocks = [int(m) * 60 + int(s) for m, s in re.findall(rf"{run.id} \[\s*(\d+):(\d\d)\] step", log)]
        # the second run starts after the first one's 3 s: its clock restarts from 0:00, as its summary does
        assert len(clocks) >= 2 and max(clocks) <= run.active_seconds + 1, (run.id, clocks, run.active_seconds)


@pytest.mark.parametrize(("floor", "leave_mb"), [(10, 2), (0, 0)], ids=["2MB-left", "nothing-left-no-floor"])
def test_a_full_disk_pauses_every_run_posts_are_refused_and_runs_go_on_when_there_is_room(small_disk, cli, tmp_path,
                                                                                          floor, leave_mb):
    root = small_disk / "project"
    cli(root, "init")
    out = tmp_path / "events.jsonl"
    with (root / ".loopwright" / "config.toml").open("a") as f:
        f.write(f"\n[workspace]\nmin_free_disk_mb = {floor}\n[notify]\ncommand = \"cat >> {out}\"\ndesktop = false\n")
    # its shell command waits for ever: only the pause for the full disk ends it
    script = write_script(tmp_path / "waits.json", [
        turn(call("write_file", path="a.txt", content="a")),
        turn(call("shell", command="touch started; until [ -e go ]; do sleep 0.1; done")),
        FINISH])
    first = cli.json(root, "post", "write a", "--script", script, "--check", "test -f a.txt")["task"]
    cli.json(root, "post", "write b", "--script", task_script(tmp_path, "b"), "--check", "test -f b.txt")
    store = Store(root / ".loopwright" / "state.db")
    log = tmp_path / "daemon.log"
    daemon = DaemonProcess(root, log, 1)  # the second task waits in the queue
    try:
        until(lambda: store.runs(task_id=first) and Path(store.runs(task_id=first)[0].worktree, "started").exists(),
              "the shell command to start")
        filler = fill(small_disk, leave_mb)
        if leave_mb:  # room enough for the run to record its pause, and the daemon its notification
            until(lambda: store.task(first).status == "paused", "the run to pause")
            until(lambda: out.exists() and "run_needs_input" in out.read_text(), "the pause to be announced")
        else:  # its pause is recorded, or it stays as it was until there is room
            until(lambda: store.task(first).status == "paused" or "stopped by a full disk" in log.read_text(),
                  "the run to stop")
        code, said, err = cli(root, "post", "write c", "--script", task_script(tmp_path, "c"))
        assert code == 2 and said == "" and len(err.splitlines()) == 1, err
        assert err.startswith("loopwright: error: disk full (") and "not queued" in err and "loopwright gc" in err
        assert len(store.tasks()) == 2 and store.task(2).status == "queued" and daemon.proc.poll() is None

        filler.unlink()
        until(lambda: {t.status for t in store.tasks()} == {"succeeded"}, "both tasks to succeed", timeout=120)
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    text = log.read_text()
    assert git(root, "show", "main:a.txt") == "a" and git(root, "show", "main:b.txt") == "b", text
    paused = [e.reason for _, _, e in store.events(store.runs(task_id=first)[0].id, types=("status",))
              if e.status == "paused"]
    assert len(paused) == 1 and re.fullmatch(r"disk full \(\d MB free\)", paused[0]), text
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(e["event"], e["task"]) for e in events] == [
        ("run_needs_input", first), ("task_succeeded", first), ("task_succeeded", 2)], text
    assert events[0]["reason"] == paused[0]
    assert "disk full (" in text and "room on the disk again" in text and "Traceback" not in text, text
    assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_on_a_full_disk_with_no_daemon_commands_say_so_in_one_line(small_disk, cli):
    root = small_disk / "project"
    cli(root, "init")
    gc.collect()  # the in-process CLI's store closed: its last connection took the store's WAL and index files along
    assert not (root / ".loopwright" / "state.db-wal").exists()
    fill(small_disk, 0)
    for args in (("post", "write c"), ("status",), ("serve",)):  # the store cannot even be opened
        proc = loopwright_subprocess(root, *args)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and out == "" and len(err.splitlines()) == 1, err
        assert err.startswith("loopwright: error: disk full (0 MB free): ") and "loopwright gc" in err, err


# -- worker processes (`workers` > 1) ---------------------------------------------------------------


def _workers_of(pid: int) -> list[int]:
    """The pids of the worker processes daemon `pid` runs now."""
    ps = subprocess.run(["ps", "-eww", "-o", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in ps.splitlines()
            if f"loopwright.runtime.fleet.workers --daemon {pid} " in line and not line.split()[1].startswith("Z")]


def _with_a_worker(daemon, tmp_path: Path, max_parallel: int):
    """A daemon with one worker process, once both take tasks: (the daemon, the worker's pid)."""
    d = daemon(max_parallel=max_parallel)
    until(lambda: len(_workers_of(d.proc.pid)) == 1, "the daemon's worker process")
    (worker,) = _workers_of(d.proc.pid)
    until(lambda: f"worker {worker} of daemon {d.proc.pid}" in (tmp_path / "daemon.log").read_text(),
          "the worker to serve")
    return d, worker


def _four_runs_with_a_worker(repo, cli, tmp_path, daemon, monkeypatch, name: str, sleep: float):
    """A daemon with a worker, four tasks posted (two for each process) and all four runs going: (the daemon, the
    worker's pid, the store)."""
    monkeypatch.setenv("LOOPWRIGHT_WORKERS", "2")
    d, worker = _with_a_worker(daemon, tmp_path, 4)
    for i in range(4):
        post(cli, repo, tmp_path, f"{name}{i}", sleep=sleep)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len([r for r in store.runs(statuses=("running",)) if r.last_action]) == 4, "four runs")
    return d, worker, store


def test_worker_count_and_shares():
    from loopwright.runtime.config import Config
    from loopwright.runtime.fleet.workers import shares, worker_count

    assert worker_count(Config(max_parallel=4), cores=2) == 1  # a small fleet: one process
    assert worker_count(Config(max_parallel=64), cores=2) == 2 and worker_count(Config(max_parallel=128), cores=8) == 4
    assert worker_count(Config(max_parallel=3, workers=8), cores=2) == 3  # never more processes than runs
    assert worker_count(Config(max_parallel=64, backend="ray"), cores=8) == 1
    assert shares(7, 3) == [3, 2, 2] and shares(128, 2) == [64, 64]


def test_two_workers_share_the_fleet_and_obey_cancel_and_kill(repo, cli, tmp_path, daemon, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_WORKERS", "2")
    d, worker = _with_a_worker(daemon, tmp_path, 4)
    for i in range(4):
        post(cli, repo, tmp_path, f"w{i}", sleep=2)
    store = wait_until_done(repo, 4)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 4
    assert {r.owner_pid for r in store.runs()} == {d.proc.pid, worker}  # two runs in each process
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sorted(m for m in merges if m.startswith("loopwright: write w")) == [f"loopwright: write w{i}"
                                                                               for i in range(4)]
    # the worker's runs are killed by `kill` (a command it takes itself) and by the TUI's cancel (a command the
    # daemon takes and passes on)
    long = [post(cli, repo, tmp_path, f"long{i}", sleep=30) for i in range(4)]
    until(lambda: len([r for r in store.runs(statuses=("running",)) if r.last_action]) == 4, "four long runs")
    killed, cancelled = [r.task_id for r in store.runs(statuses=("running",)) if r.owner_pid == worker]
    cli.json(repo, "kill", str(killed))
    command = store.enqueue_command(None, CommandKind.CANCEL, {"task": cancelled})  # what the TUI's cancel writes
    until(lambda: store.conn.execute("SELECT status FROM commands WHERE id = ?", (command,)).fetchone()[0] == "done",
          "the daemon to take the cancel")
    until(lambda: store.task(killed).status in TERMINAL and store.task(cancelled).status in TERMINAL,
          "the worker's runs to stop", timeout=20)
    assert (store.task(killed).status, store.task(cancelled).status) == ("killed", "killed")
    assert store.runs(task_id=cancelled)[0].reason == "task cancelled"  # as a cancel in one process says
    assert {store.task(t).status for t in long if t not in (killed, cancelled)} == {"running"}
    assert d.stop(signal.SIGTERM) == 0
    assert _workers_of(d.proc.pid) == [] and "Traceback" not in (tmp_path / "daemon.log").read_text()


def test_sigterm_pauses_the_workers_runs_and_the_next_serve_resumes_them(repo, cli, tmp_path, daemon, monkeypatch):
    d, _, store = _four_runs_with_a_worker(repo, cli, tmp_path, daemon, monkeypatch, "t", 2)
    assert len({r.owner_pid for r in store.runs()}) == 2
    assert d.stop(signal.SIGTERM) == 0
    runs = store.runs()
    assert [r.status for r in runs] == ["paused"] * 4 and all(GRACEFUL_STOP in r.reason for r in runs)
    daemon(max_parallel=4)
    store = wait_until_done(repo, 4)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 4
    assert all(len(store.runs(task_id=t.id)) == 1 for t in store.tasks())


def test_kill_9_of_the_daemon_takes_its_workers_and_a_restart_finishes_each_task_once(repo, cli, tmp_path,
                                                                                      daemon, monkeypatch):
    d, worker, store = _four_runs_with_a_worker(repo, cli, tmp_path, daemon, monkeypatch, "k", 3)
    assert worker in {r.owner_pid for r in store.runs()}
    d.stop(signal.SIGKILL)
    until(lambda: not _workers_of(d.proc.pid), "the worker to die", timeout=5)
    daemon(max_parallel=4)
    store = wait_until_done(repo, 4)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 4
    assert all(len(store.runs(task_id=t.id)) == 1 for t in store.tasks())
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sorted(m for m in merges if m.startswith("loopwright: write k")) == [f"loopwright: write k{i}"
                                                                               for i in range(4)]
    assert worker not in {r.owner_pid for r in store.runs()}  # its runs were resumed by the new daemon's processes


def test_a_worker_killed_alone_has_its_runs_resumed_and_is_started_again(repo, cli, tmp_path, daemon, monkeypatch):
    d, worker, store = _four_runs_with_a_worker(repo, cli, tmp_path, daemon, monkeypatch, "z", 3)
    theirs = [r.task_id for r in store.runs() if r.owner_pid == worker]
    assert len(theirs) == 2
    os_kill(worker)
    store = wait_until_done(repo, 4)
    assert [t.status for t in store.tasks()] == ["succeeded"] * 4
    assert all(len(store.runs(task_id=t.id)) == 1 for t in store.tasks())
    assert {r.owner_pid for r in store.runs() if r.task_id in theirs} == {d.proc.pid}  # resumed by the daemon
    log = (tmp_path / "daemon.log").read_text()
    assert f"worker 1 (pid {worker}) exited with status -9: starting it again; its runs are resumed here" in log
    until(lambda: len(_workers_of(d.proc.pid)) == 1 and _workers_of(d.proc.pid) != [worker], "a new worker")
    assert d.stop(signal.SIGTERM) == 0


def os_kill(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGKILL)


def test_a_worker_that_cannot_start_is_given_up_after_three_tries(tmp_path):
    from loopwright.runtime.fleet.workers import Workers

    workers = Workers(tmp_path, [1], lambda line: None)  # not a project: the worker exits at once, saying why
    said: list[str] = []

    def given_up() -> bool:
        said.extend(workers.poll())
        return workers.procs == [None]
    workers.start()
    try:
        until(given_up, "the worker to be given up", timeout=60)
    finally:
        workers.stop()
    assert len(said) == 3 and all(line.endswith(": starting it again") for line in said[:2]), said
    assert "3 times in a row within 30s of its start: it is not started again" in said[2], said
