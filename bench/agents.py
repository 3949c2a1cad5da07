"""Supervising an external CLI agent: overhead per CLI event, and loopwright-side memory per supervised agent.

Overhead: a stream of JSON lines (tool calls, tool results that change no file, texts, usage; one event a line)
is read by `harness.agents.driver.CliDriver` from `cat FILE` — parsed, written to a real store, the checkpoint
decision and the budget check made after each — against reading the same `cat FILE` into nothing through the
same asyncio pipe. Reported: the milliseconds per event above the bare read. Goal (issue 22): <= 1 ms.

Memory: `--agents` command agents (`sleep`, no event stream: each with its watchdog observer on its worktree and
its pipe readers) supervised at once in this process; the growth of this process's resident memory and threads
divided by their number (the CLIs' own processes are not counted).

    python -m loopwright.bench.agents [--events 20000] [--agents 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from loopwright.harness.agents.base import (
    AgentEvent,
    AgentOptions,
    AgentText,
    AgentToolCall,
    AgentToolResult,
    AgentUsage,
)
from loopwright.harness.agents.command import CommandAgent
from loopwright.harness.agents.driver import CliDriver, DriverSettings
from loopwright.harness.budget import BudgetConfig
from loopwright.harness.loop import FinishVerdict
from loopwright.harness.messages import Usage
from loopwright.harness.sandbox import Sandbox, SandboxPolicy
from loopwright.harness.tools import ToolContext
from loopwright.memory.processes import ToolProcesses
from loopwright.memory.store import Store
from loopwright.workspaces.git import Workspace


class CatAgent:
    """A streaming CliAgent whose 'CLI' is `cat` of a recorded stream."""

    name = "bench-stream"
    streams_events = True
    api_hosts: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()
    key_hint = "nothing"

    def __init__(self, stream: Path):
        self.stream = stream

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        return ["cat", str(self.stream)]

    def environment(self) -> dict[str, str]:
        return {}

    def parse(self, line: str) -> list[AgentEvent]:
        try:
            d = json.loads(line)
        except ValueError:
            return []
        kind = d.get("k")
        if kind == "call":
            return [AgentToolCall(d["id"], "read", {"path": d["path"]})]
        if kind == "result":
            return [AgentToolResult(d["id"], "read", d["out"], may_change_files=False)]
        if kind == "text":
            return [AgentText(d["text"])]
        if kind == "usage":
            return [AgentUsage(Usage(input_tokens=d["in"], output_tokens=d["out"]), "claude-sonnet-4-6")]
        return []


def write_stream(path: Path, events: int) -> None:
    kinds = ["call", "result", "text", "usage"]
    with path.open("w") as f:
        for i in range(events):
            kind = kinds[i % 4]
            row: dict[str, Any] = {"k": kind, "id": f"c{i // 4}"}
            if kind == "call":
                row["path"] = f"src/module_{i % 97}.py"
            elif kind == "result":
                row["out"] = "x = 1\n" * 20
            elif kind == "text":
                row["text"] = "Reading the module to see where the parser fails. " * 3
            else:
                row.update({"in": 1200, "out": 80})
            f.write(json.dumps(row) + "\n")


def make_repo(top: Path) -> Path:
    root = top / "repo"
    root.mkdir()
    (root / "a.txt").write_text("a\n")
    for args in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"],
                 ["config", "user.email", "bench@example.invalid"], ["add", "-A"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


def driver(store: Store, root: Path, agent: Any, box: Sandbox, n: int) -> CliDriver:
    task = store.create_task("bench", check=None)
    run_id = f"bench{n:04d}"
    ws = Workspace.create(root, run_id, target_branch="main", worktrees_dir=root.parent / "worktrees")
    store.create_run(task.id, provider="none", model="none", worktree=str(ws.path), branch=ws.branch,
                     base_commit=ws.base_commit, target_branch="main", run_id=run_id)

    async def accept(summary: str) -> FinishVerdict:
        return FinishVerdict("needs_review", "kept", reason="bench")

    context = ToolContext(worktree=ws.path, scratchpad=store.scratchpad(run_id), processes=ToolProcesses(store, run_id))
    settings = DriverSettings(task_text="bench", options=AgentOptions(), price=lambda m: None,
                              budget=BudgetConfig(max_turns=10**9, max_tokens=10**12, max_usd=10**9))
    d = CliDriver(store=store, run_id=run_id, agent=agent, workspace=ws, settings=settings, tool_context=context,
                  sandbox=box, on_finish=accept)
    d.start()
    return d


async def bare_read(stream: Path) -> float:
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec("cat", str(stream), stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    while await proc.stdout.read(65536):
        pass
    await proc.wait()
    return time.perf_counter() - t0


def rss_kb() -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["Threads"])


async def main_async(events: int, agents: int) -> None:
    box = Sandbox.for_policy(SandboxPolicy(mode="none"))
    with tempfile.TemporaryDirectory(prefix="lw-bench-agents-") as tmp:
        top = Path(tmp)
        root = make_repo(top)
        stream = top / "stream.jsonl"
        write_stream(stream, events)
        store = Store(top / "state.db")
        await bare_read(stream)  # warm the page cache
        bare = min([await bare_read(stream) for _ in range(3)])
        supervised = []
        for i in range(3):
            d = driver(store, root, CatAgent(stream), box, i)
            t0 = time.perf_counter()
            outcome = await d.run()
            supervised.append(time.perf_counter() - t0)
            assert outcome.status == "needs_review", outcome
        best = min(supervised)
        per_event = (best - bare) / events * 1000
        print(f"{events} events: bare read {bare * 1000:.0f} ms, supervised {best * 1000:.0f} ms -> "
              f"{per_event:.3f} ms per event above the bare read (goal <= 1 ms)")

        before, threads = rss_kb()
        sleepers = [driver(store, root, CommandAgent("bash -c 'sleep 60' {prompt}"), box, 100 + i)
                    for i in range(agents)]
        runs = [asyncio.ensure_future(d.run()) for d in sleepers]
        while len(ToolProcesses(store, sleepers[-1].run_id).recorded()) == 0 or any(
                not ToolProcesses(store, d.run_id).recorded() for d in sleepers):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        after, threads_after = rss_kb()
        for d in sleepers:
            d.request_stop("killed", "bench done", interrupt=True)
        await asyncio.gather(*runs)
        print(f"{agents} command agents supervised at once: +{(after - before) / agents:.0f} KiB resident and "
              f"+{(threads_after - threads) / agents:.1f} threads per agent (loopwright's side only)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=20000)
    p.add_argument("--agents", type=int, default=16)
    args = p.parse_args()
    asyncio.run(main_async(args.events, args.agents))


if __name__ == "__main__":
    main()
