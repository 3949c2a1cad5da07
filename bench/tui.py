"""The TUI under load, at 100 runs: frames and lag while every run writes, then key-to-screen latency per view.

The store is real: 100 runs, each with a git worktree (a few commits stored as
checkpoints, uncommitted changes, every other run with a large diff) and a few
hundred events. Phase 1: a writer process appends ToolStarted / ToolFinished /
ModelCalled events and updates the runs rows through the Store API, round-robin
over every run at the asked rate; the fleet view is measured over a window:
frames per second, CPU share of one core (process_time over wall time), lag
from an event's write (its `ts`) to the frame that shows its row. Phase 2: the
writer keeps `--busy` runs going while keys are pressed through Textual's pilot
(cursor, open a run, its diff and checkpoints tabs, Esc back, queue, chat,
help), each timed from the press to the first frame that shows the new view.
Goals: >= 10 fps, <= 25% of a core, lag <= 300 ms; every view <= 300 ms median,
<= 1 s worst. Prints the figures, asserts nothing.

    python -m loopwright.bench.tui [--quick] [--agents 100] [--rate 10] [--seconds 10] [--busy 24] [--presses 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from loopwright.harness.events import CheckpointMade, MessageAdded, ModelCalled, ToolFinished, ToolStarted
from loopwright.harness.messages import Message, TextBlock, Usage
from loopwright.memory.store import Store
from loopwright.runtime.project import init_project, open_project
from loopwright.tui.app import TuiApp
from loopwright.tui.chat_view import ChatScreen
from loopwright.tui.dialogs import HelpScreen
from loopwright.tui.feed import Feed
from loopwright.tui.fleet_view import FleetScreen
from loopwright.tui.queue_view import QueueScreen
from loopwright.tui.run_view import RunScreen

EVENTS_PER_RUN = 1200  # an overnight run's transcript is longer; this is enough to feel
BIG_DIFF_LINES = 20000  # every other run changes a file this long


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
                          cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_project(top: Path, agents: int):
    """A project whose runs have worktrees with commits (stored as checkpoints), uncommitted changes and events."""
    root = top / "repo"
    (root / "src").mkdir(parents=True)
    (root / "README").write_text("bench\n")
    for i in range(20):
        (root / "src" / f"m{i}.py").write_text("".join(f"def f{j}():\n    return {j}\n" for j in range(50)))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "init")
    base = git(root, "rev-parse", "HEAD")
    init_project(root)
    project = open_project(root)
    store = project.store
    run_ids = []
    for i in range(agents):
        rid, wt = f"bench{i:03d}", top / "wt" / f"bench{i:03d}"
        task = store.create_task(f"agent {i}: make the widget factory faster, part {i}", priority=i % 3)
        git(root, "worktree", "add", "-q", "-b", f"lw/{rid}", str(wt), base)
        run = store.create_run(task.id, provider="scripted", model="bench", worktree=str(wt), branch=f"lw/{rid}",
                               base_commit=base, target_branch="main", run_id=rid)
        run_ids.append(run.id)
        with store.transaction():
            for n in range(EVENTS_PER_RUN // 4):
                store.append(rid, MessageAdded(message=Message(role="assistant", content=[TextBlock(
                    text=f"Step {n}: looking at src/m{n % 20}.py; the factory builds each widget twice.\n" * 3)])))
                store.record_model_call(rid, ModelCalled(model="bench", usage=Usage(input_tokens=1200,
                                                         output_tokens=80), cost_usd=0.004, stop_reason="tool_use",
                                                         duration_ms=900.0), None)
                store.append(rid, ToolStarted(call_id=f"c{n}", name="shell", arguments={"command": f"pytest -q {n}"}))
                store.append(rid, ToolFinished(call_id=f"c{n}", name="shell", is_error=False, duration_ms=12.0,
                                               preview="tests/test_widgets.py ....F.. 3 passed\n" * 40))
        for seq in (1, 2, 3):
            (wt / "src" / f"m{seq}.py").write_text(f"# checkpoint {seq} of run {i}\n" * 40)
            git(wt, "commit", "-qam", f"checkpoint {seq}")
            sha = git(wt, "rev-parse", "HEAD")
            store.add_checkpoint(rid, sha=sha, step=seq * 10, message=f"checkpoint {seq}")
            store.append(rid, CheckpointMade(seq=seq, sha=sha, step=seq * 10, message=f"checkpoint {seq}"))
        lines = BIG_DIFF_LINES if i % 2 == 0 else 30
        (wt / "src" / "m9.py").write_text("".join(f"x{j} = {j}  # uncommitted\n" for j in range(lines)))
    for i in range(agents, agents + 30):  # the queue view has rows
        store.create_task(f"queued {i}: tidy module {i}", priority=i % 4)
    return project, run_ids


def writer(db: str, run_ids: list[str], rate: float, ready, stop, written) -> None:
    """Round-robin over `run_ids`: tool started, tool finished (+ step saved), model called; `rate` events/s each."""
    store = Store(db)
    usage = Usage(input_tokens=1200, output_tokens=80)
    total_rate = rate * len(run_ids)
    step = {rid: 0 for rid in run_ids}
    ready.set()
    t0, n = time.perf_counter(), 0
    while not stop.is_set():
        due = int((time.perf_counter() - t0) * total_rate)
        if n >= due:
            time.sleep(0.002)
            continue
        while n < due:
            rid = run_ids[(n // 3) % len(run_ids)]
            phase = n % 3
            if phase == 0:
                store.append(rid, ToolStarted(call_id=f"c{n}", name="shell",
                                              arguments={"command": f"pytest -q tests/test_{n % 97}.py"}))
            elif phase == 1:
                store.append(rid, ToolFinished(call_id=f"c{n - 1}", name="shell", is_error=False, duration_ms=12.0,
                                               preview="3 passed"))
                step[rid] += 1
                store.update_run(rid, step=step[rid], last_action=f"shell pytest -q tests/test_{(n - 1) % 97}.py",
                                 active_seconds=time.perf_counter() - t0)
            else:
                store.record_model_call(rid, ModelCalled(model="bench", usage=usage, cost_usd=0.0042,
                                                         stop_reason="tool_use", duration_ms=900.0), None)
            n += 1
    written.value = n


def start_writer(project, run_ids: list[str], rate: float):
    ctx = mp.get_context("spawn")
    ready, stop, written = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    proc = ctx.Process(target=writer, args=(str(project.db_path), run_ids, rate, ready, stop, written))
    proc.start()
    ready.wait(30)
    return proc, stop, written


class BenchApp(TuiApp):
    """The TUI, counting the frames it renders, how old the events are that each frame shows, and when the
    first frame came that passes the pending key's probe."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.frames = 0
        self.row_updates = 0
        self.lags: list[float] = []
        self.pending: dict[str, float] = {}
        self.poll_ms: list[float] = []
        self.probe = None  # (pressed at, condition): the key being timed
        self.shown_at: float | None = None
        self.shown_cpu = 0.0  # process_time when it was shown
        self.on_shown = self._shown
        poll = self.feed.poll

        def timed_poll():
            t = time.perf_counter()
            try:
                return poll()
            finally:
                self.poll_ms.append((time.perf_counter() - t) * 1000)
        self.feed.poll = timed_poll  # type: ignore[method-assign]

    def _shown(self, rows: set[str], ch) -> None:
        for rid in rows:
            events = ch.events.get(rid)
            if events:
                self.pending.setdefault(rid, events[0].ts)
                self.row_updates += 1

    def _display(self, screen, renderable) -> None:
        super()._display(screen, renderable)
        if renderable is None:
            return
        self.frames += 1
        if self.pending:
            now = time.time()
            self.lags += [now - ts for ts in self.pending.values()]
            self.pending.clear()
        if self.probe is not None and self.probe[1](self):
            self.shown_at, self.shown_cpu = time.perf_counter(), time.process_time()
            self.probe = None

    def reset(self) -> None:
        self.frames = self.row_updates = 0
        self.lags, self.poll_ms = [], []


