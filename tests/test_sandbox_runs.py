"""The sandbox wired into runs: what an agent (and the code it writes) can reach in a default-config run, through
the CLI and the daemon with scripted models. Each escape test runs twice: jailed (default config) it is blocked,
with `[sandbox] mode = "none"` the same script gets through, so the test can see an escape."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shlex
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from support import (
    CHECK,
    FINISH,
    FIX_ADD,
    PY,
    call,
    git,
    loopwright_subprocess,
    needs_bwrap,
    turn,
    until,
    write_script,
)

from loopwright.harness.events import NetworkRefused
from loopwright.harness.sandbox_battery import PROBES
from loopwright.runtime.display import ProgressPrinter
from loopwright.runtime.project import open_project
from loopwright.runtime.runner import Runner

MODES = [pytest.param("default", marks=needs_bwrap), "none"]
PYTEST = f"{PY} -m pytest -q -p no:cacheprovider"


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A test $HOME with an ssh key (what runs started from here see as their home)."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_ed25519").write_text(f"-----BEGIN OPENSSH PRIVATE KEY-----\nkey-{secrets.token_hex(8)}\n")
    monkeypatch.setenv("HOME", str(h))
    return h


def use(mode: str, monkeypatch) -> None:
    if mode == "none":
        monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", "none")


class Target:
    """What the escapes aim at: the home's key, a folder outside the worktree, the store, the main branch."""

    def __init__(self, repo: Path, home: Path, tmp_path: Path):
        self.repo, self.home = repo, home
        self.key = (home / ".ssh" / "id_ed25519").read_text().split("\n")[1]
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.db = repo / ".loopwright" / "state.db"
        self.main = git(repo, "rev-parse", "main")

    def commands(self, tag: str) -> list[str]:
        """Shell commands that try each escape (each one on its own, so one failing does not stop the next)."""
        sql = (f"import sqlite3; db = sqlite3.connect('file:{self.db}?mode=rw', uri=True); "
               f"db.execute(\"UPDATE tasks SET title = 'pwned by {tag}'\"); db.commit()")
        return [f"cat {self.home}/.ssh/id_ed25519",
                f"echo pwned > {self.outside}/{tag}.txt",
                f"{PY} -c {shlex.quote(sql)}",
                "git update-ref refs/heads/main $(git commit-tree 'HEAD^{tree}' -p HEAD -m evil)"]

    def escaped(self, tag: str, text: str) -> dict[str, bool]:
        """Which escapes got through, judged on the host (and in `text`: what the run stored or printed)."""
        titles = [r[0] for r in sqlite3.connect(self.db).execute("SELECT title FROM tasks")]
        return {"read the key": self.key in text,
                "wrote outside": (self.outside / f"{tag}.txt").exists(),
                "opened the store": any(t == f"pwned by {tag}" for t in titles),
                "moved main": git(self.repo, "rev-parse", "main") != self.main}


def stored(repo: Path) -> str:
    """Everything the store holds about runs: every event's data."""
    db = sqlite3.connect(repo / ".loopwright" / "state.db")
    return "\n".join(r[0] for r in db.execute("SELECT data FROM events"))


