"""The ray backend: the fleet's runs on a Ray cluster (several nodes made on this machine), the store on the head.

Every test but the first needs Ray (`pip install 'loopwright[ray]'`) and is marked slow. The daemon runs as its
own process (`loopwright serve --backend ray`), as a person would run it; the cluster is made by the test with
Ray's cluster utilities (a head node without CPUs, so runs land on the worker nodes only), or started by the
daemon itself when no address is given.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import CHECK, call, git, processes, turn, until, write_script
from test_agents_command import FAKE
from test_daemon import wait_until_done as daemon_wait_until_done

from loopwright.memory.store import Store

slow = pytest.mark.slow


@pytest.fixture
def ray_mod():
    return pytest.importorskip("ray")


@pytest.fixture
def cluster(ray_mod, monkeypatch):
    """A head node without CPUs (the daemon's, keeping the store) and two worker nodes with 4 CPUs each."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    c.workers = [c.add_node(num_cpus=4) for _ in range(2)]
    yield c
    c.shutdown()


@pytest.fixture
def remote(tmp_path) -> Path:
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(bare))
    return bare


def configure(repo: Path, tmp_path: Path, remote: Path | None, extra: str = "") -> None:
    lines = ['backend = "ray"', extra, "[ray]", f'cache_dir = "{tmp_path / "node-cache"}"']
    if remote is not None:
        lines.append(f'remote = "{remote}"')
    (repo / "loopwright.toml").write_text("\n".join(lines) + "\n")


class RayDaemon:
    """`loopwright serve --backend ray` as its own process (kill -9 must be possible)."""

    def __init__(self, repo: Path, log: Path, *args: str):
        self.repo, self.log = repo, log
        with log.open("a") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "loopwright.cli.main", "serve", "--backend", "ray",
                                          *args], cwd=repo, stdout=out, stderr=out)

    def wait_serving(self, timeout: float = 90) -> None:
        until(lambda: "ray backend:" in self.log.read_text() or self.proc.poll() is not None, "the ray backend",
              timeout)
        assert self.proc.poll() is None, self.log.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 90) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


@pytest.fixture
def ray_daemon(repo, tmp_path):
    started: list[RayDaemon] = []

    def start(*args: str, max_parallel: int = 8) -> RayDaemon:
        d = RayDaemon(repo, tmp_path / "daemon.log", "--max-parallel", str(max_parallel), *args)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.send_signal(signal.SIGTERM)
            try:
                d.proc.wait(60)
            except subprocess.TimeoutExpired:
                d.proc.kill()
                d.proc.wait()


def post(cli, repo: Path, tmp_path: Path, name: str, *extra: str, sleep: float = 0, steps: list | None = None) -> int:
    body = steps if steps is not None else [turn(call("write_file", path=f"{name}.txt", content=name))] + (
        [turn(call("shell", command=f"sleep {sleep}"))] if sleep else []) + [
        turn(call("write_file", path=f"{name}-2.txt", content=name)), turn(call("finish", summary=f"wrote {name}"))]
    script = write_script(tmp_path / f"{name}.json", body)
    return cli.json(repo, "post", f"write {name}", "--script", script, "--check", f"test -f {name}.txt",
                    *extra)["task"]


def wait_until_done(repo: Path, count: int, timeout: float = 180) -> Store:
    """test_daemon's, with more time: workers start and import the SDK on a loaded 2-core machine."""
    return daemon_wait_until_done(repo, count, timeout)


def placements(store: Store, run_id: str) -> list[tuple[str, int]]:
    """(node id prefix, worker pid) of each worker the run had, from its events."""
    out = []
    for _, _, e in store.events(run_id, types=("task_updated",)):
        if e.change.startswith("running on Ray node "):
            node = e.change.split()[4]
            pid = int(e.change.rsplit("pid ", 1)[1].rstrip(")"))
            out.append((node, pid))
    return out


def remote_heads(remote: Path) -> dict[str, str]:
    out = git(remote, "for-each-ref", "--format=%(refname) %(objectname)", "refs/heads/")
    return {ref.removeprefix("refs/heads/"): sha for ref, sha in (ln.split() for ln in out.splitlines())}


