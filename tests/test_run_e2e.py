"""One agent, one task, end to end through the CLI in real git repositories.

The model is either the scripted model or the real Anthropic/OpenAI SDKs talking
to the loopback server; nothing here mocks an SDK.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from support import (
    CHECK,
    FINISH,
    FIX_ADD,
    call,
    git,
    loopwright_subprocess,
    processes,
    turn,
    until,
    wait_for_row,
    write_script,
)

from loopwright.harness.events import CheckpointMade, ModelCalled
from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.script import Script
from loopwright.memory.store import Store
from loopwright.runtime.project import open_project
from loopwright.runtime.runner import Runner
from loopwright.workspaces.git import Workspace


def _trailers(root: Path, branch: str) -> list[str]:
    return [t for t in git(root, "log", "--format=%(trailers:only,unfold)", f"main..{branch}").splitlines() if t]


@pytest.mark.parametrize("provider", ["anthropic", "openai", "openai-responses"])
def test_full_task_through_the_sdk_and_loopback_server(repo, cli, provider):
    turns = [
        turn(call("read_file", path="calc.py"), text="Reading calc.py."),
        {**FIX_ADD, "expect": "def add"},
        turn(call("shell", command=CHECK + " 2>&1"), expect="calc.py"),
        {**FINISH, "expect": "OK"},
    ]
    with LoopbackServer(Script.parse(turns)) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        model = "claude-sonnet-4-6" if provider == "anthropic" else "gpt-5"
        result = cli.json(repo, "run", "make test_add pass", "--check", CHECK, "--provider", provider,
                          "--model", model, "--base-url", base)
        assert server.remaining == 0
        paths = {r["path"] for r in server.requests}
    assert result["status"] == "succeeded", result
    assert result["cost_usd"] > 0 and result["tokens"] > 0
    assert paths == {{"anthropic": "/v1/messages", "openai": "/v1/chat/completions",
                      "openai-responses": "/v1/responses"}[provider]}
    # merged into main as one squash commit naming the task and the run, and the user's checkout follows
    assert "return a + b" in (repo / "calc.py").read_text()
    head_message = git(repo, "log", "-1", "--format=%B", "main")
    assert "make test_add pass" in head_message and result["run"] in head_message
    assert git(repo, "status", "--porcelain") == ""
    # the checkpoint is on the run branch with its trailers
    trailers = _trailers(repo, result["branch"])
    assert f"Loopwright-Run: {result['run']}" in trailers and "Loopwright-Step: 2" in trailers


def test_check_failure_is_fed_back_and_the_agent_continues(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn(call("finish", summary="nothing to do")),
        {**FIX_ADD, "expect": "FAIL"},  # the finish result carries the check's output
        FINISH,
    ])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert result["status"] == "succeeded"
    show = cli.json(repo, "show", result["run"])
    checks = [e for e in show["events"] if e["type"] == "check_ran"]
    assert [c["passed"] for c in checks] == [False, True]


def test_no_check_keeps_the_branch_for_review(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--script", script)
    assert result["status"] == "needs_review" and "no acceptance check" in result["reason"]
    assert "return a - b" in (repo / "calc.py").read_text()  # nothing merged


def test_merge_conflict_gives_needs_review_and_keeps_the_branch(repo, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})

    def someone_else_commits(run_id, event):  # the user changes the same line on main meanwhile
        if isinstance(event, CheckpointMade):
            (repo / "calc.py").write_text((repo / "calc.py").read_text().replace("a - b", "b + a"))
            git(repo, "commit", "-qam", "user fix")

    project.store.listeners.append(someone_else_commits)
    result = asyncio.run(Runner(project).start("fix add", check=CHECK))
    assert result.run.status == "needs_review" and "merge conflict" in result.run.reason
    assert "calc.py" in result.run.reason
    assert git(repo, "log", "-1", "--format=%s", "main") == "user fix"
    assert git(repo, "rev-parse", "--verify", result.run.branch)  # kept


def test_a_checkpoint_is_written_while_the_next_model_call_is_out(repo, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})
    second_call = threading.Event()
    waited: list[bool] = []
    real_checkpoint = Workspace.checkpoint

    def checkpoint_after_the_next_call(self, message, *, step):
        waited.append(second_call.wait(5))  # the old loop called the model only after its checkpoint: never set
        return real_checkpoint(self, message, step=step)

    calls: list[ModelCalled] = []

    def on_event(run_id, event):
        if isinstance(event, ModelCalled):
            calls.append(event)
            if len(calls) == 2:
                second_call.set()

    monkeypatch.setattr(Workspace, "checkpoint", checkpoint_after_the_next_call)
    project.store.listeners.append(on_event)
    result = asyncio.run(Runner(project).start("fix add", check=CHECK))
    assert waited and waited[0] is True
    assert result.run.status == "succeeded"
    assert [(c.seq, c.step) for c in project.store.checkpoints(result.run.id)] == [(1, 1)]
    assert "a - b" not in git(repo, "show", "main:calc.py")  # the acceptance step saw the checkpointed fix


def test_dirty_working_tree_is_never_taken_and_survives_the_merge(repo, cli, tmp_path):
    (repo / "notes.txt").write_text("my own notes\n")
    git(repo, "add", "notes.txt")  # staged by the user
    (repo / "test_calc.py").write_text((repo / "test_calc.py").read_text() + "\n# my unsaved comment\n")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert result["status"] == "succeeded"
    changed = git(repo, "show", "--name-only", "--format=", result["branch"]).splitlines()
    assert changed == ["calc.py"]  # the checkpoint holds the agent's change only
    assert "my unsaved comment" in (repo / "test_calc.py").read_text()
    assert "A  notes.txt" in git(repo, "status", "--porcelain").splitlines()
    assert "return a + b" in (repo / "calc.py").read_text()


def test_bad_tool_calls_return_errors_and_the_loop_goes_on(repo, cli, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("top secret")
    (repo / "link").symlink_to(outside)
    git(repo, "add", "link")
    git(repo, "commit", "-qm", "link")
    (repo / "blob.bin").write_bytes(b"\x00\x01" * 1000)
    git(repo, "add", "blob.bin")
    git(repo, "commit", "-qm", "binary")
    script = write_script(tmp_path / "s.json", [
        turn(call("edit_file", path="calc.py", old="return a - b")),  # schema: `new` missing
        turn(call("read_file", path="../secret.txt"), expect="new"),
        turn(call("read_file", path="link"), expect="escapes"),
        turn(call("read_file", path="blob.bin"), expect="escapes"),
        turn(call("edit_file", path="calc.py", old="no such text", new="x"), expect="binary"),
        turn(call("edit_file", path="calc.py", old="return", new="yield"), expect="not found"),
        turn(call("shell", command="sleep 600", timeout_seconds=1), expect="2"),
        turn(call("shell", command="head -c 100000000 /dev/zero | tr '\\0' a"), expect="timed out"),
        turn(call("no_such_tool"), expect="bytes left out"),
        {**FIX_ADD, "expect": "unknown tool"},
        FINISH,
    ])
    t0 = time.monotonic()
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert result["status"] == "succeeded", result
    assert time.monotonic() - t0 < 60
    assert "top secret" not in json.dumps(cli.json(repo, "show", result["run"]))


def test_rollback_restores_files_and_the_agent_is_told(repo, cli, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [
        turn(call("write_file", path="a.txt", content="a\n")),
        turn(call("write_file", path="b.txt", content="b\n")),
        turn(call("write_file", path="c.txt", content="c\n")),
        # after the budget stop, the rollback and the resume:
        turn(call("finish", summary="done"), expect="rolled back to checkpoint 1"),
    ])
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "3")
    result = cli.json(repo, "run", "write files", "--check", "test -f a.txt && test ! -e b.txt", "--script", script)
    assert result["status"] == "budget_exceeded" and "turn limit" in result["reason"]
    run, wt = result["run"], Path(result["worktree"])
    cps = cli.json(repo, "checkpoints", run)
    assert [c["checkpoint"] for c in cps] == [0, 1, 2, 3]
    assert (wt / "c.txt").exists()

    rolled = cli.json(repo, "rollback", run, "--to", "1")
    assert rolled["checkpoint"] == 1
    assert (wt / "a.txt").exists() and not (wt / "b.txt").exists() and not (wt / "c.txt").exists()

    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "10")
    resumed = cli.json(repo, "resume", run)
    assert resumed["status"] == "succeeded", resumed
    assert (repo / "a.txt").exists() and not (repo / "b.txt").exists()


def test_rollback_by_steps_and_bad_targets(repo, cli, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [turn(call("write_file", path="a.txt", content="a")),
                                                turn(call("write_file", path="b.txt", content="b"))])
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "2")
    run = cli.json(repo, "run", "w", "--script", script)["run"]
    code, _, err = cli(repo, "rollback", run, "--to", "9")
    assert code == 2 and "no checkpoint 9" in err and err.count("\n") == 1
    code, _, err = cli(repo, "rollback", run, "--steps", "5")
    assert code == 2 and "--steps must be between 1 and 2" in err
    assert cli.json(repo, "rollback", run, "--steps", "1")["checkpoint"] == 1


def test_model_faults_are_retried_and_the_run_completes(repo, cli, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_RETRY__INITIAL_BACKOFF", "0.01")
    monkeypatch.setenv("LOOPWRIGHT_RETRY__MAX_BACKOFF", "0.05")
    entries = [{"fault": "429", "retry_after": 0.01}, {"fault": "500"}, FIX_ADD, {"fault": "529"}, {"fault": "reset"},
               {"fault": "truncated"}, {"fault": "slow", "delay": 0.2}, {"fault": "cut"}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        result = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "anthropic", "--model",
                          "claude-haiku-4-5", "--base-url", server.anthropic_base_url)
    assert result["status"] == "succeeded", result
    retries = [e for e in cli.json(repo, "show", result["run"])["events"] if e["type"] == "retrying"]
    assert len(retries) == 6


def test_a_silent_model_shows_as_waiting_for_the_model(repo, cli):
    with LoopbackServer(Script.parse([{"fault": "slow", "delay": 120}, FINISH])) as server:
        proc = loopwright_subprocess(repo, "run", "fix add", "--provider", "openai", "--model", "gpt-5",
                                     "--base-url", server.openai_base_url)
        waiting = re.compile(r"^waiting for the model since \d\d:\d\d:\d\d$")
        try:
            assert wait_for_row(repo / ".loopwright" / "state.db", "SELECT 1 FROM runs")
            until(lambda: any(waiting.match(r["last_action"]) for r in cli.json(repo, "runs")), "the model call")
            run = cli.json(repo, "runs")[0]
            assert [r["last_action"] for r in cli.json(repo, "status")["active_runs"]] == [run["last_action"]]
            assert f"last action: {run['last_action']}" in cli(repo, "show", run["run"])[1]
        finally:
            proc.send_signal(signal.SIGINT)  # drops the call: the run pauses
            proc.communicate(timeout=30)
    assert cli.json(repo, "runs")[0]["last_action"] == ""


def test_retry_ceiling_pauses_the_run_and_resume_continues(repo, cli, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_RETRY__INITIAL_BACKOFF", "0.01")
    monkeypatch.setenv("LOOPWRIGHT_RETRY__MAX_BACKOFF", "0.02")
    monkeypatch.setenv("LOOPWRIGHT_RETRY__MAX_ATTEMPTS", "2")
    entries = [FIX_ADD, {"fault": "500"}, {"fault": "500"}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        args = ("--provider", "openai", "--model", "gpt-5", "--base-url", server.openai_base_url)
        first = cli.json(repo, "run", "fix add", "--check", CHECK, *args)
        assert first["status"] == "paused" and "model unavailable" in first["reason"]
        resumed = cli.json(repo, "resume", first["run"])
    assert resumed["status"] == "succeeded"


@pytest.mark.parametrize("fault, provider, reason", [
    ("401", "anthropic", r"the API key was refused \(401\): loopback: .*; fix the key, then resume"),
    ("billing", "openai", r"billing: the provider refused for lack of credit or quota \(429\): loopback: .*; "
                          r"add credit, then resume"),
    ("billing", "anthropic", r"billing: .*credit balance is too low.*; add credit, then resume"),
])
def test_a_refused_key_or_billing_pauses_the_run_and_resume_continues(repo, cli, fault, provider, reason):
    entries = [FIX_ADD, {"fault": fault}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        url = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        first = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", provider, "--model", "m",
                         "--base-url", url)
        assert first["status"] == "paused" and re.fullmatch(reason, first["reason"]), first
        assert len(server.requests) == 2  # not retried
        assert cli.json(repo, "resume", first["run"])["status"] == "succeeded"


def test_a_context_overflow_compacts_and_tries_once_more(repo, cli, tmp_path):
    big = "x" * 4000
    entries = [turn(call("write_file", path="one.txt", content=big)), turn(call("write_file", path="two.txt",
                                                                               content=big)),
               FIX_ADD, {"fault": "context_overflow"}, {"text": "HANDOFF: wrote one and two, fixed add."}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        result = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "openai", "--model", "m",
                          "--base-url", server.openai_base_url)
        sent = [r["body"]["messages"] for r in server.requests]
    assert result["status"] == "succeeded", result
    show = cli.json(repo, "show", result["run"])
    assert [e["type"] for e in show["events"] if e["type"] in ("retrying", "compacted")] == ["retrying", "compacted"]
    assert "context overflow (400)" in next(e["reason"] for e in show["events"] if e["type"] == "retrying")
    # the retry sent the hand-off note in place of the oldest turns: less than the request that overflowed
    assert "HANDOFF" in json.dumps(sent[5]) and len(json.dumps(sent[5])) < len(json.dumps(sent[3]))


def test_a_second_context_overflow_pauses_the_run_and_resume_continues(repo, cli):
    entries = [FIX_ADD, {"fault": "context_overflow"}, {"fault": "context_overflow"}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        first = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "anthropic", "--model", "m",
                         "--base-url", server.anthropic_base_url)
        assert first["status"] == "paused", first
        assert re.fullmatch(r"context overflow \(400\): prompt is too long: .*, again after compacting: .*then "
                            r"resume", first["reason"]), first["reason"]
        assert cli.json(repo, "resume", first["run"])["status"] == "succeeded"


def test_a_huge_assistant_text_is_kept_as_head_and_tail(repo, cli):
    huge = "HEAD " + "y" * 2_000_000 + " TAIL"
    entries = [{**FIX_ADD, "text": huge}, FINISH]
    with LoopbackServer(Script.parse(entries)) as server:
        result = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "anthropic", "--model", "m",
                          "--base-url", server.anthropic_base_url)
        sent = server.requests[1]["body"]["messages"][1]["content"][0]["text"]
    assert result["status"] == "succeeded", result
    assert len(sent) <= 30_000 and sent.startswith("HEAD ") and sent.endswith(" TAIL") and "characters left out" in sent
    stored = Store(repo / ".loopwright" / "state.db").conversation(result["run"])[1].text
    assert stored == sent


def test_an_empty_answer_is_retried_and_shown(repo, cli):
    with LoopbackServer(Script.parse([{"fault": "empty"}, FIX_ADD, FINISH])) as server:
        result = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "openai", "--model", "m",
                          "--base-url", server.openai_base_url)
    assert result["status"] == "succeeded", result
    code, out, _ = cli(repo, "show", result["run"])
    assert code == 0 and "model call failed (empty response); retrying (1/6)" in out, out


def test_a_429_that_keeps_coming_is_waited_out_with_a_count_then_pauses(repo, cli, monkeypatch):
    """The fleet's gate waits each 429 out, saying how long and counting, up to quota.max_wait_seconds."""
    monkeypatch.setenv("LOOPWRIGHT_QUOTA__MAX_WAIT_SECONDS", "1")
    with LoopbackServer(Script.parse([{"fault": "429", "retry_after": 0.3}] * 40)) as server:
        result = cli.json(repo, "run", "fix add", "--check", CHECK, "--provider", "anthropic", "--model", "m",
                          "--base-url", server.anthropic_base_url)
        requests = len(server.requests)
    assert result["status"] == "paused", result
    assert re.fullmatch(r"rate limited \(429\): the fleet's gate for anthropic/m@http://\S+ stays closed until "
                        r"[\d:]+, past the 1s a run waits at it \(quota.max_wait_seconds; waited [\d.]+s\): "
                        r"`loopwright resume` after that", result["reason"]), result["reason"]
    waits = [e for e in cli.json(repo, "show", result["run"])["events"] if e["type"] == "retrying"]
    assert [e["attempt"] for e in waits] == list(range(1, len(waits) + 1)) and len(waits) >= 2
    assert all("waiting at the fleet's rate-limit gate" in e["reason"] and "of at most 1s waited so far" in e["reason"]
               and 0 < e["wait_seconds"] <= 0.3 + 0.5 and e["max_attempts"] is None for e in waits)  # + the stagger
    assert requests == len(waits) + 1