@pytest.mark.parametrize("mode", MODES)
def test_the_agents_shell_cannot_reach_home_the_store_outside_files_or_main(repo, cli, home, tmp_path, monkeypatch,
                                                                            mode):
    use(mode, monkeypatch)
    target = Target(repo, home, tmp_path)
    script = write_script(tmp_path / "s.json", [
        turn(*[call("shell", command=c) for c in target.commands("shell")]), FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--keep")
    assert result["status"] == "succeeded", result["reason"]  # the run itself works as before
    escaped = target.escaped("shell", stored(repo))
    if mode == "none":
        assert all(escaped.values()), escaped
        return
    assert not any(escaped.values()), escaped
    text = stored(repo)
    assert "[sandbox] the git directory is read-only except the index and new objects" in text  # the rule, named
    assert "Read-only file system" in text or "No such file or directory" in text  # the real error, kept


@pytest.mark.parametrize("mode", MODES)
def test_a_conftest_the_agent_wrote_cannot_escape_during_the_acceptance_check(repo, cli, home, tmp_path, monkeypatch,
                                                                            mode):
    use(mode, monkeypatch)
    target = Target(repo, home, tmp_path)
    conftest = ("import subprocess\n"
                + "".join(f"subprocess.run({c!r} + ' > leak-{i}.txt 2>&1', shell=True)\n"
                          for i, c in enumerate(target.commands("conftest"))))
    script = write_script(tmp_path / "s.json", [
        turn(call("write_file", path="conftest.py", content=conftest)), FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", PYTEST, "--script", script, "--keep")
    assert result["status"] == "succeeded", result["reason"]
    worktree = Path(result["worktree"])
    leaked = "".join(p.read_text() for p in worktree.glob("leak-*.txt"))
    escaped = target.escaped("conftest", leaked)
    assert all(escaped.values()) if mode == "none" else not any(escaped.values()), escaped


@pytest.mark.parametrize("mode", MODES)
def test_the_setup_command_runs_in_the_jail(repo, cli, home, tmp_path, monkeypatch, mode):
    use(mode, monkeypatch)
    target = Target(repo, home, tmp_path)
    setup = "; ".join(f"{c} >> setup.log 2>&1" for c in target.commands("setup")) + "; touch set-up"
    cli(repo, "init")
    with (repo / ".loopwright" / "config.toml").open("a") as f:
        f.write(f"\n[workspace]\nsetup_command = {json.dumps(setup)}\n")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--keep")
    assert result["status"] == "succeeded", result["reason"]
    worktree = Path(result["worktree"])
    assert (worktree / "set-up").exists()  # the worktree is writable
    escaped = target.escaped("setup", (worktree / "setup.log").read_text())
    assert all(escaped.values()) if mode == "none" else not any(escaped.values()), escaped


@needs_bwrap
def test_the_agent_is_told_its_rules_and_the_check_still_works(repo, home, tmp_path, monkeypatch):
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command=f"ls -A {home}; {PY} -m pytest --version")), FIX_ADD, FINISH])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})
    runner = Runner(project)
    result = asyncio.run(runner.start("fix add", check=PYTEST))
    assert result.run.status == "succeeded", result.run.reason
    prompt = runner.loop.loop.settings.system_prompt  # the local execution's AgentLoop
    assert f"Only the worktree {result.run.worktree} is writable" in prompt and "There is no network" in prompt
    assert "a person can widen them in the [sandbox] config" in prompt
    shell = [e for _, _, e in project.store.events(result.run.id, types=("tool_finished",)) if e.name == "shell"][0]
    assert ".ssh" not in shell.preview and "pytest" in shell.preview  # an empty home; the venv's pytest is there
    [chosen] = [e for _, _, e in project.store.events(result.run.id, types=("sandbox",))]
    assert chosen.mode == "bwrap" and "bubblewrap" in chosen.detail and chosen.warning is None


@needs_bwrap
def test_an_extra_path_that_exposes_home_is_refused_in_one_line(repo, cli, home, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__WRITABLE", '["~"]')
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    code, out, err = cli(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert code == 2 and "[sandbox] writable entry '~' would expose $HOME whole" in err and err.count("\n") == 1
    [task] = open_project(repo).store.tasks()
    assert task.status == "failed" and "would expose $HOME" in task.reason


def test_mode_bwrap_where_it_cannot_run_refuses_to_start(repo, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", "bwrap")
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__BWRAP", str(tmp_path / "no-bwrap"))
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    for args in (["run", "fix add", "--check", CHECK, "--script", script], ["serve"]):
        code, out, err = cli(repo, *args)
        assert code == 2 and 'mode = "bwrap" but bwrap does not work here' in err and err.count("\n") == 1, args
    code, out, _ = cli(repo, "status")
    assert code == 0 and out.startswith('WARNING: runs cannot start: [sandbox] mode = "bwrap" but bwrap does not')


# -- secrets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_key_values_never_reach_the_store_whatever_the_agent_prints(repo, tmp_path, mode):
    """The issue's leak: the shell read the keys of its parent, `loopwright run`, from /proc/$PPID/environ, and
    from a file; the values must be stored nowhere (the conversation, previews, the check's output)."""
    key, password = f"sk-acme-{secrets.token_hex(12)}", f"pw-{secrets.token_hex(8)}"
    url = f"postgres://app:{password}@db/app"
    (repo / "settings.txt").write_text(f"ACME_API_KEY={key}\nDATABASE_URL={url}\n")
    git(repo, "add", "settings.txt")
    git(repo, "commit", "-qm", "settings")
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command="cat settings.txt; tr '\\0' '\\n' < /proc/$PPID/environ | grep -e API_KEY "
                                   "-e DATABASE_URL; echo ACME=$ACME_API_KEY DB=$DATABASE_URL"),
             call("read_file", path="settings.txt"), call("grep", pattern="postgres")),
        FIX_ADD, FINISH])
    env = {"ACME_API_KEY": key, "DATABASE_URL": url, "LOOPWRIGHT_SECRETS__REDACT": '["DATABASE_URL"]'}
    if mode == "none":
        env["LOOPWRIGHT_SANDBOX__MODE"] = "none"
    proc = loopwright_subprocess(repo, "run", "fix add", "--check", "cat settings.txt", "--script", str(script),
                                 "--keep", "--json", env=env)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    run = json.loads(out)["run"]
    shown = subprocess.run([PY, "-m", "loopwright.cli.main", "show", "--full", run], cwd=repo, capture_output=True,
                           text=True).stdout
    for where in (stored(repo), shown, out, err):
        assert key not in where and password not in where
    assert "[redacted:ACME_API_KEY]" in shown and "[redacted:DATABASE_URL]" in shown
    shell = next(b.content for m in open_project(repo).store.conversation(run) for b in m.content
                 if getattr(b, "content", None) and "ACME= DB=" in b.content)  # the variables never entered
    # with mode none the parent's environment was readable: its keys are there too, redacted; the jail hides it
    assert shell.count("ACME_API_KEY=[redacted:ACME_API_KEY]") == (2 if mode == "none" else 1), shell
    assert shell.count("DATABASE_URL=[redacted:DATABASE_URL]") == (2 if mode == "none" else 1), shell