def assert_checkpoints_on_remote(store: Store, remote: Path) -> None:
    heads = remote_heads(remote)
    for run in store.runs():
        cps = store.checkpoints(run.id)
        assert cps, f"run {run.id} made no checkpoint"
        assert heads[run.branch] == cps[-1].sha, f"the remote's {run.branch} is not the last checkpoint"
        for cp in cps:  # every checkpoint is on the remote
            git(remote, "cat-file", "-e", f"{cp.sha}^{{commit}}")


# -- bad input ----------------------------------------------------------------------------------------------------


def test_without_ray_installed_serve_says_how_to_install_it(repo, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    code, _, err = cli(repo, "serve", "--backend", "ray")
    assert code == 2, err
    assert "pip install 'loopwright[ray]'" in err and err.count("\n") == 1
    assert cli.json(repo, "status")["daemon"] is None  # the lock was given back


@slow
def test_an_unreachable_cluster_address_is_said_in_one_line(repo, cli, tmp_path, ray_mod, remote):
    configure(repo, tmp_path, remote)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    code, _, err = cli(repo, "serve", "--address", f"127.0.0.1:{port}")
    assert code == 2 and f"cannot reach the Ray cluster at 127.0.0.1:{port}" in err and err.count("\n") == 1
    code, _, err = cli(repo, "serve", "--address", "ray://127.0.0.1:10001")
    assert code == 2 and "Ray Client addresses" in err


@slow
def test_a_git_remote_the_workers_cannot_reach_stops_serve_at_once(repo, tmp_path, cluster, remote, ray_daemon):
    configure(repo, tmp_path, tmp_path / "nowhere" / "remote.git", extra="")
    (repo / "loopwright.toml").write_text((repo / "loopwright.toml").read_text() + f'head_remote = "{remote}"\n')
    d = ray_daemon("--address", cluster.address)
    assert d.proc.wait(120) == 2
    said = d.log.read_text()
    assert "is not reachable from Ray node" in said and "nowhere/remote.git" in said, said


# -- runs on the cluster ------------------------------------------------------------------------------------------


@slow
def test_one_run_on_a_local_cluster_started_for_the_daemon(repo, cli, tmp_path, ray_daemon):
    configure(repo, tmp_path, None)  # no remote configured: .loopwright/remote.git
    task = post(cli, repo, tmp_path, "one")
    d = ray_daemon()
    store = wait_until_done(repo, 1)
    run = store.runs(task_id=task)[0]
    assert store.task(task).status == "succeeded", store.task(task).reason
    assert run.merge_commit and "merged into main" in run.reason
    assert (repo / "one.txt").read_text() == "one" and (repo / "one-2.txt").exists()  # merged on the head
    kinds = [e.type for _, _, e in store.events(run.id)]
    for kind in ("run_started", "conversation_reset", "model_called", "tool_started", "checkpoint", "check_ran",
                 "merged", "status"):
        assert kind in kinds, kinds
    assert kinds.index("checkpoint") < kinds.index("check_ran") < kinds.index("merged")
    assert run.model_calls == 3 and run.step == 3
    assert_checkpoints_on_remote(store, repo / ".loopwright" / "remote.git")
    assert "a local cluster" in d.log.read_text()
    assert d.stop() == 0


@slow
def test_eight_tasks_across_two_nodes(repo, cli, tmp_path, cluster, remote, ray_daemon):
    configure(repo, tmp_path, remote)
    tasks = [post(cli, repo, tmp_path, f"t{i}", sleep=2) for i in range(8)]
    t0 = time.monotonic()
    ray_daemon("--address", cluster.address)
    store = wait_until_done(repo, 8)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 8, [store.task(t).reason for t in tasks]
    nodes = {placements(store, r.id)[0][0] for r in store.runs()}
    assert len(nodes) == 2, nodes  # 4 CPUs a node, 1 a run: both nodes worked
    assert len({c.node_id[:8] for c in cluster.workers}) == 2 and nodes == {c.node_id[:8] for c in cluster.workers}
    assert all(len(store.runs(task_id=t)) == 1 for t in tasks)
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sorted(m for m in merges if m.startswith("loopwright: write t")) == [f"loopwright: write t{i}"
                                                                               for i in range(8)]
    assert_checkpoints_on_remote(store, remote)
    runs = store.runs()
    most = max(sum(1 for o in runs if o.started_at <= r.started_at < (o.ended_at or 0)) for r in runs)
    assert most >= 5, "the runs did not overlap across the nodes"
    print(f"8 tasks on 2 nodes: {time.monotonic() - t0:.1f}s")


@slow
def test_a_node_removed_mid_run_resumes_its_runs_on_the_other(repo, cli, tmp_path, cluster, remote, ray_daemon):
    configure(repo, tmp_path, remote)
    tasks = [post(cli, repo, tmp_path, f"n{i}", sleep=6) for i in range(4)]
    ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len(store.runs()) == 4 and all(store.checkpoints(r.id) for r in store.runs()),
          "four runs past their first checkpoint", timeout=120)
    first = {r.id: placements(store, r.id)[0][0] for r in store.runs()}
    doomed = next(c for c in cluster.workers if c.node_id[:8] in first.values())
    moved = [rid for rid, node in first.items() if node == doomed.node_id[:8]]
    cluster.remove_node(doomed)
    store = wait_until_done(repo, 4)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 4, [store.task(t).reason for t in tasks]
    survivor = next(c for c in cluster.workers if c is not doomed).node_id[:8]
    for rid in moved:
        where = placements(store, rid)
        assert len(where) == 2 and where[-1][0] == survivor, where
        changes = [e.change for _, _, e in store.events(rid, types=("task_updated",))]
        assert any("worker was lost; resuming from checkpoint 1" in c for c in changes), changes
        shown = json.dumps([e.model_dump() for _, _, e in store.events(rid, types=("conversation_reset", "message"))])
        assert "moved to another one" in shown  # the agent was told
    assert all(len(store.runs(task_id=t)) == 1 for t in tasks)
    assert_checkpoints_on_remote(store, remote)
    assert sorted(p.name for p in repo.glob("n*.txt")) == sorted([f"n{i}.txt" for i in range(4)]
                                                                 + [f"n{i}-2.txt" for i in range(4)])


