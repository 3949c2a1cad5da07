"""The sandbox: the escape battery blocked under bwrap and ALLOWED under mode none (so each probe can see an
escape), the allowed things working in both, and the policy's errors, limits, proxy, explanations and redaction."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError
from support import SANDBOX, needs_bwrap

from loopwright.harness.commands import CommandResult, run_command
from loopwright.harness.sandbox import Sandbox, SandboxError, SandboxPolicy, redact, secret_names
from loopwright.harness.sandbox_battery import PROBES, Repo, Stage, run_probe
from loopwright.harness.sandbox_proxy import AllowProxy, host_allowed, parse_allow_entry

AUTO = SANDBOX
MODES = [pytest.param("bwrap", marks=needs_bwrap), "none"]

ESCAPES = [p for p in PROBES if p.kind == "escape" and (os.geteuid() == 0 or not p.root_only)]
ALLOWED = [p for p in PROBES if p.kind == "allowed"]


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    made = {mode: Stage(tmp_path_factory.mktemp(f"battery-{mode}")) for mode in ("bwrap", "none")}
    yield made
    for stage in made.values():
        stage.close()


def test_ci_has_a_working_bwrap():
    """In CI the bwrap tests never skip; this says why they fail when bwrap cannot run there."""
    if os.environ.get("CI"):
        assert AUTO.mode == "bwrap", AUTO.warning


@needs_bwrap
@pytest.mark.parametrize("probe", ESCAPES, ids=[p.name for p in ESCAPES])
def test_escape_is_blocked_by_bwrap(stages, probe):
    result = run_probe(probe, stages["bwrap"], "bwrap")
    assert result.verdict == "blocked", result.outcome.output


@pytest.mark.parametrize("probe", ESCAPES, ids=[p.name for p in ESCAPES])
def test_escape_is_allowed_without_a_sandbox(stages, probe):
    """The same probe under mode none escapes: proof that it would see an escape."""
    result = run_probe(probe, stages["none"], "none")
    assert result.verdict == "ALLOWED", result.outcome.output


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("probe", ALLOWED, ids=[p.name for p in ALLOWED])
def test_allowed_things_work(stages, probe, mode):
    result = run_probe(probe, stages[mode], mode)
    assert result.verdict == "works", result.outcome.output


@needs_bwrap
def test_the_proxy_reports_each_refused_host_and_the_output_names_the_rule(stages):
    stage = stages["bwrap"]
    refused = next(p for p in ESCAPES if p.network == "allow")
    result = run_probe(refused, stage, "bwrap")
    assert ("127.0.0.1", stage.other.port) in stage.refused
    assert ("127.0.0.1", stage.allowed.port) not in stage.refused
    explained = stage.sandbox("bwrap", "allow").explain(result.outcome.output, result.outcome.exit_code)
    assert explained.splitlines()[-1].startswith("[sandbox] that host is not on [sandbox] allow_hosts")


# -- helpers for the direct tests ----------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fake $HOME (the sandbox's default home) with a key and a .gitconfig."""
    h = tmp_path / "home"
    (h / ".ssh").mkdir(parents=True)
    (h / ".ssh" / "id_ed25519").write_text("PRIVATE\n")
    (h / ".gitconfig").write_text("[user]\n\tname = From Home\n")
    monkeypatch.setenv("HOME", str(h))
    return h


@pytest.fixture
def wt(tmp_path, home) -> Path:
    return Repo(tmp_path / "r").wt


def run(box: Sandbox, command: str, worktree: Path, **kw) -> subprocess.CompletedProcess:
    argv, env = box.wrap(command, worktree=worktree, **kw)
    return subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def bwrap(**policy) -> Sandbox:
    box = Sandbox.for_policy(SandboxPolicy(mode="bwrap", **policy))
    assert box.mode == "bwrap" and box.warning is None
    return box


# -- the policy --------------------------------------------------------------------------------------


def test_mode_none_is_never_silent_and_auto_falls_back_with_the_reason(tmp_path):
    assert "unjailed" in Sandbox.for_policy(SandboxPolicy(mode="none")).warning
    missing = str(tmp_path / "no-bwrap")
    auto = Sandbox.for_policy(SandboxPolicy(mode="auto", bwrap=missing))
    assert auto.mode == "none" and missing in auto.warning and "unjailed" in auto.warning
    with pytest.raises(SandboxError, match=r"mode = \"bwrap\" but bwrap does not work here") as e:
        Sandbox.for_policy(SandboxPolicy(mode="bwrap", bwrap=missing))
    assert "\n" not in str(e.value)


@needs_bwrap
def test_home_holds_only_the_allowed_dot_files(wt, home):
    out = run(bwrap(), f"cat {home}/.gitconfig; git config user.name; ls -A {home}; cat {home}/.ssh/id_ed25519", wt)
    assert "From Home" in out.stdout and "PRIVATE" not in out.stdout + out.stderr
    assert out.stdout.count(".gitconfig") == 1 and ".ssh" not in out.stdout