def test_a_dead_server_is_named_from_the_first_failed_attempt(repo):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens here now
    env = {"LOOPWRIGHT_RETRY__MAX_ATTEMPTS": "3", "LOOPWRIGHT_RETRY__INITIAL_BACKOFF": "0.01",
           "LOOPWRIGHT_RETRY__MAX_BACKOFF": "0.02"}
    proc = loopwright_subprocess(repo, "run", "fix add", "--provider", "openai", "--model", "gpt-5",
                                 "--base-url", f"http://127.0.0.1:{port}/v1", env=env)
    _, err = proc.communicate(timeout=120)
    retries = [line.strip() for line in err.splitlines() if "retrying" in line]
    assert retries[:1] == [f"model call failed (no server at http://127.0.0.1:{port}); retrying (1/3) in 0.0s"], err
    assert len(retries) == 2 and "(2/3)" in retries[1]
    assert proc.returncode == 1 and "connection refused 3 times" in err


def test_context_compaction_writes_a_hand_off_note(repo, cli, tmp_path):
    (repo / "loopwright.toml").write_text('[models.tiny]\ninput_usd_per_mtok = 0\noutput_usd_per_mtok = 0\n'
                                          'context_window = 9600\n')
    big = "x" * 7000  # ~1,800 tokens a turn: the 4th model call is past 75% of the window
    script = write_script(tmp_path / "s.json", [
        turn(call("write_file", path="one.txt", content=big)),
        turn(call("write_file", path="two.txt", content=big)),
        turn(call("write_file", path="three.txt", content=big)),
        {"text": "HANDOFF: wrote one, two and three."},  # the summariser's answer
        {**FIX_ADD},
        FINISH,
    ])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--model", "tiny")
    assert result["status"] == "succeeded", result
    show = cli.json(repo, "show", result["run"])
    compactions = [e for e in show["events"] if e["type"] == "compacted"]
    assert len(compactions) == 1 and compactions[0]["tokens_after"] < compactions[0]["tokens_before"]
    assert "HANDOFF" in show["scratchpad"]
    store = Store(repo / ".loopwright" / "state.db")
    assert "HANDOFF" in store.conversation(result["run"])[0].text


