"""The fleet: parallel scaling, memory per idle agent and crash recovery of `loopwright serve`, measured in one run.

Every figure goes through the product's own path: a temporary git repository, `loopwright init`, a config
with provider "anthropic" (the real SDK over HTTP, a fake key from ANTHROPIC_API_KEY) whose base_url points
at the loopback server running as its own process (`python -m loopwright.harness.loopback --per-conversation
--latency S --log-requests F`: it does not share the daemon's GIL, as a remote provider would not), tasks
posted with check `true` (runtime.posting, what `loopwright post` does), and `loopwright serve --max-parallel
N` as a subprocess (that rig is bench/fleet_rig.py, shared with bench/ray.py). Timings come from the store
(events, runs) and the loopback's request log.

1. Parallel scaling: N agents x 10 turns, 1 s per model call. The ideal: all N finish in 10 x 1 s, so
   throughput / ideal = 10 s / wall. Goal >= 0.9 at 64 and at 128 agents. Beside it, in the same run, the floor:
   N bare SDK loops in one process against the same loopback, calling the model as loopwright does and doing
   nothing else (bench/fleet_floor.py): what this machine and the SDK allow.
2. Memory: the daemon's VmRSS idle and with N agents waiting on a model call (latency 60 s); per agent =
   delta / N. Goal <= 5 MB.
3. Recovery: kill -9 the daemon while 32 runs are active, start it again, time until every run's next model
   request reached the server. Goal <= 3 s.

No assertions on timings: it prints what it measured, with the goals beside it.

    python -m loopwright.bench.fleet [--quick] [--agents 1 8 32 64 128] [--rss-agents 64] [--recovery-agents 32]
                                     [--profile DIR] [--keep]

`--profile DIR` runs the daemon of the largest scaling step under cProfile (DIR/daemon-N.prof) and the RSS
daemon under tracemalloc (top allocation sites per agent are printed). It slows the daemon: its figures are
then for finding where time and memory go, not for the headline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from loopwright.bench.fleet_rig import (
    SCRIPT_SAYS,
    TURNS,
    Daemon,
    Loopback,
    all_done,
    bench_env,
    cpu_seconds,
    daemon_processes,
    fleet_cpu,
    fleet_cpu_since,
    fleet_rss_mb,
    machine_busy,
    make_project,
    open_store,
    post,
    proc_status,
    task_counts,
    wait_for,
)

LATENCY = 1.0
IDLE_LATENCY = 60.0
TASK_HEAD = re.compile(r"# Task (\d+):")


# -- 1. parallel scaling ----------------------------------------------------------------------------


@dataclass
class RunTimes:
    started: float            # run_started event (after its worktree exists)
    first_call: float         # its first model request went out (model_called ts - duration)
    ended: float
    calls: list[tuple[float, float]] = field(default_factory=list)  # (request start, response recorded)
    tools_s: float = 0.0
    status: str = ""


def run_times(store) -> list[RunTimes]:
    out = []
    for run in store.runs():
        rt = RunTimes(started=run.started_at, first_call=0.0, ended=run.ended_at or 0.0, status=run.status)
        for _, ts, e in store.events(run.id, types=("run_started", "model_called", "tool_finished")):
            if e.type == "run_started":
                rt.started = ts
            elif e.type == "model_called":
                rt.calls.append((ts - e.duration_ms / 1000, ts))
            else:
                rt.tools_s += e.duration_ms / 1000
        rt.first_call = rt.calls[0][0] if rt.calls else rt.ended
        out.append(rt)
    return out


def sdk_floor(top: Path, n: int) -> dict:
    """bench/fleet_floor.py with `n` agents against a loopback of its own (its figures: wall, ratio, call_mean,
    cpu_ms)."""
    work = top / f"floor-{n}"
    work.mkdir()
    lb = Loopback(work, LATENCY)
    try:
        done = subprocess.run([sys.executable, "-m", "loopwright.bench.fleet_floor", "--base-url", lb.base_url,
                               "--agents", str(n), "--turns", str(TURNS), "--latency", str(LATENCY)],
                              capture_output=True, text=True, env=bench_env(), timeout=120 + 3 * n)
    finally:
        lb.stop()
    if done.returncode != 0:
        raise RuntimeError(f"the SDK floor failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def scaling(top: Path, n: int, profile: Path | None, workers: int | None = None) -> dict:
    work = top / f"scale-{n}-{workers or 'default'}"
    work.mkdir()
    lb = Loopback(work, LATENCY)
    daemon = None
    try:
        repo = make_project(work, "repo", lb.base_url, n, workers)
        post(repo, n)
        wrapper = ["-m", "cProfile", "-o", str(profile / f"daemon-{n}.prof"), "-m", "loopwright.cli.main"] \
            if profile else None
        daemon = Daemon(repo, work / "daemon.log", n, wrapper=wrapper)
        cpu0, lb_cpu0 = fleet_cpu(daemon.pid), cpu_seconds(lb.proc.pid)
        busy0, _ = machine_busy()
        store = open_store(repo)
        wait_for(lambda: all_done(store, n), f"{n} tasks to finish", timeout=120 + 3 * n, every=0.1)
        cpu, kids, procs = fleet_cpu_since(daemon.pid, cpu0)
        lb_cpu = cpu_seconds(lb.proc.pid) - lb_cpu0
        busy = machine_busy()[0] - busy0
        daemon.stop()
        runs = run_times(store)
        counts = task_counts(store)
        store.close()
    finally:
        if daemon is not None:
            daemon.stop()
        lb.stop()
    t0 = daemon.ready
    first_start, last_end = min(r.started for r in runs), max(r.ended for r in runs)
    wall = last_end - first_start
    calls = sum(len(r.calls) for r in runs)
    ideal = TURNS * LATENCY
    loops = [r.ended - r.first_call for r in runs]
    durations = [end - start for r in runs for start, end in r.calls]
    gaps = [r.calls[i + 1][0] - r.calls[i][1] for r in runs for i in range(len(r.calls) - 1)]
    finish = [r.ended - r.calls[-1][1] for r in runs if r.calls]
    return {
        "n": n, "succeeded": counts.get("succeeded", 0), "calls": calls, "procs": procs,
        "wall": wall, "wall_from_ready": last_end - t0,
        # achieved turns per second over the ideal N turns per LATENCY seconds
        "ratio": (calls / wall) / (n / LATENCY) if wall > 0 else 0.0,
        "to_start": [r.started - t0 for r in runs], "to_call": [r.first_call - t0 for r in runs],
        "loop_mean": statistics.mean(loops), "loop_max": max(loops),
        "loop_ratio": ideal / statistics.mean(loops),
        "call_mean": statistics.mean(durations), "call_max": max(durations),
        "gap_mean": statistics.mean(gaps) if gaps else 0.0, "gap_max": max(gaps) if gaps else 0.0,
        "finish_mean": statistics.mean(finish), "finish_max": max(finish),
        "cpu": cpu / (last_end - t0), "lb_cpu": lb_cpu / (last_end - t0), "kids": kids / (last_end - t0),
        "cpu_ms": 1000 * cpu / calls, "kids_ms": 1000 * kids / calls,
        "busy": busy / (last_end - t0) / (os.cpu_count() or 1),
    }


def print_scaling(rows: list[dict]) -> None:
    print(f"\n1. Parallel scaling: N agents x {TURNS} turns, {LATENCY:g} s per model call "
          "(loopback in its own process)")
    print(f"   each agent's turns: {SCRIPT_SAYS}")
    print("   wall = first run start (run_started event) -> last run end (runs.ended_at); ideal = "
          f"{TURNS} x {LATENCY:g} s = {TURNS * LATENCY:g} s")
    print("   e2e ratio = achieved turns/s / ideal turns/s = ideal / wall (the headline); loop ratio = ideal / mean "
          "per-run loop time,\n   a run's loop = its first model request -> its end (leaves out worktree setup and "
          "the wait for it); e2e vs N=1 = e2e ratio / the\n   one-agent run's, which pays the same fixed costs per "
          "run and per call;\n   procs = the daemon's processes (itself and its workers: `workers`, --workers)")
    print(f"\n   {'N':>4} {'procs':>5} {'ok':>4} {'turns':>6} {'wall s':>7} {'e2e ratio':>10} {'e2e vs N=1':>10} "
          f"{'loop s mean/max':>16} {'loop ratio':>10} {'SDK floor':>10}")
    base = next((r for r in rows if r["n"] == 1), None)
    for r in rows:
        vs1 = f"{r['ratio'] / base['ratio']:>10.2f}" if base else f"{'-':>10}"
        print(f"   {r['n']:>4} {r['procs']:>5} {r['succeeded']:>4} {r['calls']:>6} {r['wall']:>7.2f} "
              f"{r['ratio']:>10.2f} {vs1} "
              f"{r['loop_mean']:>7.2f}/{r['loop_max']:<8.2f} {r['loop_ratio']:>10.2f} {r['floor']['ratio']:>10.2f}")
    print("   SDK floor: the e2e ratio of N bare SDK loops (bench/fleet_floor.py), same loopback, same call; their "
          "model call mean / CPU per turn:\n   " + "; ".join(
              f"N={n} {f['call_mean']:.3f} s / {f['cpu_ms']:.1f} ms" for n, f in
              sorted({r['n']: r['floor'] for r in rows}.items())))
    print("\n   where the time goes, per run, in seconds (mean / max over the runs); t0 = the daemon took its lock "
          "and began scheduling")
    print(f"   {'N':>4} {'procs':>5} {'t0 -> run start':>16} {'t0 -> 1st request':>18} {'model call (ideal 1)':>21} "
          f"{'between calls':>14} {'last call -> end':>17}")
    for r in rows:
        print(f"   {r['n']:>4} {r['procs']:>5} {statistics.mean(r['to_start']):>7.2f} / {max(r['to_start']):<6.2f} "
              f"{statistics.mean(r['to_call']):>8.2f} / {max(r['to_call']):<7.2f} "
              f"{r['call_mean']:>10.3f} / {r['call_max']:<8.3f} {r['gap_mean']:>6.3f} / {r['gap_max']:<5.2f} "
              f"{r['finish_mean']:>8.3f} / {r['finish_max']:<6.2f}")
    print("   t0 -> run start: the run's setup (SDK client, `git worktree add` under the git lock) and the wait for "
          "the other\n   runs' setup; run start -> 1st request: building the loop; model call: request sent -> answer "
          "recorded (over 1 s:\n   the daemon was too busy to send or read it); between calls: tools, checkpoints, "
          "events; last call -> end:\n   finish, check `true`, squash-merge under the git lock")
    print("\n   CPU over t0 -> last run end, in cores (1.00 = one core busy the whole time; this machine has "
          f"{os.cpu_count()})")
    print("   and the daemon's CPU per turn in ms, which other load on the machine changes little (where the figures "
          "above\n   depend on the share of the cores the daemon gets); daemon = its processes together (`workers`: "
          "the daemon\n   and the worker processes it starts, their start included)")
    print(f"   {'N':>4} {'procs':>5} {'daemon':>7} {'its children (git, shells)':>27} {'loopback':>9} "
          f"{'whole machine':>14} {'daemon ms/turn':>15} {'children ms/turn':>17}")
    for r in rows:
        print(f"   {r['n']:>4} {r['procs']:>5} {r['cpu']:>7.2f} {r['kids']:>27.2f} {r['lb_cpu']:>9.2f} "
              f"{r['busy'] * (os.cpu_count() or 1):>14.2f} {r['cpu_ms']:>15.1f} {r['kids_ms']:>17.1f}")


# -- 2. memory per idle agent -----------------------------------------------------------------------

TRACEMALLOC_WRAPPER = """
import os, signal, sys, tracemalloc
tracemalloc.start(12)
snap = sys.argv.pop(1)
count = [0]
def dump(*_):
    count[0] += 1
    tracemalloc.take_snapshot().dump(f"{snap}.tmp")
    os.replace(f"{snap}.tmp", f"{snap}.{count[0]}")