@needs_bwrap
@pytest.mark.parametrize("entry, kind, message", [
    ("~", "writable", "would expose $HOME whole"),
    ("/", "readable", "would expose $HOME whole"),
    (".", "readable", "would expose the store"),
    (".loopwright", "readable", "would expose the store"),
    (".git", "writable", "would expose the git directory"),
    ("no/such/folder", "readable", "does not exist"),
])
def test_extra_paths_that_expose_too_much_are_refused_in_one_line(wt, entry, kind, message):
    with pytest.raises(SandboxError, match=re.escape(message)) as e:
        bwrap(**{kind: [entry]}).wrap("true", worktree=wt)
    assert "\n" not in str(e.value) and entry in str(e.value)


@needs_bwrap
def test_a_repository_inside_home_works_and_home_stays_hidden(home):
    """The usual layout, ~/code/project: $HOME is an empty tmpfs, the repository's git directory and the worktree are
    mounted inside it."""
    repo = Repo(home / "code")
    out = run(bwrap(), f"git status --short; echo new > new.txt; git add new.txt; cat {home}/.ssh/id_ed25519; "
                       f"ls {repo.path}", repo.wt)
    assert "PRIVATE" not in out.stdout and (repo.wt / "new.txt").exists()
    assert "new.txt" in subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=repo.wt, capture_output=True,
                                       text=True).stdout
    assert "calc.py" not in out.stdout  # the main checkout's files are not there


@needs_bwrap
def test_extra_writable_and_readable_paths(wt, tmp_path):
    (tmp_path / "cache").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("data for the agent\n")
    box = bwrap(writable=[str(tmp_path / "cache")], readable=[str(tmp_path / "data")])
    out = run(box, f"echo kept > {tmp_path}/cache/out.txt; cat {tmp_path}/data/in.txt; touch {tmp_path}/data/new",
              wt)
    assert (tmp_path / "cache" / "out.txt").read_text() == "kept\n"
    assert "data for the agent" in out.stdout and "Read-only file system" in out.stderr
    assert not (tmp_path / "data" / "new").exists()


def test_policy_errors_are_one_line_with_a_hint():
    with pytest.raises(ValidationError, match="is not host or host:port"):
        SandboxPolicy(allow_hosts=["https://packages.example.org/simple"])
    with pytest.raises(ValidationError, match="must name something inside"):
        SandboxPolicy(home_allow=["/etc/passwd"])
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SandboxPolicy(netwrok="on")


@needs_bwrap
def test_a_worktree_holding_the_store_is_refused(tmp_path, home):
    repo = Repo(tmp_path / "r")
    with pytest.raises(SandboxError, match="holds the store"):
        bwrap().wrap("true", worktree=repo.path)


# -- processes, network, limits --------------------------------------------------------------------------


