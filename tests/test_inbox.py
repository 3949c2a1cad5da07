"""The task inbox: markdown files in `.loopwright/inbox/` become queued tasks, or are rejected with a reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support import call, turn, until, write_script
from test_daemon import task_script, wait_until_done

from loopwright.runtime.fleet.inbox import Inbox, InboxResult
from loopwright.runtime.project import open_project


@pytest.fixture
def project(repo, cli):
    cli(repo, "init")
    p = open_project(repo)
    p.config.inbox.settle_seconds = 0
    yield p
    p.store.close()


@pytest.fixture
def script(tmp_path) -> Path:
    return write_script(tmp_path / "s.json", [turn(call("finish", summary="done"))])


class Box:
    """An Inbox under test, with what it said."""

    def __init__(self, project):
        self.said: list[str] = []
        self.inbox = Inbox(project, self.said.append)
        self.dir = project.dir / "inbox"
        self.dir.mkdir(parents=True, exist_ok=True)

    def drop(self, name: str, text: str | bytes) -> Path:
        path = self.dir / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        return path

    def drain_until(self, count: int, timeout: float = 10) -> list[InboxResult]:
        results: list[InboxResult] = []
        deadline = time.monotonic() + timeout
        while len(results) < count:
            assert time.monotonic() < deadline, f"only {results} after {timeout} s; said {self.said}"
            results += self.inbox.drain()
            time.sleep(0.02)
        return results


@pytest.fixture
def box(project):
    b = Box(project)
    yield b
    b.inbox.stop()


def test_front_matter_options_queue_a_task_and_the_file_moves_to_done(project, box, script):
    box.drop("a-first.md", f"---\nscript: {script}\n---\nwrite the first thing\n")
    box.drop("b-fix.md", f"""---
title: Fix the parser
check: test -f parser.txt
priority: 3
after: [1]
script: {script}
---
# Not the title

