"""Continual learning end to end: scripted runs and scripted reflection replies drive recall, credit, merging,
the cap, rejected replies and learned skills, through the CLI in real git repositories."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from support import CHECK, call, turn

from loopwright.memory.lessons import Lessons
from loopwright.runtime.project import open_project

LESSON = "In calc.py, add must use the plus operator: return a + b (the tests expect a sum)."
KEY = "plus operator"

# Without the lesson the "model" makes the wrong fix; with it in the task text, the right one.
GUESS = {"when": KEY, **turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b")),
         "otherwise": turn(call("edit_file", path="calc.py", old="return a - b", new="return a * b"))}
FINISH = turn(call("finish", summary="fixed add"))


def script(path: Path, turns: list[dict], reflections: list) -> Path:
    path.write_text(json.dumps({"turns": turns, "reflections": reflections}))
    return path


def run(cli, repo: Path, script_path: Path, goal: str = "Fix add in calc.py") -> dict:
    return cli.json(repo, "run", goal, "--check", CHECK, "--script", str(script_path))


def events(repo: Path, run_id: str, kind: str) -> list:
    store = open_project(repo).store
    return [e for _, _, e in store.events(run_id, types=(kind,))]


def lessons(repo: Path) -> Lessons:
    project = open_project(repo, create=True)
    return Lessons(project.store, project.config.memory)


def add_op(text: str, *tags: str) -> dict:
    return {"op": "add", "text": text, "tags": list(tags)}


@pytest.fixture
def limited(repo):
    """Two model turns per run: a wrong fix and its finish end the run (budget) instead of a retry."""
    (repo / "loopwright.toml").write_text("[budget]\nmax_turns = 2\n")
    return repo


def test_a_failure_teaches_a_lesson_the_next_similar_task_recalls_and_passes_with(limited, cli, tmp_path):
    repo = limited
    first = run(cli, repo, script(tmp_path / "s1.json", [GUESS, FINISH],
                                  [{"operations": [add_op(LESSON, "calc")]}]))
    assert first["status"] == "budget_exceeded"  # the wrong fix failed the check; no turn left to retry
    reflected = events(repo, first["run"], "reflected")
    assert reflected[-1].status == "applied" and reflected[-1].changes == ["added 1"]
    assert lessons(repo).get("1").outcome == "budget_exceeded"

    second = run(cli, repo, script(tmp_path / "s2.json", [GUESS, FINISH], [{"operations": []}]))
    assert second["status"] == "succeeded"
    recalled = events(repo, second["run"], "lessons_recalled")
    assert recalled and recalled[0].refs == ["1"]
    task_text = events(repo, second["run"], "conversation_reset")[0].messages[0].text
    assert LESSON in task_text and "Lessons from earlier runs" in task_text
    lesson = lessons(repo).get("1")
    assert (lesson.helpful, lesson.harmful, lesson.recalled) == (1, 0, 1)  # shown to a run whose check passed
    assert events(repo, second["run"], "reflected")[-1].credited == ["1"]


def test_harmful_credit_prunes_a_misleading_lesson_and_a_duplicate_merges(limited, cli, tmp_path):
    repo = limited
    lessons(repo).project.add("calc.py add: the tests expect subtraction, keep a - b", ["calc"])
    wrong = {"when": "never-present", **FINISH, "otherwise": turn(call("edit_file", path="calc.py",
                                                                      old="return a - b", new="return a * b"))}
    again = LESSON.replace("(the tests expect a sum)", "(the tests expect a sum!)")
    result = run(cli, repo, script(tmp_path / "s.json", [wrong, FINISH],
                                   [{"operations": [add_op(LESSON), {"op": "harmful", "id": "1"}]}]))
    assert result["status"] == "budget_exceeded"
    book = lessons(repo)
    assert book.get("1").harmful == 2  # once for being shown to a failed run, once marked by reflection
    assert events(repo, result["run"], "reflected")[-1].credited == ["1"]
    merged, was_merged = book.project.add(again, ["calc"])
    assert was_merged and merged.ref == "2"
    assert book.get("1").status == "retired"  # harmful outweighs helpful by the pruning margin: kept, not shown
    assert [le.ref for le in book.project.list()] == ["2"]


@pytest.mark.parametrize("reply, problem", [
    ("I think the run went well, no changes needed.", "not JSON"),
    ({"operations": [{"op": "explode", "id": "1"}]}, "operations.0"),
    ({"operations": [add_op("a fine lesson about tests"), {"op": "helpful", "id": "999"}]}, "'999' does not exist"),
    ({"operations": [{"op": "retire", "id": str(i)} for i in range(1, 5)]}, "at most 3 per reflection"),
    ({"operations": [{"op": "draft_skill", "name": "fix-it", "description": "d", "body": "b"}]},
     "only after similar tasks succeeded"),
])
def test_a_bad_reflection_reply_is_recorded_and_changes_nothing(repo, cli, tmp_path, reply, problem):
    book = lessons(repo)
    for i in range(4):
        book.project.add(f"lesson number {i} about topic{i} and nothing else", [f"t{i}"])
    before = book.export()
    result = run(cli, repo, script(tmp_path / "s.json", [turn(call("edit_file", path="calc.py", old="return a - b",
                                                                   new="return a + b")), FINISH], [reply]))
    assert result["status"] == "succeeded"  # learning never decides the run
    event = events(repo, result["run"], "reflected")[-1]
    assert event.status == "rejected" and problem in " ".join(event.problems)
    after = lessons(repo).export()
    assert [(le["text"], le["status"]) for le in after["lessons"]] == [(le["text"], le["status"])
                                                                        for le in before["lessons"]]


def test_over_the_cap_the_weakest_lessons_retire_and_are_kept(repo, cli, tmp_path):
    (repo / "loopwright.toml").write_text("[memory]\nmax_lessons = 10\n")
    book = lessons(repo)
    for i in range(10):
        book.project.add(f"lesson {i}: topic{i} needs care with widget{i}", [])
    weak = book.project.add("a weak lesson about gadgets and gizmos", [])[0]
    book.project.credit([weak.id], False, by="test")
    result = run(cli, repo, script(tmp_path / "s.json", [turn(call("edit_file", path="calc.py", old="return a - b",
                                                                   new="return a + b")), FINISH],
                                   [{"operations": [add_op("check the sum in calc.py with the unit tests")]}]))
    assert result["status"] == "succeeded"
    book = lessons(repo)
    assert len(book.project.list()) == 10
    assert book.get(weak.ref).status == "retired"  # kept, with its history
    assert "retired" in events(repo, result["run"], "reflected")[-1].changes[-1]


def test_two_successes_of_similar_tasks_draft_a_skill_that_loads_once_promoted(repo, cli, tmp_path):
    fix = turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b"))
    first = run(cli, repo, script(tmp_path / "s1.json", [fix, FINISH], [{"operations": []}]))
    assert first["status"] == "succeeded"
    draft = {"op": "draft_skill", "name": "fix-calc-arithmetic",
             "description": "Fix arithmetic bugs in calc.py: read the failing test, correct the operator, rerun.",
             "body": "# Fix calc arithmetic\n\n1. Run the tests.\n2. Correct the operator.\n3. Run them again.\n"}
    second = run(cli, repo, script(tmp_path / "s2.json", [FINISH], [{"operations": [draft]}]),
                 goal="Fix add in calc.py again")
    assert second["status"] == "succeeded"
    event = events(repo, second["run"], "reflected")[-1]
    assert event.status == "applied", event.problems
    assert "disabled until `loopwright skills promote fix-calc-arithmetic`" in event.changes[-1]
    listed = {r["name"]: r for r in cli.json(repo, "skills", "list")}
    assert listed["fix-calc-arithmetic"]["status"] == "draft"
    skill_md = Path(listed["fix-calc-arithmetic"]["path"]) / "SKILL.md"
    assert "learned-from-tasks: 1,2" in skill_md.read_text()
    assert cli(repo, "skills", "validate", str(skill_md.parent))[0] == 0
    assert cli(repo, "skills", "promote", "fix-calc-arithmetic")[0] == 0
    listed = {r["name"]: r for r in cli.json(repo, "skills", "list")}
    assert listed["fix-calc-arithmetic"]["status"] == "enabled"
    assert listed["fix-calc-arithmetic"]["ref"] == "learned:fix-calc-arithmetic"
    code, _, err = cli(repo, "skills", "promote", "tdd-loop")
    assert code == 2 and "no learned skill 'tdd-loop'" in err


def test_no_reflection_replies_means_reflection_is_skipped_and_memory_can_be_switched_off(repo, cli, tmp_path):
    fix = turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b"))
    result = run(cli, repo, script(tmp_path / "s.json", [fix, FINISH], []))
    assert events(repo, result["run"], "reflected")[-1].status == "skipped"
    (repo / "loopwright.toml").write_text("[memory]\nrecall = false\nreflect = false\n")
    lessons(repo).project.add("In calc.py always check the plus operator", [])
    result = run(cli, repo, script(tmp_path / "s2.json", [FINISH], []))
    assert events(repo, result["run"], "reflected") == [] and events(repo, result["run"], "lessons_recalled") == []


def test_two_runs_reflecting_at_once_both_land(repo, tmp_path):
    """Two processes' stores apply reflections concurrently: every lesson lands, none twice."""
    from loopwright.memory.store import Store
    from loopwright.runtime.learning.reflection import apply_deltas, parse_reply

    project = open_project(repo, create=True)
    task = project.store.create_task("g", check=None)
    run_ = project.store.create_run(task.id, provider="scripted", model="s", worktree="w", branch="b",
                                    base_commit="c", target_branch="main")
    errors: list[Exception] = []

    def worker(n: int) -> None:
        try:
            store = Store(project.store.path)
            book = Lessons(store, project.config.memory)
            for i in range(20):
                deltas = parse_reply(json.dumps({"operations": [add_op(f"worker{n} lesson{i} topic{n}x{i}")]}))
                apply_deltas(deltas, book, run=run_, task=task, outcome="succeeded", by=f"w{n}")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(lessons(repo).project.list()) == 40


