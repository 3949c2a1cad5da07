"""Notifications: each event once (across polls and restarts), through a hook, the bell and notify-send."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import DaemonProcess, call, turn, until, wait_for_row, write_script
from test_daemon import task_script, wait_until_done

from loopwright.memory.store import Store
from loopwright.runtime.fleet.budget import SPENT, budget_day
from loopwright.runtime.fleet.daemon import GRACEFUL_STOP
from loopwright.runtime.fleet.notify import Notifier
from loopwright.runtime.project import open_project

HOOK = '#!/bin/sh\ncat >> "$1"\n'
# the first delivery blocks until `release` exists (the daemon is killed meanwhile) and never says it was sent
BLOCKING_HOOK = """#!/bin/sh
event=$(cat)
if [ ! -e "$1/release" ]; then
    echo $$ > "$1/hook.pid"
    while [ ! -e "$1/release" ]; do sleep 0.05; done
    exit 1
fi
printf '%s\\n' "$event" >> "$1/events.jsonl"
"""
# a daemon whose log kills it (kill -9) as it says the task ended: its status is committed by then, and the
# notifier, polling only at the first pass of the daemon's loop (then once an hour), has not seen it
CRASHES_AFTER_THE_END = """import asyncio, os, signal, sys
from pathlib import Path
from loopwright.runtime.fleet.daemon import Daemon
from loopwright.runtime.project import open_project

class Log:
    def write(self, text):
        sys.stdout.write(text)
        if sys.argv[1] in text:
            sys.stdout.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    def flush(self):
        sys.stdout.flush()