@slow
def test_a_worker_killed_mid_run_is_resumed_from_its_last_checkpoint(repo, cli, tmp_path, cluster, remote,
                                                                      ray_daemon):
    configure(repo, tmp_path, remote)
    task = post(cli, repo, tmp_path, "w", sleep=30)
    ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.runs() and store.runs()[0].last_action.startswith("write_file")
          and placements(store, store.runs()[0].id), "the first step", timeout=120)
    time.sleep(1.0)  # inside the sleeping shell call
    run = store.runs()[0]
    os.kill(placements(store, run.id)[0][1], signal.SIGKILL)
    store = wait_until_done(repo, 1, timeout=120)
    assert store.task(task).status == "succeeded", store.task(task).reason
    assert len(placements(store, run.id)) == 2 and len(store.runs()) == 1
    shown = json.dumps([e.model_dump() for _, _, e in store.events(run.id)])
    assert "interrupted" in shown  # the sleep was not silently re-run: the agent was told


@slow
def test_the_head_killed_mid_run_reattaches_to_its_runs(repo, cli, tmp_path, cluster, remote, ray_daemon):
    configure(repo, tmp_path, remote)
    tasks = [post(cli, repo, tmp_path, f"h{i}", sleep=8) for i in range(2)]
    d = ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len(store.runs()) == 2 and all(r.last_action.startswith("write_file") for r in store.runs()),
          "two runs in their first step", timeout=120)
    workers = {r.id: placements(store, r.id)[0][1] for r in store.runs()}
    d.stop(signal.SIGKILL)
    ray_daemon("--address", cluster.address)
    store = wait_until_done(repo, 2)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 2, [store.task(t).reason for t in tasks]
    for r in store.runs():
        assert [p[1] for p in placements(store, r.id)] == [workers[r.id]]  # the same worker all along
    assert (tmp_path / "daemon.log").read_text().count("reattached to its worker") == 2
    merges = git(repo, "log", "--format=%s", "main").splitlines()
    assert sum(m.startswith("loopwright: write h") for m in merges) == 2


