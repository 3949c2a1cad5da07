"""The ray backend, measured in one run: its overhead per model call against the local backend, and the fleet's
throughput with two worker nodes against one.

1. Overhead per model call. One run of N turns (each turn a `scratchpad` read: no file changes, no model
   latency: the scripted model) through the local backend's Runner and through the ray backend's (a local
   cluster of one node, the head actor on it, the run in its own actor). Per call = (T(N2) - T(N1)) / (N2 - N1):
   the fixed costs (the worker's clone, the actor's start, the merge) cancel out, what is left is the loop's own
   work per call plus, for ray, the round trip to the head that applies the batch, takes the commands and
   grants the next call. Ratio ray / local, and the difference in ms.
2. Throughput. 8 agents x 10 turns against the loopback server at 1 s per call (the real Anthropic SDK over
   HTTP, the same ten-turn script as bench/fleet.py, from bench/fleet_rig.py), `loopwright serve --backend ray
   --address` as its own process on a head node with no CPUs, the runs on 1 or 2 worker nodes of 4 CPUs each (a
   run holds one CPU: 4 runs at a time per node). Turns per second from the first run's start to the last run's
   end; ideal ratio 2 (8 runs in one wave instead of two).

No assertions: it prints what it measured.

    python -m loopwright.bench.ray [--quick] [--turns 20 220] [--agents 8]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loopwright.bench.fleet_rig import API_KEY, TERMINAL, TURNS, Loopback, bench_env, git, make_project, post


def scripted_repo(top: Path, turn_counts: tuple[int, ...]) -> tuple[Path, dict[int, Path]]:
    """A repository, and a script of n turns for each n: n - 1 scratchpad reads, then finish."""
    repo = top / "overhead"
    repo.mkdir(parents=True)
    (repo / "README.md").write_text("bench\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "bench")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init")
    scripts = {}
    for n in turn_counts:
        body = [{"text": "", "tool_calls": [{"name": "scratchpad", "arguments": {"action": "read"}}]}
                for _ in range(n - 1)]
        scripts[n] = top / f"script-{n}.json"
        scripts[n].write_text(json.dumps({"turns": body + [{"text": "", "tool_calls": [
            {"name": "finish", "arguments": {"summary": "done"}}]}]}))
    return repo, scripts


def overhead(top: Path, turn_counts: tuple[int, int], repeats: int) -> dict[str, dict[int, list[float]]]:
    """Seconds per run of each length, local and ray, `repeats` times each (one project, one local cluster)."""
    from loopwright.runtime.backends.ray import RayBackend
    from loopwright.runtime.project import open_project
    from loopwright.runtime.runner import Runner, model_options

    repo, scripts = scripted_repo(top, turn_counts)
    overrides = {"provider": "scripted", "script": str(scripts[turn_counts[0]]), "memory.recall": False,
                 "memory.reflect": False, "budget.max_turns": 100_000, "ray.cache_dir": str(top / "node-cache")}
    project = open_project(repo, create=True, overrides=overrides)
    backend = RayBackend(project, say=lambda s: None)
    backend.start()
    results: dict[str, dict[int, list[float]]] = {"local": {}, "ray": {}}
    try:
        for _ in range(repeats):
            for n in turn_counts:
                for kind in ("local", "ray"):
                    options = model_options(project.config) | {"script": str(scripts[n])}
                    task = project.store.create_task("bench", check="true", options=options, status="running")

                    async def one() -> float:
                        runner = Runner(project) if kind == "local" else backend.runner(asyncio.Event())
                        t0 = time.perf_counter()
                        result = await runner.run_task(task)
                        took = time.perf_counter() - t0
                        assert result.run.status == "succeeded", (kind, result.run.reason)
                        assert result.run.model_calls == n, (kind, result.run.model_calls)
                        return took

                    results[kind].setdefault(n, []).append(asyncio.run(one()))
    finally:
        backend.stop()
    return results


def throughput(top: Path, nodes: int, agents: int, loopback: Loopback) -> dict:
    """8 agents x 10 turns on `nodes` worker nodes; wall from the first run's start to the last run's end."""
    from ray.cluster_utils import Cluster

    from loopwright.memory.store import Store

    os.environ["ANTHROPIC_API_KEY"] = API_KEY  # the workers' environment: the cluster's processes start from ours
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    daemon = None
    try:
        for _ in range(nodes):
            cluster.add_node(num_cpus=4)
        repo = make_project(top, f"throughput-{nodes}", loopback.base_url, agents)
        config = repo / ".loopwright" / "config.toml"
        config.write_text(f'backend = "ray"\n{config.read_text()}\n[ray]\ncache_dir = "{top / f"cache-{nodes}"}"\n')
        post(repo, agents)
        log = top / f"daemon-{nodes}.log"
        with log.open("w") as out:
            daemon = subprocess.Popen([sys.executable, "-m", "loopwright.cli.main", "serve", "--address",
                                       cluster.address, "--max-parallel", str(agents)], cwd=repo, stdout=out,
                                      stderr=subprocess.STDOUT, env=bench_env())
        store = Store(repo / ".loopwright" / "state.db")
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            tasks = store.tasks()
            if tasks and all(t.status in TERMINAL for t in tasks):
                break
            if daemon.poll() is not None:
                raise RuntimeError(f"the daemon exited: {log.read_text()[-3000:]}")
            time.sleep(0.2)
        else:
            raise RuntimeError(f"not done in 600 s: {[(t.id, t.status) for t in store.tasks()]}")
        runs = store.runs()
        bad = [(r.id, r.status, r.reason) for r in runs if r.status != "succeeded"]
        if bad:
            raise RuntimeError(f"runs did not succeed: {bad}")
        first = min(r.started_at for r in runs)
        last = max(r.ended_at or 0 for r in runs)
        turns = sum(r.model_calls for r in runs)
        # a run's start on the cluster: from its row (the head) to its first model call (the worker's process
        # started, the project cloned or fetched, the worktree checked out)
        starts = [store.events(r.id, types=("model_called",))[0][1] - r.started_at for r in runs]
        return {"nodes": nodes, "agents": agents, "turns": turns, "wall_s": last - first,
                "turns_per_s": turns / (last - first), "ideal_wall_s": TURNS * -(-agents // (4 * nodes)),
                "start_s": statistics.median(starts)}
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.terminate()
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer turns and repeats")
    ap.add_argument("--turns", type=int, nargs=2, metavar=("N1", "N2"), help="run lengths for the overhead")
    ap.add_argument("--agents", type=int, default=8)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print("the ray bench needs Ray: pip install 'loopwright[ray]'", file=sys.stderr)
        return 2
    turn_counts = tuple(args.turns or ((10, 60) if args.quick else (20, 220)))
    repeats = 1 if args.quick else 3
    top = Path(tempfile.mkdtemp(prefix="lw-bench-ray-"))
    try:
        print(f"== 1. overhead per model call: runs of {turn_counts[0]} and {turn_counts[1]} turns, scripted model, "
              f"best of {repeats}")
        with contextlib.redirect_stderr(io.StringIO()):
            res = overhead(top, turn_counts, repeats)  # type: ignore[arg-type]
        n1, n2 = turn_counts
        per = {}
        for kind in ("local", "ray"):
            t1, t2 = min(res[kind][n1]), min(res[kind][n2])
            per[kind] = (t2 - t1) / (n2 - n1)
            print(f"  {kind:5}  {n1} turns {t1:6.2f}s  {n2} turns {t2:6.2f}s  per call {per[kind] * 1000:6.2f} ms  "
                  f"(spread of {n2}: {statistics.pstdev(res[kind][n2]) * 1000:.0f} ms)")
        print(f"  ray / local per model call: {per['ray'] / per['local']:.2f}x "
              f"(+{(per['ray'] - per['local']) * 1000:.2f} ms a call)")

        print(f"== 2. throughput: {args.agents} agents x {TURNS} turns, loopback at 1 s a call, 4 CPUs a node")
        loopback = Loopback(top, 1.0)
        try:
            one = throughput(top, 1, args.agents, loopback)
            two = throughput(top, 2, args.agents, loopback)
        finally:
            loopback.stop()
        for r in (one, two):
            print(f"  {r['nodes']} node(s): {r['turns']} turns in {r['wall_s']:.1f}s = {r['turns_per_s']:.2f} turns/s "
                  f"(ideal wall {r['ideal_wall_s']:.0f}s; a run's start on the cluster, median: {r['start_s']:.1f}s)")
        print(f"  2 nodes / 1 node throughput: {two['turns_per_s'] / one['turns_per_s']:.2f}x (ideal 2)")
    finally:
        if args.keep:
            print(f"kept {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
