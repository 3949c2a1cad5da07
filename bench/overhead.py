"""CPU per step of a loopwright run against a plain HTTP loop, at two run lengths, measured in one run.

Both loops talk to the same loopback server, started as its own process so its
work is not counted, replaying the same script: each step ~2 KB of assistant
text and one shell command, then a finish. The plain loop POSTs the growing
conversation (OpenAI Chat format) with http.client, parses the JSON answer and
runs the command with subprocess: the floor of any agent loop. loopwright runs
the task through the Runner with everything a real step does (the SDK, the
store, events, budget, checkpoints, tool dispatch). Reported per step: wall
time and this process's CPU (all its threads; not the commands and git
processes it starts), and loopwright's CPU against the plain loop's, after a
warm-up run of each, so imports count in neither. Goal
(issue 24): loopwright's CPU per step grows <= 1.3x from 100 to 400 steps.

    python -m loopwright.bench.overhead [--steps 100 400] [--provider openai]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from loopwright.runtime.project import open_project
from loopwright.runtime.runner import Runner

MODEL = "bench-loopback"
TEXT = ("Looking at the failing test and the module under it before changing anything. " * 26)[:2000]
COMMAND = "echo ok"


def write_script(folder: Path, steps: int) -> Path:
    turns = [{"text": TEXT, "tool_calls": [{"name": "shell", "arguments": {"command": COMMAND}}]}
             for _ in range(steps - 1)]
    turns.append({"text": "done", "tool_calls": [{"name": "finish", "arguments": {"summary": "ok"}}]})
    path = folder / f"script-{steps}.json"
    path.write_text(json.dumps({"turns": turns}))
    return path


class Server:
    """`loopwright loopback` in its own process, so its CPU is not the loop's."""

    def __init__(self, script: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "loopwright.harness.loopback", "--script", str(script),
                                      "--no-accounting"], stdout=subprocess.PIPE, text=True)  # its CPU is not ours
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "openai base_url:" in line:
                self.openai_base_url = line.split()[-1]
            if "anthropic base_url:" in line:
                self.anthropic_base_url = line.split()[-1]
            if hasattr(self, "openai_base_url") and hasattr(self, "anthropic_base_url"):
                break

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain_loop(base_url: str) -> int:
    """The floor: POST the growing conversation, parse the JSON answer, run the command; returns the steps made."""
    url = urlparse(base_url)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port)
    params = {"type": "object", "properties": {"command": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": n, "description": "d", "parameters": params}}
             for n in ("shell", "finish")]
    messages: list[dict] = [{"role": "system", "content": "You are a coding agent."},
                            {"role": "user", "content": "task"}]
    steps = 0
    while True:
        body = json.dumps({"model": MODEL, "messages": messages, "tools": tools, "max_tokens": 1024})
        conn.request("POST", f"{url.path}/chat/completions", body, {"content-type": "application/json"})
        message = json.loads(conn.getresponse().read())["choices"][0]["message"]
        messages.append(message)
        steps += 1
        for call in message.get("tool_calls") or []:
            if call["function"]["name"] == "finish":
                conn.close()
                return steps
            command = json.loads(call["function"]["arguments"])["command"]
            out = subprocess.run(command, shell=True, capture_output=True, text=True).stdout
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": out})


def loopwright_run(root: Path, provider: str, base_url: str, steps: int) -> None:
    overrides = {"provider": provider, "model": MODEL, "base_url": base_url, "on_success": "keep",
                 "budget.max_turns": steps + 10, "sandbox.mode": "none",
                 "models": {MODEL: {"input_usd_per_mtok": 0, "output_usd_per_mtok": 0,
                                    "context_window": 100_000_000}}}
    project = open_project(root, create=True, overrides=overrides)
    result = asyncio.run(Runner(project).start("bench task", check="true"))
    assert result.run.status == "succeeded", result.run.reason


def make_repo() -> Path:
    root = Path(tempfile.mkdtemp(prefix="lw-bench-"))
    for cmd in (["init", "-q", "-b", "main"], ["config", "user.name", "bench"], ["config", "user.email", "b@x"],
                ["commit", "-q", "--allow-empty", "-m", "init"]):
        subprocess.run(["git", *cmd], cwd=root, check=True)
    return root


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `work()`."""
    w0, c0 = time.perf_counter(), cpu()
    work()
    return time.perf_counter() - w0, cpu() - c0


def measure(steps: int, provider: str, folder: Path) -> dict:
    script = write_script(folder, steps)
    with Server(script) as server:
        plain_wall, plain_cpu = timed(lambda: plain_loop(server.openai_base_url))
    with Server(script) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        lw_wall, lw_cpu = timed(lambda: loopwright_run(make_repo(), provider, base, steps))
    per = 1000 / steps
    return {"steps": steps, "plain_wall": plain_wall * per, "plain_cpu": plain_cpu * per,
            "lw_wall": lw_wall * per, "lw_cpu": lw_cpu * per, "ratio": lw_cpu / plain_cpu}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--provider", default="openai", choices=["anthropic", "openai", "openai-responses"])
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lw-bench-scripts-"))
    measure(5, args.provider, folder)  # warm-up: imports (the SDK's take a second or two) are no step's cost
    rows = [measure(n, args.provider, folder) for n in args.steps]
    print(f"ms per step (~2 KB of text and one shell command each), provider {args.provider}; CPU is this process's")
    print(f"{'steps':>6} {'plain wall':>11} {'plain CPU':>10} {'lw wall':>8} {'lw CPU':>7} {'lw/plain CPU':>13}")
    for r in rows:
        print(f"{r['steps']:>6} {r['plain_wall']:>11.2f} {r['plain_cpu']:>10.2f} {r['lw_wall']:>8.2f} "
              f"{r['lw_cpu']:>7.2f} {r['ratio']:>12.2f}x")
    if len(rows) >= 2:
        first, last = rows[0], rows[-1]
        print(f"CPU per step at {last['steps']} vs {first['steps']} steps: loopwright "
              f"{last['lw_cpu'] / first['lw_cpu']:.2f}x, plain loop {last['plain_cpu'] / first['plain_cpu']:.2f}x "
              f"(goal for loopwright <= 1.3x)")


if __name__ == "__main__":
    main()