@slow
def test_the_head_killed_with_its_local_cluster_resumes_from_checkpoints(repo, cli, tmp_path, ray_daemon):
    configure(repo, tmp_path, None)
    tasks = [post(cli, repo, tmp_path, f"l{i}", sleep=4) for i in range(2)]
    d = ray_daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len(store.runs()) == 2 and all(r.last_action.startswith("write_file") for r in store.runs()),
          "two runs in their first step", timeout=120)
    time.sleep(0.5)
    d.stop(signal.SIGKILL)
    ray_daemon()
    store = wait_until_done(repo, 2)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 2, [store.task(t).reason for t in tasks]
    assert all(len(store.runs(task_id=t)) == 1 for t in tasks)
    for r in store.runs():
        assert len(placements(store, r.id)) == 2  # a new worker, from the last checkpoint


@slow
def test_budgets_are_enforced_by_the_head_across_nodes(repo, cli, tmp_path, cluster, remote, ray_daemon):
    # a scripted model priced at $1 a call, $2.5 a day for the fleet; four runs on two nodes call together
    configure(repo, tmp_path, remote, extra="[models.priced]\ninput_usd_per_mtok = 10000\noutput_usd_per_mtok = 0\n"
                                            "[fleet]\nusd_per_day = 2.5\n")
    tasks = [post(cli, repo, tmp_path, f"b{i}", "--model", "priced") for i in range(4)]
    ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: any(r.status == "paused" for r in store.runs()) and not store.runs(statuses=("running",)),
          "the fleet budget to pause the runs", timeout=120)
    spent = cli.json(repo, "budget")["day_usd"]
    assert 2.5 <= spent <= 2.5 + 4, spent  # each run may have had one call in flight when the budget ran out
    paused = [r for r in store.runs() if r.status == "paused"]
    assert paused and all("fleet budget spent today" in r.reason for r in paused)
    cli.json(repo, "budget", "raise", "--usd", "100")
    store = wait_until_done(repo, 4)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 4, [store.task(t).reason for t in tasks]
    assert all(len(store.runs(task_id=t)) == 1 for t in tasks)  # paused and resumed, not restarted

    per_run = post(cli, repo, tmp_path, "capped", "--budget-usd", "2", "--model", "priced")
    store = wait_until_done(repo, 5)
    assert store.task(per_run).status == "budget_exceeded" and "cost limit" in store.task(per_run).reason


@slow
def test_pause_resume_kill_rollback_and_messages_reach_the_worker(repo, cli, tmp_path, cluster, remote,
                                                                  ray_daemon):
    configure(repo, tmp_path, remote)
    steps = [turn(call("write_file", path="a.txt", content="a")),
             turn(call("shell", command="sleep 4")),
             turn(call("write_file", path="c.txt", content="c"), expect="hello from the test"),
             turn(call("finish", summary="done"))]
    script = write_script(tmp_path / "r.json", steps)
    task = cli.json(repo, "post", "roll", "--script", script, "--check", "test ! -f a.txt && test -f c.txt")["task"]
    ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.runs() and any(e.name == "shell" for _, _, e in store.events(store.runs()[0].id,
                                                                                   types=("tool_started",))),
          "the sleep", timeout=120)
    run = store.runs()[0]
    store.enqueue_command(run.id, "notify", {"text": "hello from the test"})
    code, out, err = cli(repo, "rollback", run.id, "--to", "0")
    assert code == 0, err
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded", store.task(task).reason  # the check saw the rollback
    assert [e.requested_by for _, _, e in store.events(run.id, types=("rolled_back",))] == ["cli"]
    assert not (repo / "a.txt").exists() and (repo / "c.txt").exists()

    long = post(cli, repo, tmp_path, "p", sleep=3)
    until(lambda: store.runs(task_id=long) and store.runs(task_id=long)[0].last_action, "the run's first step",
          timeout=120)
    assert cli.json(repo, "pause", str(long))["command"] == "pause"
    until(lambda: store.runs(task_id=long)[0].status == "paused", "the pause", timeout=60)
    cli.json(repo, "resume", str(long))
    store = wait_until_done(repo, 2)
    assert store.task(long).status == "succeeded" and len(store.runs(task_id=long)) == 1

    doomed = post(cli, repo, tmp_path, "k", sleep=5)
    until(lambda: store.runs(task_id=doomed) and store.runs(task_id=doomed)[0].last_action, "the third run",
          timeout=120)
    cli.json(repo, "kill", str(doomed))
    store = wait_until_done(repo, 3)
    assert store.task(doomed).status == "killed" and not (repo / "k-2.txt").exists()