asyncio.run(Daemon(open_project(Path.cwd()), poll_interval=3600, log=Log()).serve())
"""
NOTIFY_SEND = '#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done >> "$0.calls"\n'


def setup(repo: Path, cli, tmp_path: Path, *, command: str | None = None, extra: str = "desktop = false\n"):
    """An initialised project whose hook appends each event (one JSON line) to events.jsonl."""
    cli(repo, "init")
    out = tmp_path / "events.jsonl"
    hook = tmp_path / "hook.sh"
    hook.write_text(HOOK)
    hook.chmod(0o755)
    command = command or f"{hook} {out}"
    with (repo / ".loopwright" / "config.toml").open("a") as f:
        f.write(f"\n[notify]\ncommand = {json.dumps(command)}\n{extra}")
    return open_project(repo), out


def notifier(project, said: list | None = None, **kw) -> Notifier:
    kw.setdefault("which", lambda name: None)
    kw.setdefault("terminals", ())
    return Notifier(project, (said if said is not None else []).append, **kw)


def settle(n: Notifier) -> list[dict]:
    """One poll on an event loop, then wait for its deliveries (as the daemon's shutdown does)."""
    async def go():
        got = n.poll()
        await n.aclose()
        return got
    return asyncio.run(go())


def delivered(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def started(store: Store, title: str, status: str = "running"):
    task = store.create_task(f"do {title}", title=title, status=status)
    run = store.create_run(task.id, provider="scripted", model="m", worktree=f"/nowhere/{title}", branch=f"lw/{title}",
                           base_commit="0" * 40, target_branch="main")
    return task, run


def end(store: Store, run, status: str, reason: str = "", **kw) -> None:
    assert store.transition_run(run.id, status, only_from=("running", "paused"), reason=reason, **kw)


def test_each_kind_of_event_is_delivered_once_with_its_json(repo, cli, tmp_path):
    project, out = setup(repo, cli, tmp_path)
    store = project.store
    n = notifier(project)
    assert settle(n) == []
    ok, ok_run = started(store, "ok")
    end(store, ok_run, "succeeded", "merged into main as abc123")
    bad, bad_run = started(store, "bad")
    end(store, bad_run, "failed", "`pytest -q` failed (exit 1) " + "x" * 5000)
    killed, killed_run = started(store, "killed")
    end(store, killed_run, "killed", "killed from the CLI")
    broke, broke_run = started(store, "broke")
    end(store, broke_run, "budget_exceeded", "run budget spent: $10.00")
    review, review_run = started(store, "review")
    end(store, review_run, "needs_review", "no acceptance check; branch lw/review kept for review")
    stuck, stuck_run = started(store, "stuck")
    end(store, stuck_run, "paused", "model unavailable: 503 from the provider")
    # not announced: the daemon's own stop, a fleet-budget pause, a pause a person asked for, a cancel,
    # an until-attempt that failed while its task goes on
    for title, reason in (("graceful", GRACEFUL_STOP), ("spent", f"{SPENT} today ($1.5 of $1.50)")):
        end(store, started(store, title)[1], "paused", reason)
    _, asked = started(store, "asked")
    store.enqueue_command(asked.id, "pause", {"reason": "pause requested from the CLI"})
    end(store, asked, "paused", "pause requested from the CLI")
    store.set_task_status(store.create_task("never mind").id, "cancelled", reason="cancelled from the CLI")
    end(store, started(store, "again")[1], "failed", "`false` failed (exit 1)", task_status="running")
    orphan = store.create_task("waits for bad")  # fails without ever having a run
    store.set_task_status(orphan.id, "failed", reason=f"dependency task {bad.id} failed", only_from=("queued",))

    got = settle(n)
    expected = {ok.id: ("task_succeeded", "succeeded"), bad.id: ("task_failed", "failed"),
                killed.id: ("task_failed", "killed"), broke.id: ("task_failed", "budget_exceeded"),
                review.id: ("task_needs_review", "needs_review"), stuck.id: ("run_needs_input", "paused"),
                orphan.id: ("task_failed", "failed")}
    assert {e["task"]: (e["event"], e["status"]) for e in got} == expected
    assert sorted(delivered(out), key=lambda e: e["task"]) == sorted(got, key=lambda e: e["task"])
    first = next(e for e in got if e["task"] == ok.id)
    assert first["project"] == str(repo) and first["title"] == "ok" and first["run"] == ok_run.id
    assert first["reason"] == "merged into main as abc123" and first["branch"] == "lw/ok"
    assert abs(dt.datetime.fromisoformat(first["at"]).timestamp() - time.time()) < 60
    assert next(e for e in got if e["task"] == stuck.id)["reason"] == "model unavailable: 503 from the provider"
    assert next(e for e in got if e["task"] == orphan.id)["run"] is None
    assert all(len(json.dumps(e)) < 2000 for e in got)  # the 5000-character reason was cut
    rows = store.conn.execute("SELECT status, result FROM notifications").fetchall()
    assert len(rows) == 7 and all(tuple(r) == ("sent", "hook: exit 0") for r in rows)

    assert settle(n) == []  # polling again
    assert settle(notifier(project)) == []  # a restart
    assert len(delivered(out)) == 7


def test_what_ended_before_the_notifier_started_is_not_announced(repo, cli, tmp_path):
    project, out = setup(repo, cli, tmp_path)
    store = project.store
    end(store, started(store, "old")[1], "succeeded")
    end(store, started(store, "stuck")[1], "paused", "model unavailable: down")
    waiting = store.create_task("queued before the start")
    n = notifier(project)
    assert settle(n) == []
    store.set_task_status(waiting.id, "failed", reason="dependency task 1 failed")
    new, new_run = started(store, "new")
    end(store, new_run, "needs_review", "kept for review")
    assert [(e["task"], e["event"]) for e in settle(n)] == [(waiting.id, "task_failed"), (new.id, "task_needs_review")]
    assert sorted(e["task"] for e in delivered(out)) == [waiting.id, new.id]


def test_the_same_pause_twice_is_announced_once_a_new_reason_again(repo, cli, tmp_path):
    project, out = setup(repo, cli, tmp_path)
    store = project.store
    n = notifier(project)
    _, run = started(store, "flaky")
    end(store, run, "paused", "model unavailable: 503")
    assert [e["event"] for e in settle(n)] == ["run_needs_input"]
    assert store.claim_run(run.id, only_from=("paused",))  # a person resumes it; it pauses again, same reason
    end(store, run, "paused", "model unavailable: 503")
    assert settle(n) == []
    assert store.claim_run(run.id, only_from=("paused",))
    end(store, run, "paused", "rate limited (429): automatic resume is off")
    assert [e["reason"] for e in settle(n)] == ["rate limited (429): automatic resume is off"]
    assert len(delivered(out)) == 2


def test_a_spent_fleet_budget_is_announced_once_per_day_even_across_restarts(repo, cli, tmp_path):
    project, out = setup(repo, cli, tmp_path, extra="desktop = false\n[fleet]\ntokens_per_day = 100\n")
    store = project.store
    n = notifier(project)
    assert settle(n) == []
    store.conn.execute("INSERT INTO fleet_usage (day, tokens) VALUES (?, 500)", (budget_day("00:00"),))
    (event,) = settle(n)
    assert event["event"] == "budget_spent" and event["scope"] == "today" and event["day"] == budget_day("00:00")
    assert event["reason"].startswith(f"{SPENT} today") and event["task"] is None
    assert settle(n) == []
    assert settle(notifier(project)) == []  # a restart the same day: already announced
    assert [e["event"] for e in delivered(out)] == ["budget_spent"]


def test_a_failing_or_hanging_hook_is_recorded_and_said_never_raised(repo, cli, tmp_path):
    project, _ = setup(repo, cli, tmp_path, command="echo 'no route to host' >&2; echo more >&2; exit 3")
    store = project.store
    said: list[str] = []
    n = notifier(project, said)
    end(store, started(store, "a")[1], "succeeded")
    assert len(settle(n)) == 1
    row = store.conn.execute("SELECT status, result FROM notifications").fetchone()
    assert tuple(row) == ("failed", "hook: exit 3: no route to host")
    assert len(said) == 1 and "hook command failed" in said[0] and "no route to host" in said[0]

    project.config.notify.command, project.config.notify.timeout = "sleep 30", 0.5
    n = notifier(project, said)
    end(store, started(store, "b")[1], "failed", "boom")
    t0 = time.monotonic()
    assert len(settle(n)) == 1
    assert time.monotonic() - t0 < 5
    row = store.conn.execute("SELECT status, result FROM notifications WHERE key LIKE 'task:2:%'").fetchone()
    assert tuple(row) == ("failed", "hook: timed out after 0.5s (killed)")
    assert len(said) == 2


def test_notify_send_is_called_only_when_it_is_on_path(repo, cli, tmp_path):
    project, _ = setup(repo, cli, tmp_path, extra="desktop = true\n")
    fake = tmp_path / "notify-send"
    fake.write_text(NOTIFY_SEND)
    fake.chmod(0o755)
    calls = tmp_path / "notify-send.calls"
    store = project.store
    asked: list[str] = []
    n = notifier(project, which=lambda name: asked.append(name) or str(fake))
    task, run = started(store, "ok")
    end(store, run, "succeeded", "merged into main")
    settle(n)
    assert asked == ["notify-send"]
    assert calls.read_text().splitlines() == ["--app-name=loopwright", "--",
                                              f"loopwright: task {task.id} succeeded: ok",
                                              "merged into main"]
    row = store.conn.execute("SELECT status, result FROM notifications").fetchone()
    assert tuple(row) == ("sent", "hook: exit 0; desktop: exit 0")

    calls.unlink()
    n = notifier(project, which=lambda name: None)
    end(store, started(store, "two")[1], "succeeded")
    assert len(settle(n)) == 1 and not calls.exists()
    project.config.notify.desktop = False
    n = notifier(project, which=lambda name: str(fake))
    end(store, started(store, "three")[1], "succeeded")
    assert len(settle(n)) == 1 and not calls.exists()


class Terminal(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_bell_rings_once_per_poll_on_a_terminal_only(repo, cli, tmp_path):
    project, _ = setup(repo, cli, tmp_path)
    store = project.store
    log_file, tty = Terminal(False), Terminal(True)
    n = notifier(project, terminals=(log_file, tty))
    end(store, started(store, "a")[1], "succeeded")
    end(store, started(store, "b")[1], "failed")
    assert len(settle(n)) == 2
    assert tty.getvalue() == "\a" and log_file.getvalue() == ""
    n = notifier(project, terminals=(log_file,))  # the daemon's output goes to a log file: no bell
    end(store, started(store, "c")[1], "succeeded")
    assert len(settle(n)) == 1 and log_file.getvalue() == ""
    project.config.notify.bell = False
    n = notifier(project, terminals=(tty,))
    end(store, started(store, "d")[1], "succeeded")
    assert len(settle(n)) == 1 and tty.getvalue() == "\a"


def test_the_daemon_announces_a_success_and_a_failure_once(repo, cli, tmp_path):
    out = tmp_path / "events.jsonl"
    # a slow hook: the daemon is stopped while it still runs, and must wait for it
    setup(repo, cli, tmp_path, command=f"sleep 1.5; cat >> {out}")
    good = cli.json(repo, "post", "write a", "--script", task_script(tmp_path, "a"), "--check", "test -f a.txt")["task"]
    # the check fails and the script has no turn left to fix it: the run fails
    bad_script = write_script(tmp_path / "bad.json", [turn(call("finish", summary="nothing"))])
    bad = cli.json(repo, "post", "will fail", "--script", bad_script, "--check", "false")["task"]
    daemon = DaemonProcess(repo, tmp_path / "daemon.log", 2)
    try:
        store = wait_until_done(repo, 2, timeout=60)
        # claimed by the daemon's own polls (not only by the last one at shutdown), the hooks still sleeping
        assert wait_for_row(repo / ".loopwright" / "state.db",
                            "SELECT count(*) FROM notifications HAVING count(*) = 2", timeout=10)
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    events = sorted(delivered(out), key=lambda e: e["task"])
    assert [(e["event"], e["task"], e["status"]) for e in events] == [
        ("task_succeeded", good, "succeeded"), ("task_failed", bad, "failed")], (tmp_path / "daemon.log").read_text()
    assert [e["run"] for e in events] == [store.runs(task_id=good)[0].id, store.runs(task_id=bad)[0].id]
    assert [tuple(r) for r in store.conn.execute("SELECT kind, status FROM notifications ORDER BY key")] == [
        ("task_succeeded", "sent"), ("task_failed", "sent")]


def test_a_task_that_ends_then_opens_again_is_announced_when_it_ends_again(repo, cli, tmp_path):
    project, out = setup(repo, cli, tmp_path)
    store = project.store
    n = notifier(project)
    task, run = started(store, "pricey")
    end(store, run, "budget_exceeded", "run budget spent")
    assert [e["status"] for e in settle(n)] == ["budget_exceeded"]
    assert store.claim_run(run.id, only_from=("budget_exceeded",))  # `loopwright resume` after a raise
    end(store, run, "succeeded", "merged")  # both within one poll interval
    assert [(e["task"], e["event"]) for e in settle(n)] == [(task.id, "task_succeeded")]
    assert [e["status"] for e in delivered(out)] == ["budget_exceeded", "succeeded"]


def serve_until_sent(repo: Path, log: Path, count: int) -> Store:
    """`serve` until `count` notifications are sent, then stop it."""
    daemon = DaemonProcess(repo, log, 1)
    try:
        assert wait_for_row(repo / ".loopwright" / "state.db",
                            f"SELECT count(*) FROM notifications WHERE status = 'sent' HAVING count(*) = {count}",
                            timeout=30), log.read_text()
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
    return Store(repo / ".loopwright" / "state.db")


def test_a_task_that_ends_just_before_a_kill_9_is_announced_once_by_the_next_daemon(repo, cli, tmp_path):
    _, out = setup(repo, cli, tmp_path)
    task = cli.json(repo, "post", "write a", "--script", task_script(tmp_path, "a"), "--check", "test -f a.txt")["task"]
    crashing = tmp_path / "crashing.py"
    crashing.write_text(CRASHES_AFTER_THE_END)
    done = subprocess.run([sys.executable, str(crashing), f"task {task}: succeeded"], cwd=repo, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    store = Store(repo / ".loopwright" / "state.db")
    assert store.task(task).status == "succeeded" and delivered(out) == []
    assert store.conn.execute("SELECT count(*) FROM notifications").fetchone()[0] == 0  # never even claimed

    store = serve_until_sent(repo, tmp_path / "daemon.log", 1)
    assert [(e["event"], e["task"]) for e in delivered(out)] == [("task_succeeded", task)]
    store.set_task_status(store.create_task("never started").id, "failed", reason="while no daemon ran")
    serve_until_sent(repo, tmp_path / "daemon.log", 1)  # after a clean stop: nothing again, nor what ended since
    assert len(delivered(out)) == 1


def test_a_delivery_cut_by_a_kill_9_is_made_by_the_next_daemon_once(repo, cli, tmp_path):
    hook = tmp_path / "blocking.sh"  # not setup's hook.sh
    hook.write_text(BLOCKING_HOOK)
    hook.chmod(0o755)
    _, out = setup(repo, cli, tmp_path, command=f"{hook} {tmp_path}", extra="desktop = false\ntimeout = 300\n")
    task = cli.json(repo, "post", "write a", "--script", task_script(tmp_path, "a"), "--check", "test -f a.txt")["task"]
    daemon = DaemonProcess(repo, tmp_path / "daemon.log", 1)
    pid_file = tmp_path / "hook.pid"
    try:
        until(lambda: pid_file.exists() and pid_file.read_text().strip(), "the hook to start")
    finally:
        daemon.stop(signal.SIGKILL)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # in its own session, it outlived the daemon
    store = Store(repo / ".loopwright" / "state.db")
    assert [tuple(r) for r in store.conn.execute("SELECT key, status FROM notifications")] == [
        (f"task:{task}:succeeded", "pending")]

    (tmp_path / "release").touch()
    store = serve_until_sent(repo, tmp_path / "daemon2.log", 1)
    assert [(e["event"], e["task"]) for e in delivered(out)] == [("task_succeeded", task)]
    assert store.conn.execute("SELECT result FROM notifications").fetchone()[0] == "hook: exit 0"
