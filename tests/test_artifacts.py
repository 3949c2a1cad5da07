"""Artifacts: the agent's `artifact` tool, the storage under .loopwright/artifacts/<run>/, `loopwright artifacts`."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest
from support import MemoryPad

from loopwright.cli import artifacts as artifact_commands
from loopwright.harness.messages import ToolCall
from loopwright.harness.tools import Toolbox, ToolContext
from loopwright.memory import artifacts
from loopwright.memory.artifacts import ArtifactError, ArtifactTool, list_artifacts, register
from loopwright.memory.run import RunMemory


def new_run(project, run_id: str) -> Path:
    """A task and a run in the store; returns the run's (stand-in) worktree."""
    wt = project.root.parent / f"wt-{run_id}"
    wt.mkdir()
    task = project.store.create_task(f"task for {run_id}")
    project.store.create_run(task.id, provider="scripted", model="m", worktree=str(wt), branch=f"lw/{run_id}",
                             base_commit="0" * 40, target_branch="main", run_id=run_id)
    return wt


def tool_ctx(project, run_id: str, wt: Path, memory: bool = True) -> ToolContext:
    mem = RunMemory(store=project.store, run_id=run_id, task_id=project.store.run(run_id).task_id,
                    artifacts_root=project.dir / "artifacts")
    return ToolContext(worktree=wt, scratchpad=MemoryPad(), memory=mem if memory else None)


def call(ctx: ToolContext, **arguments):
    return asyncio.run(Toolbox([ArtifactTool()]).execute(ToolCall(id="c1", name="artifact", arguments=arguments), ctx))


def rows(project) -> int:
    return project.store.conn.execute("SELECT count(*) FROM artifacts").fetchone()[0]


# -- the tool ----------------------------------------------------------------------------------------


def test_tool_registers_a_worktree_file_and_it_outlives_the_worktree(project):
    wt = new_run(project, "aaaa1111")
    (wt / "docs").mkdir()
    (wt / "docs" / "report.md").write_text("# Findings\nall good\n")
    ctx = tool_ctx(project, "aaaa1111", wt)
    out = call(ctx, path="docs/report.md", kind="report", title="  Findings  ")
    assert not out.is_error, out.content
    assert out.content == "registered artifact 1: report 'Findings' (20 bytes)"
    copy = project.dir / "artifacts" / "aaaa1111" / "report.md"
    assert copy.read_text() == "# Findings\nall good\n"
    out = call(ctx, path="docs/report.md", kind="report", title="again")  # same name: a new file, not overwritten
    assert "registered artifact 2" in out.content
    assert (copy.parent / "report-2.md").is_file()
    shutil.rmtree(wt)
    [first, second] = list_artifacts(project.store, project.dir / "artifacts")
    assert first.exists and first.path == str(copy) and first.size == 20 and first.title == "Findings"
    assert second.path.endswith("report-2.md")
    row = project.store.conn.execute("SELECT path FROM artifacts WHERE id = 1").fetchone()[0]
    assert row == "aaaa1111/report.md"  # relative to the artifacts root: the project can move


def test_tool_writes_a_text_artifact(project):
    wt = new_run(project, "aaaa1111")
    ctx = tool_ctx(project, "aaaa1111", wt)
    out = call(ctx, text="1. read\n2. fix\n", kind="plan", title="Fix plan: step 1")
    assert not out.is_error and out.content == "registered artifact 1: plan 'Fix plan: step 1' (15 bytes)"
    assert (project.dir / "artifacts" / "aaaa1111" / "fix-plan-step-1.md").read_text() == "1. read\n2. fix\n"
    out = call(ctx, text="a,b\n1,2\n", kind="data", title="Table", name="table.csv")
    assert not out.is_error and (project.dir / "artifacts" / "aaaa1111" / "table.csv").is_file()
    out = call(ctx, text="x", kind="data", title="Table", name="../escape.csv")
    assert out.is_error and "invalid file name" in out.content


