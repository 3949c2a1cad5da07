"""CPU per step of a loopwright run against a plain HTTP loop and mini-swe-agent, at two run lengths.

Both loops talk to the same loopback server, started as its own process so its
work is not counted, replaying the same script: each step ~2 KB of assistant
text and one shell command, then a finish. The plain loop POSTs the growing
conversation (OpenAI Chat format) with http.client, parses the JSON answer and
runs the command with subprocess: the floor of any agent loop. loopwright runs
the task through the Runner with everything a real step does (the SDK, the
store, events, budget, checkpoints, tool dispatch). Reported per step: wall
time and this process's CPU (all its threads; not the commands and git
processes it starts), and loopwright's CPU against the plain loop's, after a
warm-up run of each, so imports count in neither.

The peer is mini-swe-agent, driven through its public API as its `mini` CLI
builds it (bench/mswea_driver.py: litellm, its bash tool, the trajectory saved
after every step, as it does by default) against the same loopback, replaying
the same turns with its tool name and its submit command. It is never a
loopwright dependency: it runs from a separate venv (`--peer-venv`), which the
bench creates and installs it into with pip when it is missing; when that fails
the column is skipped and the reason printed. Each figure is the median of
`--runs` runs, interleaved (plain, loopwright, peer, then again). Goals (issue
24): loopwright's CPU per step <= 0.5x mini-swe-agent's at 400 steps, and
growing <= 1.3x from 100 to 400 steps.

    python -m loopwright.bench.overhead [--steps 100 400] [--runs 3] [--provider openai] [--peer-venv DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import resource
import statistics
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
DRIVER = Path(__file__).with_name("mswea_driver.py")
DEFAULT_PEER_VENV = Path.home() / ".cache" / "loopwright-bench" / "mini-swe-agent"


def write_script(folder: Path, steps: int, peer: bool = False) -> Path:
    """Steps-1 turns of text and `echo ok`, then the finish: loopwright's tools, or mini-swe-agent's (`peer`)."""
    shell = "bash" if peer else "shell"
    turns = [{"text": TEXT, "tool_calls": [{"name": shell, "arguments": {"command": COMMAND}}]}
             for _ in range(steps - 1)]
    finish = ({"name": "bash", "arguments": {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"}} if peer
              else {"name": "finish", "arguments": {"summary": "ok"}})
    turns.append({"text": "done", "tool_calls": [finish]})
    path = folder / f"script-{steps}{'-peer' if peer else ''}.json"
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


def peer_python(venv: Path) -> tuple[Path | None, str]:
    """The Python of a venv holding mini-swe-agent, made with pip when missing; else None and why."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import minisweagent"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, ""
    print(f"installing mini-swe-agent into {venv} (a separate venv; never a loopwright dependency)...", flush=True)
    install = [str(python), "-m", "pip", "install", "-q", "mini-swe-agent"]
    for cmd in ([sys.executable, "-m", "venv", str(venv)], install):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return None, f"{' '.join(cmd[-3:])} failed: {lines[-1] if lines else done.returncode}"
    return python, ""


def peer_run(python: Path, warmup: Path, script: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of one mini-swe-agent run, measured by the driver in its own process after a warm-up."""
    folder = Path(tempfile.mkdtemp(prefix="lw-bench-peer-"))
    with Server(warmup) as first, Server(script) as server:
        # -c with the folder as cwd: run as a file, the driver's folder (bench/, with http.py) would shadow stdlib
        done = subprocess.run([str(python), "-c", DRIVER.read_text(), first.openai_base_url,
                               server.openai_base_url, str(folder)], cwd=folder, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": ""})
    if done.returncode != 0:
        raise RuntimeError(f"mini-swe-agent run failed:\n{done.stderr[-3000:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures["wall"], figures["cpu"]


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of `work()`."""
    w0, c0 = time.perf_counter(), cpu()
    work()
    return time.perf_counter() - w0, cpu() - c0


def measure(steps: int, provider: str, folder: Path, peer: Path | None) -> dict:
    """One run of each loop at `steps`: ms per step of wall and CPU, keyed plain_/lw_/peer_."""
    script = write_script(folder, steps)
    with Server(script) as server:
        plain = timed(lambda: plain_loop(server.openai_base_url))
    with Server(script) as server:
        base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
        lw = timed(lambda: loopwright_run(make_repo(), provider, base, steps))
    runs = {"plain": plain, "lw": lw}
    if peer:
        runs["peer"] = peer_run(peer, write_script(folder, 5, peer=True), write_script(folder, steps, peer=True))
    per = 1000 / steps
    return {f"{name}_{kind}": figures[i] * per for name, figures in runs.items()
            for i, kind in enumerate(("wall", "cpu"))}


def medians(rows: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in rows) for key in rows[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 400])
    ap.add_argument("--runs", type=int, default=3, help="runs of each loop at each length; medians are printed")
    ap.add_argument("--provider", default="openai", choices=["anthropic", "openai", "openai-responses"])
    ap.add_argument("--peer-venv", type=Path, default=DEFAULT_PEER_VENV,
                    help=f"venv holding mini-swe-agent, created when missing (default {DEFAULT_PEER_VENV})")
    ap.add_argument("--no-peer", action="store_true", help="skip the mini-swe-agent column")
    args = ap.parse_args()
    peer, why = (None, "--no-peer") if args.no_peer else peer_python(args.peer_venv)
    folder = Path(tempfile.mkdtemp(prefix="lw-bench-scripts-"))
    measure(5, args.provider, folder, None)  # warm-up: imports (the SDK's take a second or two) are no step's cost
    runs: dict[int, list[dict]] = {n: [] for n in args.steps}
    for _ in range(args.runs):  # interleaved, so a load change on the machine falls on every column alike
        for n in args.steps:
            runs[n].append(measure(n, args.provider, folder, peer))
    rows = {n: medians(r) for n, r in runs.items()}
    print(f"ms per step (~2 KB of text and one shell command each), medians of {args.runs} interleaved runs, "
          f"provider {args.provider}; CPU is the loop's own process's; load average {os.getloadavg()[0]:.2f}")
    columns = ["plain", "lw"] + (["peer"] if peer else [])
    names = {"plain": "plain HTTP", "lw": "loopwright", "peer": "mini-swe-agent"}
    print(f"{'steps':>6} " + " ".join(f"{names[c] + ' wall/CPU':>26}" for c in columns)
          + f" {'lw/plain CPU':>13}" + (f" {'lw/mini CPU':>12}" if peer else ""))
    for n, r in rows.items():
        print(f"{n:>6} " + " ".join(f"{r[c + '_wall']:>14.2f} / {r[c + '_cpu']:>8.2f}" for c in columns)
              + f" {r['lw_cpu'] / r['plain_cpu']:>12.2f}x"
              + (f" {r['lw_cpu'] / r['peer_cpu']:>11.2f}x" if peer else ""))
    if not peer:
        print(f"mini-swe-agent column skipped: {why}")
    if len(rows) >= 2:
        first, last = rows[args.steps[0]], rows[args.steps[-1]]
        growth = ", ".join(f"{names[c]} {last[c + '_cpu'] / first[c + '_cpu']:.2f}x" for c in columns)
        print(f"CPU per step at {args.steps[-1]} vs {args.steps[0]} steps: {growth} (goal for loopwright <= 1.3x)")
    if peer:
        print(f"loopwright / mini-swe-agent CPU per step at {args.steps[-1]} steps: "
              f"{rows[args.steps[-1]]['lw_cpu'] / rows[args.steps[-1]]['peer_cpu']:.2f}x (goal <= 0.5x)")


if __name__ == "__main__":
    main()
