"""Chat bridges: a team chat service played by a small HTTP server in the test, which records the replies posted to
its incoming webhook and sends signed requests to the daemon's /bridges/NAME, as Slack and Mattermost do."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from support import DaemonProcess, call, served_http, turn, until, write_script

from loopwright.runtime.chat.bridge import (
    BridgeError,
    Incoming,
    fields_of,
    outgoing_text,
    parse_mattermost,
    parse_slack,
    slack_signature,
    verify_mattermost,
    verify_slack,
)
from loopwright.runtime.chat.threads import create_thread, messages
from loopwright.runtime.project import open_project

SECRET = "8f14e45fceea167a5a36dedd4bea2543"


class FakeService:
    """The chat service: its incoming webhook records each `{"text"}` it takes (answering 503 while `down`, or for the
    next `fail` posts), and `send` signs a request to a bridge as the service would."""

    def __init__(self):
        self.received: list[str] = []
        self.refused = 0
        self.down = False
        self.fail = 0
        service = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                refuse = service.down or service.fail > 0
                if refuse:
                    service.fail -= 1
                    service.refused += 1
                else:
                    service.received.append(body["text"])
                self.send_response(503 if refuse else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/incoming"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def send(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
        """POST a webhook request to the daemon; (status, its JSON answer)."""
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    s = FakeService()
    yield s
    s.close()


def signed(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    stamp = str(int(time.time() if at is None else at))
    return {"x-slack-request-timestamp": stamp, "x-slack-signature": slack_signature(secret, stamp, body)}


def slack_event(text: str, *, user: str = "ana", ts: str = "1700000000.000100", **more) -> bytes:
    event = {"type": "message", "channel": "C1", "user": user, "text": text, "ts": ts, **more}
    return json.dumps({"type": "event_callback", "event_id": f"Ev{ts}", "event": event}).encode()


# -- checking and reading requests, without HTTP ------------------------------------------------------------------


def test_a_slack_signature_is_checked_with_its_timestamp_and_a_replay_window():
    body = slack_event("@loopwright hello")
    now = time.time()
    verify_slack(SECRET, signed(body, at=now), body, now=now, window=300)  # signed: taken
    refusals = {
        "unsigned": ({}, "not signed"),
        "another secret": (signed(body, secret="not-the-secret", at=now), "does not match"),
        "another body": (signed(body.replace(b"hello", b"hallo"), at=now), "does not match"),
        "stale": (signed(body, at=now - 301), "outside the 300 s window"),
        "from the future": (signed(body, at=now + 301), "outside the 300 s window"),
        "no number": ({"x-slack-request-timestamp": "soon", "x-slack-signature": "v0=00"}, "not a number"),
    }
    for what, (headers, said) in refusals.items():
        with pytest.raises(BridgeError, match=said) as e:
            verify_slack(SECRET, headers, body, now=now, window=300)
        assert e.value.status == 401 and e.value.hint, what


def test_a_mattermost_token_is_compared_and_its_fields_read_from_json_or_a_form():
    form = b"token=tok&user_name=bob&post_id=p1&text=%40loopwright+hi&trigger_word=%40loopwright"
    fields = fields_of(form, "application/x-www-form-urlencoded")
    verify_mattermost("tok", fields)
    assert parse_mattermost(fields) == Incoming("p1", "bob", "@loopwright hi")
    with pytest.raises(BridgeError, match="token does not match"):
        verify_mattermost("tok", fields_of(b'{"token": "tik", "user_name": "bob"}', "application/json"))
    with pytest.raises(BridgeError, match="neither JSON nor a form") as e:
        fields_of(b"{not json", "application/json")
    assert e.value.status == 400


def test_slack_events_name_their_message_by_channel_and_ts_and_bots_are_not_read():
    message = parse_slack(json.loads(slack_event("hi &lt;b&gt; <@U7|carol> <https://x.example.org|x>")))
    assert message == Incoming("C1:1700000000.000100", "ana", "hi <b> @carol https://x.example.org")
    mention = json.loads(slack_event("hi", type="app_mention"))  # the same message, delivered as a mention
    assert parse_slack(mention) == Incoming("C1:1700000000.000100", "ana", "hi")
    assert parse_slack(json.loads(slack_event("our own reply", bot_id="B1"))) is None
    assert parse_slack(json.loads(slack_event("edited", subtype="message_changed"))) is None
    assert parse_slack(json.loads(slack_event("   "))) is None  # a file alone: nothing to post
    command = fields_of(b"user_name=bob&text=%2Fstatus&trigger_id=t.1", "application/x-www-form-urlencoded")
    assert parse_slack(command) == Incoming("t.1", "bob", "/status")
    with pytest.raises(BridgeError, match="no message id or no user"):
        parse_slack({"event": {"type": "message", "text": "who am I", "ts": "1.2"}})


def test_replies_name_the_services_own_users():
    assert outgoing_text("slack", "slack", "@slack:U024BE7LH done, @slack:ana too; @bob") == \
        "<@U024BE7LH> done, @ana too; @bob"
    assert outgoing_text("mattermost", "mm", "@mm:bob on it (task 3)") == "@bob on it (task 3)"


# -- the daemon: requests in over HTTP, replies out to the service ---------------------------------------------


class Bridged:
    """A project with bridges (slack to #general, mattermost to #ops, one with no secret set, one to a thread never
    made; all reply to the fake service), and its daemon serving HTTP on a free loopback port."""

    def __init__(self, repo: Path, tmp_path: Path, service: FakeService, turns: list[dict]):
        self.repo, self.log, self.service = repo, tmp_path / "daemon.log", service
        script = write_script(tmp_path / "bridge.json", turns)
        bridge = f'outgoing_url = "{service.url}"\nbackoff_seconds = 0.05\n'
        (repo / "loopwright.toml").write_text(
            f'provider = "scripted"\nscript = "{script}"\n\n[chat]\ndebounce_seconds = 0\n\n'
            f'[bridges.slack]\nshape = "slack"\nthread = "general"\nsecret_env = "TEST_SLACK_SECRET"\n{bridge}\n'
            f'[bridges.mm]\nshape = "mattermost"\nthread = "ops"\nsecret_env = "TEST_MM_TOKEN"\n{bridge}\n'
            f'[bridges.nosecret]\nshape = "slack"\nthread = "ops"\nsecret_env = "TEST_UNSET_SECRET"\n{bridge}\n'
            f'[bridges.lost]\nshape = "slack"\nthread = "gone"\nsecret_env = "TEST_SLACK_SECRET"\n{bridge}')
        store = open_project(repo, create=True).store
        create_thread(store, "general")
        create_thread(store, "ops")
        self.daemon: DaemonProcess | None = None
        self.base = ""

    def start(self) -> None:
        start = self.log.stat().st_size if self.log.exists() else 0
        self.daemon = DaemonProcess(self.repo, self.log, 2, "--http", "127.0.0.1:0")
        self.base = served_http(self.log, start)

    def stop(self) -> None:
        assert self.daemon is not None and self.daemon.stop() == 0

    def slack(self, text: str, *, ts: str = "1700000000.000100", bridge: str = "slack", secret: str = SECRET,
              at: float | None = None, **event) -> tuple[int, dict]:
        body = slack_event(text, ts=ts, **event)
        return self.service.send(f"{self.base}/bridges/{bridge}", body, signed(body, secret=secret, at=at))

    def mattermost(self, text: str, *, token: str = "mm-token", post_id: str = "p1") -> tuple[int, dict]:
        form = urllib.parse.urlencode({"token": token, "user_name": "bob", "post_id": post_id, "text": text})
        return self.service.send(f"{self.base}/bridges/mm", form.encode(),
                                 {"Content-Type": "application/x-www-form-urlencoded"})

    def messages(self, thread: str = "general", kind: str | None = None) -> list:
        return [m for m in messages(open_project(self.repo).store, thread) if kind is None or m.kind == kind]


@pytest.fixture
def bridged(repo, tmp_path, service, monkeypatch):
    monkeypatch.setenv("TEST_SLACK_SECRET", SECRET)  # the daemon's environment holds the secrets, not its config
    monkeypatch.setenv("TEST_MM_TOKEN", "mm-token")
    monkeypatch.delenv("TEST_UNSET_SECRET", raising=False)
    b = Bridged(repo, tmp_path, service, [turn(call("finish", summary="Drew a square"))])
    yield b
    if b.daemon is not None and b.daemon.proc.poll() is None:
        b.daemon.proc.kill()
        b.daemon.proc.wait()


def test_a_signed_message_posts_once_as_the_remote_user_and_a_redelivery_of_it_too(bridged):
    bridged.start()
    status, answer = bridged.slack("the deploy is at noon")
    assert status == 200 and answer["posted"]
    again = bridged.slack("the deploy is at noon", at=time.time() + 1)  # Slack's retry: signed anew, same message
    assert again == (200, answer)
    assert bridged.slack("our own reply", bot_id="B1") == (200, {"ok": True, "posted": None})  # a bot: not read
    check = json.dumps({"type": "url_verification", "challenge": "3eZbrw1aB"}).encode()  # when the URL is set up
    verified = bridged.service.send(f"{bridged.base}/bridges/slack", check, signed(check))
    assert verified == (200, {"challenge": "3eZbrw1aB"})
    said = bridged.messages()
    assert [(m.id, m.author, m.text) for m in said] == [(answer["posted"], "slack:ana", "the deploy is at noon")]
    status, answer = bridged.mattermost("hello from mattermost")
    assert status == 200 and bridged.mattermost("hello from mattermost") == (200, answer)
    assert [(m.author, m.text) for m in bridged.messages("ops")] == [("mm:bob", "hello from mattermost")]
    with urllib.request.urlopen(f"{bridged.base}/openapi.json", timeout=30) as described:
        route = json.loads(described.read())["paths"]["/bridges/{name}"]["post"]
    assert route["security"] == [] and {"401", "404", "503"} <= route["responses"].keys()
    bridged.stop()


def test_bad_signatures_stale_requests_and_unknown_bridges_are_refused_and_nothing_is_stored(bridged):
    bridged.start()
    refusals = [
        (bridged.slack("forged", secret="not-the-secret"), 401, "signature does not match"),
        (bridged.slack("replayed", at=time.time() - 600), 401, "outside the 300 s window"),
        (bridged.service.send(f"{bridged.base}/bridges/slack", slack_event("unsigned"), {}), 401, "not signed"),
        (bridged.slack("to nowhere", bridge="nobody"), 404, "no bridge 'nobody'"),
        (bridged.slack("no secret set", bridge="nosecret"), 503, "has no secret"),
        (bridged.slack("to a thread never made", bridge="lost"), 403, "no thread 'gone'"),
        (bridged.mattermost("forged", token="guess"), 401, "token does not match"),
    ]
    for (status, answer), expected, said in refusals:
        assert status == expected and said in answer["error"] and answer["hint"], answer
        assert answer["hint"] not in answer["error"], answer  # said once, where it belongs
    assert bridged.messages() == [] and bridged.messages("ops") == []
    bridged.stop()
    log = bridged.log.read_text()
    assert "bridge slack: refused a request: the signature does not match" in log
    assert "TEST_UNSET_SECRET is not set" in log and "bridge lost: there is no thread 'gone'" in log
    assert SECRET not in log


def test_replies_reach_the_service_once_in_order_also_after_restarts(bridged):
    service = bridged.service
    service.down = True
    bridged.start()
    assert bridged.slack("@loopwright draw a square")[0] == 200
    until(lambda: bridged.messages(kind="agent"), "the answer", timeout=60)
    until(lambda: service.refused >= 2, "tries at the service while it is down")
    bridged.stop()
    assert service.received == []
    service.down = False
    bridged.start()  # the status line and the answer, which the last daemon could not deliver
    until(lambda: len(service.received) == 2, "the replies")
    assert service.received == ["@ana done: task 1 needs_review", "@ana Drew a square"]  # the status as it is
    bridged.stop()
    service.fail = 2  # the next post is refused twice, then taken
    bridged.start()
    assert bridged.slack("/status", ts="1700000000.000200")[0] == 200
    until(lambda: len(service.received) == 3, "the answer to /status")
    assert service.received[2] == "@ana idle: nothing is running in this thread"  # after them: none sent twice
    bridged.stop()
    assert len(service.received) == 3 and service.fail == 0
