"""What passes between the head and the cluster: a run's spec and outcome, the resources a run asks
for, the names of the actors, and awaiting a Ray answer.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwright.harness.messages import Message
from loopwright.harness.script import Script
from loopwright.memory.store import Run
from loopwright.runtime.config import Config

HEAD_ACTOR = "lw-head"


def run_actor_name(run_id: str) -> str:
    return f"lw-run-{run_id}"


def namespace_of(root: Path) -> str:
    """One Ray namespace per project, so two projects on one cluster never mix up their actors."""
    return "loopwright-" + hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]


@dataclass
class RunSpec:
    """Everything a worker needs to drive one run (the head computes what needs its store or disk)."""

    run_id: str
    task_id: int
    branch: str
    base_commit: str
    start_sha: str | None  # None: the branch's tip on the remote (a fresh attempt of loop-until-done)
    remote: str
    cache_dir: str
    fresh: bool
    notices: list[str]
    system_prompt: str  # loopwright's own agent (a CLI agent has its own)
    task_text: str
    instructions: str  # a CLI agent: what is appended to its own instructions (the recalled lessons)
    config: Config
    script: Script | None
    start_at: int
    check: str | None
    until: bool
    run: Run
    conversation: list[Message]
    scratchpad: str
    copy_files: dict[str, bytes]
    setup_command: str | None
    setup_timeout: float
    flush_interval: float
    memory_tools: bool
    fan_out: bool = False  # a chat request: the agent may split it into parts (runtime.chat.FanOut)


@dataclass
class RemoteOutcome:
    status: str
    reason: str = ""
    again: bool = False
    accepted: bool = False  # the acceptance check passed: the head merges (or keeps) the branch


async def await_ref(ref):
    """An ObjectRef awaited on any event loop (the worker's loop runs in its own thread)."""
    return await asyncio.wrap_future(ref.future())


def run_options(config: Config, task_options: dict) -> dict:
    """Ray's resource options for a run: `[ray]` defaults, the task's own `resources` option on top."""
    ray_cfg = config.ray
    wanted: dict[str, float] = {"cpu": ray_cfg.num_cpus, **({"memory_mb": ray_cfg.memory_mb} if ray_cfg.memory_mb
                                                             else {}), **ray_cfg.resources}
    wanted.update(task_options.get("resources") or {})
    options: dict[str, Any] = {"num_cpus": 0.0, "resources": {}}
    for name, amount in wanted.items():
        key = name.lower()
        if key in ("cpu", "cpus", "num_cpus"):
            options["num_cpus"] = float(amount)
        elif key in ("gpu", "gpus", "num_gpus"):
            options["num_gpus"] = float(amount)
        elif key in ("memory_mb", "memory"):
            options["memory"] = int(float(amount) * 2**20)
        else:
            options["resources"][name] = float(amount)
    return options


def describe_options(options: dict) -> str:
    parts = [f"CPU {options['num_cpus']:g}"]
    if options.get("num_gpus"):
        parts.append(f"GPU {options['num_gpus']:g}")
    if options.get("memory"):
        parts.append(f"memory {options['memory'] / 2**20:.0f} MB")
    parts += [f"{k} {v:g}" for k, v in options["resources"].items()]
    return ", ".join(parts)


def fits(resources: dict, options: dict) -> bool:
    if resources.get("CPU", 0) < options["num_cpus"]:
        return False
    if options.get("num_gpus") and resources.get("GPU", 0) < options["num_gpus"]:
        return False
    if options.get("memory") and resources.get("memory", 0) < options["memory"]:
        return False
    return all(resources.get(k, 0) >= v for k, v in options["resources"].items())
