"""External command-line agents under loopwright's supervisor, end to end: the `command` agent with a small fake
agent script (it edits files, prints, hangs, floods, exits non-zero), and a test-only streaming agent whose
script prints JSON lines (sessions, tool calls, usage and cost), through the CLI and the daemon."""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import pytest
from support import CHECK, git, needs_bwrap, processes, until

from loopwright.harness.agents.base import (
    AgentEvent,
    AgentFinished,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
    SessionStarted,
)
from loopwright.harness.messages import Usage
from loopwright.memory.processes import ToolProcesses
from loopwright.memory.store import Store
from loopwright.runtime import agents
from loopwright.runtime.chat.threads import messages

PY = sys.executable

# The fake agent: what it does is said by words in its prompt (the task's goal, and what a resume adds).
FAKE = r'''
import pathlib, subprocess, sys, time
prompt = sys.argv[1]
print("fake agent got:", prompt.splitlines()[0] if prompt else "", flush=True)

def fix():
    p = pathlib.Path("calc.py")
    p.write_text(p.read_text().replace("return a - b", "return a + b"))
    print("fixed add in calc.py", flush=True)

def checkpointed():
    return "files changed" in subprocess.run(["git", "log", "-1", "--format=%s"], capture_output=True,
                                             text=True).stdout

if "EXIT" in prompt:
    print("error: FAKE_KEY is not set", file=sys.stderr, flush=True)
    sys.exit(3)
if "FLOOD" in prompt:
    for i in range(100_000):
        sys.stdout.write(f"flood line {i}\n")
    sys.stdout.write("x" * 300_000 + "\n")
    fix()
elif "HANG" in prompt and not any(w in prompt for w in ("has been resumed", "rolled back", "Message from")):
    pathlib.Path("notes.txt").write_text("started\n")
    print("hanging", flush=True)
    time.sleep(3600)
elif "TWICE" in prompt and "failed (exit" not in prompt:
    pathlib.Path("wip.txt").write_text("a first try\n")
    print("first try done", flush=True)
elif "WAITGO" in prompt:  # writes, prints, waits for the test's file `go`, prints again
    pathlib.Path("notes.txt").write_text("step one\n")
    print("waiting for go", flush=True)
    while not pathlib.Path(__file__).with_name("go").exists():
        time.sleep(0.05)
    print("second part", flush=True)
    fix()
elif "WATCH" in prompt:
    pathlib.Path("notes.txt").write_text("step one\n")
    deadline = time.time() + 60
    while not checkpointed() and time.time() < deadline:
        time.sleep(0.05)
    fix()
else:
    fix()
'''


@pytest.fixture
def fake(tmp_path, monkeypatch) -> str:
    """The fake agent's `--agent-command` template (its folder shown read-only to the sandbox)."""
    folder = tmp_path / "agentbin"
    folder.mkdir()
    (folder / "fakeagent.py").write_text(FAKE)
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(folder)]))
    return f"{PY} {folder / 'fakeagent.py'} {{prompt}}"


def run(cli, repo: Path, goal: str, template: str, *extra: str) -> dict:
    code, out, err = cli(repo, "run", goal, "--agent", "command", "--agent-command", template, "--check", CHECK,
                         *extra, "--json")
    assert code in (0, 1), err
    return json.loads(out)


def test_a_command_agent_is_checkpointed_on_its_file_changes_and_the_check_merges(repo, cli, fake):
    result = run(cli, repo, "WATCH then fix add", fake)
    assert result["status"] == "succeeded", result
    assert result["agent"] == "command" and result["cost_usd"] is None  # it reports no cost
    store = Store(repo / ".loopwright" / "state.db")
    messages = [c.message for c in store.checkpoints(result["run"])]
    assert messages[0] == "command: files changed"  # seen by the watcher while the agent ran, before it exited
    assert "return a + b" in (repo / "calc.py").read_text()
    assert git(repo, "show", "main:notes.txt") == "step one"
    show = cli.json(repo, "show", result["run"])
    said = [e["message"] for e in show["events"] if e["type"] == "message"]
    assert said[0]["role"] == "user" and "WATCH then fix add" in json.dumps(said[0])
    assert "fixed add in calc.py" in json.dumps(said[1:])  # stdout is the transcript
    _, out, _ = cli(repo, "runs")
    assert "cost unknown" in out