@slow
def test_resources_are_asked_of_ray(repo, cli, tmp_path, ray_mod, remote, ray_daemon):
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    try:
        plain = c.add_node(num_cpus=2)
        special = c.add_node(num_cpus=2, resources={"special": 1})
        configure(repo, tmp_path, remote)
        wants = [post(cli, repo, tmp_path, f"s{i}") for i in range(2)]
        never = post(cli, repo, tmp_path, "gpu")
        store = Store(repo / ".loopwright" / "state.db")
        for t in wants:
            store.update_task(t, options={"resources": {"special": 1}})
        store.update_task(never, options={"resources": {"gpu": 1}})
        ray_daemon("--address", c.address)
        store = wait_until_done(repo, 3)
        for t in wants:
            assert store.task(t).status == "succeeded", store.task(t).reason
            assert placements(store, store.runs(task_id=t)[0].id)[0][0] == special.node_id[:8]
        assert store.task(never).status == "failed"
        assert "no node of the Ray cluster has what this run asks for (CPU 1, GPU 1)" in store.task(never).reason
        assert plain.node_id  # the plain node was there, and not enough
    finally:
        c.shutdown()


@slow
def test_a_chat_request_fans_out_into_parts_on_the_cluster(repo, tmp_path, cluster, remote, ray_daemon):
    from loopwright.runtime.chat.threads import create_thread, messages, post_message
    from loopwright.runtime.project import open_project

    things = ["a cat", "a dog", "a fish"]
    script = write_script(tmp_path / "chat.json", [
        {"when": "Part ", **turn(call("write_file", path="part.txt", content="drawn"),
                                 call("finish", summary="drew it")),
         "otherwise": turn(call("fan_out", items=things, plan="one drawing per thing"))}])
    configure(repo, tmp_path, remote, extra=f'provider = "scripted"\nscript = "{script}"\n'
                                            "[chat]\ndebounce_seconds = 0.1")
    p = open_project(repo, create=True)
    create_thread(p.store, "draw", check="true")
    post_message(p.store, p.config.chat, "draw", "ana", "@loopwright draw three things: " + ", ".join(things))
    ray_daemon("--address", cluster.address)

    def replies():
        return [m for m in messages(open_project(repo).store, "draw") if m.kind == "agent"]

    until(lambda: any("all 3 parts" in m.text for m in replies()), "the summary", timeout=180)
    store = open_project(repo).store
    parent = store.tasks()[0]
    parts = [t for t in store.tasks() if t.parent_id == parent.id]
    assert len(parts) == 3 and all(t.status == "succeeded" for t in parts), [(t.status, t.reason) for t in parts]
    assert store.task(parent.id).status == "succeeded"
    assert "split into 3 parts" in store.runs(task_id=parent.id)[0].reason
    assert all(placements(store, store.runs(task_id=t.id)[0].id) for t in parts)  # on the cluster
    assert replies()[-1].text.startswith("@ana all 3 parts finished (3 succeeded)")


