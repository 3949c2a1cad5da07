"""A run's long-lived jail (harness/sandbox_jail.py): its commands share one bwrap jail, with their own environment,
folder and process group; it is started again when it died or must show other folders, and nothing of it is left
running once the run ends."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from support import CHECK, FINISH, FIX_ADD, call, needs_bwrap, processes, turn, write_script

from loopwright.harness.commands import CommandResult, run_command
from loopwright.harness.sandbox import Sandbox, SandboxError, SandboxPolicy
from loopwright.harness.sandbox_battery import Repo
from loopwright.harness.sandbox_jail import RunJail
from loopwright.runtime.project import open_project

pytestmark = needs_bwrap


@pytest.fixture
def wt(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    return Repo(tmp_path / "r").wt


@pytest.fixture
def jail(wt):
    j = RunJail(Sandbox.for_policy(SandboxPolicy(mode="bwrap")), wt)
    yield j
    j.close()


def jailing(worktree: Path) -> list[int]:
    """Pids of the processes whose command line binds `worktree` (a jail's bwrap)."""
    wanted = f"\0--bind\0{worktree}\0".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def run(jail: RunJail, command: str, cwd: Path | None = None, **kw) -> CommandResult:
    return asyncio.run(run_command(command, cwd=cwd or jail.worktree, timeout=60, jail=jail, **kw))


def test_commands_share_the_jail_each_with_its_own_environment_and_folder(jail, wt):
    (wt / "sub").mkdir()
    first = run(jail, "echo kept > /tmp/note; echo $LW_ONE-$LW_TWO; pwd", env={"LW_ONE": "a"})
    second = run(jail, "cat /tmp/note; echo $LW_ONE-$LW_TWO; pwd", cwd=wt / "sub", env={"LW_TWO": "b"})
    assert first.output.split() == ["a-", str(wt)] and first.exit_code == 0
    assert second.output.split() == ["kept", "-b", str(wt / "sub")]
    assert run(jail, "exit 7").exit_code == 7
    assert run(jail, "kill -9 $$").exit_code == 128 + 9  # as bwrap reports a death by signal
    outside = run(jail, "ls /tmp; cat ~/.ssh/id_ed25519; touch /usr/lw-x")
    assert "note" in outside.output and "Read-only file system" in outside.output
    assert jailing(wt)
    jail.close()
    assert not jailing(wt)  # at once: closing waits for the jail to end


def test_nothing_a_command_started_outlives_it_even_in_a_session_of_its_own(jail):
    sleeps = [f"sleep 307.{os.getpid()}", f"sleep 308.{os.getpid()}"]
    result = run(jail, f"{sleeps[0]} > /dev/null 2>&1 & setsid {sleeps[1]} > /dev/null 2>&1 & echo started")
    assert result.output == "started\n"
    assert not processes(sleeps[0]) and not processes(sleeps[1])  # at once: before the agent's next step


def test_an_interrupted_command_has_its_process_group_killed(jail):
    sleeps = [f"304.{os.getpid()}", f"305.{os.getpid()}"]

    async def interrupted() -> CommandResult:
        stop = asyncio.Event()

        async def when_running() -> None:
            while len(processes(f"sleep {sleeps[0]}") + processes(f"sleep {sleeps[1]}")) < 2:
                await asyncio.sleep(0.05)
            stop.set()

        watcher = asyncio.ensure_future(when_running())
        result = await run_command(f"trap '' TERM; sleep {sleeps[0]} & sleep {sleeps[1]}", cwd=jail.worktree,
                                   timeout=600, interrupt=stop, jail=jail)
        await watcher
        return result

    result = asyncio.run(interrupted())
    assert result.interrupted and result.exit_code is None
    assert not processes(f"sleep {sleeps[0]}") and not processes(f"sleep {sleeps[1]}")
    assert run(jail, "echo still here").output == "still here\n"  # the jail itself goes on


def test_a_jail_that_died_is_started_again_and_one_that_cannot_start_fails_the_command(jail, tmp_path):
    run(jail, "echo kept > /tmp/note")
    pgid = jail.pgid
    lost = run(jail, "echo ran >> runs.txt; kill -9 -1")  # every process of the jail it may signal: the server too
    assert lost.exit_code == 128 + 9 and "the run's jail ended while this command ran" in lost.output
    assert (jail.worktree / "runs.txt").read_text() == "ran\n"  # lost, not run a second time in a new jail
    again = run(jail, "cat /tmp/note 2>&1; echo next")
    assert again.output.endswith("next\n") and "kept" not in again.output and jail.pgid != pgid
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    jail.close()
    jail.sandbox.bwrap = broken
    with pytest.raises(SandboxError, match=r"the run's jail died twice in a row \(bwrap: No permissions"):
        run(jail, "true")


def test_other_skill_folders_or_a_new_worktree_folder_start_it_again(jail, wt, tmp_path):
    skills = [tmp_path / "skill-a", tmp_path / "skill-b"]
    for folder in skills:
        folder.mkdir()
        (folder / "SKILL.md").write_text(f"the text of {folder.name}\n")
    shown = f"cat {skills[0]}/SKILL.md {skills[1]}/SKILL.md 2>&1; cat /tmp/note 2>&1; echo kept > /tmp/note"
    assert "the text of skill-a" in run(jail, shown, readable=(skills[0],)).output
    same = run(jail, shown, readable=(skills[0],)).output
    assert "kept" in same and "the text of skill-b" not in same  # the same jail
    both = run(jail, shown, readable=tuple(skills)).output
    assert "the text of skill-a\nthe text of skill-b\n" in both and "kept" not in both  # a new one, showing both
    shutil.move(wt, tmp_path / "old-worktree")
    wt.mkdir()
    (wt / "fresh.txt").write_text("the new folder\n")
    assert run(jail, "cat fresh.txt", readable=tuple(skills)).output == "the new folder\n"


def test_a_runs_shell_commands_share_its_jail_and_it_ends_with_the_run(repo, cli, tmp_path):
    script = write_script(tmp_path / "s.json", [
        turn(call("shell", command="echo from-an-earlier-command > /tmp/note")),
        turn(call("shell", command="cat /tmp/note")),
        FIX_ADD, FINISH])
    result = cli.json(repo, "run", "fix add", "--check", CHECK, "--script", script, "--keep")
    assert result["status"] == "succeeded", result["reason"]
    outputs = [b.content for m in open_project(repo).store.conversation(result["run"]) for b in m.content
               if hasattr(b, "tool_call_id")]
    assert any(o.startswith("from-an-earlier-command") for o in outputs), outputs
    assert not jailing(Path(result["worktree"]).resolve())  # the run's jail ended with it


def test_a_fork_bomb_ends_its_command_and_the_next_one_runs(wt):
    """The process limit holds for the jail's commands (as root: the jail's own pid_max, shared by its commands, so
    what a command left is cleared before the next one)."""
    jail = RunJail(Sandbox.for_policy(SandboxPolicy(mode="bwrap", max_processes=64)), wt)
    code = ("import os, time\nn = 0\ntry:\n    for _ in range(400):\n        if os.fork() == 0:\n"
            "            time.sleep(600); os._exit(0)\n        n += 1\nexcept OSError as e:\n    print(e)\n"
            "print('forked', n)")
    try:
        for _ in range(2):
            bomb = run(jail, f"{sys.executable} -c {shlex.quote(code)}")
            assert "Resource temporarily unavailable" in bomb.output and "forked 400" not in bomb.output
        assert run(jail, "echo next").output == "next\n"
    finally:
        jail.close()


class Ledger:
    """A process ledger that keeps the groups recorded as alive (the store's `ToolProcesses` in a run)."""

    def __init__(self):
        self.groups = set()

    def started(self, group):
        self.groups.add(group)

    def ended(self, group):
        self.groups.discard(group)


def test_the_jails_process_group_is_recorded_while_it_runs(wt):
    """What recovery after a kill -9 ends (harness/processes.py): the jail's group holds all its commands."""
    ledger = Ledger()
    jail = RunJail(Sandbox.for_policy(SandboxPolicy(mode="bwrap")), wt, processes=ledger)
    run(jail, "true")
    assert [g.pgid for g in ledger.groups] == [jail.pgid]
    jail.close()
    assert ledger.groups == set()


def test_closing_the_jail_from_a_run_lets_the_other_runs_go_on_meanwhile(wt):
    """`aclose` (a run's end) waits for the jail to end in a worker thread: the event loop a daemon's runs share
    serves them in the meantime; once it returns the jail is gone and its group no longer recorded."""
    ledger = Ledger()
    jail = RunJail(Sandbox.for_policy(SandboxPolicy(mode="bwrap")), wt, processes=ledger)

    async def main() -> list[str]:
        await run_command("true", cwd=wt, timeout=60, jail=jail)
        order: list[str] = []

        async def other_run() -> None:
            order.append("other run")

        other = asyncio.ensure_future(other_run())
        await jail.aclose()
        order.append("closed")
        await other
        return order

    assert asyncio.run(main()) == ["other run", "closed"]
    assert not jailing(wt) and ledger.groups == set()


def test_a_warmed_jail_is_ready_for_the_first_command_and_a_run_that_ends_meanwhile_leaves_none(wt):
    """`warm` (a run's first model answer) starts the jail in the background: the first command finds it started;
    `aclose` during a start under way lets it finish and ends it, so no bwrap outlives the run."""
    box = Sandbox.for_policy(SandboxPolicy(mode="bwrap"))

    async def warmed() -> tuple[int | None, int | None, str]:
        jail = RunJail(box, wt)
        jail.warm()
        for _ in range(600):
            if jail.pgid is not None:
                break
            await asyncio.sleep(0.05)
        before = jail.pgid
        result = await run_command("echo ran", cwd=wt, timeout=60, jail=jail)
        after = jail.pgid
        await jail.aclose()
        return before, after, result.output

    before, after, output = asyncio.run(warmed())
    assert before is not None and after == before and output == "ran\n"  # started by warm, used by the command
    assert not jailing(wt)

    async def ended_while_starting(under_way: bool) -> None:
        jail = RunJail(box, wt)
        jail.warm()
        if under_way:
            await asyncio.sleep(0)  # bwrap is being started: let finish, then ended
        await jail.aclose()  # else called off before it began

    for under_way in (True, False):
        asyncio.run(ended_while_starting(under_way))
        assert not jailing(wt)


def test_a_warm_up_that_cannot_start_leaves_the_error_to_the_first_command(wt, tmp_path):
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    box = Sandbox.for_policy(SandboxPolicy(mode="bwrap"))
    box.bwrap = broken

    async def main() -> None:
        jail = RunJail(box, wt)
        jail.warm()
        await asyncio.sleep(0.5)  # the warm-up failed quietly meanwhile
        try:
            with pytest.raises(SandboxError, match=r"the run's jail died twice in a row \(bwrap: No permissions"):
                await run_command("true", cwd=wt, timeout=60, jail=jail)
        finally:
            await jail.aclose()

    asyncio.run(main())