def test_a_failing_check_runs_the_agent_again_with_the_check_output(repo, cli, fake):
    result = run(cli, repo, "TWICE fix add", fake)
    assert result["status"] == "succeeded", result
    store = Store(repo / ".loopwright" / "state.db")
    checks = [e.passed for _, _, e in store.events(result["run"], types=("check_ran",))]
    assert checks == [False, True]
    prompts = [m.text for m in store.conversation(result["run"]) if m.role == "user"]
    assert len(prompts) == 2 and "failed (exit 1)" in prompts[1] and "test_add" in prompts[1]
    assert "TWICE fix add" in prompts[1]  # no session to resume: the task comes again, with the check's output


def test_the_wall_clock_cap_kills_a_hanging_agent(repo, cli, fake, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_WALL_SECONDS", "2")
    result = run(cli, repo, "HANG forever", fake)
    assert result["status"] == "budget_exceeded" and "time limit" in result["reason"]
    assert processes("fakeagent.py") == []
    store = Store(repo / ".loopwright" / "state.db")
    assert ToolProcesses(store, result["run"]).recorded() == []
    assert any("notes.txt" in git(repo, "show", "--name-only", c.sha) for c in store.checkpoints(result["run"]))


def test_a_flood_of_output_is_capped_and_read_to_its_end(repo, cli, fake):
    result = run(cli, repo, "FLOOD then fix add", fake)
    assert result["status"] == "succeeded", result
    store = Store(repo / ".loopwright" / "state.db")
    pieces = [m.text for m in store.conversation(result["run"]) if m.role == "assistant"]
    transcript = "\n".join(pieces)
    assert len(transcript) < 40_000  # [tools] output_cap, head and tail
    assert max(len(p) for p in pieces[:-1]) < 4096 + 7500 + 20  # the head's pieces: a few KB and at most a line
    assert "[… line cut …]" in transcript and "characters left out" in pieces[-1]
    assert "fixed add in calc.py" in transcript  # the end of the flood was read


def test_an_agent_that_exits_non_zero_pauses_the_run_naming_what_it_needs(repo, cli, fake):
    result = run(cli, repo, "EXIT at once", fake)
    assert result["status"] == "paused"
    assert "exited with code 3" in result["reason"] and "FAKE_KEY is not set" in result["reason"]
    assert "it needs whatever" in result["reason"]


@pytest.mark.parametrize("args,says", [
    (("--agent", "nosuch"), "unknown agent 'nosuch' (known: loopwright, command"),
    (("--agent", "command"), "--agent command needs its template: --agent-command"),
    (("--agent-command", "aider --yes-always"), "has no {prompt}: say where the prompt goes"),
])
def test_bad_agent_input_is_one_line_with_a_hint(repo, cli, args, says):
    code, out, err = cli(repo, "run", "fix add", *args)
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli(repo, "post", "fix add", *args)
    assert code != 0 and says in err and len(err.strip().splitlines()) == 1, err


NET = r'''
import os, pathlib, socket, sys, urllib.request
port, banner = sys.argv[1], int(sys.argv[2])
def attempt(what, do):
    try:
        print(what, "ok:", do(), flush=True)
    except Exception as e:
        print(what, "failed:", type(e).__name__, e, flush=True)
attempt("api", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/v1").read().decode())
attempt("other host", lambda: urllib.request.urlopen("http://example.org/").read()[:20])
attempt("direct", lambda: socket.create_connection(("127.0.0.1", banner), timeout=5).recv(100))
login = pathlib.Path(os.environ["HOME"]) / ".fakeagent" / "login"
attempt("login read", login.read_text)
attempt("login write", lambda: login.write_text("changed"))
attempt("key", lambda: os.environ.get("FAKE_AGENT_API_KEY"))
attempt("other key", lambda: os.environ.get("OTHER_API_KEY"))
'''


@needs_bwrap
def test_the_sandbox_lets_an_agent_reach_only_its_api_and_read_its_login(repo, cli, tmp_path, monkeypatch, banner):
    """The configured base URL's loopback host is reached through the sandbox's proxy; any other host and any
    direct connection are refused; its config folder is read-only; only its own key variable reaches it."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Api(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"the api answered")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    home, folder = tmp_path / "home", tmp_path / "netbin"
    (home / ".fakeagent").mkdir(parents=True)
    (home / ".fakeagent" / "login").write_text("token-file")
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    port = server.server_address[1]
    (repo / "loopwright.toml").write_text(
        f'[agents.netagent]\ncommand = "{PY} {folder / "net.py"} {port} {banner} {{prompt}}"\n'
        f'config_dirs = [".fakeagent"]\nkeys = ["FAKE_AGENT_API_KEY"]\n'
        f'[sandbox]\nmode = "bwrap"\nreadable = ["{folder}"]\n[memory]\nreflect = false\n')
    git(repo, "add", "loopwright.toml")
    git(repo, "commit", "-qm", "config")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("FAKE_AGENT_API_KEY", "fake-key-value")
    monkeypatch.setenv("OTHER_API_KEY", "other-key-value")
    try:
        code, out, err = cli(repo, "run", "look around", "--agent", "netagent", "--provider", "openai",
                             "--base-url", f"http://127.0.0.1:{port}/v1", "--json")
    finally:
        server.shutdown()
    store = Store(repo / ".loopwright" / "state.db")
    (said,) = [m.text for m in store.conversation(json.loads(out)["run"]) if m.role == "assistant"]
    assert "api ok: the api answered" in said
    assert "other host failed: HTTPError HTTP Error 403" in said
    assert "direct failed" in said
    assert "login read ok: token-file" in said and "login write failed" in said
    assert "key ok: [redacted:FAKE_AGENT_API_KEY]" in said and "other key ok: None" in said  # redacted when shown
    assert (home / ".fakeagent" / "login").read_text() == "token-file"


def _daemon_store(repo: Path) -> Store:
    return Store(repo / ".loopwright" / "state.db")


def _hanging(store: Store) -> str:
    until(lambda: store.runs(statuses=("running",)) and processes("fakeagent.py"), "the agent to start")
    (run,) = store.runs(statuses=("running",))
    until(lambda: (Path(run.worktree) / "notes.txt").exists(), "the agent to write notes.txt and hang")
    return run.id


def test_a_command_agents_output_reaches_the_runs_events_while_it_runs(repo, cli, fake, daemon, tmp_path):
    task = cli.json(repo, "post", "WAITGO then fix add", "--agent-command", fake, "--check", CHECK)["task"]
    daemon()
    store = _daemon_store(repo)
    until(lambda: store.runs(task_id=task), "the run to start")
    (run,) = store.runs(task_id=task)

    def said() -> str:
        events = cli.json(repo, "show", run.id)["events"]
        return "".join(json.dumps(e["message"]) for e in events if e["type"] == "message"
                       and e["message"]["role"] == "assistant")

    until(lambda: "waiting for go" in said(), "the first part of the output while the agent waits")
    assert "second part" not in said() and store.run(run.id).status == "running"
    until(lambda: "waiting for go" in cli.json(repo, "runs")[0]["last_action"], "the last action")
    _, out, _ = cli(repo, "show", run.id)
    assert "assistant: fake agent got: # Task 1: WAITGO then fix add\nwaiting for go" in out
    (tmp_path / "agentbin" / "go").write_text("")
    until(lambda: store.task(task).status == "succeeded", "the agent to go on and succeed", timeout=60)
    assert said().index("waiting for go") < said().index("second part")
    assert cli.json(repo, "runs")[0]["last_action"] == "fixed add in calc.py"


def test_pause_resume_and_kill_through_the_daemon(repo, cli, fake, daemon):
    task = cli.json(repo, "post", "HANG then fix add", "--agent-command", fake, "--check", CHECK)["task"]
    daemon()
    store = _daemon_store(repo)
    run_id = _hanging(store)
    cli(repo, "pause", run_id)
    until(lambda: store.run(run_id).status == "paused", "the run to pause")
    assert processes("fakeagent.py") == []
    cli(repo, "resume", run_id)
    until(lambda: store.task(task).status == "succeeded", "the resumed run to succeed", timeout=60)
    prompts = [m.text for m in store.conversation(run_id) if m.role == "user"]
    assert "this run was paused and has been resumed" in prompts[-1]
    assert "return a + b" in (repo / "calc.py").read_text()

    other = cli.json(repo, "post", "HANG and be killed", "--agent-command", fake, "--check", CHECK)["task"]
    until(lambda: store.runs(task_id=other) and processes("fakeagent.py"), "the second agent to hang")
    (killed,) = store.runs(task_id=other)
    cli(repo, "kill", killed.id)
    until(lambda: store.run(killed.id).status == "killed", "the run to be killed")
    assert processes("fakeagent.py") == []


def test_a_rollback_or_a_message_stops_the_agent_and_runs_it_again_with_the_notice(repo, cli, fake, daemon):
    task = cli.json(repo, "post", "HANG then fix add", "--agent-command", fake, "--check", CHECK)["task"]
    daemon()
    store = _daemon_store(repo)
    run_id = _hanging(store)
    until(lambda: store.checkpoints(run_id), "the checkpoint of notes.txt")
    code, out, err = cli(repo, "rollback", run_id, "--to", "0")
    assert code == 0 and "applied by the running agent" in out, err
    until(lambda: store.task(task).status == "succeeded", "the run to go on and succeed", timeout=60)
    prompts = [m.text for m in store.conversation(run_id) if m.role == "user"]
    assert "rolled back to the start" in prompts[-1] and "HANG then fix add" in prompts[-1]
    assert "notes.txt" not in git(repo, "ls-tree", "-r", "--name-only", "main")

    other = cli.json(repo, "post", "HANG until told", "--agent-command", fake, "--check", CHECK)["task"]
    until(lambda: store.runs(task_id=other) and processes("fakeagent.py"), "the second agent to hang")
    (second,) = store.runs(task_id=other)
    store.enqueue_command(second.id, "notify", {"text": "Message from the person supervising you: go on"})
    until(lambda: store.task(other).status in ("succeeded", "needs_review"), "the told run to finish", timeout=60)
    prompts = [m.text for m in store.conversation(second.id) if m.role == "user"]
    assert len(prompts) == 2 and "Message from the person supervising you: go on" in prompts[1]


def test_a_chat_mention_of_an_agent_runs_the_request_on_it_and_its_output_is_the_answer(repo, cli, fake, daemon):
    (repo / "loopwright.toml").write_text(f'[agents.fake]\ncommand = "{fake}"\n'
                                          f'[chat]\nagents = ["fake", "ghost"]\ndebounce_seconds = 0.2\n')
    git(repo, "add", "loopwright.toml")
    git(repo, "commit", "-qm", "config")
    cli(repo, "threads", "new", "dev", "--check", CHECK)
    code, _, err = cli(repo, "say", "dev", "@ghost hello", "--as", "ana")
    assert code == 0 and "no agent or member" not in err
    daemon()
    store = _daemon_store(repo)
    until(lambda: any(m.kind == "system" for m in messages(store, "dev")), "the refusal of @ghost")
    (refused,) = [m.text for m in messages(store, "dev") if m.kind == "system"]
    assert refused.startswith("@ana cannot start ghost: unknown agent 'ghost'") and "[agents.ghost]" in refused
    cli(repo, "say", "dev", "@fake please fix add", "--as", "ana")
    until(lambda: any(m.kind == "agent" for m in messages(store, "dev")), "the answer", timeout=60)
    (task,) = store.tasks()
    assert task.options["agent"] == "fake" and task.status == "succeeded"
    assert "What you print last is posted in #dev" in task.goal and "ana: @ghost hello" in task.goal
    (run,) = store.runs(task_id=task.id)
    assert run.agent == "fake" and "return a + b" in (repo / "calc.py").read_text()
    (answer,) = [m.text for m in messages(store, "dev") if m.kind == "agent"]
    assert answer.startswith("@ana ") and "fixed add in calc.py" in answer


@pytest.mark.parametrize("mode", ["none", pytest.param("bwrap", marks=needs_bwrap)])
def test_kill_9_of_the_daemon_then_the_run_resumes(repo, cli, fake, daemon, monkeypatch, mode):
    """A jail dies with the daemon; unjailed, the agent outlives it and is ended (it is recorded) before the run
    resumes from where it was."""
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", mode)
    task = cli.json(repo, "post", "HANG then fix add", "--agent-command", fake, "--check", CHECK)["task"]
    d = daemon()
    store = _daemon_store(repo)
    run_id = _hanging(store)
    d.stop(signal.SIGKILL)
    if mode == "none":
        assert processes("fakeagent.py")  # nothing ends it with the daemon
    else:
        until(lambda: not processes("fakeagent.py"), "the jail to die with the daemon")
    daemon()
    until(lambda: store.task(task).status == "succeeded", "the run to resume and succeed", timeout=60)
    assert [r.id for r in store.runs(task_id=task)] == [run_id]
    prompts = [m.text for m in store.conversation(run_id) if m.role == "user"]
    assert "crashed (its process died) and has been resumed" in prompts[-1]
    assert ("were still running; they were killed" in prompts[-1]) == (mode == "none")
    assert processes("fakeagent.py") == [] and ToolProcesses(store, run_id).recorded() == []
    assert git(repo, "show", "main:notes.txt") == "started"  # what it did before the crash was kept


# -- a streaming agent (test-only): its script prints JSON lines -------------------------------------------------

STREAM = r'''
import json, pathlib, sys
prompt, session = sys.argv[1], sys.argv[2]
def say(**kw):
    print(json.dumps(kw), flush=True)
say(session=session or "s-1", given=session)
say(call="c1", tool="edit", args={"path": "calc.py"})
if "failed (exit" in prompt or "FIRST" in prompt:
    p = pathlib.Path("calc.py")
    p.write_text(p.read_text().replace("return a - b", "return a + b"))
else:
    pathlib.Path("wip.txt").write_text("try\n")
say(result="c1", tool="edit", output="edited")
say(call="c2", tool="read", args={"path": "calc.py"})
say(result="c2", tool="read", output="...", changes=False)
say(text="done: " + prompt.splitlines()[0][:40])
for usage in json.loads(pathlib.Path(sys.argv[3]).read_text()):
    say(usage=usage)
say(finished=True)
'''


class StreamAgent:
    """A CliAgent whose CLI prints one JSON object a line (a stand-in for Claude Code and Codex)."""

    name = "fake-stream"
    streams_events = True
    api_hosts: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()
    key_hint = "FAKE_STREAM_KEY"

    def __init__(self, script: Path, usage: Path):
        self.script, self.usage = script, usage
        self.sessions: list[str | None] = []

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        self.sessions.append(session_id)
        return [PY, str(self.script), prompt, session_id or "", str(self.usage)]

    def environment(self) -> dict[str, str]:
        return {}

    def parse(self, line: str) -> list[AgentEvent]:
        try:
            d = json.loads(line)
        except ValueError:
            return []
        if "session" in d:
            return [SessionStarted(d["session"])]
        if "call" in d:
            return [AgentToolCall(d["call"], d["tool"], d["args"])]
        if "result" in d:
            return [AgentToolResult(d["result"], d["tool"], d["output"], may_change_files=d.get("changes", True))]
        if "text" in d:
            return [AgentText(d["text"])]
        if "usage" in d:
            u = d["usage"]
            return [AgentUsage(Usage(input_tokens=u["in"], output_tokens=u["out"]), u.get("model"), u.get("cost"))]
        if "finished" in d:
            return [AgentFinished(ok=True)]
        return []


@pytest.fixture
def stream(tmp_path, monkeypatch) -> StreamAgent:
    folder = tmp_path / "streambin"
    folder.mkdir()
    (folder / "stream.py").write_text(STREAM)
    (folder / "usage.json").write_text("[]")
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(folder)]))
    agent = StreamAgent(folder / "stream.py", folder / "usage.json")
    monkeypatch.setitem(agents.BUILTIN, "fake-stream", lambda config: agent)
    return agent


def test_a_streaming_agent_resumes_its_session_after_a_failed_check(repo, cli, stream):
    stream.usage.write_text(json.dumps([{"in": 1000, "out": 100, "cost": 0.25}]))
    code, out, err = cli(repo, "run", "fix add", "--agent", "fake-stream", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "succeeded", (result, err)
    assert stream.sessions == [None, "s-1"]  # the failed check resumed the same session
    store = Store(repo / ".loopwright" / "state.db")
    run = store.run(result["run"])
    assert run.agent_session == "s-1" and run.cost_known and run.cost_usd == pytest.approx(0.5)
    assert run.input_tokens == 2000 and run.model_calls == 2
    started = [e.name for _, _, e in store.events(run.id, types=("tool_started",))]
    assert started == ["edit", "read", "edit", "read"]
    cps = store.checkpoints(run.id)
    assert [c.message for c in cps] == ["fake-stream: edit", "fake-stream: edit"]  # not after the read
    prompts = [m.text for m in store.conversation(run.id) if m.role == "user"]
    assert "failed (exit 1)" in prompts[1] and "fix add" not in prompts[1]  # the session knows the task


def test_a_streaming_agents_tokens_are_priced_by_the_model_table_or_the_cost_is_unknown(repo, cli, stream):
    stream.usage.write_text(json.dumps([{"in": 1_000_000, "out": 0, "model": "claude-sonnet-4-6"}]))
    code, out, _ = cli(repo, "run", "FIRST fix add", "--agent", "fake-stream", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["cost_usd"] == pytest.approx(3.0)
    stream.usage.write_text(json.dumps([{"in": 10, "out": 1, "model": "some-model-nobody-prices"}]))
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    code, out, _ = cli(repo, "run", "FIRST fix add", "--agent", "fake-stream", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "succeeded" and result["cost_usd"] is None
    _, out, _ = cli(repo, "show", result["run"])
    assert "cost unknown" in out and "agent fake-stream" in out


def test_the_run_budget_stops_a_streaming_agent(repo, cli, stream, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_BUDGET__MAX_USD", "0.1")
    stream.usage.write_text(json.dumps([{"in": 10, "out": 1, "cost": 0.2}, {"in": 10, "out": 1, "cost": 0.2}]))
    code, out, _ = cli(repo, "run", "fix add", "--agent", "fake-stream", "--check", CHECK, "--json")
    result = json.loads(out)
    assert result["status"] == "budget_exceeded" and "cost limit" in result["reason"]
    assert result["cost_usd"] == pytest.approx(0.2)  # stopped after the first usage over the cap


def test_an_inbox_file_names_its_agent_as_post_does(project, fake):
    from loopwright.runtime.fleet.inbox import request_from
    from loopwright.runtime.posting import post_task

    request = request_from(f"---\nagent_command: '{fake}'\ncheck: 'true'\n---\nfix add\n", project.root)
    task = post_task(project, request)
    assert task.options["agent"] == "command" and task.options["agent_command"] == fake