@slow
def test_sigterm_pauses_the_runs_on_the_cluster_and_the_next_serve_resumes_them(repo, cli, tmp_path, cluster, remote,
                                                                                ray_daemon):
    configure(repo, tmp_path, remote)
    tasks = [post(cli, repo, tmp_path, f"g{i}", "--check", "true", sleep=3) for i in range(3)]
    d = ray_daemon("--address", cluster.address)
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: len(store.runs()) == 3 and all(r.last_action.startswith("write_file") for r in store.runs()),
          "three runs in their first step", timeout=120)
    assert d.stop(signal.SIGTERM) == 0
    runs = store.runs()
    assert [r.status for r in runs] == ["paused"] * 3 and all("daemon stopped" in r.reason for r in runs)
    assert all(Path(r.worktree).is_dir() for r in runs)  # a worktree of each paused run on the head
    # a person rolls one paused run back to its start: its next worker starts there
    rolled = runs[0]
    code, _, err = cli(repo, "rollback", rolled.id, "--to", "0")
    assert code == 0, err
    ray_daemon("--address", cluster.address)
    store = wait_until_done(repo, 3)
    assert [store.task(t).status for t in tasks] == ["succeeded"] * 3, [store.task(t).reason for t in tasks]
    assert all(len(store.runs(task_id=t)) == 1 for t in tasks)
    assert all(len(placements(store, r.id)) == 2 for r in store.runs())
    told = store.events(rolled.id, types=("message", "conversation_reset"))
    shown = json.dumps([e.model_dump() for _, _, e in told])
    assert "rolled back to the start" in shown
    name = store.task(rolled.task_id).title.split()[-1]
    assert not (repo / f"{name}.txt").exists() and (repo / f"{name}-2.txt").exists()  # the rollback held
    others = [store.task(t).title.split()[-1] for t in tasks if t != rolled.task_id]
    assert all((repo / f"{n}.txt").exists() for n in others)


@slow
def test_the_provider_gate_is_kept_by_the_head_for_runs_on_the_cluster(repo, cli, tmp_path, cluster, remote,
                                                                      ray_daemon):
    """The real Anthropic SDK on the workers against the loopback server: a 429 closes the fleet's gate in the
    head's store, and the call waits there instead of failing."""
    from loopwright.harness.loopback import LoopbackServer
    from loopwright.harness.script import Script

    script = Script.parse({"turns": [{"fault": "429", "retry_after": 1.0},
                                     turn(call("write_file", path="q.txt", content="q")),
                                     turn(call("finish", summary="done"))]})
    with LoopbackServer(script) as server:
        configure(repo, tmp_path, remote, extra=f'provider = "anthropic"\nmodel = "claude-sonnet-4-6"\n'
                                                f'base_url = "{server.anthropic_base_url}"\n[memory]\nreflect = false')
        task = cli.json(repo, "post", "write q", "--check", "test -f q.txt")["task"]
        ray_daemon("--address", cluster.address)
        store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded", store.task(task).reason
    (gate,) = store.conn.execute("SELECT key, closed_until, reason FROM quota_gates").fetchall()
    assert gate["key"].startswith("anthropic/claude-sonnet-4-6@") and gate["closed_until"] > 0
    assert "429" in gate["reason"]
    run = store.runs()[0]
    assert run.model_calls == 2 and placements(store, run.id)
    assert (repo / "q.txt").exists()


@slow
def test_memory_and_artifact_tools_of_a_run_on_the_cluster_reach_the_head(repo, cli, tmp_path, ray_daemon):
    configure(repo, tmp_path, None)
    steps = [turn(call("remember", text="Run the tests with python -m unittest in this project.", tags=["tests"])),
             turn(call("recall", query="unittest tests")),
             turn(call("write_file", path="notes/plan.md", content="# Plan\n\nstep one\n"),
                  expect="Run the tests with python -m unittest"),
             turn(call("artifact", path="notes/plan.md", kind="plan", title="The plan"),
                  call("artifact", text="all done", kind="report", title="Report")),
             turn(call("finish", summary="done"))]
    script = write_script(tmp_path / "m.json", steps)
    task = cli.json(repo, "post", "remember things", "--script", script, "--check", "true")["task"]
    ray_daemon()
    store = wait_until_done(repo, 1)
    assert store.task(task).status == "succeeded", store.task(task).reason
    lessons = cli.json(repo, "lessons", "list")
    assert any("python -m unittest" in x["text"] for x in lessons), lessons
    arts = cli.json(repo, "artifacts", "list")
    assert sorted(a["title"] for a in arts) == ["Report", "The plan"]
    assert all(Path(a["path"]).is_file() and str(repo) in a["path"] for a in arts)  # kept on the head


# -- external CLI agents on the cluster ---------------------------------------------------------------------------


def fake_agent(tmp_path: Path, monkeypatch) -> str:
    """test_agents_command's fake agent script, as an `--agent-command` template (its folder readable in the
    sandbox: the daemon's environment, then the worker's config)."""
    folder = tmp_path / "agentbin"
    folder.mkdir()
    (folder / "fakeagent.py").write_text(FAKE)
    monkeypatch.setenv("LOOPWRIGHT_SANDBOX__READABLE", json.dumps([str(folder)]))
    return f"{sys.executable} {folder / 'fakeagent.py'} {{prompt}}"