def test_kill_9_mid_step_then_resume(repo, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn(call("write_file", path="partial.txt", content="p")),
        turn(call("shell", command="echo half > half.txt; sleep 20", timeout_seconds=120)),
        {**FIX_ADD, "expect": "interrupted"},
        FINISH,
    ])
    proc = loopwright_subprocess(repo, "run", "fix add", "--check", CHECK, "--script", str(script))
    db = repo / ".loopwright" / "state.db"
    row = wait_for_row(db, "SELECT run_id FROM events WHERE type = 'tool_started' AND data LIKE '%sleep 20%'")
    if row is None:
        proc.kill()
        pytest.fail(f"the run never reached the sleeping step: {proc.communicate()}")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run_id = row[0]
    store = Store(db)
    assert store.run(run_id).status == "running" and not store.run(run_id).owner_alive()
    resumed = loopwright_subprocess(repo, "resume", run_id, "--json")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    assert (repo / "partial.txt").exists() and not (repo / "half.txt").exists()


def test_kill_9_while_a_checkpoint_runs_behind_the_model_call_keeps_that_turn(repo, tmp_path):
    """The agent has the results of a turn whose checkpoint was cut short: the resume commits the turn's work,
    then runs the next answer's call, which never began."""
    marker = tmp_path / "slept"  # a clean filter that makes the first `git add` of slow.txt take 5 s
    git(repo, "config", "filter.slow.clean", f"sh -c 'if [ ! -e {marker} ]; then touch {marker}; sleep 5; fi; cat'")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("slow.txt filter=slow\n")
    script = write_script(tmp_path / "s.json", [
        turn(call("write_file", path="slow.txt", content="kept\n")),
        turn(call("write_file", path="other.txt", content="written on resume\n")),
        {**FINISH, "expect": "resumed"},
    ])
    proc = loopwright_subprocess(repo, "run", "slow", "--check", "true", "--script", str(script))
    db = repo / ".loopwright" / "state.db"
    row = wait_for_row(db, "SELECT run_id FROM events WHERE type = 'message' AND data LIKE '%other.txt%'")
    if row is None:
        proc.kill()
        pytest.fail(f"the run never got its second answer: {proc.communicate()}")
    proc.send_signal(signal.SIGKILL)  # the loop waits for the slow checkpoint before the second turn's tool
    proc.wait()
    run_id = row[0]
    lock = repo / ".git" / "worktrees" / run_id / "index.lock"  # the orphaned `git add` ends by itself
    until(lambda: not lock.exists(), "the orphaned checkpoint to end", timeout=15)
    store = Store(db)
    assert store.events(run_id, types=("tool_started",))[-1][2].arguments["path"] == "slow.txt"
    assert store.checkpoints(run_id) == []
    resumed = loopwright_subprocess(repo, "resume", run_id, "--json")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert json.loads(out)["status"] == "succeeded"
    messages = [c.message for c in store.checkpoints(run_id)]
    assert messages[0] == "step 1 (its checkpoint, cut short, written on resume)" and len(messages) == 2
    assert store.events(run_id, types=("rolled_back",)) == []
    assert (repo / "slow.txt").read_text() == "kept\n" and (repo / "other.txt").read_text() == "written on resume\n"