# -- mode none is never silent ------------------------------------------------------------------------


def test_mode_none_is_said_by_run_status_show_and_the_run_events(repo, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", "none")
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    code, out, err = cli(repo, "run", "fix add", "--check", CHECK, "--script", script, "--json")
    run = json.loads(out)["run"]
    assert code == 0 and "loopwright: WARNING: sandbox off ([sandbox] mode = \"none\")" in err
    proc = loopwright_subprocess(repo, "run", "fix add again", "--check", CHECK, "--script", str(script),
                                 env={"LOOPWRIGHT_SANDBOX__MODE": "none"})
    _, err = proc.communicate(timeout=120)
    assert "⚠ WARNING: sandbox off" in err.splitlines()[0], err  # the progress lines start with it
    code, out, _ = cli(repo, "status")
    assert out.splitlines()[0].startswith("WARNING: sandbox off") and "unjailed" in out.splitlines()[0]
    assert cli.json(repo, "status")["sandbox"]["mode"] == "none"
    code, out, _ = cli(repo, "show", run)
    assert "WARNING: sandbox off" in out
    [event] = [e for _, _, e in open_project(repo).store.events(run, types=("sandbox",))]
    assert event.mode == "none" and "unjailed" in event.warning


@needs_bwrap
def test_status_and_show_of_a_jailed_run(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    code, out, err = cli(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert code == 0 and "WARNING" not in out + err
    code, out, _ = cli(repo, "status")
    assert "sandbox: bwrap: bubblewrap" in out and "network off" in out and "WARNING" not in out


def test_the_tui_header_shows_the_warning(project):
    from loopwright.tui.app import TuiApp
    from loopwright.tui.widgets import HeaderBar

    async def scenario() -> tuple[str, str]:
        texts = []
        for warning in ("sandbox off: bwrap does not work here (x); agent commands run unjailed", None):
            app = TuiApp(project, sandbox_warning=warning)
            async with app.run_test(size=(120, 30)) as pilot:
                await pilot.pause()
                texts.append(str(app.screen.query_one(HeaderBar).content))
        return texts[0], texts[1]

    warned, quiet = asyncio.run(scenario())
    assert "⚠ WARNING: sandbox off: bwrap does not work here (x)" in warned and "WARNING" not in quiet


@pytest.mark.parametrize("mode", MODES)
def test_the_daemon_jails_its_runs_and_says_how(repo, cli, home, tmp_path, monkeypatch, daemon, mode):
    use(mode, monkeypatch)
    target = Target(repo, home, tmp_path)
    script = write_script(tmp_path / "s.json", [
        turn(*[call("shell", command=c) for c in target.commands("daemon")]),
        turn(call("write_file", path="done.txt", content="done")), FINISH])
    task = cli.json(repo, "post", "try to escape", "--script", script, "--check", "test -f done.txt", "--keep")["task"]
    d = daemon()
    store = open_project(repo).store
    until(lambda: store.task(task).status in ("succeeded", "failed", "needs_review"), "the task to end", 90)
    assert store.task(task).status == "succeeded", store.task(task).reason
    d.stop()
    log = (tmp_path / "daemon.log").read_text()
    escaped = target.escaped("daemon", stored(repo))
    if mode == "none":
        assert "WARNING: sandbox off" in log and all(escaped.values()), escaped
    else:
        assert "sandbox: bubblewrap" in log and "WARNING" not in log and not any(escaped.values()), escaped


# -- network "allow": refusals become events ------------------------------------------------------------


@needs_bwrap
def test_a_host_not_allowed_is_refused_and_shown_in_show_and_the_tui(repo, cli, tmp_path, monkeypatch, banner):
    from loopwright.tui.run_view import event_lines

    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__NETWORK", "allow")
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__ALLOW_HOSTS", '["packages.example.org"]')
    code = ("import os, socket, urllib.parse\n"
            "u = urllib.parse.urlsplit(os.environ['HTTPS_PROXY'])\n"
            "s = socket.create_connection((u.hostname, u.port), 5)\n"
            f"s.sendall(b'CONNECT 127.0.0.1:{banner} HTTP/1.1\\r\\n\\r\\n')\n"
            "print(s.makefile('rb').read(4096).decode())\n")
    script = write_script(tmp_path / "s.json", [turn(call("shell", command=f"{PY} -c {shlex.quote(code)}")), FIX_ADD,
                                                FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script)
    assert result["status"] == "succeeded", result["reason"]
    store = open_project(repo).store
    refused = [e for _, _, e in store.events(result["run"], types=("network_refused",))]
    assert refused == [NetworkRefused(host="127.0.0.1", port=banner)]
    assert "hello from the host" not in stored(repo)
    assert ("[sandbox] that host is not on [sandbox] allow_hosts; only a person can add it "
            "(allowed: packages.example.org)") in stored(repo)
    code, out, _ = cli(repo, "show", result["run"])
    assert f"✗ network: 127.0.0.1:{banner} refused (not on [sandbox] allow_hosts)" in out
    lines = event_lines(refused[0], time.time(), ProgressPrinter(store))
    assert any(f"127.0.0.1:{banner} refused" in line for line in lines)


# -- loopwright sandbox check / shell -------------------------------------------------------------------


@needs_bwrap
def test_sandbox_check_runs_the_battery_and_every_probe_is_blocked(tmp_path, cli):
    code, out, err = cli(tmp_path, "sandbox", "check")
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == 'mode: bwrap ([sandbox] mode = "auto")' and lines[1].startswith("bwrap: /")
    assert "bubblewrap" in lines[1]
    probes = [ln.split(None, 1) for ln in lines if ln.startswith("  ")]
    assert len(probes) >= 25 and {verdict for verdict, _ in probes} == {"blocked", "works"}
    assert [name for _, name in probes] == [p.name for p in PROBES if os.geteuid() == 0 or not p.root_only]
    assert "ALLOWED" not in out and out.splitlines()[-1].startswith("25 of 25 escapes blocked, 5 of 5")


def test_sandbox_check_without_a_sandbox_fails_and_shows_the_escapes(tmp_path, cli, monkeypatch):
    from loopwright.harness import sandbox_battery

    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__MODE", "none")
    few = [p for p in sandbox_battery.PROBES if p.name in ("write $HOME", "read ~/.ssh/id_ed25519",
                                                           "git update-ref refs/heads/main HEAD",
                                                           "read the project's files")]
    monkeypatch.setattr(sandbox_battery, "PROBES", few)
    code, out, _ = cli(tmp_path, "sandbox", "check")
    assert code == 1 and "WARNING: sandbox off" in out and "FAILED: there is no sandbox here" in out
    assert out.count("ALLOWED ") == 3 and "works    read the project's files" in out
    data = cli.json(tmp_path, "sandbox", "check")
    assert data["mode"] == "none" and not data["ok"] and len(data["probes"]) == 4


@needs_bwrap
def test_sandbox_shell_opens_bash_in_a_runs_jail(repo, cli, home, tmp_path):
    script = write_script(tmp_path / "s.json", [FIX_ADD, FINISH])
    run = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--keep")
    proc = subprocess.run([PY, "-m", "loopwright.cli.main", "sandbox", "shell", run["run"]], cwd=repo,
                          input=f"pwd; ls -A {home}; cat {home}/.ssh/id_ed25519; touch /usr/lw-x; exit 7\n",
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 7, proc.stderr
    assert run["worktree"] in proc.stdout and ".ssh" not in proc.stdout
    assert "Read-only file system" in proc.stderr and "OPENSSH" not in proc.stdout
    assert "a shell in the jail of run" in proc.stderr


# -- self-play: what it runs is jailed too ---------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_hidden_tests_and_the_suite_of_the_repo_domain_run_jailed(repo, home, tmp_path, mode):
    from loopwright.harness.sandbox import Sandbox, SandboxPolicy
    from loopwright.runtime.learning.selfplay.repo import run_hidden, run_suite

    box = Sandbox.for_policy(SandboxPolicy(mode="bwrap" if mode == "default" else "none"))
    outside = tmp_path / "outside"
    outside.mkdir()
    tests = (f"import pathlib\n\ndef test_escape():\n"
             f"    pathlib.Path({str(outside / 'hidden.txt')!r}).write_text('x')\n"
             f"    assert pathlib.Path({str(home / '.ssh' / 'id_ed25519')!r}).read_text()\n")
    hidden = run_hidden(tests, repo, 10, sandbox=box, repo_root=repo)
    passed, _ = run_suite(f"echo pwned > {outside / 'suite.txt'}", repo, 30, sandbox=box, repo_root=repo)
    got_out = [(outside / name).exists() for name in ("hidden.txt", "suite.txt")]
    if mode == "none":
        assert hidden["passed"] and passed and got_out == [True, True]
    else:
        assert not hidden["passed"] and not passed and got_out == [False, False]


@pytest.mark.parametrize("mode", MODES)
def test_a_practice_solver_cannot_read_the_hidden_tests(repo, tmp_path, monkeypatch, mode):
    from test_selfplay import GOOD_DEVOWEL, devowel_task

    from loopwright.runtime.learning.selfplay.python_functions import PythonFunctions
    from loopwright.runtime.learning.selfplay.real import RunnerSolver

    use(mode, monkeypatch)
    script = write_script(tmp_path / "solver.json", [
        turn(call("write_file", path="solution.py", content=GOOD_DEVOWEL)),
        turn(call("shell", command=f"cat {repo}/.loopwright/selfplay/hidden/*.json")),  # where they wait
        turn(call("finish", summary="implemented"))])
    project = open_project(repo, create=True, overrides={"provider": "scripted", "script": str(script)})
    [attempt] = asyncio.run(RunnerSolver(project).attempts(PythonFunctions(), devowel_task(), 1))
    assert attempt.passed, attempt.detail  # the check (loopwright's verifier, jailing the hidden tests) works
    seen = "devowel('banana')" in stored(repo)
    assert seen if mode == "none" else not seen


# -- the Ray backend: workers jail with the same policy ------------------------------------------------------


@pytest.mark.slow
@needs_bwrap
def test_a_run_on_a_ray_worker_is_jailed_with_the_projects_policy(repo, cli, home, tmp_path, monkeypatch):
    pytest.importorskip("ray")
    from test_ray import RayDaemon, configure, wait_until_done

    configure(repo, tmp_path, None, extra="[sandbox]\nmax_processes = 300")  # a local cluster for the daemon
    target = Target(repo, home, tmp_path)
    script = write_script(tmp_path / "s.json", [
        turn(*[call("shell", command=c) for c in [*target.commands("ray"), "ulimit -u"]]),
        turn(call("write_file", path="done.txt", content="done")), FINISH])
    task = cli.json(repo, "post", "escape from a worker", "--script", script, "--check",
                    f"test -f done.txt && ! test -e {home}/.ssh", "--keep")["task"]
    d = RayDaemon(repo, tmp_path / "daemon.log", "--max-parallel", "1")
    try:
        store = wait_until_done(repo, 1)
        assert store.task(task).status == "succeeded", store.task(task).reason
        run = store.runs(task_id=task)[0]
        [chosen] = [e for _, _, e in store.events(run.id, types=("sandbox",))]
        assert chosen.mode == "bwrap" and "bubblewrap" in chosen.detail
        text = stored(repo)
        assert not any(target.escaped("ray", text).values()), target.escaped("ray", text)
        outputs = [b.content for m in store.conversation(run.id) for b in m.content if hasattr(b, "tool_call_id")]
        assert any(o.startswith("300\n") for o in outputs), outputs  # the project's limits, set on the worker
    finally:
        d.stop()