@slow
def test_a_command_agent_runs_on_a_worker_and_a_missing_cli_pauses_its_run(repo, cli, tmp_path, ray_daemon,
                                                                            monkeypatch):
    """A `command` agent's run on a Ray worker: the worker makes the worktree from the git remote and supervises
    the CLI there (checkpoints on the file changes it sees, pushed to the remote), the check passes there and the
    head merges. A CLI the worker cannot start pauses its run, saying what it needs, as on the local backend."""
    fake = fake_agent(tmp_path, monkeypatch)
    configure(repo, tmp_path, None)
    good = cli.json(repo, "post", "WATCH then fix add", "--agent", "command", "--agent-command", fake,
                    "--check", CHECK)["task"]
    missing = cli.json(repo, "post", "fix add", "--agent", "command", "--agent-command",
                       "no-such-agent-cli --message {prompt}", "--check", CHECK)["task"]
    d = ray_daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.task(good).status == "succeeded" and store.task(missing).status == "paused",
          "the agent's run to merge and the missing CLI's to pause", timeout=180)
    run = store.runs(task_id=good)[0]
    assert run.agent == "command" and run.merge_commit and "merged into main" in run.reason, run.reason
    assert "return a + b" in git(repo, "show", "main:calc.py") and git(repo, "show", "main:notes.txt") == "step one"
    assert placements(store, run.id)  # it ran on a Ray node
    cps = store.checkpoints(run.id)
    assert cps[0].message == "command: files changed"  # seen by the worker's watcher while the agent ran
    heads = remote_heads(repo / ".loopwright" / "remote.git")
    assert heads[run.branch] == cps[-1].sha  # every checkpoint was pushed
    said = json.dumps([m.model_dump() for m in store.conversation(run.id)])
    assert "fixed add in calc.py" in said  # the CLI's output is the run's transcript
    stopped = store.runs(task_id=missing)[0]
    assert stopped.status == "paused" and "command could not start" in stopped.reason, stopped.reason
    assert "it needs whatever `no-such-agent-cli` needs" in stopped.reason
    assert d.stop() == 0


@slow
def test_pause_resume_and_kill_of_a_command_agent_on_a_worker(repo, cli, tmp_path, ray_daemon, monkeypatch):
    fake = fake_agent(tmp_path, monkeypatch)
    configure(repo, tmp_path, None)
    task = cli.json(repo, "post", "HANG then fix add", "--agent", "command", "--agent-command", fake,
                    "--check", CHECK)["task"]
    d = ray_daemon()
    store = Store(repo / ".loopwright" / "state.db")
    until(lambda: store.runs(task_id=task) and store.checkpoints(store.runs(task_id=task)[0].id),
          "the agent to write notes.txt (a checkpoint) and hang", timeout=180)
    run_id = store.runs(task_id=task)[0].id
    cli(repo, "pause", run_id)
    until(lambda: store.run(run_id).status == "paused", "the run to pause", timeout=60)
    assert processes("fakeagent.py") == []  # the worker ended the CLI's process group
    cli(repo, "resume", run_id)
    until(lambda: store.task(task).status == "succeeded", "the resumed run to merge", timeout=120)
    prompts = [m.text for m in store.conversation(run_id) if m.role == "user"]
    assert len(prompts) == 2 and "this run was paused and has been resumed" in prompts[-1]
    assert "return a + b" in git(repo, "show", "main:calc.py") and git(repo, "show", "main:notes.txt") == "started"

    other = cli.json(repo, "post", "HANG and be killed", "--agent", "command", "--agent-command", fake,
                     "--check", CHECK)["task"]
    until(lambda: store.runs(task_id=other) and processes("fakeagent.py"), "the second agent to hang", timeout=120)
    (killed,) = store.runs(task_id=other)
    cli(repo, "kill", killed.id)
    until(lambda: store.run(killed.id).status == "killed", "the run to be killed", timeout=60)
    until(lambda: not processes("fakeagent.py"), "the killed agent's process to end")
    assert d.stop() == 0