def test_ctrl_c_pauses_at_a_safe_point_then_resume(repo, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command="sleep 2; echo slept")),
        {**FIX_ADD, "expect": "resumed"},
        FINISH,
    ])
    proc = loopwright_subprocess(repo, "run", "fix add", "--check", CHECK, "--script", str(script))
    assert wait_for_row(repo / ".loopwright" / "state.db", "SELECT 1 FROM events WHERE type = 'tool_started'")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "paused" in out and "loopwright resume" in out and "Traceback" not in err
    run_id = out.split()[1].rstrip(":")
    resumed = loopwright_subprocess(repo, "resume", run_id, "--json")
    out, err = resumed.communicate(timeout=60)
    assert json.loads(out)["status"] == "succeeded", err


def _started(proc, db: Path, command: str) -> str:
    """The id of the run whose tool call runs `command`, once its process runs."""
    row = wait_for_row(db, f"SELECT run_id FROM events WHERE type = 'tool_started' AND data LIKE '%{command}%'")
    if row is None:
        proc.kill()
        pytest.fail(f"the run never reached `{command}`: {proc.communicate()}")
    until(lambda: processes(command), f"`{command}` to run")
    return row[0]


def test_pause_says_it_waits_for_the_running_command_and_kill_ends_it_now(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [turn(call("shell", command="sleep 40.3")), FINISH])
    proc = loopwright_subprocess(repo, "run", "sleep", "--check", "true", "--script", str(script))
    db = repo / ".loopwright" / "state.db"
    run_id = _started(proc, db, "sleep 40.3")
    code, out, _ = cli(repo, "pause", run_id)
    assert code == 0 and "when the current tool call ends (shell sleep 40.3" in out
    until(lambda: Store(db).events(run_id, types=("stop_requested",)), "the running process to take the pause")
    assert Store(db).run(run_id).status == "running" and processes("sleep 40.3")  # the pause waits for the call
    t0 = time.monotonic()
    code, out, _ = cli(repo, "kill", run_id)
    assert code == 0 and "stops it now" in out
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10, err  # not the 40 s of the sleep
    assert processes("sleep 40.3") == []
    run = Store(db).run(run_id)
    assert run.status == "killed" and "interrupted" in Store(db).events(run_id, types=("tool_finished",))[-1][2].preview
    assert f"run {run_id}: killed" in out


