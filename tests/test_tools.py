"""The agent's tools: schemas, confinement to the worktree, caps, timeouts and secrets."""

from __future__ import annotations

import asyncio
import os
import re
import time
import tracemalloc

import pytest
from support import MemoryPad, processes

from loopwright.harness.commands import run_command
from loopwright.harness.messages import ToolCall, gist_argument
from loopwright.harness.tools import Tool, Toolbox, ToolContext


@pytest.fixture
def ctx(tmp_path) -> ToolContext:
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / "a.py").write_text("one\ntwo\nthree\ntwo\n")
    return ToolContext(worktree=wt, scratchpad=MemoryPad(), env={"LOOPWRIGHT_RUN_ID": "r1"}, output_cap=2000)


def run(ctx: ToolContext, name: str, parse_error: str | None = None, **arguments):
    return asyncio.run(Toolbox().execute(ToolCall(id="c1", name=name, arguments=arguments,
                                                  parse_error=parse_error), ctx))


def test_specs_are_json_schemas_the_model_sees():
    specs = {s.name: s for s in Toolbox().specs()}
    assert set(specs) == {"shell", "read_file", "write_file", "edit_file", "list_files", "grep", "scratchpad",
                          "checkpoint", "finish"}
    edit = specs["edit_file"].input_schema
    assert edit["type"] == "object" and set(edit["required"]) == {"path", "old", "new"}
    assert specs["scratchpad"].input_schema["properties"]["action"]["enum"] == ["read", "append", "replace"]


def test_schema_failure_names_the_field(ctx):
    out = run(ctx, "edit_file", path="a.py", old="one")
    assert out.is_error and "argument 'new'" in out.content and "required" in out.content.lower()
    out = run(ctx, "read_file", path="a.py", offset="first")
    assert out.is_error and "argument 'offset'" in out.content


def test_unknown_tool_and_bad_json(ctx):
    out = run(ctx, "rm_rf")
    assert out.is_error and "unknown tool 'rm_rf'" in out.content and "read_file" in out.content
    out = run(ctx, "read_file", parse_error="Expecting value at position 9")
    assert out.is_error and "not valid JSON" in out.content


def test_read_file_with_range_and_numbers(ctx):
    out = run(ctx, "read_file", path="a.py", offset=2, limit=2)
    assert not out.is_error
    assert "     2\ttwo" in out.content and "     3\tthree" in out.content and "one" not in out.content
    assert "lines 2-3 of 4" in out.content


def test_read_refusals(ctx):
    (ctx.worktree / "blob.bin").write_bytes(b"\x00\xff" * 100)
    out = run(ctx, "read_file", path="blob.bin")
    assert out.is_error and "binary file (200 bytes)" in out.content
    assert "not found" in run(ctx, "read_file", path="missing.py").content
    (ctx.worktree / "d").mkdir()
    assert "list_files" in run(ctx, "read_file", path="d").content


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "sub/../../outside.txt"])
def test_paths_outside_the_worktree_are_refused(ctx, path):
    (ctx.worktree.parent / "outside.txt").write_text("secret")
    for name, extra in (("read_file", {}), ("write_file", {"content": "x"}), ("edit_file", {"old": "s", "new": "x"})):
        out = run(ctx, name, path=path, **extra)
        assert out.is_error and "path escapes the worktree" in out.content
    assert (ctx.worktree.parent / "outside.txt").read_text() == "secret"


def test_symlinks_out_of_the_worktree_are_refused(ctx):
    outside = ctx.worktree.parent / "outside"
    outside.mkdir()
    (outside / "s.txt").write_text("secret")
    (ctx.worktree / "link.txt").symlink_to(outside / "s.txt")
    (ctx.worktree / "linkdir").symlink_to(outside)
    assert "escapes" in run(ctx, "read_file", path="link.txt").content
    out = run(ctx, "write_file", path="linkdir/new.txt", content="x")
    assert out.is_error and "escapes" in out.content and not (outside / "new.txt").exists()
    assert "escapes" in run(ctx, "grep", pattern="secret", path="linkdir").content


def test_git_dir_is_off_limits(ctx):
    (ctx.worktree / ".git").mkdir()
    out = run(ctx, "write_file", path=".git/config", content="x")
    assert out.is_error and ".git" in out.content