@needs_bwrap
def test_background_processes_end_with_the_command(wt):
    """The pid namespace ends with the command: a background child cannot keep the output pipe (or run) after."""
    seconds = f"300.{os.getpid()}"  # this test's own sleep: other test runs on the machine may sleep 300 too
    t0 = time.monotonic()
    out = run(bwrap(), f"sleep {seconds} & echo started", wt)
    assert out.stdout == "started\n" and time.monotonic() - t0 < 30
    deadline = time.monotonic() + 10  # killed with the namespace; reaping them may lag bwrap's exit a little
    while _processes(["sleep", seconds]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes(["sleep", seconds])


@needs_bwrap
def test_killing_the_wrapped_process_kills_everything_in_the_jail(wt):
    sleeps = (["sleep", f"301.{os.getpid()}"], ["sleep", f"302.{os.getpid()}"])
    argv, env = bwrap().wrap(" & ".join(" ".join(s) for s in sleeps), worktree=wt)
    proc = subprocess.Popen(argv, env=env, start_new_session=True)
    deadline = time.monotonic() + 20
    while len(_processes(*sleeps)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(_processes(*sleeps)) == 2
    os.killpg(proc.pid, 9)  # what run_command does on a timeout
    proc.wait()
    deadline = time.monotonic() + 20
    while _processes(*sleeps) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _processes(*sleeps)


@needs_bwrap
def test_an_interrupted_jailed_command_is_gone_when_run_command_returns(wt):
    """run_command's process group holds the whole jail (no setsid inside), so ending the group is waited for."""
    sleep = ["sleep", f"303.{os.getpid()}"]

    async def interrupted() -> CommandResult:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        return await run_command(f"python3 -c 'import os; print(os.getpgrp())'; {' '.join(sleep)}", cwd=wt,
                                 timeout=60, interrupt=stop, sandbox=bwrap())

    result = asyncio.run(interrupted())
    assert result.interrupted and result.output.split() == ["0"]  # its group was made outside the jail
    assert not _processes(sleep)  # at once: no lag for the namespace to be torn down


def _processes(*argvs: list[str]) -> list[int]:
    """Pids of the processes running exactly one of `argvs`."""
    wanted = {"\0".join(a) + "\0" for a in argvs}
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().decode() in wanted:
                found.append(int(entry.name))
        except OSError:
            pass
    return found


@needs_bwrap
def test_network_on_shares_the_host_network_and_off_does_not(wt, banner):
    code = f"import socket; print(socket.create_connection(('127.0.0.1', {banner}), 5).recv(100).decode())"
    on = run(bwrap(network="on"), f"{sys.executable} -c \"{code}\"", wt)
    off = run(bwrap(network="off"), f"{sys.executable} -c \"{code}\"", wt)
    assert "hello from the host" in on.stdout
    assert "hello from the host" not in off.stdout and "ConnectionRefusedError" in off.stderr


@needs_bwrap
@pytest.mark.parametrize("command, exit_code, rule", [
    ("touch /usr/x", 1, "only the worktree is writable"),
    ("git commit -qam x --allow-empty", 128, "loopwright's checkpoints commit your work"),
    (f"{sys.executable} -c \"import socket; socket.create_connection(('192.0.2.1', 80), 5)\"", 1, "network is off"),
    ("head -c 20000000 /dev/zero > big", 153, "a file may not grow past 8 MB"),
    (f"{sys.executable} -c \"bytearray(512 << 20)\"", 1, "at most 256 MB of memory"),
    ("for i in $(seq 400); do sleep 2 & done; wait", None, "at most 64 processes"),
])
def test_a_denied_action_keeps_its_error_and_gets_one_line_naming_the_rule(wt, command, exit_code, rule):
    box = bwrap(max_processes=64, max_file_mb=8, max_memory_mb=256)
    out = run(box, command, wt)
    assert out.returncode == exit_code if exit_code is not None else out.returncode != 0, out.stderr
    explained = box.explain(out.stdout + out.stderr, out.returncode)
    assert explained.startswith((out.stdout + out.stderr).rstrip())
    assert explained.splitlines()[-1].startswith("[sandbox] ") and rule in explained.splitlines()[-1]
    assert Sandbox.for_policy(SandboxPolicy(mode="none")).explain("x: Read-only file system", 1) == \
        "x: Read-only file system"


@needs_bwrap
def test_the_rules_for_the_system_prompt_say_what_is_writable_and_the_network(wt):
    rules = bwrap(network="allow", allow_hosts=["packages.example.org"]).rules(wt)
    assert str(wt) in rules and "only packages.example.org" in rules and "a person can widen them" in rules


# -- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_key_variables_never_enter_and_their_values_are_redacted(wt, monkeypatch, mode):
    monkeypatch.setenv("ACME_API_KEY", "sk-acme-0123456789")
    monkeypatch.setenv("LW_SHORT_TOKEN", "1")
    box = Sandbox.for_policy(SandboxPolicy(mode=mode))
    out = run(box, "env; echo sk-acme-0123456789 was printed", wt, env={"GH_TOKEN": "ghp_passed_by_the_caller"})
    assert "ACME_API_KEY" not in out.stdout and "GH_TOKEN" not in out.stdout
    names = secret_names(extra=["LW_PLAIN"])
    assert {"ACME_API_KEY", "LW_SHORT_TOKEN", "LW_PLAIN"} <= set(names)
    assert redact(out.stdout, names).endswith("[redacted:ACME_API_KEY] was printed\n")
    assert redact("1 2 3", names) == "1 2 3"  # values shorter than MIN_SECRET_LEN stay


@needs_bwrap
def test_interactive_shell_keeps_the_terminal_session(wt):
    argv, _ = bwrap().wrap("bash -i", worktree=wt, new_session=False)
    assert "--new-session" not in argv and "--new-session" in bwrap().wrap("true", worktree=wt)[0]


# -- the proxy on its own --------------------------------------------------------------------------------


def test_allow_entries_match_host_port_and_subdomains():
    allow = [parse_allow_entry(e) for e in ("*.example.com", "packages.example.org:443", "[::1]:8080", "Files.Host")]
    assert host_allowed("a.b.example.com", 80, allow) and not host_allowed("example.com", 80, allow)
    assert host_allowed("packages.example.org", 443, allow) and not host_allowed("packages.example.org", 80, allow)
    assert host_allowed("[::1]", 8080, allow) and host_allowed("files.host", 1, allow)
    assert not host_allowed("evil.com", 443, allow)


def test_the_proxy_forwards_plain_http_to_allowed_hosts_only(banner):
    refused = []
    proxy = AllowProxy([f"127.0.0.1:{banner}"], lambda host, port: refused.append((host, port)))
    try:
        def ask(target: str) -> bytes:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(proxy.socket_path))
                s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                return b"".join(iter(lambda: s.recv(4096), b""))

        assert ask(f"http://127.0.0.1:{banner}/") == b"hello from the host\n"
        assert ask("http://blocked.example:8000/x").startswith(b"HTTP/1.1 403 Forbidden")
        assert refused == [("blocked.example", 8000)]
    finally:
        proxy.close()
    assert not proxy.socket_path.exists()
