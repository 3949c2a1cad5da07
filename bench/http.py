"""The chat API over HTTP under load: N clients on the live stream while M messages a second are posted, S seconds.

`loopwright serve --http 127.0.0.1:0` runs as its own process on a fresh project with one thread (mention mode, so
the posts start no runs; the daemon marks each as context a moment later, a second change every client gets). This
process is every client (aiohttp, one event loop): N connections on GET /api/stream, then one POST
/api/threads/bench/messages every 1/M s, each text unique, each timed from the moment its request starts. Measured:

- post -> delivery: for every client and every post, the time until the message's first event reached that
  client; p50 / p99 / max over all of them. Goal: p99 <= 250 ms.
- lost: posts acknowledged (201) whose message some client never got (waiting up to 10 s after the last post);
  duplicated: an event id a client got twice. Goal: 0 and 0.
- the daemon's CPU over the window (utime + stime from /proc, as a share of one core), and this process's; how
  busy the whole machine was, and the time each post took to be answered (201): on a machine shared with other work,
  these say how much of the delivery time is waiting for a core.

Prints the figures with the goals beside them, asserts nothing.

    python -m loopwright.bench.http [--quick] [--clients 100] [--rate 20] [--seconds 60] [--keep] [--profile F]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from loopwright.bench.fleet_rig import bench_env, cpu_seconds, git, machine_busy
from loopwright.runtime.chat.threads import create_thread
from loopwright.runtime.http.auth import add_person
from loopwright.runtime.project import init_project, open_project

THREAD = "bench"
DRAIN_SECONDS = 10.0  # after the last post, how long clients may take before what they lack counts as lost


def make_project(top: Path) -> tuple[Path, str]:
    """A committed repository, initialised, with the bench thread and a person; (root, their token)."""
    root = top / "repo"
    root.mkdir(parents=True)
    (root / "README.md").write_text("# bench\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-q", "--allow-empty",
        "-m", "initial")
    init_project(root)
    # no per-person HTTP limit worth the name: one person posts all the messages and holds every stream
    (root / "loopwright.toml").write_text("[http]\nrate_per_minute = 1000000\n")
    project = open_project(root)
    create_thread(project.store, THREAD)
    return root, add_person(project.store, "bench")


class Daemon:
    """`loopwright serve --http 127.0.0.1:0` as a subprocess; `url` once its log says where it listens."""

    def __init__(self, root: Path, log: Path, profile: Path | None = None):
        self.log = log
        wrapper = ["-m", "cProfile", "-o", str(profile)] if profile else []
        with log.open("w") as out:
            self.proc = subprocess.Popen([sys.executable, *wrapper, "-m", "loopwright.cli.main", "serve", "--http",
                                          "127.0.0.1:0"], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                         env=bench_env())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = re.search(r"serving the chat API on (http://\S+)", log.read_text())
            if found:
                self.url = found.group(1)
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the daemon did not start its HTTP server: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Client:
    """One live-stream client: when it first got each message (by text), and every event id it got."""

    first: dict[str, float] = field(default_factory=dict)
    ids: set[int] = field(default_factory=set)
    duplicates: int = 0
    connected: asyncio.Event = field(default_factory=asyncio.Event)

    async def listen(self, session: aiohttp.ClientSession, url: str, token: str) -> None:
        async with session.get(f"{url}/api/stream", headers={"Authorization": f"Bearer {token}"}) as answer:
            answer.raise_for_status()
            buffer = b""
            async for chunk in answer.content.iter_any():
                now = time.perf_counter()
                self.connected.set()
                buffer += chunk
                *events, buffer = buffer.split(b"\n\n")
                for event in events:
                    self.take(event, now)

    def take(self, event: bytes, now: float) -> None:
        fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line and line[:1] != b":")
        if fields.get(b"event") != b"message":
            return
        event_id = int(fields[b"id"])
        if event_id in self.ids:
            self.duplicates += 1
            return
        self.ids.add(event_id)
        self.first.setdefault(json.loads(fields[b"data"])["text"], now)


async def post_all(session: aiohttp.ClientSession, url: str, token: str, rate: float, seconds: float,
                   sent: dict[str, float], acked: dict[str, float], failed: list[str]) -> None:
    """One post every 1/rate s (on schedule, whatever the answers take), each timed from when it starts."""
    headers = {"Authorization": f"Bearer {token}"}

    async def one(text: str) -> None:
        sent[text] = time.perf_counter()
        try:
            async with session.post(f"{url}/api/threads/{THREAD}/messages", json={"text": text},
                                    headers=headers) as answer:
                if answer.status == 201:
                    acked[text] = time.perf_counter() - sent[text]
                else:
                    failed.append(f"{answer.status}: {(await answer.text())[:200]}")
        except aiohttp.ClientError as e:
            failed.append(f"{type(e).__name__}: {e}")

    start, posts = time.perf_counter(), []
    for n in range(int(rate * seconds)):
        delay = start + n / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        posts.append(asyncio.ensure_future(one(f"bench message {n} of the http benchmark")))
    await asyncio.gather(*posts)


async def measure(url: str, token: str, daemon_pid: int, clients: int, rate: float, seconds: float) -> dict:
    listeners = [Client() for _ in range(clients)]
    sent: dict[str, float] = {}
    acked: dict[str, float] = {}  # text -> seconds until its 201
    failed: list[str] = []
    streams = aiohttp.TCPConnector(limit=0)
    posts = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=streams, timeout=timeout) as s, \
            aiohttp.ClientSession(connector=posts) as p:
        tasks = [asyncio.ensure_future(c.listen(s, url, token)) for c in listeners]
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in listeners)), 60)
        cpu0, mine0, busy0, wall0 = cpu_seconds(daemon_pid), time.process_time(), machine_busy(), time.perf_counter()
        await post_all(p, url, token, rate, seconds, sent, acked, failed)
        wall = time.perf_counter() - wall0
        cpu, mine, busy = cpu_seconds(daemon_pid) - cpu0, time.process_time() - mine0, machine_busy()
        deadline = time.perf_counter() + DRAIN_SECONDS
        while time.perf_counter() < deadline and not all(acked.keys() <= c.first.keys() for c in listeners):
            await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = [c.first[text] - sent[text] for c in listeners for text in acked if text in c.first]
    return {"latencies": latencies, "acks": list(acked.values()), "posted": len(sent), "acked": len(acked),
            "failed": failed, "lost": sum(len(acked.keys() - c.first.keys()) for c in listeners),
            "duplicated": sum(c.duplicates for c in listeners), "wall": wall, "daemon_cpu": cpu / wall,
            "bench_cpu": (mine / wall), "machine": (busy[0] - busy0[0]) / (busy[1] - busy0[1])}


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 clients for 5 s")
    ap.add_argument("--clients", type=int, help="live-stream clients (default 100; 10 with --quick)")
    ap.add_argument("--rate", type=float, default=20.0, help="posts per second")
    ap.add_argument("--seconds", type=float, help="how long posts go on (default 60; 5 with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the project and the daemon's log")
    ap.add_argument("--profile", type=Path, help="run the daemon under cProfile, its statistics written to this "
                                                 "file (slower: for finding where time goes, not for the figures)")
    args = ap.parse_args(argv)
    clients = args.clients or (10 if args.quick else 100)
    seconds = args.seconds or (5.0 if args.quick else 60.0)
    top = Path(tempfile.mkdtemp(prefix="lw-bench-http-"))
    try:
        root, token = make_project(top)
        daemon = Daemon(root, top / "daemon.log", args.profile and args.profile.resolve())
        try:
            r = asyncio.run(measure(daemon.url, token, daemon.proc.pid, clients, args.rate, seconds))
        finally:
            daemon.stop()
        lat = r["latencies"]
        print(f"chat over HTTP: {clients} live-stream clients, {args.rate:g} posts/s for {r['wall']:.1f} s "
              f"({os.cpu_count()} cores, {100 * r['machine']:.0f}% busy over the window)")
        print(f"  posted            {r['posted']:6d}, {r['acked']} acknowledged (201)"
              + (f"; {len(r['failed'])} failed, first: {r['failed'][0]}" if r["failed"] else ""))
        print(f"  post -> delivery  {1000 * quantile(lat, 0.5):6.0f} ms p50, {1000 * quantile(lat, 0.99):.0f} ms p99, "
              f"{1000 * max(lat, default=float('nan')):.0f} ms max over {len(lat):,} deliveries   goal p99 <= 250")
        print(f"  lost / duplicated {r['lost']:6d} / {r['duplicated']}   goal 0 / 0")
        print(f"  daemon CPU        {100 * r['daemon_cpu']:6.1f} % of a core (this process, the clients: "
              f"{100 * r['bench_cpu']:.0f} %)")
        if lat:
            print(f"  mean delivery     {1000 * statistics.fmean(lat):6.0f} ms")
        acks = r["acks"]
        print(f"  post -> its 201   {1000 * quantile(acks, 0.5):6.0f} ms p50, {1000 * quantile(acks, 0.99):.0f} ms p99 "
              f"(the same request's answer: how busy the machine and the daemon are)")
        if args.keep:
            print(f"  kept: {top}")
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
