"""The web chat page in a real headless browser: Debian's chromium, driven by Playwright (no browser download),
against the daemon as a real process serving HTTP on a loopback port, with the scripted model answering in the
thread. Screenshots at phone and desktop widths are kept in .ci/artifacts/web-page/ (git-ignored).

Without chromium (or Playwright) the test skips and says why; in CI (the variable CI set) it fails instead."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from support import call, served_http, turn, write_script

from loopwright.memory.store import Store

ARTIFACTS = Path(__file__).resolve().parent.parent / ".ci" / "artifacts" / "web-page"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def browser():
    """Debian's chromium, headless, through Playwright."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if CHROMIUM is None:
        missing = "no chromium on PATH (apt-get install -y chromium; .ci/run does)"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the web page's browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        try:
            yield b
        finally:
            b.close()


def test_log_in_post_a_mention_and_see_the_reply_and_the_status_line_live(browser, repo, tmp_path, cli, daemon):
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)  # a loaded machine: the daemon, a run and the browser share two cores
    gate = repo / ".git" / "web-page-go"  # the jail sees the repository's .git (read-only): the run waits for it
    script = write_script(tmp_path / "chat.json", [
        turn(call("write_file", path="square.txt", content="[]\n")),  # a checkpoint
        turn(call("shell", command=f"until [ -e {gate} ]; do sleep 0.1; done")),
        turn(call("finish", summary="Drew a <b>square</b>\nin blue")),
    ])
    config = f'provider = "scripted"\nscript = "{script}"\n\n[chat]\ndebounce_seconds = 0\n\n[http]\nlisten = '
    (repo / "loopwright.toml").write_text(config + '"127.0.0.1:0"\n')
    code, out, err = cli(repo, "people", "add", "ana")
    assert code == 0, err
    token = out.splitlines()[1].strip()
    assert cli(repo, "threads", "new", "general")[0] == 0
    d = daemon()
    base = served_http(d.log)
    url = base + "/"

    page = browser.new_page(viewport={"width": 1280, "height": 800})
    requests = []
    page.on("request", lambda r: requests.append((r.url, r.headers.get("authorization"))))
    errors: list[str] = []  # a script error, or anything the Content-Security-Policy blocked
    expected = ("status of 401", "ERR_CONNECTION_REFUSED")  # the wrong token; the daemon's restart
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and not any(x in m.text for x in expected) and errors.append(m.text))
    page.goto(url)
    page.fill("#token", "not-a-token")
    page.press("#token", "Enter")
    expect(page.locator("#error")).to_contain_text("refused")
    page.fill("#token", token)
    page.press("#token", "Enter")
    expect(page.locator("#me")).to_have_text("ana")
    expect(page.locator("#thread-title")).to_have_text("#general")
    expect(page.locator("#live")).to_have_text("● live")
    page.evaluate("window.notReloaded = true")

    page.type("#text", "@loop")  # the mention is completed from the agent's name
    page.locator("#suggest button", has_text="@loopwright").click()
    page.type("#text", "draw a <b>square</b>")
    page.press("#text", "Enter")

    status = page.locator("#messages li.kind-status")
    expect(status).to_have_text(re.compile(r"@ana on it \(task 1\)"))
    status_id = status.get_attribute("data-id")
    task = page.locator("#tasks li", has_text="task 1")
    expect(task.locator(".task-state")).to_have_text(re.compile(r"task 1 running · 1 checkpoint\b"))
    gate.touch()

    reply = page.locator("#messages li.kind-agent")
    expect(reply).to_contain_text("@ana Drew a <b>square</b>")  # as text, not markup
    expect(status).to_have_text(re.compile(r"@ana done: task 1 needs_review"))  # no check: a person reviews it
    assert status.get_attribute("data-id") == status_id and page.locator(f'li[data-id="{status_id}"]').count() == 1
    assert page.locator("#messages li.kind-user").count() == 1
    assert page.locator("#messages b").count() == 0
    expect(task.locator(".badge")).to_have_text("needs review")
    expect(task.locator(".summary")).to_have_text("Drew a <b>square</b>\nin blue")
    assert page.evaluate("window.notReloaded") is True  # it all came over the live stream

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / "desktop-1280x800.png")
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360  # nothing wider than a phone
    page.screenshot(path=ARTIFACTS / "phone-360x740.png")

    d.stop()  # the stream ends; what is said meanwhile arrives when the page has reconnected, after its last event
    assert cli(repo, "say", "general", "--as", "bob", "said while the daemon was down")[0] == 0
    (repo / "loopwright.toml").write_text(config + f'"{base.removeprefix("http://")}"\n')
    d = daemon()
    expect(page.locator("#messages li.kind-user").last).to_contain_text("said while the daemon was down")
    expect(page.locator("#live")).to_have_text("● live")
    assert page.evaluate("window.notReloaded") is True

    page.reload()  # the token stays in the tab: signed in again, the history loaded
    expect(page.locator("#me")).to_have_text("ana")
    expect(page.locator("#messages li")).to_have_count(4)
    page.evaluate("window.notReloaded = true")

    assert cli(repo, "threads", "new", "design")[0] == 0  # made elsewhere: it joins the list live
    expect(page.locator('#threads button[data-name="design"]')).to_have_text("#design")

    d.stop()  # what is said meanwhile is pruned from the feed (as after [http] feed_hours): the page is told to reload
    for text in ("missed one", "missed two"):
        assert cli(repo, "say", "general", "--as", "bob", text)[0] == 0
    store = Store(repo / ".loopwright" / "state.db")
    store.conn.execute("DELETE FROM change_feed WHERE id < (SELECT max(id) FROM change_feed)")
    store.close()
    daemon()
    expect(page.locator("#messages li.kind-user", has_text="missed one")).to_have_count(1)
    expect(page.locator("#messages li.kind-user", has_text="missed two")).to_have_count(1)
    expect(page.locator("#messages li")).to_have_count(6)
    assert page.evaluate("window.notReloaded") is True  # loaded again in place, not by reloading the page

    assert all(token not in u for u, _ in requests), "the token went into an address"
    streams = [(u, a) for u, a in requests if u.startswith(url + "api/stream")]
    assert streams and all(a == f"Bearer {token}" for _, a in streams)
    assert any("?after=" in u for u, _ in streams)  # the reconnect resumed after the last event it had
    assert errors == []