async def measure(project, writer_pid: int, agents: int, warmup: float, seconds: float) -> dict:
    feed = Feed(project.store, daemon=lambda: writer_pid, budget=project.config.fleet)
    app = BenchApp(project, feed=feed)
    async with app.run_test(size=(200, agents + 12)):
        await asyncio.sleep(warmup)
        app.reset()
        wall0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.sleep(seconds)
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        shown = app.screen.table.row_count
    lags = sorted(app.lags) or [float("nan")]
    return {"fps": app.frames / wall, "cpu": cpu / wall, "lag_p50": statistics.median(lags),
            "lag_p95": lags[int(0.95 * (len(lags) - 1))], "lag_max": lags[-1], "row_updates": app.row_updates / wall,
            "poll_ms": statistics.mean(app.poll_ms) if app.poll_ms else float("nan"), "polls": len(app.poll_ms) / wall,
            "rows": shown, "wall": wall}


def _tab(name: str):
    return lambda app: isinstance(app.screen, RunScreen) and app.screen.query_one("#tabs").active == name


def _run_shown(app) -> bool:
    """The run screen with its header and its transcript's loading line, or its first lines."""
    screen = app.screen
    return (isinstance(screen, RunScreen) and bool(str(screen.query_one("#head").content))
            and (any(w.display for w in screen.query("#log-loading")) or bool(screen.query_one("#log").lines)))


KEY_TIMEOUT = 10.0  # a view not shown by then counts as this long


