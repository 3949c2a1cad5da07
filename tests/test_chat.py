"""Group chat: threads, mentions, collected messages, fan-out, /stop, edits, duplicates — with the daemon as a real
subprocess and the scripted model, and the posting side from many threads at once."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import pytest
from support import DaemonProcess, call, turn, until, write_script

from loopwright.runtime.chat.threads import (
    ChatError,
    ChatHub,
    FanOut,
    create_thread,
    delete_message,
    edit_message,
    messages,
    post_message,
)
from loopwright.runtime.project import open_project


def setup(repo: Path, tmp_path: Path, turns: list[dict], *, debounce: float = 0.3, extra: str = "") -> None:
    script = write_script(tmp_path / "chat.json", turns)
    (repo / "loopwright.toml").write_text(f'provider = "scripted"\nscript = "{script}"\n\n[chat]\n'
                                          f"debounce_seconds = {debounce}\n{extra}")


def project(repo: Path):
    return open_project(repo, create=True)


def say(repo: Path, thread: str, author: str, text: str):
    p = project(repo)
    return post_message(p.store, p.config.chat, thread, author, text)


def thread_messages(repo: Path, thread: str, kind: str | None = None) -> list:
    return [m for m in messages(project(repo).store, thread) if kind is None or m.kind == kind]


def test_a_mention_starts_work_collected_messages_reach_the_run_and_the_answer_comes_back(repo, daemon, tmp_path):
    setup(repo, tmp_path, [
        turn(call("shell", command="sleep 2")),
        turn(call("shell", command="true"), expect="carol: and use blue"),
        turn(call("finish", summary="Drew a blue square")),
    ])
    create_thread(project(repo).store, "art")
    say(repo, "art", "bob", "I like squares")  # context, no mention: no work
    first = say(repo, "art", "ana", "@loopwright draw a square please")
    daemon()
    until(lambda: project(repo).store.runs(), "the run to start")
    say(repo, "art", "carol", "and use blue")  # collected while the run works
    until(lambda: any(m.kind == "agent" for m in thread_messages(repo, "art")), "the answer", timeout=60)
    store = project(repo).store
    task = store.tasks()[0]
    assert "bob: I like squares" in task.goal and "ana: @loopwright draw a square please" in task.goal
    run = store.runs(task_id=task.id)[0]
    assert any("carol: and use blue" in e.text for _, _, e in store.events(run.id, types=("notice",)))
    answer = thread_messages(repo, "art", "agent")
    assert [m.text for m in answer] == ["@ana Drew a blue square"] and answer[0].reply_to == first.id
    status = thread_messages(repo, "art", "status")
    assert len(status) == 1 and status[0].edited and "done: task 1" in status[0].text
    assert {m.state for m in thread_messages(repo, "art", "user")} == {"consumed"}  # none lost, none left over
    assert store.conn.execute("SELECT active_task FROM threads").fetchone()[0] is None


def test_a_fan_out_of_five_runs_five_parts_then_one_summary_even_through_a_kill_9(repo, tmp_path):
    things = ["a cat", "a dog", "a fish", "a bird", "a tree"]
    # one slot: a part draws and finishes; the request itself splits
    setup(repo, tmp_path, [{"when": "Part ",
                            **turn(call("shell", command="sleep 1"), call("finish", summary="drew it")),
                            "otherwise": turn(call("fan_out", items=things, plan="one drawing per thing"))}],
          debounce=0.1)
    create_thread(project(repo).store, "draw", check="true")
    say(repo, "draw", "ana", "@loopwright draw five things: " + ", ".join(things))
    log = tmp_path / "daemon.log"
    first = DaemonProcess(repo, log, max_parallel=2)
    try:
        until(lambda: len(thread_messages(repo, "draw", "agent")) >= 1, "a first part's reply", timeout=90)
        first.stop(signal.SIGKILL)  # in the middle of the fan-out
        second = DaemonProcess(repo, log, max_parallel=2)
        until(lambda: any("all 5 parts" in m.text for m in thread_messages(repo, "draw", "agent")), "the summary",
              timeout=120)
        second.stop()
    finally:
        for d in (first,):
            if d.proc.poll() is None:
                d.proc.kill()
    store = project(repo).store
    parent = store.tasks()[0]
    parts = [t for t in store.tasks() if t.parent_id == parent.id]
    assert len(parts) == 5 and all(len(store.runs(task_id=t.id)) >= 1
                                   for t in parts), [(t.status, t.reason) for t in parts]
    replies = thread_messages(repo, "draw", "agent")
    assert len(replies) == 6  # five parts and one summary, each exactly once
    assert sorted(m.text.split(" (")[0] for m in replies[:-1]) == sorted(f"@ana part {n}/5" for n in range(1, 6))
    assert replies[-1].text.startswith("@ana all 5 parts finished (5 succeeded)")
    assert "one drawing per thing" in replies[-1].text
    assert store.task(parent.id).status == "succeeded"
    assert "5 of 5 done" in thread_messages(repo, "draw", "status")[0].text


def test_stop_is_for_the_requester_the_owner_or_an_admin(repo, daemon, tmp_path):
    setup(repo, tmp_path, [turn(call("shell", command="sleep 8"))])
    create_thread(project(repo).store, "ops", owner="olga")
    request = say(repo, "ops", "ana", "@loopwright do the long thing")
    daemon()
    until(lambda: project(repo).store.runs(), "the run to start")
    say(repo, "ops", "bob", "/stop")
    until(lambda: any("refused" in m.text for m in thread_messages(repo, "ops", "system")), "bob's refusal")
    say(repo, "ops", "ana", "@loopwright one more thing")  # waiting: cleared by the stop
    say(repo, "ops", "olga", "/stop")
    until(lambda: project(repo).store.runs()[0].status == "killed", "the stop", timeout=60)
    said = [m.text for m in thread_messages(repo, "ops", "system")]
    assert said[0].startswith("@bob refused: only ana (who asked), the thread's owner or an admin")
    assert said[1].startswith("@olga stopping task 1 at its next safe point. So far:")
    assert request.id  # the request itself stays in the thread
    until(lambda: any(m.kind == "agent" for m in thread_messages(repo, "ops")), "the closing reply", timeout=30)
    assert project(repo).store.tasks()[0].status == "killed"
    assert len(project(repo).store.tasks()) == 1  # the cleared message started nothing


def test_edits_deletes_duplicates_and_commands_with_nothing_running(repo, tmp_path):
    setup(repo, tmp_path, [turn(call("finish", summary="ok"))], debounce=0)
    p = project(repo)
    create_thread(p.store, "t")
    hub = ChatHub(p)
    m = post_message(p.store, p.config.chat, "t", "ana", "@loopwright fix the typo")
    assert "still waiting" in edit_message(p.store, m.id, "ana", "@loopwright fix the two typos")
    with pytest.raises(ChatError, match="only its author"):
        edit_message(p.store, m.id, "bob", "hijack")
    gone = post_message(p.store, p.config.chat, "t", "ana", "never mind this")
    assert "deleted" in delete_message(p.store, gone.id, "ana")
    dup = post_message(p.store, p.config.chat, "t", "ana", "@loopwright fix the two typos")
    assert post_message(p.store, p.config.chat, "t", "ana", "x", external_id="slack-1").id == \
        post_message(p.store, p.config.chat, "t", "ana", "x", external_id="slack-1").id
    hub.poll()
    task = p.store.tasks()[0]
    assert "fix the two typos" in task.goal and "never mind" not in task.goal and len(p.store.tasks()) == 1
    assert p.store.conn.execute("SELECT state FROM messages WHERE id = ?", (dup.id,)).fetchone()[0] == "duplicate"
    assert "correction" in edit_message(p.store, m.id, "ana", "@loopwright fix three typos")
    assert any(x.text.startswith(f"Correction to message {m.id}") for x in messages(p.store, "t"))
    with pytest.raises(ChatError, match="already read"):
        delete_message(p.store, m.id, "ana")
    create_thread(p.store, "quiet")
    post_message(p.store, p.config.chat, "quiet", "ana", "/stop")
    post_message(p.store, p.config.chat, "quiet", "ana", "/status")
    hub.poll()
    assert [x.text for x in messages(p.store, "quiet") if x.kind == "system"] == [
        "@ana nothing is running in this thread", "@ana idle: nothing is running in this thread"]


def test_bad_input_is_refused_in_one_line(repo, cli, tmp_path):
    setup(repo, tmp_path, [turn(call("finish", summary="ok"))], extra="rate_per_minute = 3\n")
    p = project(repo)
    create_thread(p.store, "closed", allow=["ana"])
    create_thread(p.store, "open")
    cases = [(("say", "open", "--as", "ana", "   "), "the message is empty"),
             (("say", "open", "--as", "ana", "x" * 1_000_000), "at most 32,000"),
             (("say", "nowhere", "--as", "ana", "hi"), "no thread 'nowhere'"),
             (("say", "closed", "--as", "mallory", "hi"), "mallory may not post in 'closed'"),
             (("threads", "new", "Bad Name"), "is not a thread name"),
             (("threads", "new", "open"), "exists already")]
    for args, message in cases:
        code, out, err = cli(repo, *args)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
    code, out, err = cli(repo, "say", "open", "--as", "ana", "@loopwrite typo in the name")
    assert code == 0 and "no agent or member @loopwrite here" in err
    for i in range(3):
        cli(repo, "say", "open", "--as", "bob", f"@loopwright task {i}")
    code, _, err = cli(repo, "say", "open", "--as", "bob", "@loopwright task 4")
    assert code == 2 and "more than 3 requests in a minute" in err


def test_fan_out_is_capped_and_says_so(repo, tmp_path):
    import asyncio

    from loopwright.harness.tools import ToolContext
    from loopwright.memory.run import RunMemory

    setup(repo, tmp_path, [turn(call("finish", summary="ok"))], debounce=0)
    p = project(repo)
    create_thread(p.store, "many")
    post_message(p.store, p.config.chat, "many", "ana", "@loopwright draw 500 things")
    ChatHub(p).poll()
    parent = p.store.tasks()[0]
    ctx = ToolContext(worktree=repo, scratchpad=None, memory=RunMemory(  # type: ignore[arg-type]
        store=p.store, run_id="r", task_id=parent.id, artifacts_root=tmp_path))
    outcome = asyncio.run(FanOut().run(FanOut.args(items=[f"thing {i}" for i in range(500)], plan="one each"), ctx))
    assert "capped: 500 asked, at most 10" in outcome.finish_summary
    assert len([t for t in p.store.tasks() if t.parent_id == parent.id]) == 10


def test_three_authors_fifty_messages_each_into_two_threads_at_once(repo, tmp_path):
    setup(repo, tmp_path, [turn(call("finish", summary="ok"))], extra="rate_per_minute = 1000\n")
    p = project(repo)
    for name in ("a", "b"):
        create_thread(p.store, name)
    errors: list[Exception] = []

    def author(who: str) -> None:
        try:
            mine = open_project(repo)
            for i in range(50):
                post_message(mine.store, mine.config.chat, "ab"[i % 2], who, f"{who} message {i}")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    workers = [threading.Thread(target=author, args=(w,)) for w in ("ana", "bob", "carol")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    for name in ("a", "b"):
        got = messages(p.store, name)
        assert len(got) == 75
        for who in ("ana", "bob", "carol"):  # each author's messages keep their order in each thread
            numbers = [int(m.text.split()[-1]) for m in got if m.author == who]
            assert numbers == sorted(numbers) and len(numbers) == 25
    assert (json.loads(json.dumps([m.id for m in messages(p.store, "a")]))
            == sorted(m.id for m in messages(p.store, "a")))


def test_threads_run_in_parallel_and_each_keeps_one_task_at_a_time(repo, daemon, tmp_path):
    setup(repo, tmp_path, [turn(call("shell", command="sleep 2")),
                           turn(call("finish", summary="done"), expect="second")], debounce=0.2)
    p = project(repo)
    for name in ("a", "b"):
        create_thread(p.store, name, mode="auto")
        post_message(p.store, p.config.chat, name, "ana", f"first in {name}")
    daemon(max_parallel=4)
    until(lambda: len(project(repo).store.runs()) == 2, "a run per thread")
    for name in ("a", "b"):
        say(repo, name, "bob", f"second in {name}")  # the thread is busy: delivered to its run, no new task
    until(lambda: len(thread_messages(repo, "a", "agent")) == len(thread_messages(repo, "b", "agent")) == 1,
          "both answers", timeout=60)
    store = project(repo).store
    runs = store.runs()
    assert len(store.tasks()) == 2 and len(runs) == 2
    assert runs[1].started_at < runs[0].ended_at  # both threads' runs were going at once