def test_ctrl_c_twice_interrupts_the_running_command_and_resume_goes_on(repo, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command="sleep 40.4")),
        {**FIX_ADD, "expect": "interrupted: the run was stopped while this command ran"},
        FINISH,
    ])
    proc = loopwright_subprocess(repo, "run", "fix add", "--check", CHECK, "--script", str(script))
    run_id = _started(proc, repo / ".loopwright" / "state.db", "sleep 40.4")
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert time.monotonic() - t0 < 10 and proc.returncode == 130, err
    assert processes("sleep 40.4") == [] and f"run {run_id}: paused" in out
    resumed = loopwright_subprocess(repo, "resume", run_id, "--json")
    out, err = resumed.communicate(timeout=60)
    assert json.loads(out)["status"] == "succeeded", err


def test_scripted_model_fails_loudly_on_too_few_or_unused_turns(repo, cli, tmp_path):
    short = write_script(tmp_path / "short.json", [FIX_ADD])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", short)
    assert result["status"] == "failed" and "script has only 1" in result["reason"]
    long = write_script(tmp_path / "long.json", [FIX_ADD, FINISH, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", long)
    assert result["status"] == "failed" and "1 script turn(s) unused" in result["reason"]
    assert "return a - b" in (repo / "calc.py").read_text()  # failed before the merge: main did not move


def test_show_runs_and_gc(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    code, out, _ = cli(repo, "show", result["run"])
    assert code == 0 and "edit_file" in out and "acceptance check" in out and "merged into main" in out
    assert [r["run"] for r in cli.json(repo, "runs")] == [result["run"]]
    gc = cli.json(repo, "gc")
    assert gc["removed"][0]["run"] == result["run"] and gc["bytes_freed"] > 0
    assert not Path(result["worktree"]).exists()
    assert cli.json(repo, "gc")["removed"] == []  # nothing left to collect
    with pytest.raises(subprocess.CalledProcessError):  # merged branch deleted under the default policy
        git(repo, "rev-parse", "--verify", result["branch"])


def test_offline_demo(tmp_path, capsys, monkeypatch):
    from loopwright.cli.main import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # its repository goes into a temporary folder
    assert main(["demo", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "succeeded" and out["checkpoints"] == 3 and "scripted model" in out["model"]
    assert Path(out["repository"]).parent == tmp_path


def test_offline_demo_via_the_anthropic_sdk(tmp_path):
    from loopwright.runtime.demo import run_demo

    demo = run_demo(via="anthropic", where=tmp_path / "demo")
    assert demo.run.status == "succeeded" and "anthropic wire format" in demo.how


def test_target_branch_and_keep(repo, cli, tmp_path):
    git(repo, "branch", "release")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--target", "release")
    assert result["status"] == "succeeded"
    assert git(repo, "log", "-1", "--format=%s", "release") == "loopwright: fix add"
    assert git(repo, "log", "-1", "--format=%s", "main") == "initial"
    kept = cli.json(repo, "run", "fix add again", "--check", CHECK, "--script", script, "--keep")
    assert kept["status"] == "succeeded" and "kept" in kept["reason"]
    assert git(repo, "log", "-1", "--format=%s", "main") == "initial"
    code, _, err = cli(repo, "run", "x", "--script", script, "--target", "nope")
    assert code == 2 and "no branch 'nope'" in err


def _seconds(clock: tuple[str, str]) -> int:
    return int(clock[0]) * 60 + int(clock[1])


def test_the_progress_clock_is_the_runs_own_active_time(repo, tmp_path):
    # the worktree's setup takes 3 s before the run starts: the summary does not count it, nor may the progress lines
    (repo / "loopwright.toml").write_text('[workspace]\nsetup_command = "sleep 3"\n')
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    proc = loopwright_subprocess(repo, "run", "fix add", "--check", CHECK, "--script", str(script))
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    clocks = [_seconds(c) for c in re.findall(r"^\[\s*(\d+):(\d\d)\] step", err, re.MULTILINE)]
    summary = _seconds(re.search(r"tokens, \$[\d.]+, (\d+):(\d\d);", out).groups())
    assert len(clocks) == 2 and max(clocks) <= summary + 1, (clocks, summary)


def test_the_scripted_model_costs_nothing_and_spends_no_budget(repo, cli, tmp_path):
    (repo / "loopwright.toml").write_text("[fleet]\nusd_per_day = 5\n")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)  # the default model's name
    assert result["status"] == "succeeded" and result["tokens"] > 0 and result["cost_usd"] == 0
    budget = cli.json(repo, "budget")
    assert budget["day_usd"] == 0 and budget["total_usd"] == 0


def _unmarked(value):
    """A request part without its cache breakpoints (they move every turn; the prefix they mark does not)."""
    if isinstance(value, dict):
        return {k: _unmarked(v) for k, v in value.items() if k != "cache_control"}
    return [_unmarked(v) for v in value] if isinstance(value, list) else value


@pytest.mark.parametrize("provider", ["anthropic", "openai"])
def test_the_prompt_prefix_stays_byte_identical_for_twenty_turns(repo, cli, tmp_path, monkeypatch, provider):
    """Lessons recalled, skills in the catalog and a rollback notice in the middle: every request starts with the
    previous request's system prompt, tools and messages, byte for byte, so each turn reads the cache."""
    cli(repo, "init")
    code, _, err = cli(repo, "lessons", "add", "To fix add in calc.py, run the unit tests with python -m unittest.")
    assert code == 0, err
    turns = [turn(call("write_file", path=f"f{i}.txt", content=f"{i}\n" * 300)) for i in range(10)]
    turns += [turn(call("read_file", path="calc.py"), expect="rolled back to checkpoint 9")]
    turns += [turn(call("read_file", path="calc.py")) for _ in range(8)] + [FIX_ADD, FINISH]
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "10")
    monkeypatch.setenv("LOOPWRIGHT_MEMORY__REFLECT", "false")  # only the run's own turns reach the server
    with LoopbackServer(Script.parse(turns)) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        args = ("--provider", provider, "--model", "claude-sonnet-4-6" if provider == "anthropic" else "gpt-5",
                "--base-url", base)
        first = cli.json(repo, "run", "fix add", "--check", CHECK, *args)
        assert first["status"] == "budget_exceeded", first
        cli(repo, "rollback", first["run"], "--steps", "1")
        monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_TURNS", "100")
        result = cli.json(repo, "resume", first["run"])
        bodies = [r["body"] for r in server.requests]
    assert result["status"] == "succeeded", result
    assert len(bodies) == 21
    assert "run the unit tests" in json.dumps(bodies[0]) and "## Skills" in json.dumps(bodies[0])  # the bundled
    head = "system" if provider == "anthropic" else None
    for before, after in zip(bodies, bodies[1:], strict=False):
        assert json.dumps(_unmarked(after.get("tools"))) == json.dumps(_unmarked(before.get("tools")))
        if head:
            assert json.dumps(_unmarked(after[head])) == json.dumps(_unmarked(before[head]))
        sent, now = _unmarked(before["messages"]), _unmarked(after["messages"])
        if provider == "anthropic" and sent[-1] != now[len(sent) - 1]:  # resumed: the notice joins the last turn
            assert now[len(sent) - 1]["content"][:len(sent[-1]["content"])] == sent[-1]["content"]
            sent, now = sent[:-1], now[:len(sent) - 1]
        assert json.dumps(now[:len(sent)]) == json.dumps(sent)
    shown = cli.json(repo, "show", result["run"])
    reads = [e["usage"]["cache_read_tokens"] for e in shown["events"] if e["type"] == "model_called"]
    assert reads[0] == 0 and all(r > 0 for r in reads[1:])  # from the second turn on, every turn reads the cache
    assert shown["cache_hit_share"] > 0.8 and shown["cache_saved_usd"] > 0


def test_a_runs_first_checkpoint_does_not_ask_git_where_its_branch_is(repo, cli, tmp_path, monkeypatch):
    """The worktree's maker knows its branch's tip (the target's head) and hands it to the run: one git process
    fewer per run, in the moment a fleet's runs checkpoint together."""
    trace = tmp_path / "trace"
    monkeypatch.setenv("GIT_TRACE", str(trace))
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert result["status"] == "succeeded", result["reason"]
    ran = [ln.split("built-in: git ", 1)[1] for ln in trace.read_text().splitlines() if "built-in: git " in ln]
    assert any(c.startswith("update-ref -m 'loopwright: checkpoint") for c in ran), ran
    assert not [c for c in ran if "--symbolic-full-name" in c]
