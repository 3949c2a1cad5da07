"""The TUI under load: 100 simulated agents writing 10 events a second each, watched by the fleet view.

A writer process appends ToolStarted / ToolFinished / ModelCalled events and
updates the runs rows through the Store API (as runs do), round-robin over the
agents at the asked rate. The TUI runs headless in this process (App.run_test,
a screen large enough to show every row) and is measured over a window after a
warm-up: frames per second (screen updates actually rendered), CPU share of
one core (process_time over wall time), and lag from an event's write (its
`ts`) to the frame that shows the row it changed (the oldest such event of the
row's update). Goals: >= 10 fps, <= 25% of a core, lag <= 300 ms. Prints the
figures, asserts nothing.

    python -m loopwright.bench.tui [--quick] [--agents 100] [--rate 10] [--seconds 10]
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

from loopwright.harness.events import ModelCalled, ToolFinished, ToolStarted
from loopwright.harness.messages import Usage
from loopwright.memory.store import Store
from loopwright.runtime.project import init_project, open_project
from loopwright.tui.app import TuiApp
from loopwright.tui.feed import Feed


def make_project(top: Path, agents: int):
    root = top / "repo"
    root.mkdir(parents=True)
    (root / "README").write_text("bench\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"],
                 ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid", "commit", "-qm", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    init_project(root)
    project = open_project(root)
    store = project.store
    run_ids = []
    for i in range(agents):
        task = store.create_task(f"agent {i}: make the widget factory faster, part {i}")
        run = store.create_run(task.id, provider="scripted", model="bench", worktree=str(root / f"wt{i}"),
                               branch=f"lw/bench{i:04d}", base_commit="0" * 40, target_branch="main",
                               run_id=f"bench{i:03d}")
        run_ids.append(run.id)
    return project, run_ids


def writer(db: str, run_ids: list[str], rate: float, ready, stop, written) -> None:
    """Round-robin over the agents: tool started, tool finished (+ step saved), model called; `rate` events/s each."""
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


class BenchApp(TuiApp):
    """The TUI, counting the frames it renders and how old the events are that each frame shows."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.frames = 0
        self.row_updates = 0
        self.lags: list[float] = []
        self.pending: dict[str, float] = {}
        self.poll_ms: list[float] = []
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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 4 s window instead of 10 s")
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--rate", type=float, default=10.0, help="events per second per agent")
    ap.add_argument("--seconds", type=float, help="measured window (default 10, or 4 with --quick)")
    args = ap.parse_args(argv)
    seconds = args.seconds or (4.0 if args.quick else 10.0)
    top = Path(tempfile.mkdtemp(prefix="lw-bench-tui-"))
    try:
        project, run_ids = make_project(top, args.agents)
        ctx = mp.get_context("spawn")
        ready, stop, written = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
        proc = ctx.Process(target=writer, args=(str(project.db_path), run_ids, args.rate, ready, stop, written))
        proc.start()
        ready.wait(30)
        t0 = time.perf_counter()
        try:
            r = asyncio.run(measure(project, proc.pid, args.agents, 1.5, seconds))
        finally:
            stop.set()
            proc.join(30)
        written_rate = written.value / (time.perf_counter() - t0)
        print(f"TUI under load: {args.agents} agents x {args.rate:g} events/s ({os.cpu_count()} cores; "
              f"{r['wall']:.1f} s window; the writer managed {written_rate:,.0f} events/s)")
        print(f"  frames rendered   {r['fps']:6.1f} /s     goal >= 10")
        print(f"  CPU of the TUI    {100 * r['cpu']:6.1f} % of a core   goal <= 25")
        print(f"  lag write->screen {1000 * r['lag_p50']:6.0f} ms p50, {1000 * r['lag_p95']:.0f} ms p95, "
              f"{1000 * r['lag_max']:.0f} ms max   goal <= 300")
        print(f"  feed polls        {r['polls']:6.1f} /s, {r['poll_ms']:.1f} ms each; {r['row_updates']:,.0f} row "
              f"updates/s; {r['rows']} rows")
    finally:
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