def test_write_and_edit(ctx):
    out = run(ctx, "write_file", path="new/dir/b.txt", content="hello world")
    assert out.may_have_changed_files and (ctx.worktree / "new/dir/b.txt").read_text() == "hello world"
    out = run(ctx, "edit_file", path="new/dir/b.txt", old="world", new="there")
    assert not out.is_error and (ctx.worktree / "new/dir/b.txt").read_text() == "hello there"


def test_edit_missing_and_ambiguous(ctx):
    out = run(ctx, "edit_file", path="a.py", old="four", new="4")
    assert out.is_error and "not found" in out.content
    out = run(ctx, "edit_file", path="a.py", old="two", new="2")
    assert out.is_error and "found 2 times" in out.content and "lines 2, 4" in out.content
    assert (ctx.worktree / "a.py").read_text() == "one\ntwo\nthree\ntwo\n"
    out = run(ctx, "edit_file", path="a.py", old="two", new="2", replace_all=True)
    assert not out.is_error and (ctx.worktree / "a.py").read_text() == "one\n2\nthree\n2\n"


def test_list_and_grep_skip_noise_and_cap(ctx):
    (ctx.worktree / "node_modules").mkdir()
    (ctx.worktree / "node_modules" / "x.py").write_text("two")
    for i in range(600):
        (ctx.worktree / f"f{i:03}.txt").write_text("needle\n")
    listed = run(ctx, "list_files", pattern="*.py").content
    assert listed.splitlines() == ["a.py"]
    many = run(ctx, "list_files").content
    assert "and 101 more" in many
    hits = run(ctx, "grep", pattern="two", glob="*.py").content
    assert hits.splitlines() == ["a.py:2: two", "a.py:4: two"]
    assert "and 400 more matches" in run(ctx, "grep", pattern="needle").content
    assert "invalid regular expression" in run(ctx, "grep", pattern="(").content


def test_scratchpad_checkpoint_finish(ctx):
    assert "empty" in run(ctx, "scratchpad", action="read").content
    run(ctx, "scratchpad", action="append", text="note 1")
    run(ctx, "scratchpad", action="append", text="note 2")
    assert run(ctx, "scratchpad", action="read").content == "note 1\nnote 2"
    assert run(ctx, "scratchpad", action="append").is_error
    assert run(ctx, "checkpoint", message="halfway").checkpoint_message == "halfway"
    assert run(ctx, "finish", summary="done").finish_summary == "done"