async def measure_keys(project, writer_pid: int, presses: int) -> dict:
    """Key-to-screen per view, over `presses` rounds (each round opens another run); and the TUI's CPU share."""
    feed = Feed(project.store, daemon=lambda: writer_pid, budget=project.config.fleet)
    app = BenchApp(project, feed=feed)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    async with app.run_test(size=(120, 40)) as pilot:

        async def timed(view: str, key: str, shown) -> None:
            app.shown_at, t0, c0 = None, time.perf_counter(), time.process_time()
            app.probe = (t0, shown)
            await pilot.press(key)
            while app.shown_at is None and time.perf_counter() - t0 < KEY_TIMEOUT:
                await asyncio.sleep(0.005)
            app.probe = None
            times.setdefault(view, []).append((app.shown_at or time.perf_counter()) - t0)
            cpu.setdefault(view, []).append((app.shown_cpu if app.shown_at else time.process_time()) - c0)
            await asyncio.sleep(0.2)  # a person's pace

        await asyncio.sleep(1.0)
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(presses):
            for _step in range(3):
                row = app.screen.table.cursor_row + 1
                await timed("cursor in the fleet", "down", lambda a, r=row: a.screen.table.cursor_row == r)
            await timed("open a run", "enter", _run_shown)
            await timed("diff tab", "2", _tab("diff"))
            await timed("checkpoints tab", "3", lambda a: _tab("checkpoints")(a)
                        and a.screen.query_one("#checkpoints-table").row_count > 0)
            await timed("Esc back", "escape", lambda a: isinstance(a.screen, FleetScreen))
            await timed("queue", "t", lambda a: isinstance(a.screen, QueueScreen) and a.screen.table.row_count > 0)
            await timed("fleet (f)", "f", lambda a: isinstance(a.screen, FleetScreen))
            await timed("chat", "g", lambda a: isinstance(a.screen, ChatScreen)
                        and bool(a.screen.query_one("#log").lines))
            await timed("Esc back", "escape", lambda a: isinstance(a.screen, FleetScreen))
            await timed("help", "question_mark", lambda a: isinstance(a.screen, HelpScreen))
            await timed("Esc back", "escape", lambda a: isinstance(a.screen, FleetScreen))
        wall, cpu_used = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"times": times, "key_cpu": cpu, "cpu": cpu_used / wall}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 4 s window and 4 rounds of keys")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second per agent")
    ap.add_argument("--seconds", type=float, help="measured window (default 10, or 4 with --quick)")
    ap.add_argument("--busy", type=int, default=24, help="runs writing while keys are pressed")
    ap.add_argument("--presses", type=int, help="rounds of keys (default 10, or 4 with --quick)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    presses = args.presses or (4 if args.quick else 10)
    top = Path(tempfile.mkdtemp(prefix="lw-bench-tui-"))
    try:
        t = time.perf_counter()
        project, run_ids = make_project(top, args.agents)
        print(f"store: {args.agents} runs with worktrees, checkpoints and {EVENTS_PER_RUN} events each "
              f"(built in {time.perf_counter() - t:.0f} s; {os.cpu_count()} cores)")
        proc, stop, written = start_writer(project, run_ids, args.rate)
        t0 = time.perf_counter()
        try:
            r = asyncio.run(measure(project, proc.pid, args.agents, 1.5, seconds))
        finally:
            stop.set()
            proc.join(30)
        written_rate = written.value / (time.perf_counter() - t0)
        print(f"TUI under load: {args.agents} runs x {args.rate:g} events/s ({r['wall']:.1f} s window; the writer "
              f"managed {written_rate:,.0f} events/s)")
        print(f"  frames rendered   {r['fps']:6.1f} /s     goal >= 10")
        print(f"  CPU of the TUI    {100 * r['cpu']:6.1f} % of a core   goal <= 25")
        print(f"  lag write->screen {1000 * r['lag_p50']:6.0f} ms p50, {1000 * r['lag_p95']:.0f} ms p95, "
              f"{1000 * r['lag_max']:.0f} ms max   goal <= 300")
        print(f"  feed polls        {r['polls']:6.1f} /s, {r['poll_ms']:.1f} ms each; {r['row_updates']:,.0f} row "
              f"updates/s; {r['rows']} rows")
        busy = run_ids[-args.busy:]  # the newest: the rows at the top, the runs opened
        proc, stop, written = start_writer(project, busy, args.rate)
        try:
            k = asyncio.run(measure_keys(project, proc.pid, presses))
        finally:
            stop.set()
            proc.join(30)
        print(f"Key to screen: {args.agents} runs, {len(busy)} of them writing {args.rate:g} events/s each, "
              f"{presses} rounds; goal <= 300 ms median, <= 1000 ms worst")
        print("  (CPU: what this process spent from the key to that frame, all threads; less sensitive to a "
              f"loaded machine than the wall time; load average {os.getloadavg()[0]:.1f})")
        for view, ts in k["times"].items():
            med, worst, cpus = statistics.median(ts), max(ts), k["key_cpu"][view]
            print(f"  {view:20s} {1000 * med:6.0f} ms median {1000 * worst:6.0f} ms worst  CPU "
                  f"{1000 * statistics.median(cpus):4.0f} ms median {1000 * max(cpus):4.0f} ms worst  "
                  f"({len(ts)} presses; median/goal {med / 0.3:.2f}, worst/goal {worst:.2f})")
        print(f"  CPU of the TUI    {100 * k['cpu']:6.1f} % of a core while keys were pressed")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
