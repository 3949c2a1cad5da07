"""The chat API over HTTP: `loopwright serve --http` as a real process on a loopback port, driven by a real HTTP
client — tokens, each bad input, idempotent posts, and the live stream (resumed without gaps or duplicates, fed by
the CLI and by runs too, across a daemon restart)."""

from __future__ import annotations

import json
import queue
import signal
import threading
import time
from pathlib import Path

import httpx2 as httpx
import pytest
from support import DaemonProcess, call, served_http, turn, until, write_script

from loopwright.memory.chat import messages
from loopwright.memory.store import Store


class Api:
    """The daemon, serving HTTP on a free loopback port, and a client per person."""

    def __init__(self, repo: Path, log: Path):
        self.repo, self.log = repo, log
        self.daemon: DaemonProcess | None = None
        self.base = ""

    def start(self) -> None:
        start = self.log.stat().st_size if self.log.exists() else 0
        self.daemon = DaemonProcess(self.repo, self.log, 2, "--http", "127.0.0.1:0")
        self.base = served_http(self.log, start)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.daemon is not None
        self.daemon.stop(sig)

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30)


@pytest.fixture
def api(repo, cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_HTTP__MAX_BODY_BYTES", "4096")
    monkeypatch.setenv("LOOPWRIGHT_HTTP__KEEPALIVE_SECONDS", "0.2")  # a listener that is closed stops that soon
    monkeypatch.setenv("LOOPWRIGHT_CHAT__ADMINS", '["root"]')
    cli(repo, "init")
    cli(repo, "threads", "new", "general")
    server = Api(repo, tmp_path / "daemon.log")
    yield server
    if server.daemon is not None and server.daemon.proc.poll() is None:
        server.daemon.proc.kill()
        server.daemon.proc.wait()


def token(cli, repo: Path, name: str) -> str:
    return cli.json(repo, "people", "add", name)["token"]


class Listener:
    """An SSE client reading /api/stream in a thread: the events it got, in order."""

    def __init__(self, api: Api, token: str, *, after: int | None = None, last_event_id: int | None = None):
        self.events: queue.Queue[dict] = queue.Queue()
        self.got: list[dict] = []
        self.client = api.client(token)
        params = {"after": str(after)} if after is not None else {}
        headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
        self.ready, self.closed = threading.Event(), threading.Event()
        self.keepalives = 0
        self.thread = threading.Thread(target=self._read, args=(params, headers), daemon=True)
        self.thread.start()
        assert self.ready.wait(30), "the stream did not open"

    def _read(self, params: dict, headers: dict) -> None:
        try:
            with self.client.stream("GET", "/api/stream", params=params, headers=headers,
                                    timeout=httpx.Timeout(30, read=None)) as r:
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
                event: dict = {}
                for line in r.iter_lines():
                    if self.closed.is_set():
                        return
                    if line.startswith(":"):
                        self.keepalives += 1
                    elif line.startswith("retry:"):
                        self.ready.set()
                    elif line.startswith("id: "):
                        event["id"] = int(line[4:])
                    elif line.startswith("event: "):
                        event["event"] = line[7:]
                    elif line.startswith("data: "):
                        event["data"] = json.loads(line[6:])
                    elif not line and event:
                        self.events.put(event)
                        event = {}
        except (httpx.HTTPError, RuntimeError):  # closed by the test, or the daemon went away
            pass

    def wait_for(self, what: str, condition, timeout: float = 60) -> dict:
        """Take events until one meets `condition`; that one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no event {what}; got {self.got}") from None
            self.got.append(event)
            if condition(event):
                return event

    def close(self) -> None:
        self.closed.set()
        self.thread.join(30)
        self.client.close()


def is_message(text: str):
    return lambda e: e["event"] == "message" and e["data"]["text"] == text


def is_thread(name: str):
    return lambda e: e["event"] == "thread" and e["data"]["name"] == name


def thread_of(event: dict) -> str:
    return event["data"]["name"] if event["event"] == "thread" else event["data"]["thread"]


def test_people_tokens_and_every_bad_request_is_a_json_error_that_stores_nothing(api, cli, repo):
    ana, bob, root = token(cli, repo, "ana"), token(cli, repo, "bob"), token(cli, repo, "root")
    assert [p["name"] for p in cli.json(repo, "people", "list")] == ["ana", "bob", "root"]
    assert ana not in (repo / ".loopwright" / "state.db").read_bytes().decode("latin-1")  # only its hash is kept
    api.start()
    a, b = api.client(ana), api.client(bob)
    assert a.get("/api/me").json() == {"person": "ana", "admin": False}
    assert api.client(root).get("/api/me").json() == {"person": "root", "admin": True}
    posted = b.post("/api/threads/general/messages", json={"text": "bob's words"})
    assert posted.status_code == 201 and posted.json()["author"] == "bob"

    def refused(r: httpx.Response, status: int, words: str) -> None:
        assert r.status_code == status, r.text
        body = r.json()
        assert set(body) == {"error", "hint"} and words in body["error"] and "\n" not in body["error"]

    cli(repo, "people", "revoke", "bob")
    unknown = api.client("lw_not-a-token").get("/api/me")
    refused(unknown, 401, "not signed in")
    revoked = b.get("/api/me")
    refused(revoked, 401, "not signed in")
    assert revoked.json() == unknown.json()  # whether the person exists is not said
    refused(api.client(None).get("/api/threads"), 401, "not signed in")
    assert api.log.read_text().count("http: refused") == 3
    refused(b.post("/api/threads/general/messages", json={"text": "after revoking"}), 401, "not signed in")

    refused(a.post("/api/threads/general/messages", content=b'{"text": "half'), 400, "not valid JSON")
    refused(a.post("/api/threads/general/messages", json={"txt": "typo"}), 400, "text")
    refused(a.post("/api/threads/general/messages", json=["hi"]), 400, "the body is an array, not a JSON object")
    refused(a.post("/api/threads/general/messages", json={"text": "me?", "author": "bob"}), 400, "author")
    refused(a.post("/api/threads/general/messages", json={"text": "x" * 5000}), 413, "over 4,096 bytes")
    refused(a.post("/api/threads/nowhere/messages", json={"text": "hi"}), 404, "no thread 'nowhere'")
    refused(a.get("/api/threads/nowhere/messages"), 404, "no thread 'nowhere'")
    refused(a.patch(f"/api/messages/{posted.json()['id']}", json={"text": "mine now"}), 403, "bob's")
    refused(a.delete(f"/api/messages/{posted.json()['id']}"), 403, "bob's")
    refused(a.patch("/api/messages/999", json={"text": "?"}), 404, "no message 999")
    refused(a.get("/api/tasks/999"), 404, "no task 999")
    refused(a.post("/api/threads", json={"name": "general"}), 409, "exists already")
    refused(a.post("/api/threads", json={"name": "Bad Name!"}), 400, "not a thread name")
    messages = a.get("/api/threads/general/messages").json()["messages"]
    assert [(m["author"], m["text"]) for m in messages] == [("bob", "bob's words")]  # nothing else was stored

    made = a.post("/api/threads", json={"name": "private", "allow": ["ana"]})
    assert made.status_code == 201 and made.json() == {"name": "private", "owner": "ana", "allow": ["ana"],
                                                       "mode": "mention", "last_message_id": None}
    root_client = api.client(root)
    assert [t["name"] for t in root_client.get("/api/threads").json()["threads"]] == ["general", "private"]
    refused(root_client.post("/api/threads/private/messages", json={"text": "hi"}), 403, "not post")
    mine = a.post("/api/threads/private/messages", json={"text": "a first draft"}).json()
    edited = a.patch(f"/api/messages/{mine['id']}", json={"text": "the final text"})
    assert edited.status_code == 200 and edited.json()["text"] == "the final text" and edited.json()["edited"]
    deleted = a.delete(f"/api/messages/{mine['id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] and deleted.json()["text"] == ""
    assert a.get("/api/threads/private/messages").json() == {"messages": []}
    spec = api.client(None).get("/openapi.json").json()
    assert spec["paths"]["/api/threads/{name}/messages"]["post"]["requestBody"]["content"]["application/json"]
    assert set(spec["components"]["schemas"]["Message"]["properties"]) == set(mine)


def test_a_flood_is_answered_429_with_retry_after_and_nothing_stored(api, cli, repo, monkeypatch):
    monkeypatch.setenv("LOOPWRIGHT_HTTP__RATE_PER_MINUTE", "5")
    ana = token(cli, repo, "ana")
    api.start()
    a = api.client(ana)
    codes = [a.post("/api/threads/general/messages", json={"text": f"message {i}"}).status_code for i in range(7)]
    assert codes == [201] * 5 + [429] * 2
    r = a.get("/api/me")
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "too many" in r.json()["error"]
    assert [m.text for m in messages(Store(repo / ".loopwright" / "state.db"), "general")] == [
        f"message {i}" for i in range(5)]


def test_a_retried_post_with_the_same_idempotency_key_posts_once(api, cli, repo):
    ana, bob = token(cli, repo, "ana"), token(cli, repo, "bob")
    api.start()
    a, b = api.client(ana), api.client(bob)
    first = a.post("/api/threads/general/messages", json={"text": "deploy it"}, headers={"Idempotency-Key": "k-1"})
    again = a.post("/api/threads/general/messages", json={"text": "deploy it"}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = b.post("/api/threads/general/messages", json={"text": "me too"}, headers={"Idempotency-Key": "k-1"})
    assert other.json()["id"] != first.json()["id"]  # a key is one person's
    assert a.post("/api/threads/general/messages", json={"text": "x"},
                  headers={"Idempotency-Key": "k" * 201}).status_code == 400
    messages = a.get("/api/threads/general/messages").json()["messages"]
    assert [(m["author"], m["text"]) for m in messages] == [("ana", "deploy it"), ("bob", "me too")]


def test_the_stream_delivers_a_cli_say_and_a_task_s_status_changes_live(api, cli, repo, tmp_path):
    ana = token(cli, repo, "ana")
    api.start()
    listener = Listener(api, ana)
    try:
        cli(repo, "say", "general", "--as", "carol", "from a terminal")
        said = listener.wait_for("for the CLI's say", is_message("from a terminal"))
        assert said["data"]["author"] == "carol" and said["data"]["thread"] == "general"
        script = write_script(tmp_path / "t.json", [turn(call("write_file", path="t.txt", content="t")),
                                                    turn(call("finish", summary="wrote t"))])
        task = cli.json(repo, "post", "write t", "--script", script, "--check", "test -f t.txt")["task"]
        done = listener.wait_for("for the task's success",
                                 lambda e: e["event"] == "task" and e["data"]["status"] == "succeeded")
        statuses = [e["data"]["status"] for e in listener.got if e["event"] == "task"]
        assert statuses[0] == "queued" and "running" in statuses
        assert done["data"]["id"] == task and done["data"]["run"]["last_summary"] == "wrote t"
        assert done["data"]["run"]["checkpoints"] >= 1
        view = api.client(ana).get(f"/api/tasks/{task}").json()
        assert view == done["data"]
        ids = [e["id"] for e in listener.got]
        assert ids == sorted(set(ids))
        until(lambda: listener.keepalives > 0, "a keep-alive comment on the quiet stream")
    finally:
        listener.close()


def test_the_stream_and_the_routes_show_a_private_thread_only_to_its_people(api, cli, repo):
    ana, bob = token(cli, repo, "ana"), token(cli, repo, "bob")
    cli(repo, "threads", "new", "private", "--allow", "ana")
    api.start()
    outsider = Listener(api, bob, after=0)
    try:
        cli(repo, "say", "private", "--as", "ana", "for ana's eyes")
        cli(repo, "say", "general", "--as", "ana", "for everyone")
        outsider.wait_for("for the public message", is_message("for everyone"))
    finally:
        outsider.close()
    replay = Listener(api, bob, after=0)  # the same, read back from the feed
    try:
        replay.wait_for("for the public message", is_message("for everyone"))
    finally:
        replay.close()
    assert [(e["event"], thread_of(e)) for e in outsider.got] == [(e["event"], thread_of(e)) for e in replay.got] \
        == [("thread", "general"), ("message", "general")]
    b = api.client(bob)
    assert [t["name"] for t in b.get("/api/threads").json()["threads"]] == ["general"]
    assert b.get("/api/threads/private/messages").status_code == 403
    assert b.post("/api/threads/private/messages", json={"text": "let me in"}).status_code == 403
    assert [m["text"] for m in api.client(ana).get("/api/threads/private/messages").json()["messages"]] == [
        "for ana's eyes"]


def test_a_new_thread_comes_live_on_the_stream_to_those_who_may_read_it(api, cli, repo):
    ana, bob = token(cli, repo, "ana"), token(cli, repo, "bob")
    api.start()
    a, b = Listener(api, ana), Listener(api, bob)
    try:
        cli(repo, "threads", "new", "secret", "--allow", "ana")  # another process: the CLI
        made = api.client(bob).post("/api/threads", json={"name": "bobs", "mode": "auto"}).json()
        cli(repo, "say", "general", "--as", "carol", "after the threads")
        seen_by_ana = a.wait_for("for the API's thread", is_thread("bobs"))
        assert seen_by_ana["data"] == made == {"name": "bobs", "owner": "bob", "allow": None, "mode": "auto",
                                               "last_message_id": None}
        a.wait_for("for the message after", is_message("after the threads"))
        b.wait_for("for the message after", is_message("after the threads"))
        secret = [e for e in a.got if is_thread("secret")(e)]
        assert [e["data"] for e in secret] == [{"name": "secret", "owner": None, "allow": ["ana"], "mode": "mention",
                                                "last_message_id": None}]
        assert [(e["event"], thread_of(e)) for e in b.got] == [("thread", "bobs"), ("message", "general")]
        ids = [e["id"] for e in a.got]
        assert ids == sorted(set(ids))
    finally:
        a.close()
        b.close()


def test_a_thread_s_new_allow_list_or_mode_comes_live_and_decides_who_sees_it_from_then_on(api, cli, repo):
    ana, bob = token(cli, repo, "ana"), token(cli, repo, "bob")
    cli(repo, "threads", "new", "room", "--allow", "ana")
    api.start()
    a, b = Listener(api, ana), Listener(api, bob)
    try:
        cli(repo, "say", "room", "--as", "ana", "before bob")
        assert cli(repo, "threads", "set", "room", "--allow", "ana,bob")[0] == 0
        let_in = b.wait_for("for the thread bob may read now", is_thread("room"))
        assert let_in["data"]["allow"] == ["ana", "bob"] and let_in["data"]["last_message_id"] is not None
        cli(repo, "say", "room", "--as", "ana", "for bob too")
        b.wait_for("for the message bob may read now", is_message("for bob too"))
        assert cli(repo, "threads", "set", "room", "--allow", "ana", "--auto")[0] == 0
        changed = a.wait_for("for the new mode", lambda e: is_thread("room")(e) and e["data"]["mode"] == "auto")
        assert changed["data"]["allow"] == ["ana"]
        cli(repo, "say", "room", "--as", "ana", "not for bob again")
        cli(repo, "say", "general", "--as", "ana", "for everyone")
        a.wait_for("for the room's message", is_message("not for bob again"))
        b.wait_for("for the public message", is_message("for everyone"))
        texts = [e["data"]["text"] for e in b.got if e["event"] == "message"]
        assert "not for bob again" not in texts and "for bob too" in texts  # ("before bob": its next change, if any)
        assert [e["data"]["allow"] for e in b.got if e["event"] == "thread"] == [["ana", "bob"]]

        by_ana, by_bob = api.client(ana), api.client(bob)  # the same through the API: its owner (or an admin) may
        by_ana.post("/api/threads", json={"name": "lab", "allow": ["ana"]})
        refused = by_bob.patch("/api/threads/lab", json={"allow": []})
        assert refused.status_code == 403 and "not among the people" in refused.json()["error"]
        assert by_ana.patch("/api/threads/lab", json={}).status_code == 400
        opened = by_ana.patch("/api/threads/lab", json={"allow": [], "mode": "auto"})
        assert opened.status_code == 200 and opened.json()["allow"] is None and opened.json()["mode"] == "auto"
        assert b.wait_for("for the opened thread", is_thread("lab"))["data"] == opened.json()
        refused = by_bob.patch("/api/threads/lab", json={"mode": "mention"})
        assert refused.status_code == 403 and "only the owner" in refused.json()["error"]
    finally:
        a.close()
        b.close()


def test_the_feed_is_pruned_and_a_client_resuming_from_before_it_is_asked_to_reload(api, cli, repo):
    ana = token(cli, repo, "ana")
    for i in range(3):
        cli(repo, "say", "general", "--as", "carol", f"old {i}")
    with Store(repo / ".loopwright" / "state.db").transaction() as db:  # 1,200 more, all from 10 days ago
        db.executemany("INSERT INTO change_feed (kind, ref, status, at) VALUES ('message', 1, NULL, 0)",
                       [()] * 1200)
        db.execute("UPDATE change_feed SET at = ?", (time.time() - 10 * 86400,))
    cli(repo, "say", "general", "--as", "carol", "recent")
    store = Store(repo / ".loopwright" / "state.db")

    def feed_ids() -> list[int]:
        return [r[0] for r in store.conn.execute("SELECT id FROM change_feed ORDER BY id")]
    before = feed_ids()
    assert len(before) == 1 + 3 + 1200 + 1
    api.start()
    until(lambda: feed_ids()[0] == before[-1], "the daemon to prune what is older than [http] feed_hours")
    early = Listener(api, ana, after=before[0])
    try:
        reload = early.wait_for("asking to reload", lambda e: e["event"] == "reload")
        assert reload["data"]["after"] == before[0] and "no longer kept" in reload["data"]["reason"]
        assert reload["id"] >= before[-1] and early.got == [reload]  # first, and nothing it would have missed
        api.client(ana).post("/api/threads/general/messages", json={"text": "then live"})
        early.wait_for("for the next message", is_message("then live"))
    finally:
        early.close()
    kept = Listener(api, ana, after=before[-2])  # nothing it needs was pruned: the feed as usual
    try:
        kept.wait_for("for the kept message", is_message("recent"))
        assert kept.got[0]["id"] == before[-1]
    finally:
        kept.close()
    elsewhere = Listener(api, ana, after=10**9)  # an id from another store
    try:
        assert "not this store's" in elsewhere.wait_for("asking to reload", lambda e: e["event"] == "reload")[
            "data"]["reason"]
    finally:
        elsewhere.close()


def test_a_resumed_stream_has_no_gaps_or_duplicates(api, cli, repo):
    ana = token(cli, repo, "ana")
    api.start()
    a = api.client(ana)
    first = Listener(api, ana, after=0)
    try:
        for i in range(5):
            a.post("/api/threads/general/messages", json={"text": f"one {i}"})
        first.wait_for("for the fifth", is_message("one 4"))
    finally:
        first.close()
    seen = first.got[-1]["id"]
    for i in range(5):  # while no one listens: from the API and from the CLI
        a.post("/api/threads/general/messages", json={"text": f"two {i}"})
        cli(repo, "say", "general", "--as", "carol", f"cli {i}")
    second = Listener(api, ana, last_event_id=seen)
    try:
        a.post("/api/threads/general/messages", json={"text": "three"})
        second.wait_for("for the last", is_message("three"))
    finally:
        second.close()
    whole = Listener(api, ana, after=0)
    try:
        whole.wait_for("for the last", is_message("three"))
    finally:
        whole.close()
    resumed = [e["id"] for e in first.got + second.got]
    assert resumed == sorted(set(resumed))  # no duplicates, in order
    assert resumed == [e["id"] for e in whole.got]  # and no gaps: the same ids as one stream from the start
    texts = dict.fromkeys(e["data"]["text"] for e in second.got)  # a message comes again when its state changes
    assert [t for t in texts if t.startswith(("two", "cli", "three"))] == [
        t for i in range(5) for t in (f"two {i}", f"cli {i}")] + ["three"]


def test_a_daemon_restart_loses_nothing_a_client_saw_acknowledged(api, cli, repo):
    ana = token(cli, repo, "ana")
    api.start()
    a = api.client(ana)
    acknowledged = [a.post("/api/threads/general/messages", json={"text": f"m{i}"},
                           headers={"Idempotency-Key": f"m{i}"}).json() for i in range(3)]
    api.stop(signal.SIGKILL)  # at once, right after the answers
    api.start()
    a = api.client(ana)
    stored = a.get("/api/threads/general/messages").json()["messages"]
    assert [m["id"] for m in stored][:3] == [m["id"] for m in acknowledged]
    retried = a.post("/api/threads/general/messages", json={"text": "m2"}, headers={"Idempotency-Key": "m2"})
    assert retried.json()["id"] == acknowledged[2]["id"]  # a retry after the restart still posts once
    listener = Listener(api, ana, after=0)
    try:
        listener.wait_for("for m2", is_message("m2"))
    finally:
        listener.close()
    assert list(dict.fromkeys(e["data"]["text"] for e in listener.got if e["event"] == "message")) == ["m0", "m1", "m2"]


def test_an_address_in_use_or_no_port_is_one_line_and_the_daemon_does_not_start(repo, cli, tmp_path):
    import socket
    import subprocess
    import sys

    def serve(address: str) -> list[str]:
        done = subprocess.run([sys.executable, "-m", "loopwright.cli.main", "serve", "--http", address], cwd=repo,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        return [line for line in done.stderr.splitlines() if line.startswith("loopwright: error:")]

    cli(repo, "init")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        error = serve(str(port))
    assert error == [f"loopwright: error: cannot listen on 127.0.0.1:{port} for HTTP: Address already in use; choose "
                     "another address with `serve --http HOST:PORT` or [http] listen"]
    assert cli.json(repo, "status")["daemon"] is None  # the lock was let go
    error = serve("99999")
    assert len(error) == 1 and "http.listen = '99999'" in error[0] and "a port up to 65535" in error[0]