def test_shell_runs_in_the_worktree_without_keys(ctx, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-not-a-key")
    monkeypatch.setenv("SOME_TOKEN", "test-not-a-token")
    monkeypatch.setenv("DB_PASSWORD", "test-not-a-password")
    monkeypatch.setenv("lower_api_key", "test-not-a-lower-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test-not-an-aws-secret")
    monkeypatch.setenv("HARMLESS", "kept")
    out = run(ctx, "shell", command="pwd; env; exit 3")
    assert not out.is_error and out.may_have_changed_files
    assert str(ctx.worktree) in out.content and "exit code 3" in out.content
    for secret in ("test-not-a-key", "test-not-a-token", "test-not-a-password", "test-not-a-lower-key",
                   "test-not-an-aws-secret"):
        assert secret not in out.content
    assert "HARMLESS=kept" in out.content and "LOOPWRIGHT_RUN_ID=r1" in out.content


def test_huge_output_is_capped_while_streaming(ctx):
    t0 = time.monotonic()
    tracemalloc.start()
    try:
        out = run(ctx, "shell", command="head -c 100000000 /dev/zero | tr '\\0' a; echo; echo the-end")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - t0 < 30
    assert peak < 5_000_000  # 100 MB went through; only chunks and the capped head + tail were held
    assert len(out.content) < 2500 and "bytes left out" in out.content and "the-end" in out.content
    left = int(out.content.split("[… ")[1].split(" bytes")[0])
    assert left > 99_000_000


@pytest.mark.parametrize("command", ["sleep 1001", "sleep 1001 & sleep 1001", "sleep 1001 & sleep 1001; wait"])
def test_a_command_that_never_exits_is_killed_with_its_group(ctx, command):
    t0 = time.monotonic()
    out = run(ctx, "shell", command=command, timeout_seconds=1)
    assert time.monotonic() - t0 < 8
    assert out.is_error and "timed out after 1s; process group killed" in out.content
    time.sleep(0.2)
    assert processes("sleep 1001") == []


def test_cancelling_a_command_kills_its_group(tmp_path):
    async def go():
        task = asyncio.ensure_future(run_command("sleep 1002", cwd=tmp_path, timeout=60))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(go())
    time.sleep(0.2)
    assert processes("sleep 1002") == []


@pytest.mark.parametrize("command", ["echo before; sleep 1006", "echo before; trap '' TERM; sleep 1006"])
def test_an_interrupt_ends_the_command_with_its_group_term_then_kill(ctx, command):
    """The run's interrupt (a kill) ends the command now: SIGTERM, and SIGKILL for what ignores it."""
    async def go():
        asyncio.get_running_loop().call_later(0.5, ctx.interrupt.set)
        t0 = time.monotonic()
        out = await Toolbox().execute(ToolCall(id="c1", name="shell", arguments={"command": command}), ctx)
        return out, time.monotonic() - t0

    out, took = asyncio.run(go())
    assert took < 8
    assert out.is_error and out.content.startswith("before\n")
    assert "interrupted: the run was stopped while this command ran; its process group was ended" in out.content
    time.sleep(0.2)
    assert processes("sleep 1006") == []


def test_every_result_is_capped_within_the_limit(ctx):
    out = run(ctx, "shell", command="seq 1 5000")
    assert len(out.content) <= ctx.output_cap and "left out" in out.content
    assert out.content.startswith("1\n2\n") and "5000\nexit code 0" in out.content
    (ctx.worktree / "big.txt").write_text("x" * 50_000)  # one huge line
    out = run(ctx, "grep", pattern="x+")
    assert len(out.content) <= ctx.output_cap


def test_read_file_stops_at_the_limit_and_says_where_to_continue(ctx):
    (ctx.worktree / "big.txt").write_text("\n".join(f"line {i}" for i in range(1, 5001)) + "\n")
    out = run(ctx, "read_file", path="big.txt")
    assert not out.is_error and len(out.content) <= ctx.output_cap
    last = int(re.search(r"lines 1-(\d+) of 5000; output limit reached, continue with offset=(\d+)",
                         out.content).group(1))
    assert 50 < last < 5000 and f"line {last}" in out.content and f"line {last + 1}\n" not in out.content
    nxt = run(ctx, "read_file", path="big.txt", offset=last + 1, limit=3).content
    assert nxt.splitlines()[0] == f"{last + 1:6}\tline {last + 1}" and "of 5000" in nxt
    assert "past the end" in run(ctx, "read_file", path="big.txt", offset=9000).content


def test_tool_errors_do_not_raise(ctx):
    out = run(ctx, "write_file", path="a.py/child.txt", content="x")  # a.py is a file, not a directory
    assert out.is_error and "write_file failed" in out.content and "Error" in out.content


class Exploding(Tool):
    name, description = "explode", "raises"

    async def run(self, args, ctx):
        raise RuntimeError("boom")


def test_an_exception_inside_a_tool_becomes_an_error_result(ctx):
    out = asyncio.run(Toolbox([Exploding()]).execute(ToolCall(id="c", name="explode"), ctx))
    assert out.is_error and "explode failed: RuntimeError: boom" in out.content


def test_a_background_child_holding_the_pipe_does_not_make_a_finished_command_hang(ctx):
    t0 = time.monotonic()
    out = run(ctx, "shell", command="sleep 1003 & echo started", timeout_seconds=30)
    assert time.monotonic() - t0 < 5
    assert not out.is_error and "started" in out.content and "exit code 0" in out.content
    time.sleep(0.2)
    assert processes("sleep 1003") == []


def test_shell_timeout_is_capped_by_the_maximum(ctx):
    ctx.max_shell_timeout = 1
    t0 = time.monotonic()
    out = run(ctx, "shell", command="sleep 1004", timeout_seconds=500)
    assert time.monotonic() - t0 < 6 and "timed out after 1s" in out.content


def test_grep_does_not_follow_symlinked_files_out_of_the_worktree(ctx):
    outside = ctx.worktree.parent / "secret.txt"
    outside.write_text("password=hunter2\n")
    (ctx.worktree / "innocent.txt").symlink_to(outside)
    (ctx.worktree / "inner.txt").symlink_to(ctx.worktree / "a.py")
    out = run(ctx, "grep", pattern="hunter2|three")
    assert "hunter2" not in out.content and "inner.txt:3: three" in out.content


def test_nested_git_dirs_and_special_files(ctx):
    (ctx.worktree / "sub" / ".git").mkdir(parents=True)
    assert ".git" in run(ctx, "write_file", path="sub/.git/HEAD", content="x").content
    os.mkfifo(ctx.worktree / "pipe")  # reading it would block forever
    out = run(ctx, "read_file", path="pipe")
    assert out.is_error and "not a regular file" in out.content


def test_edit_details(ctx):
    out = run(ctx, "edit_file", path="a.py", old="", new="x")
    assert out.is_error and "empty" in out.content
    out = run(ctx, "edit_file", path="a.py", old="threee", new="3")
    assert "not found" in out.content and "closest line is 3" in out.content
    out = run(ctx, "edit_file", path="a.py", old="thre", new="3")  # exactly once, as a substring
    assert not out.is_error and "line 3" in out.content
    (ctx.worktree / "b.txt").write_text("aaaa\n")
    out = run(ctx, "edit_file", path="b.txt", old="aa", new="b")  # 2 non-overlapping, as replace sees them
    assert "found 2 times" in out.content and "lines 1, 1" in out.content
    (ctx.worktree / "crlf.txt").write_bytes(b"alpha\r\nbeta\r\ngamma\r\n")
    out = run(ctx, "edit_file", path="crlf.txt", old="alpha\nbeta", new="one\ntwo")
    assert not out.is_error and (ctx.worktree / "crlf.txt").read_bytes() == b"one\r\ntwo\r\ngamma\r\n"


def test_write_file_is_utf8_and_reports_bytes(ctx):
    out = run(ctx, "write_file", path="u.txt", content="héllo ✓")
    assert "wrote 10 bytes" in out.content and "new file" in out.content
    assert (ctx.worktree / "u.txt").read_bytes() == "héllo ✓".encode()
    assert "overwritten" in run(ctx, "write_file", path="u.txt", content="x").content
    (ctx.worktree / "bad.txt").write_bytes(b"caf\xe9\n")  # latin-1, not UTF-8
    out = run(ctx, "read_file", path="bad.txt")
    assert out.is_error and "binary file (5 bytes)" in out.content


def test_list_files_globs(ctx):
    for rel in ("src/pkg/m.py", "src/pkg/data.json", "src/top.py", "docs/x.md"):
        (ctx.worktree / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx.worktree / rel).write_text("x")
    assert run(ctx, "list_files", pattern="*.py").content.splitlines() == ["a.py", "src/pkg/m.py", "src/top.py"]
    assert run(ctx, "list_files", pattern="src/*.py").content.splitlines() == ["src/top.py"]
    assert run(ctx, "list_files", pattern="src/**/*.py").content.splitlines() == ["src/pkg/m.py", "src/top.py"]
    assert run(ctx, "list_files", pattern="pkg/*", path="src").content.splitlines() == [
        "src/pkg/data.json", "src/pkg/m.py"]
    assert "no files match" in run(ctx, "list_files", pattern="*.rs").content
    assert run(ctx, "list_files", path="a.py").is_error


def test_bad_globs_and_paths_are_clean_errors(ctx):
    for name, args in (("list_files", {"pattern": "[z-a]"}), ("grep", {"pattern": "x", "glob": "[z-a]"})):
        out = run(ctx, name, **args)
        assert out.is_error and out.content.startswith(f"{name}: invalid glob '[z-a]'")
    out = run(ctx, "read_file", path="a\x00b")
    assert out.is_error and out.content.startswith("read_file: invalid path")


def test_a_command_killed_by_a_signal_says_so(ctx):
    out = run(ctx, "shell", command="echo before; kill -9 $$")
    assert "before\nexit code -9: killed by signal 9 (SIGKILL)" in out.content


def test_a_tool_calls_gist_is_its_main_argument_on_one_line():
    """What the fleet view, the progress lines and checkpoint messages show of a call."""
    assert gist_argument({"command": "pytest -q\necho done", "timeout": 60}) == "pytest -q"
    assert gist_argument({"content": "x", "path": "src/a.py"}) == "src/a.py"
    assert gist_argument({"action": "append", "text": "plan"}) == "append"
    assert gist_argument({"path": "p" * 100}) == "p" * 70
    assert gist_argument({"command": ""}) == "" and gist_argument({"n": 1}) == ""