def test_tool_refuses_escapes_unknown_kinds_and_bad_argument_mixes(project, tmp_path):
    wt = new_run(project, "aaaa1111")
    (tmp_path / "secret.txt").write_text("key")
    (wt / "a.txt").write_text("a")
    ctx = tool_ctx(project, "aaaa1111", wt)
    out = call(ctx, path="../secret.txt", kind="data", title="t")
    assert out.is_error and "escapes the worktree" in out.content
    out = call(ctx, path="a.txt", kind="poem", title="t")
    assert out.is_error and "argument 'kind'" in out.content
    out = call(ctx, path="a.txt", kind="data", title="   ")
    assert out.is_error and "title" in out.content
    out = call(ctx, path="a.txt", text="b", kind="data", title="t")
    assert out.is_error and "exactly one of `path`" in out.content
    out = call(ctx, kind="data", title="t")
    assert out.is_error and "exactly one of `path`" in out.content
    out = call(ctx, path="missing.txt", kind="data", title="t")
    assert out.is_error and "no such file: missing.txt" in out.content
    folder = project.dir / "artifacts" / "aaaa1111"
    assert rows(project) == 0 and not (folder.exists() and any(folder.iterdir()))


def test_tool_without_memory_is_an_error_result(project):
    wt = new_run(project, "aaaa1111")
    (wt / "a.txt").write_text("a")
    out = call(tool_ctx(project, "aaaa1111", wt, memory=False), path="a.txt", kind="data", title="t")
    assert out.is_error and "no memory store" in out.content


# -- storage -----------------------------------------------------------------------------------------


def test_folders_oversize_files_and_failed_copies_leave_no_row(project, monkeypatch):
    wt = new_run(project, "aaaa1111")
    root = project.dir / "artifacts"
    (wt / "out").mkdir()
    with pytest.raises(ArtifactError, match="is a folder; .*tar czf out.tar.gz out"):
        register(project.store, root, "aaaa1111", wt / "out", kind="data", title="t")
    (wt / "big.bin").write_bytes(b"x" * 2000)
    monkeypatch.setattr(artifacts, "MAX_BYTES", 1000)
    with pytest.raises(ArtifactError, match="capped at"):
        register(project.store, root, "aaaa1111", wt / "big.bin", kind="data", title="t")
    monkeypatch.setattr(artifacts, "MAX_BYTES", 10_000)

    def broken_copy(src, dst):
        Path(dst).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.shutil, "copyfile", broken_copy)
    with pytest.raises(ArtifactError, match="No space left"):
        register(project.store, root, "aaaa1111", wt / "big.bin", kind="data", title="t")
    assert rows(project) == 0 and list((root / "aaaa1111").iterdir()) == []
    with pytest.raises(ArtifactError, match="unknown kind 'poem'; the kinds are: plan, report"):
        register(project.store, root, "aaaa1111", wt / "big.bin", kind="poem", title="t")
    with pytest.raises(ArtifactError, match="1-200 characters"):
        register(project.store, root, "aaaa1111", wt / "big.bin", kind="data", title="x" * 201)


# -- the CLI -----------------------------------------------------------------------------------------