signal.signal(signal.SIGUSR1, dump)
from loopwright.cli.main import main
sys.argv[0] = "loopwright"
raise SystemExit(main())
"""


def memory(top: Path, n: int, profile: Path | None, settle: float = 2.0) -> dict:
    work = top / f"rss-{n}"
    work.mkdir()
    lb = Loopback(work, IDLE_LATENCY)
    daemon = None
    snap = work / "tracemalloc.snap"
    try:
        repo = make_project(work, "repo", lb.base_url, n)
        wrapper = ["-c", TRACEMALLOC_WRAPPER, str(snap)] if profile else None
        daemon = Daemon(repo, work / "daemon.log", n, wrapper=wrapper)
        time.sleep(settle)  # let it settle: a few scheduling polls, the inbox watcher started
        idle = fleet_rss_mb(daemon.pid)
        threads_idle = int(proc_status(daemon.pid)["Threads"])

        def waiting(k: int) -> bool:
            return len({r["head"] for r in lb.requests()}) >= k

        post(repo, 1)
        wait_for(lambda: waiting(1), "the first agent's model call", timeout=60)
        time.sleep(settle / 2)
        one = fleet_rss_mb(daemon.pid)
        if profile:
            daemon.proc.send_signal(signal.SIGUSR1)
            wait_for(lambda: Path(f"{snap}.1").exists(), "the first tracemalloc snapshot", timeout=120, every=0.2)
        post(repo, n - 1, first=1)
        wait_for(lambda: waiting(n), f"{n} agents waiting on a model call", timeout=60 + 2 * n)
        time.sleep(settle)
        full = fleet_rss_mb(daemon.pid)
        procs = len(daemon_processes(daemon.pid))
        status = proc_status(daemon.pid)
        store = open_store(repo)
        active = sum(1 for r in store.runs() if r.status == "running" and r.model_calls == 0)
        store.close()
        if profile:
            daemon.proc.send_signal(signal.SIGUSR1)
            wait_for(lambda: Path(f"{snap}.2").exists(), "the second tracemalloc snapshot", timeout=120, every=0.2)
    finally:
        if daemon is not None:
            daemon.kill()
        lb.stop()
    out = {"n": n, "procs": procs, "idle": idle, "one": one, "full": full, "active": active,
           "threads_idle": threads_idle,
           "threads": int(status["Threads"]), "per_agent": (full - idle) / n,
           "marginal": (full - one) / (n - 1) if n > 1 else full - idle, "tracemalloc": None}
    if profile and Path(f"{snap}.2").exists():
        out["tracemalloc"] = tracemalloc_report(Path(f"{snap}.1"), Path(f"{snap}.2"), n - 1)
    return out


def tracemalloc_report(before: Path, after: Path, agents: int) -> list[str]:
    import tracemalloc

    a, b = tracemalloc.Snapshot.load(str(before)), tracemalloc.Snapshot.load(str(after))
    lines = []
    total = sum(s.size_diff for s in b.compare_to(a, "filename"))
    lines.append(f"Python heap (tracemalloc) grew {total / 2**20:.1f} MB for {agents} more agents = "
                 f"{total / agents / 1024:.0f} KB per agent; top sites by file:")
    for s in b.compare_to(a, "filename")[:12]:
        name = s.traceback[0].filename
        name = name.split("site-packages/")[-1] if "site-packages/" in name else name.split("/work/main/")[-1]
        lines.append(f"  {s.size_diff / agents / 1024:8.1f} KB/agent  {s.count_diff / agents:7.0f} blocks/agent  "
                     f"{name}")
    return lines


def print_memory(m: dict) -> None:
    print(f"\n2. Memory: VmRSS of the daemon's processes together ({m['procs']}: itself and its workers) with agents "
          f"waiting on a {IDLE_LATENCY:g} s model call (their first)")
    print(f"   idle (0 agents): {m['idle']:.1f} MB, the daemon {m['threads_idle']} threads; "
          f"1 agent: {m['one']:.1f} MB; "
          f"{m['n']} agents: {m['full']:.1f} MB, the daemon {m['threads']} threads ({m['active']} runs waiting)")
    print(f"   per agent = (RSS with {m['n']} - idle) / {m['n']} = {m['per_agent']:.2f} MB   "
          f"(marginal, (RSS {m['n']} - RSS 1) / {m['n'] - 1}: {m['marginal']:.2f} MB; the first agent also pays "
          f"one-time imports and pools: {m['one'] - m['idle']:.1f} MB)")
    if m["tracemalloc"]:
        print("   (tracemalloc was on: its bookkeeping inflates the RSS figures above; the heap growth below is not)")
    for line in m["tracemalloc"] or []:
        print("   " + line)


# -- 3. recovery ------------------------------------------------------------------------------------


def import_times(breakdown: bool) -> dict[str, float]:
    """Seconds a fresh interpreter takes to import the CLI (what a restart pays before anything else), and with
    `breakdown` the cumulative import time of its biggest top-level packages (`python -X importtime`, slower)."""
    argv = [sys.executable, "-c", "import loopwright.cli.main"]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, env=bench_env())
    out = {"(wall)": time.perf_counter() - t0}
    if breakdown:
        err = subprocess.run(argv[:1] + ["-X", "importtime"] + argv[1:], capture_output=True, text=True,
                             env=bench_env(), check=True).stderr
        for line in err.splitlines():
            parts = line.split("|")
            if len(parts) == 3 and parts[1].strip().isdigit() and "." not in parts[2].strip():
                name = parts[2].strip()  # a top-level package: its line holds its cumulative time
                out[name] = max(out.get(name, 0.0), int(parts[1]) / 1e6)
    return out


def recovery(top: Path, n: int, finish: bool, profile: Path | None = None, breakdown: bool = True) -> dict:
    work = top / f"recovery-{n}"
    work.mkdir()
    lb = Loopback(work, LATENCY)
    daemon = again = None
    try:
        repo = make_project(work, "repo", lb.base_url, n)
        post(repo, n)
        daemon = Daemon(repo, work / "daemon.log", n)
        store = open_store(repo)

        def active(k: int) -> bool:
            runs = store.runs()
            return len(runs) == n and all(r.status == "running" and r.model_calls >= k for r in runs)
        wait_for(lambda: active(3), f"{n} runs with 3 model calls each", timeout=60 + n)
        time.sleep(0.3)  # mid-turn: some runs in a tool or a checkpoint, most waiting on the model
        killed = daemon.kill()
        restarted = time.time()
        wrapper = ["-m", "cProfile", "-o", str(profile / "recovery.prof"), "-m", "loopwright.cli.main"] \
            if profile else None
        again = Daemon(repo, work / "daemon.log", n, wrapper=wrapper)
        tasks = {t.id for t in store.tasks()}
        first_after: dict[int, float] = {}

        def all_called() -> bool:
            for r in lb.requests():
                m = TASK_HEAD.match(r["head"])
                if m and r["at"] >= restarted and int(m[1]) not in first_after:
                    first_after[int(m[1])] = r["at"]
            return set(first_after) >= tasks
        wait_for(all_called, f"all {n} runs to call the model again", timeout=60 + n, every=0.02)
        done = None
        if finish:
            wait_for(lambda: all_done(store, n), f"{n} recovered tasks to finish", timeout=120 + 2 * n, every=0.2)
            done = task_counts(store).get("succeeded", 0)
            calls = [r.model_calls for r in store.runs()]
        store.close()
    finally:
        for d in (daemon, again):
            if d is not None:
                d.stop()
        lb.stop()
    times = sorted(first_after.values())
    return {"n": n, "killed": killed, "restarted": restarted, "ready": again.ready - restarted,
            "last": times[-1] - restarted, "median": statistics.median(times) - restarted,
            "first": times[0] - restarted, "from_kill": times[-1] - killed, "after_ready": times[-1] - again.ready,
            "succeeded": done, "calls": (min(calls), max(calls)) if finish else None,
            "imports": import_times(breakdown) if breakdown else None}


def print_recovery(r: dict) -> None:
    print(f"\n3. Recovery: kill -9 the daemon with {r['n']} runs active (each 3+ turns in), start `loopwright serve` "
          f"again;\n   time from the restart to each run's next model request reaching the loopback (its request log)")
    print(f"   restart -> daemon holds its lock (process start, imports): {r['ready']:.2f} s")
    print(f"   restart -> first / median / last run's request: {r['first']:.2f} / {r['median']:.2f} / "
          f"{r['last']:.2f} s   (lock -> last: {r['after_ready']:.2f} s; from the kill: {r['from_kill']:.2f} s)")
    imp = r["imports"] or {}
    big = sorted(((v, k) for k, v in imp.items() if not k.startswith("(")), reverse=True)[:4]
    if imp:
        print(f"   for scale: `python -c 'import loopwright.cli.main'` takes {imp['(wall)']:.2f} s here"
              + ("; cumulative import time of the biggest packages (-X importtime): " + ", ".join(
                  f"{k} {v:.2f} s" for v, k in big) if big else ""))
    if r["succeeded"] is not None:
        print(f"   afterwards {r['succeeded']}/{r['n']} tasks succeeded; model calls per run "
              f"{r['calls'][0]}..{r['calls'][1]} (a call cut by the kill is made again)")


# -- main -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 and 8 agents, 8 for memory and recovery (under a minute)")
    ap.add_argument("--agents", type=int, nargs="+", help="scaling steps (default 1 8 32 64 128)")
    ap.add_argument("--rss-agents", type=int, help="agents for the memory figure (default 64)")
    ap.add_argument("--recovery-agents", type=int, help="active runs at the kill (default 32)")
    ap.add_argument("--skip", nargs="+", choices=["scaling", "memory", "recovery"], default=[])
    ap.add_argument("--profile", metavar="DIR",
                    help="cProfile the largest scaling step's and the restarted daemon, tracemalloc the RSS one")
    ap.add_argument("--keep", action="store_true", help="keep the temporary repositories and logs")
    ap.add_argument("--workers", nargs="+", default=["default"], metavar="N|default",
                    help="scaling with the daemon's processes set to each (e.g. 1 default: one process against "
                         "what `workers` defaults to, in the same run); default: default")
    args = ap.parse_args(argv)
    try:
        settings = [None if w == "default" else int(w) for w in args.workers]
    except ValueError:
        ap.error(f"--workers takes numbers or 'default', not {' '.join(args.workers)}")
    agents = args.agents or ([1, 8] if args.quick else [1, 8, 32, 64, 128])
    rss_n = args.rss_agents or (8 if args.quick else 64)
    rec_n = args.recovery_agents or (8 if args.quick else 32)
    profile = Path(args.profile).absolute() if args.profile else None
    if profile:
        profile.mkdir(parents=True, exist_ok=True)
    top = Path(tempfile.mkdtemp(prefix="lw-bench-fleet-"))
    t_start = time.monotonic()
    print(f"fleet benchmark in {top} ({os.cpu_count()} cores; {'quick' if args.quick else 'full'} run)", flush=True)
    rows, mem, rec = [], None, None
    try:
        if "scaling" not in args.skip:
            for n in agents:
                print(f"  SDK floor: {n} agent(s) ...", flush=True)
                floor = sdk_floor(top, n)
                for workers in settings:
                    print(f"  scaling: {n} agent(s), workers {workers or 'default'} ...", flush=True)
                    rows.append(scaling(top, n, profile if profile and n == max(agents) else None, workers))
                    rows[-1]["floor"] = floor
            print_scaling(rows)
        if "memory" not in args.skip:
            print(f"  memory: {rss_n} agents waiting ...", flush=True)
            mem = memory(top, rss_n, profile, settle=1.0 if args.quick else 2.0)
            print_memory(mem)
        if "recovery" not in args.skip:
            print(f"  recovery: {rec_n} runs, kill -9 ...", flush=True)
            rec = recovery(top, rec_n, finish=not args.quick, profile=profile, breakdown=not args.quick)
            print_recovery(rec)
    finally:
        if args.keep:
            print(f"\nkept: {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    print(f"\nsummary ({time.monotonic() - t_start:.0f} s in all)")
    for r in rows:
        if r["n"] in (64, 128) or r["n"] == max(agents):
            print(f"  parallel scaling at {r['n']:>3} agents, {r['procs']} process(es): e2e ratio {r['ratio']:.2f} "
                  f"(goal >= 0.9; the bare SDK's floor {r['floor']['ratio']:.2f}); "
                  f"loop-phase ratio {r['loop_ratio']:.2f}; CPU per turn {r['cpu_ms']:.1f} ms daemon + "
                  f"{r['kids_ms']:.1f} ms its children; the machine was {r['busy']:.0%} busy")
    if mem:
        print(f"  memory per idle agent ({mem['n']} waiting): {mem['per_agent']:.2f} MB (goal <= 5 MB); "
              f"marginal {mem['marginal']:.2f} MB")
    if rec:
        print(f"  recovery of {rec['n']} runs after kill -9: {rec['last']:.2f} s from the restart to the last run's "
              f"request (goal <= 3 s)")
    if profile:
        profs = sorted(p.name for p in profile.glob("*.prof"))
        print(f"  cProfile output in {profile}: {', '.join(profs) or 'none'} (read with `python -m pstats FILE`); "
              f"figures measured under a profiler are slower than the product")


if __name__ == "__main__":
    main()
