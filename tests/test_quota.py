"""The fleet's rate-limit gate: reset headers, one closing per wave, staggered release, auto-resume off, a 429 storm."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx2
import openai
import pytest
from support import call, turn, write_script
from test_daemon import wait_until_done

from loopwright.harness.loopback import LoopbackServer
from loopwright.harness.retry import RetryPolicy, rate_limit_reset, retry_after
from loopwright.harness.script import Script
from loopwright.memory.store import Store
from loopwright.runtime.config import QuotaConfig
from loopwright.runtime.fleet.quota import QuotaPaused, StoreQuotaGate, closed_gates


def _err(headers: dict) -> openai.RateLimitError:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    return openai.RateLimitError("rate limited", response=httpx2.Response(429, headers=headers, request=request),
                                 body=None)


def test_reset_headers_of_the_exhausted_limit_are_honoured():
    assert rate_limit_reset({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s",
                             "x-ratelimit-remaining-tokens": "500", "x-ratelimit-reset-tokens": "2h"}) == 360
    assert rate_limit_reset({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "1.5s"}) == 1.5
    assert rate_limit_reset({"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "20ms"}) == 0.02
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 30))
    wait = rate_limit_reset({"anthropic-ratelimit-tokens-remaining": "0", "anthropic-ratelimit-tokens-reset": when,
                             "anthropic-ratelimit-requests-remaining": "10",
                             "anthropic-ratelimit-requests-reset": "2099-01-01T00:00:00Z"})
    assert 28 < wait <= 30
    assert rate_limit_reset({"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1s"}) is None
    assert rate_limit_reset({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "soon"}) is None
    # a reset without its `remaining` counts when no limit says it ran out: in seconds, or as a unix time
    assert rate_limit_reset({"x-ratelimit-reset-requests": "7"}) == 7
    assert 8 < rate_limit_reset({"x-ratelimit-reset-tokens": str(int(time.time()) + 10)}) <= 10
    assert rate_limit_reset({"x-ratelimit-reset-requests": "7", "x-ratelimit-remaining-tokens": "0",
                             "x-ratelimit-reset-tokens": "2s"}) == 2
    # retry-after wins over the reset headers; the reset headers stand in when it is missing
    both = {"retry-after": "2", "x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9s"}
    assert retry_after(_err(both)) == 2
    assert retry_after(_err({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "9s"})) == 9


class Clock:
    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _gate(store, clock, **config) -> StoreQuotaGate:
    return StoreQuotaGate(store, "anthropic/m", QuotaConfig(**config), RetryPolicy(initial_backoff=2, max_backoff=30),
                          clock=clock, sleep=clock.sleep)


def test_a_wave_of_429s_closes_the_gate_once_and_runs_are_released_staggered(tmp_path):
    store, clock = Store(tmp_path / "s.db"), Clock()
    gates = [_gate(store, clock, stagger_seconds=0.5) for _ in range(4)]
    waits: list[tuple[float, str]] = []
    asyncio.run(gates[0].wait(lambda s, w: waits.append((s, w))))
    assert waits == []  # open: no wait, no queue
    sent = clock.now
    for g in gates:  # the same wave: four requests in flight when the quota ran out
        g.close("rate limited (429)", None, sent)
    row = store.conn.execute("SELECT * FROM quota_gates").fetchone()
    assert row["hits"] == 1 and row["closed_until"] == clock.now + 2  # backoff 2 s, not 2 * 2**3
    assert closed_gates(store, clock.now)[0]["gate"] == "anthropic/m"

    async def everyone():
        released = []

        async def one(i):
            await gates[i].wait(lambda s, w: waits.append((s, w)))
            released.append((i, clock.now))
        for i in range(4):
            await one(i)
        return released
    released = asyncio.run(everyone())
    times = [t for _, t in released]
    assert times == [1002.0, 1002.5, 1003.0, 1003.5]  # each 0.5 s after the one before
    assert "waiting at the fleet's rate-limit gate" in waits[0][1]
    # a later closing in a row (a request sent after the gate reopened) doubles the backoff
    gates[0].close("rate limited (429)", None, clock.now)
    assert store.conn.execute("SELECT hits FROM quota_gates").fetchone()[0] == 2
    # the server's reset time wins over the backoff; a call that goes through resets the count
    clock.now += 100
    gates[1].close("rate limited (429)", 7.0, clock.now)
    assert store.conn.execute("SELECT closed_until FROM quota_gates").fetchone()[0] == clock.now + 7
    clock.now += 50
    asyncio.run(gates[1].wait(lambda s, w: None))
    gates[1].opened()
    assert store.conn.execute("SELECT hits FROM quota_gates").fetchone()[0] == 0


def test_auto_resume_off_pauses_at_a_closed_gate(tmp_path):
    store, clock = Store(tmp_path / "s.db"), Clock()
    gate = _gate(store, clock, auto_resume=False)
    gate.close("rate limited (429)", 60, clock.now)
    with pytest.raises(QuotaPaused) as info:
        asyncio.run(gate.wait(lambda s, w: None))
    assert re.fullmatch(r"rate limited \(429\): the fleet's gate for anthropic/m is closed until [\d:]+; automatic "
                        r"resume is off \(quota.auto_resume\): `loopwright resume` after that", str(info.value))
    clock.now += 61
    asyncio.run(gate.wait(lambda s, w: None))  # reopened: goes through


def test_a_run_waits_at_a_closed_gate_up_to_max_wait_seconds_then_pauses(tmp_path):
    store, clock = Store(tmp_path / "s.db"), Clock()
    gate = _gate(store, clock, max_wait_seconds=25, stagger_seconds=0)
    told: list[tuple[float, str]] = []
    for _ in range(2):  # 10 s each: within the ceiling
        gate.close("rate limited (429)", 10, clock.now)
        asyncio.run(gate.wait(lambda s, w: told.append((s, w))))
    assert [s for s, _ in told] == [10, 10] and "(10.0s of at most 25s waited so far)" in told[1][1]
    gate.close("rate limited (429)", 10, clock.now)  # 20 s waited + 10 s more would pass 25 s
    with pytest.raises(QuotaPaused, match=r"stays closed until [\d:]+, past the 25s a run waits at it "
                                          r"\(quota.max_wait_seconds; waited 20.0s\)"):
        asyncio.run(gate.wait(lambda s, w: told.append((s, w))))
    assert len(told) == 2
    gate.opened()  # a call went through (after a resume, say): the run may wait its full time again
    clock.now += 10
    gate.close("rate limited (429)", 20, clock.now)
    asyncio.run(gate.wait(lambda s, w: told.append((s, w))))
    assert told[-1][0] == 20
    gate.close("rate limited (429)", 3600, clock.now)  # a reset beyond the ceiling pauses at once
    with pytest.raises(QuotaPaused, match="past the 25s"):
        asyncio.run(gate.wait(lambda s, w: None))


# -- end to end: the daemon, 8 runs, the real SDK against the loopback server in a storm ---------------------

TURNS = 10
STORM = 3.0
STAGGER = 0.3


def _fleet_script(tmp_path):
    steps = [turn(call("scratchpad", action="append", text=f"step {i}")) for i in range(TURNS - 1)]
    steps.append(turn(call("finish", summary="done")))
    return Script.parse(json.loads(write_script(tmp_path / "fleet.json", steps).read_text()))


def _task_of(request: dict) -> str:
    system = json.dumps(request["body"].get("messages", [])[:1])
    return system.split("# Task ")[1].split(":")[0] if "# Task " in system else "?"


@pytest.mark.parametrize("auto_resume", [True, False])
def test_a_429_storm_across_8_runs_backs_the_whole_fleet_off(repo, cli, tmp_path, daemon, monkeypatch,  # noqa: F811
                                                             auto_resume):
    server = LoopbackServer(_fleet_script(tmp_path), per_conversation=True, latency=0.2).start()
    try:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-real-key")
        monkeypatch.setenv("LOOPWRIGHT_QUOTA__STAGGER_SECONDS", str(STAGGER))
        monkeypatch.setenv("LOOPWRIGHT_QUOTA__AUTO_RESUME", str(auto_resume).lower())
        cli(repo, "init")
        for i in range(8):
            code, _, err = cli(repo, "post", f"note {i}", "--provider", "anthropic", "--model", "claude-sonnet-4-6",
                               "--base-url", server.anthropic_base_url, "--check", "true")
            assert code == 0, err
        d = daemon(max_parallel=8)
        store = Store(repo / ".loopwright" / "state.db")
        deadline = time.monotonic() + 30
        while len(store.conn.execute("SELECT DISTINCT run_id FROM events WHERE type = 'model_called'").fetchall()) < 8:
            assert time.monotonic() < deadline, "the 8 runs did not all start"
            time.sleep(0.05)
        storm_start = time.time()
        server.rate_limit(STORM)
        if not auto_resume:
            deadline = time.monotonic() + 30
            while len(store.runs(statuses=("paused",))) < 8:
                assert time.monotonic() < deadline, [(r.id, r.status, r.reason) for r in store.runs()]
                time.sleep(0.1)
            assert all("automatic resume is off" in r.reason for r in store.runs())
            code, out, _ = cli(repo, "status")
            assert "rate-limit gate" in out
            time.sleep(max(0.0, storm_start + STORM - time.time()))
            for r in store.runs():
                assert cli(repo, "resume", r.id)[0] == 0
        done = wait_until_done(repo, 8, timeout=60)
        assert [t.status for t in done.tasks()] == ["succeeded"] * 8
        d.stop()
    finally:
        server.stop()
    storm_end = storm_start + STORM
    # one wave of refusals (the requests in flight when the quota ran out), no hammering during the storm
    assert 1 <= len(server.refused) <= 8, server.refused
    assert all(t - storm_start <= 0.2 + 0.5 for t in server.refused), [t - storm_start for t in server.refused]
    if auto_resume:
        # after the reset the waiting runs went one at a time, STAGGER apart
        after = sorted((r["at"], _task_of(r)) for r in server.requests if r["at"] >= storm_end - 0.01)
        firsts: dict[str, float] = {}
        for at, task in after:
            firsts.setdefault(task, at)
        starts = sorted(firsts.values())
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert len(starts) == 8 and min(gaps) >= STAGGER * 0.8, gaps
        events = [e for r in store.runs() for e in store.events(r.id, types=("retrying",))]
        assert any("rate-limit gate" in e[2].reason for e in events)