def test_the_progress_file_gets_an_entry_at_each_attempts_end_and_show_prints_it(limited, cli, tmp_path):
    repo = limited
    wrong = turn(call("edit_file", path="calc.py", old="return a - b", new="return a * b"),
                 call("scratchpad", action="append", text="tried multiplying"))
    first = run(cli, repo, script(tmp_path / "s.json", [wrong, FINISH], []))
    shown = cli.json(repo, "show", first["run"])
    assert shown["progress"].startswith(f"### Attempt 1 (run {first['run']}): budget_exceeded")
    assert "Last check" in shown["progress"] and "failed" in shown["progress"]
    assert "tried multiplying" in shown["progress"]
    code, out, _ = cli(repo, "show", first["run"])
    assert code == 0 and "progress file of task 1:" in out


def test_reflection_through_a_real_sdk_and_the_loopback_server(repo, cli, tmp_path):
    from loopwright.harness.loopback import LoopbackServer
    from loopwright.harness.script import Script

    fix = turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b"))
    entries = {"turns": [fix, FINISH], "reflections": [{"operations": [add_op("Run the unit tests before finish")]}]}
    with LoopbackServer(Script.parse(entries)) as server:
        args = ("--provider", "anthropic", "--model", "claude-sonnet-4-6", "--base-url", server.anthropic_base_url)
        result = cli.json(repo, "run", "fix add", "--check", CHECK, *args)
        assert result["status"] == "succeeded"
        assert events(repo, result["run"], "reflected")[-1].changes == ["added 1"]
        calls = [e for e in events(repo, result["run"], "model_called")]
        assert [c.purpose for c in calls] == ["turn", "turn", "reflection"]
        assert open_project(repo).store.run(result["run"]).model_calls == 2  # reflection is not one of its turns
        again = cli.json(repo, "run", "fix add", "--check", CHECK, *args)  # no turns, no reflection replies left
    assert again["status"] == "failed"  # the script ran out of turns: loud
    assert events(repo, again["run"], "reflected")[-1].status == "failed"


def test_an_unwritable_global_store_leaves_project_learning_working(repo, cli, tmp_path, monkeypatch):
    home = tmp_path / "home-is-a-file"
    home.write_text("not a folder")
    monkeypatch.setenv("LOOPWRIGHT_HOME", str(home))
    fix = turn(call("edit_file", path="calc.py", old="return a - b", new="return a + b"))
    glob = {"op": "add", "text": "Everywhere: run the tests first", "scope": "global"}
    result = run(cli, repo, script(tmp_path / "s.json", [fix, FINISH], [{"operations": [glob]}]))
    assert result["status"] == "succeeded"
    event = events(repo, result["run"], "reflected")[-1]
    assert event.status == "rejected" and "global store is not available" in event.problems[0]
    lessons(repo).project.add("Project lessons still work", [])
    code, out, err = cli(repo, "lessons", "list")
    assert code == 0 and "Project lessons still work" in out