Make the parser accept empty input.
""")
    box.drop("c-loop.md", "---\nuntil: python -m unittest -q\nmax_attempts: 4\nbudget_usd: 2.5\n"
                          f"script: {script}\n---\n"
                          "make the suite pass\n")
    box.inbox.start()  # files waiting before the start are taken too
    results = box.drain_until(3)
    assert [(r.path.name, r.task_id, r.error) for r in results] == [
        ("a-first.md", 1, None), ("b-fix.md", 2, None), ("c-loop.md", 3, None)]
    store = project.store
    fix = store.task(2)
    assert (fix.title, fix.check_cmd, fix.priority) == ("Fix the parser", "test -f parser.txt", 3)
    assert fix.goal == "# Not the title\n\nMake the parser accept empty input."
    assert [d.id for d in store.dependencies(2)] == [1]
    assert fix.options["provider"] == "scripted" and fix.options["script"] == str(script)
    loop = store.task(3)
    assert loop.check_cmd == "python -m unittest -q" and loop.options["until"] is True
    assert loop.options["max_attempts"] == 4 and loop.options["budget_usd"] == 2.5
    assert sorted(p.name for p in box.dir.iterdir() if p.is_file()) == []
    assert sorted(p.name for p in (box.dir / "done").iterdir()) == ["a-first.task-1.md", "b-fix.task-2.md",
                                                                     "c-loop.task-3.md"]
    assert (box.dir / "done" / "b-fix.task-2.md").read_text().startswith("---\ntitle: Fix the parser")
    assert any("task 2 queued from inbox/b-fix.md" in s and "Fix the parser" in s for s in box.said)


def test_without_front_matter_the_body_is_the_goal_and_the_heading_the_title(project, box, script, tmp_path):
    (project.root / "loopwright.toml").write_text(f'provider = "scripted"\nscript = "{script}"\n')
    project = open_project(project.root)
    box = Box(project)
    box.drop("plain.md", "# Tidy the README\n\nShorten the install section.\n")
    box.drop("no-heading.md", "rename the helper\nand update its callers\n")
    box.inbox.start()
    try:
        results = box.drain_until(2)
    finally:
        box.inbox.stop()
    assert all(r.error is None for r in results), results
    by_name = {r.path.name: project.store.task(r.task_id) for r in results}
    plain = by_name["plain.md"]
    assert (plain.title, plain.goal) == ("Tidy the README", "# Tidy the README\n\nShorten the install section.")
    other = by_name["no-heading.md"]
    assert (other.title, other.goal) == ("rename the helper", "rename the helper\nand update its callers")


def test_a_file_dropped_while_watching_is_taken(project, box, script):
    box.inbox.start()
    assert box.inbox.drain() == []
    box.drop("late.md", f"---\nscript: {script}\n---\ncome late\n")
    (result,) = box.drain_until(1)  # noticed by the watchdog observer: no rescan was scheduled
    assert result.task_id == 1 and (box.dir / "done" / "late.task-1.md").exists()


def test_nothing_waiting_means_no_directory_listing(project, box, script, monkeypatch):
    box.drop("x.md", f"---\nscript: {script}\n---\nx\n")
    box.inbox.start()
    assert len(box.drain_until(1)) == 1
    time.sleep(0.2)  # let the observer report our own moves
    box.inbox.drain()

    def no_listing(self):
        raise AssertionError(f"listed {self} with nothing waiting")

    monkeypatch.setattr(Path, "iterdir", no_listing)
    for _ in range(5):
        assert box.inbox.drain() == []


def test_dotfiles_editor_temporaries_and_folders_are_left_alone(project, box, script):
    names = [".hidden.md", ".#lock.md", "draft.md~", "notes.md.swp"]
    for name in names:
        box.drop(name, f"---\nscript: {script}\n---\nnot a task\n")
    (box.dir / "sub").mkdir()
    (box.dir / "sub" / "inner.md").write_text("not a task either\n")
    box.inbox.start()
    time.sleep(0.1)
    assert box.inbox.drain() == [] and box.inbox.drain() == []
    assert project.store.tasks() == []
    assert all((box.dir / n).exists() for n in names) and (box.dir / "sub" / "inner.md").exists()
    assert list((box.dir / "rejected").iterdir()) == [] and list((box.dir / "done").iterdir()) == []


MALFORMED = {
    "bad-yaml": ("---\ntitle: [unclosed\nscript: {script}\n---\ngoal\n", "the front matter is not valid YAML"),
    "a-list": ("---\n- one\n- two\n---\ngoal\n", "the front matter is a list, not a mapping of options"),
    "unclosed": ("---\nscript: {script}\ngoal without an end to the front matter\n", "no closing `---` line"),
    "unknown-option": ("---\npriorty: 2\nscript: {script}\n---\ngoal\n", "priorty: unknown option (known: title"),
    "bad-type": ("---\npriority: high\nscript: {script}\n---\ngoal\n", "priority: Input should be a valid integer"),
    "goal-option": ("---\ngoal: other\nscript: {script}\n---\ngoal\n", "`goal` is not an option"),
    "empty-goal": ("---\ntitle: nothing\nscript: {script}\n---\n\n  \n", "goal: the goal is empty"),
    "unknown-dep": ("---\nafter: 42\nscript: {script}\n---\ngoal\n", "there is no task 42"),
    "cycle": ("---\nafter: [1]\nscript: {script}\n---\ngoal\n", "task 1 cannot wait for itself"),
    "attempts-alone": ("---\nmax_attempts: 3\nscript: {script}\n---\ngoal\n", "max_attempts goes with until"),
    "config": ("---\nprovider: nonsense\n---\ngoal\n", "provider"),
    "missing-script": ("---\nscript: /nowhere/s.json\n---\ngoal\n", "script file not found: /nowhere/s.json"),
    "bad-date": ("---\ntitle: 2024-13-45\nscript: {script}\n---\ngoal\n", "the front matter is not valid YAML"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_file_is_rejected_with_a_one_line_reason(project, box, script, kind):
    text, expected = MALFORMED[kind]
    box.drop(f"{kind}.md", text.format(script=script))
    box.inbox.start()
    (result,) = box.drain_until(1)
    assert result.task_id is None and expected in result.error, result.error
    assert project.store.tasks() == []
    assert not (box.dir / f"{kind}.md").exists()
    assert (box.dir / "rejected" / f"{kind}.md").read_text() == text.format(script=script)  # never lost
    error = (box.dir / "rejected" / f"{kind}.md.error").read_text()
    assert error.count("\n") == 1 and expected in error and "hint: " in error
    assert "Traceback" not in error and list((box.dir / "done").iterdir()) == []
    assert any(f"inbox/{kind}.md rejected" in s for s in box.said)


def test_a_file_for_a_provider_whose_key_is_not_set_is_queued(project, box):
    """Whether the key is there is seen when the run starts (a daemon without it pauses the run, saying so)."""
    box.drop("no-key.md", "---\nprovider: anthropic\n---\ngoal\n")
    box.inbox.start()
    (result,) = box.drain_until(1)
    assert result.error is None and project.store.task(result.task_id).status == "queued"


def test_other_extensions_and_undecodable_files_are_rejected(project, box):
    box.drop("task.txt", "do something\n")
    box.drop("latin.md", "caf\xe9 au lait\n".encode("latin-1"))
    box.inbox.start()
    results = {r.path.name: r for r in box.drain_until(2)}
    assert "only .md files are read" in results["task.txt"].error
    assert "not UTF-8" in results["latin.md"].error
    rejected = box.dir / "rejected"
    assert sorted(p.name for p in rejected.iterdir()) == ["latin.md", "latin.md.error", "task.txt", "task.txt.error"]
    assert "rename it to task.md" in (rejected / "task.txt.error").read_text()
    assert project.store.tasks() == []


def test_a_file_still_being_written_is_not_taken_before_it_settles(project, box, script):
    project.config.inbox.settle_seconds = 0.4
    box.inbox.start()
    path = box.drop("slow.md", "---\n")  # half-written: read now, it would be rejected (no closing ---)
    chunks = [f"script: {script}\n", "priority: 2\n", "---\n", "write ", "slowly\n"]
    while chunks:
        with path.open("a") as f:
            f.write(chunks.pop(0))
        last_write = time.monotonic()
        end = time.monotonic() + 0.2
        while time.monotonic() < end:
            assert box.inbox.drain() == [], "taken while still being written"
            time.sleep(0.02)
    (result,) = box.drain_until(1)
    assert time.monotonic() - last_write >= 0.4  # only once unchanged for settle_seconds
    assert result.error is None, result.error
    task = project.store.task(result.task_id)
    assert (task.goal, task.priority) == ("write slowly", 2)


def test_a_name_clash_in_done_or_rejected_overwrites_nothing(project, box, script):
    done, rejected = box.dir / "done", box.dir / "rejected"
    done.mkdir(parents=True, exist_ok=True)
    rejected.mkdir(parents=True, exist_ok=True)
    (done / "fix.task-1.md").write_text("an older file\n")
    (rejected / "bad.md").write_text("an older rejection\n")
    (rejected / "bad-2.md.error").write_text("an older error\n")
    box.drop("fix.md", f"---\nscript: {script}\n---\nfix it\n")
    box.drop("bad.md", "---\nnope: 1\n---\nx\n")
    box.inbox.start()
    results = {r.path.name: r for r in box.drain_until(2)}
    assert results["fix.md"].task_id == 1 and results["fix.md"].moved_to == done / "fix.task-1-2.md"
    assert (done / "fix.task-1.md").read_text() == "an older file\n"
    assert (done / "fix.task-1-2.md").read_text().endswith("fix it\n")
    assert results["bad.md"].moved_to == rejected / "bad-3.md"
    assert (rejected / "bad.md").read_text() == "an older rejection\n"
    assert (rejected / "bad-2.md.error").read_text() == "an older error\n"
    assert "nope: unknown option" in (rejected / "bad-3.md.error").read_text()


def test_the_daemon_takes_inbox_files(repo, cli, tmp_path, daemon):  # noqa: F811
    cli(repo, "init")
    d = daemon(max_parallel=2)
    inbox = repo / ".loopwright" / "inbox"
    until(inbox.is_dir, "the daemon to create its inbox")
    script = task_script(tmp_path, "fromfile")
    staged = tmp_path / "good.md"
    staged.write_text(f"---\ncheck: test -f fromfile.txt\nscript: {script}\n---\n# Write fromfile\n\nwrite it\n")
    staged.rename(inbox / "good.md")  # dropped in whole, as `mv` does
    (inbox / "broken.md").write_text("---\npriority: [1\n---\nx\n")
    store = wait_until_done(repo, 1, timeout=60)
    (task,) = store.tasks()
    assert (task.status, task.title) == ("succeeded", "Write fromfile"), task.reason
    assert (repo / "fromfile.txt").read_text() == "fromfile"
    assert (inbox / "done" / f"good.task-{task.id}.md").exists() and not (inbox / "good.md").exists()
    until((inbox / "rejected" / "broken.md.error").exists, "broken.md to be rejected", timeout=10)
    assert "not valid YAML" in (inbox / "rejected" / "broken.md.error").read_text()
    assert (inbox / "rejected" / "broken.md").read_text() == "---\npriority: [1\n---\nx\n"
    assert d.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    assert f"task {task.id} queued from inbox/good.md" in log and "inbox/broken.md rejected" in log
    assert "Traceback" not in log