def test_list_filters_by_run_and_kind(project, cli):
    for run_id in ("aaaa1111", "bbbb2222"):
        wt = new_run(project, run_id)
        (wt / "plan.md").write_text(f"plan of {run_id}\n")
        (wt / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0")
        register(project.store, project.dir / "artifacts", run_id, wt / "plan.md", kind="plan", title=f"P {run_id}")
        register(project.store, project.dir / "artifacts", run_id, wt / "fig.png", kind="figure", title="F")
    code, out, _ = cli(project.root, "artifacts")
    assert code == 0 and len(out.splitlines()) == 4
    code, out, _ = cli(project.root, "artifacts", "--run", "bbbb")  # a prefix is enough
    assert code == 0 and [ln.split()[1] for ln in out.splitlines()] == ["bbbb2222", "bbbb2222"]
    code, out, _ = cli(project.root, "artifacts", "--run", "aaaa1111", "list")  # flags before the action count
    assert code == 0 and [ln.split()[1] for ln in out.splitlines()] == ["aaaa1111", "aaaa1111"]
    code, out, _ = cli(project.root, "artifacts", "list", "--kind", "plan", "--json")
    data = json.loads(out)
    assert [(a["run_id"], a["kind"], a["title"]) for a in data] == [("aaaa1111", "plan", "P aaaa1111"),
                                                                    ("bbbb2222", "plan", "P bbbb2222")]
    code, out, _ = cli(project.root, "artifacts", "--run", "aaaa1111", "--kind", "figure", "--json")
    assert [(a["id"], a["kind"]) for a in json.loads(out)] == [(2, "figure")]
    code, out, _ = cli(project.root, "artifacts", "--kind", "diff")
    assert code == 0 and out.startswith("no artifacts match")
    code, _, err = cli(project.root, "artifacts", "--kind", "poem")
    assert code == 2 and "invalid choice: 'poem'" in err and len(err.splitlines()) == 1


def test_a_person_adds_a_file_and_opens_it(project, cli, tmp_path):
    new_run(project, "aaaa1111")
    notes = tmp_path / "walk.md"
    notes.write_text("step one\nstep two\n")
    code, out, err = cli(project.root, "artifacts", "add", "aaaa", str(notes), "--kind", "walkthrough",
                         "--title", "How it works")
    assert code == 0, err
    assert out.startswith("registered artifact 1: walkthrough 'How it works' (18 bytes)")
    code, out, _ = cli(project.root, "artifacts", "open", "1")
    assert code == 0 and out == "step one\nstep two\n"
    code, out, _ = cli(project.root, "artifacts", "open", "1", "--json")
    assert json.loads(out)["path"] == str(project.dir / "artifacts" / "aaaa1111" / "walk.md")
    code, _, err = cli(project.root, "artifacts", "add", "zzzz", str(notes), "--kind", "plan", "--title", "t")
    assert code == 2 and "no run 'zzzz'" in err


def test_unknown_id_and_missing_file_are_one_line(project, cli):
    wt = new_run(project, "aaaa1111")
    (wt / "r.txt").write_text("r")
    art = register(project.store, project.dir / "artifacts", "aaaa1111", wt / "r.txt", kind="report", title="R")
    code, out, err = cli(project.root, "artifacts", "open", "99")
    assert code == 2 and out == ""
    assert err == "loopwright: error: no artifact 99 (list them with `loopwright artifacts`)\n"
    Path(art.path).unlink()
    code, out, _ = cli(project.root, "artifacts")
    assert code == 0 and out.rstrip().endswith("[missing]")
    code, out, _ = cli(project.root, "artifacts", "--json")
    assert json.loads(out)[0]["exists"] is False and json.loads(out)[0]["size"] is None
    code, _, err = cli(project.root, "artifacts", "open", str(art.id))
    assert code == 2 and "file is missing" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_a_binary_artifact_is_opened_with_the_desktop_or_its_path_printed(project, cli, monkeypatch):
    wt = new_run(project, "aaaa1111")
    (wt / "shot.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    art = register(project.store, project.dir / "artifacts", "aaaa1111", wt / "shot.png", kind="screenshot",
                   title="S")
    launched = []
    monkeypatch.setattr(artifact_commands.subprocess, "Popen", lambda argv, **kw: launched.append(argv))
    monkeypatch.setattr(artifact_commands.sys, "platform", "linux")
    monkeypatch.setattr(artifact_commands.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, out, err = cli(project.root, "artifacts", "open", "1")  # no display: the path, and a hint
    assert code == 0 and out == f"{art.path}\n" and "not text" in err and launched == []
    monkeypatch.setenv("DISPLAY", ":0")
    code, out, _ = cli(project.root, "artifacts", "open", "1")
    assert code == 0 and launched == [["xdg-open", art.path]] and "opened" in out
    code, out, _ = cli(project.root, "artifacts", "open", "1", "--print")
    assert out == f"{art.path}\n" and len(launched) == 1
