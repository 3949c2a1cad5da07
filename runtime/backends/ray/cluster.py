"""The daemon's handle on the Ray cluster (`RayBackend`): connecting, the head's actor, probing the nodes,
the run branches on the git remote, and the run actors.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git

from loopwright.memory.store import StoreError
from loopwright.runtime.backends.ray.executor import RayExecutor
from loopwright.runtime.backends.ray.head import HeadService
from loopwright.runtime.backends.ray.wire import (
    HEAD_ACTOR,
    await_ref,
    describe_options,
    fits,
    namespace_of,
    run_actor_name,
    run_options,
)
from loopwright.runtime.backends.ray.worker import RunActor
from loopwright.runtime.backends.ray.workspace import check_remote, probe_node, remote_git
from loopwright.runtime.merging import GIT_LOCK
from loopwright.runtime.project import Project
from loopwright.runtime.runner import Runner
from loopwright.workspaces.repository import WorkspaceError, commit_of_branch, run_git

RAY_HINT = "the ray backend needs Ray, which is not installed: pip install 'loopwright[ray]'"
PROBE_TIMEOUT = 120.0


def _daemon_error(message: str) -> Exception:
    from loopwright.runtime.fleet.daemon import DaemonError

    return DaemonError(message)


def import_ray():
    """Ray, or the one-line hint to install the extra."""
    try:
        import ray
    except ImportError:
        raise _daemon_error(RAY_HINT) from None
    return ray


class RayBackend:
    """The daemon's handle on the cluster: started in `serve`, it makes a `Runner` with a `RayExecutor` for every
    run."""

    def __init__(self, project: Project, say: Callable[[str], None] = print, *, address: str | None = None):
        self.project, self.say = project, say
        cfg = project.config.ray
        self.address = address if address is not None else cfg.address
        self.namespace = namespace_of(project.root)
        self.remote = cfg.remote
        self.head_remote = cfg.head_remote
        self.ray: Any = None
        self.head: Any = None
        self.local_cluster = False
        self.node_id = ""

    # -- starting and stopping ----------------------------------------------------------------------------------

    def start(self) -> None:
        ray = import_ray()
        self._remotes()
        self._connect(ray)
        try:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            self.node_id = ray.get_runtime_context().get_node_id()
            head_cls = ray.remote(HeadService)
            self.head = head_cls.options(
                name=HEAD_ACTOR, namespace=self.namespace, lifetime="detached", get_if_exists=True, num_cpus=0,
                max_restarts=-1, scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False),
            ).remote(str(self.project.db_path), str(self.project.dir))
            where = ray.get(self.head.ping.remote(), timeout=120)
            if Path(where) != self.project.db_path:
                raise _daemon_error(f"the Ray namespace {self.namespace} already serves another store ({where})")
            self._probe(ray)
        except BaseException:
            self.stop()
            raise
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        self.say(f"ray backend: {'a local cluster' if self.local_cluster else 'cluster ' + str(self.address)} "
                 f"({len(nodes)} node(s), {cpus:g} CPUs); git remote {self.remote}")

    def _remotes(self) -> None:
        if self.remote is None:
            bare = self.project.dir / "remote.git"
            if not (bare / "HEAD").exists():
                run_git(git.Git(self.project.root), "init", "--quiet", "--bare", str(bare),
                        what="creating the git remote .loopwright/remote.git")
            self.remote = str(bare)
        self.head_remote = self.head_remote or self.remote
        try:
            check_remote(self.head_remote, "the head")
        except WorkspaceError as e:
            raise _daemon_error(str(e)) from None

    def _connect(self, ray) -> None:
        import logging

        address = self.address
        if address and address.startswith("ray://"):
            raise _daemon_error(f"Ray Client addresses ({address}) are not supported: run `loopwright serve` on a "
                                f"node of the cluster (the head keeps the store), with --address HOST:PORT")
        if address and address != "auto":
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
                    pass
            except (OSError, ValueError) as e:
                raise _daemon_error(f"cannot reach the Ray cluster at {address}: {getattr(e, 'strerror', None) or e} "
                                    f"(start one with `ray start --head`, or leave --address out for a local "
                                    f"cluster)") from None
        kwargs: dict[str, Any] = {"namespace": self.namespace, "log_to_driver": False,
                                  "logging_level": logging.WARNING, "ignore_reinit_error": True}
        # ray.init takes SIGTERM and SIGINT over (exit at once, with a stack dump): the daemon's own handlers
        # (pause every run, then stop) are put back after it
        saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                self.local_cluster = True
                ray.init(address="local", include_dashboard=False, **kwargs)  # its own, not one found here
        except Exception as e:  # noqa: BLE001 — Ray's many ways of failing, said in one line
            text = " ".join(str(e).split())[:300]
            raise _daemon_error(f"cannot connect to the Ray cluster at {address or '(local)'}: "
                                f"{type(e).__name__}: {text}") from None
        finally:
            if threading.current_thread() is threading.main_thread():
                for sig, handler in saved.items():
                    if handler is not None:
                        signal.signal(sig, handler)

    def _probe(self, ray) -> None:
        """Every node a run could land on must reach the git remote: find out now, not in the middle of runs."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        default = run_options(self.project.config, {})
        probe = ray.remote(num_cpus=0)(probe_node)
        refs = {}
        for node in ray.nodes():
            if node.get("Alive") and fits(node.get("Resources", {}), default):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                refs[node["NodeID"]] = probe.options(scheduling_strategy=strategy).remote(self.remote)
        for node_id, ref in refs.items():
            try:
                said = ray.get(ref, timeout=PROBE_TIMEOUT)
            except Exception as e:  # noqa: BLE001
                said = f"the probe on Ray node {node_id[:8]} failed: {type(e).__name__}: {e}"
            if said:
                raise _daemon_error(said.replace("the Ray node on", f"Ray node {node_id[:8]} on"))

    def stop(self, *, runs_left: bool = False) -> None:
        ray = self.ray_module()
        if ray is None or not ray.is_initialized():
            return
        if self.head is not None and not runs_left and not self.local_cluster:
            with contextlib.suppress(Exception):
                ray.kill(self.head)  # nothing of ours runs on the cluster any more
        with contextlib.suppress(Exception):
            ray.shutdown()

    @staticmethod
    def ray_module():
        try:
            import ray
        except ImportError:
            return None
        return ray

    # -- runs -------------------------------------------------------------------------------------------------

    def runner(self, stop: asyncio.Event) -> Runner:
        return Runner(self.project, stop=stop, executor=RayExecutor(self))

    def check_feasible(self, options: dict) -> None:
        """A run asking for more than any node has would wait for ever: fail it now, saying what it asked for."""
        import ray

        if not any(n.get("Alive") and fits(n.get("Resources", {}), options) for n in ray.nodes()):
            raise StoreError(f"no node of the Ray cluster has what this run asks for ({describe_options(options)})")

    def new_branch(self, run_id: str, target: str) -> str:
        """The run branch `lw/<run>` at the head of `target`, here and on the remote; its base commit."""
        g = git.Git(self.project.root)
        branch = f"lw/{run_id}"
        with GIT_LOCK:
            base = commit_of_branch(g, target)
            if base is None:
                raise WorkspaceError(f"no branch '{target}' in {self.project.root} "
                                     f"(pass --target BRANCH with an existing branch)")
            run_git(g, "branch", branch, base, what=f"creating the branch {branch}")
        remote_git(self.project.root, "push", "--quiet", "--no-verify", self.head_remote,
                   f"{base}:refs/heads/{branch}", what=f"pushing {branch} to the git remote {self.head_remote}")
        return base

    def fetch_branch(self, branch: str, worktree: Path) -> str:
        """The run branch as the remote has it, here too (the head's worktree of it follows, if it has one).

        The fetch holds GIT_LOCK as well: git reads every worktree's HEAD while fetching, and a worktree being added
        at that moment (another run paused at once, `materialize`) has a HEAD that is not an object yet ("bad
        object worktrees/<run>/HEAD")."""
        g = git.Git(self.project.root)
        ref = f"refs/loopwright/fetched/{branch}"
        with GIT_LOCK:
            remote_git(self.project.root, "fetch", "--quiet", self.head_remote, f"+refs/heads/{branch}:{ref}",
                       what=f"fetching {branch} from the git remote {self.head_remote}")
            sha = run_git(g, "rev-parse", ref)
            run_git(g, "update-ref", "-d", ref, sha, what=f"dropping {ref}")
            if (worktree / ".git").exists():
                run_git(git.Git(worktree), "reset", "--quiet", "--hard", sha, what=f"updating the worktree {worktree}")
            else:
                run_git(g, "update-ref", f"refs/heads/{branch}", sha, what=f"updating {branch}")
        return sha

    def materialize(self, branch: str, worktree: Path) -> None:
        """A worktree of the run branch on the head, for a person to review (`merge`, the TUI's diff)."""
        if (worktree / ".git").exists():
            return
        with GIT_LOCK:
            run_git(git.Git(self.project.root), "worktree", "add", "--quiet", str(worktree), branch,
                    what=f"creating the worktree {worktree}")

    async def find_actor(self, run_id: str):
        """The actor of a run still alive on the cluster (a head that restarted reattaches to it), or None."""
        import ray

        try:
            actor = ray.get_actor(run_actor_name(run_id), namespace=self.namespace)
        except ValueError:
            return None
        try:
            await asyncio.wait_for(await_ref(actor.ping.remote()), 10)
        except Exception:  # noqa: BLE001 — dead, or gone with its node
            with contextlib.suppress(Exception):
                ray.kill(actor)
            return None
        return actor

    def new_actor(self, run_id: str, options: dict):
        import ray

        with contextlib.suppress(ValueError):  # a dead namesake from an earlier attempt
            ray.kill(ray.get_actor(run_actor_name(run_id), namespace=self.namespace))
        cls = ray.remote(RunActor)
        return cls.options(name=run_actor_name(run_id), namespace=self.namespace, lifetime="detached",
                           max_restarts=0, max_concurrency=8, **options).remote()
