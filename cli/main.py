"""The `loopwright` command line.

Every error a user can cause is answered in one line with a hint, never a
traceback; an unexpected crash is logged to `.loopwright/logs/crash.log` and
summarised in one line. Read commands take `--json`.

Exit codes: 0 done, 1 the run did not succeed, 2 usage or configuration error,
130 stopped by Ctrl-C (the run is paused and can be resumed), 141 the reader
of the output went away (`loopwright runs | head -1`): stopped quietly, as a
process killed by SIGPIPE (`git log | head`) is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

from loopwright.harness.models import ModelError
from loopwright.memory.artifacts import ArtifactError
from loopwright.memory.lessons import LessonError
from loopwright.memory.store import StoreError
from loopwright.runtime.chat.threads import ChatError
from loopwright.runtime.config import ConfigError
from loopwright.runtime.display import (
    ProgressPrinter,
    clip,
    fmt_elapsed,
    fmt_tokens,
    run_summary,
    running_tool_call,
    transcript,
)
from loopwright.runtime.fleet.daemon import DaemonError
from loopwright.runtime.fleet.hygiene import disk_floor
from loopwright.runtime.fleet.quota import closed_gates
from loopwright.runtime.posting import PostError
from loopwright.runtime.project import Project, ProjectError, init_project, open_project
from loopwright.skills.catalog import SkillError
from loopwright.workspaces.git import WorkspaceError, tree_bytes

USER_ERRORS = (ConfigError, ProjectError, StoreError, WorkspaceError, ModelError, DaemonError, PostError, SkillError,
               ArtifactError, LessonError, ChatError)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line with a hint instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def _model_overrides(args: argparse.Namespace) -> dict:
    over = {"provider": getattr(args, "provider", None), "model": getattr(args, "model", None),
            "base_url": getattr(args, "base_url", None), "script": getattr(args, "script", None)}
    if over["script"] and not over["provider"]:
        over["provider"] = "scripted"
    if getattr(args, "keep", False):
        over["on_success"] = "keep"
    if getattr(args, "target", None):
        over["target_branch"] = args.target
    return over


# -- commands -------------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    root, created = init_project(Path.cwd())
    if args.json:
        _print_json({"root": str(root), "created": created})
    else:
        word = "initialised" if created else "already initialised"
        print(f"{word}: {root / '.loopwright'} (config: .loopwright/config.toml; hidden from git via .git/info/exclude)")
    return 0


def _run_in_foreground(project: Project, coro_factory, *, quiet: bool) -> Any:
    """Run a Runner coroutine with live progress; Ctrl-C stops at the next safe point, twice interrupts the tool.
    Pause and kill commands for the run (`loopwright pause/kill`, the TUI) are obeyed as they come."""
    from loopwright.cli.sandbox import foreground_sandbox
    from loopwright.runtime.runner import Runner

    if not quiet:
        project.store.listeners.append(ProgressPrinter(project.store))

    async def main() -> Any:
        stop = asyncio.Event()
        runner = Runner(project, stop=stop, sandbox=foreground_sandbox(project, quiet=quiet))
        task = asyncio.ensure_future(coro_factory(runner))
        watcher = asyncio.ensure_future(runner.watch_commands())
        presses = 0

        def on_sigint() -> None:
            nonlocal presses
            presses += 1
            if presses == 1:
                print("\nstopping at the next safe point (Ctrl-C again to interrupt the current tool)…",
                      file=sys.stderr, flush=True)
                stop.set()
            else:
                runner.request_stop("paused", "stopped by the user (Ctrl-C)", True)

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        loop.add_signal_handler(signal.SIGTERM, on_sigint)
        try:
            return await task
        finally:
            watcher.cancel()
            loop.remove_signal_handler(signal.SIGINT)
            loop.remove_signal_handler(signal.SIGTERM)

    return asyncio.run(main())


def _report(result: Any, args: argparse.Namespace) -> int:
    run = result.run
    if args.json:
        _print_json(run_summary(run))
    else:
        print(f"run {run.id}: {run.status}" + (f" — {run.reason}" if run.reason else ""))
        print(f"  {run.step} steps, {fmt_tokens(run.tokens)} tokens, ${run.cost_usd:.4f}, "
              f"{fmt_elapsed(run.active_seconds)}; branch {run.branch}")
        if run.status == "paused":
            print(f"  continue with: loopwright resume {run.id}")
    if run.status == "succeeded":
        return 0
    return 130 if run.status == "paused" and "Ctrl-C" in run.reason else 1


def cmd_run(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True, overrides=_model_overrides(args))
    goal = args.goal.strip()
    if not goal:
        raise UsageError("the goal is empty: say what the agent should do, e.g. loopwright run \"fix the failing test\"")
    from loopwright.runtime.posting import check_command, cli_flag, skill_choice

    check = args.check if args.check is not None else project.config.check
    if check:
        check_command(project, check, "--check" if args.check else "check (in the config)")
    skills = None
    if args.skills is not None:
        skills = skill_choice(project, args.skills, cli_flag("skills"))
    result = _run_in_foreground(project, lambda r: r.start(goal, check=args.check, title=args.title, skills=skills),
                                quiet=args.json)
    return _report(result, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from loopwright.runtime.fleet.daemon import daemon_pid

    project = open_project(Path.cwd())
    pid = daemon_pid(project)
    if pid:  # the daemon owns scheduling: ask it
        run = _target_run(project, args.run)
        command = project.store.enqueue_command(run.id, "resume")
        return _command_queued(args, run.id, "resume", command, pid)
    result = _run_in_foreground(project, lambda r: r.resume(_target_run(project, args.run).id), quiet=args.json)
    return _report(result, args)


def _target_run(project: Project, ident: str):
    """A run named by its id (or prefix), or by its task's number (that task's latest run)."""
    store = project.store
    if ident.isdigit() and len(ident) < 7:
        task = store.task(int(ident))
        runs = store.runs(task_id=task.id)
        if not runs:
            raise StoreError(f"task {task.id} is {task.status} and has no run yet")
        return runs[-1]
    return store.run(ident)


def _command_queued(args: argparse.Namespace, run_id: str, kind: str, command: int, pid: int | None,
                    waits: tuple[str, float] | None = None) -> int:
    """Say what was queued; `waits`: the tool call (and its seconds so far) a pause waits for."""
    where = f"the daemon (pid {pid})" if pid else "the process running it"
    if args.json:
        _print_json({"run": run_id, "command": kind, "id": command, "handled_by": pid or "run owner",
                     "waits_for": waits[0] if waits else None})
    elif waits:
        print(f"{kind} queued for run {run_id}: it takes effect when the current tool call ends ({waits[0]}, "
              f"running for {fmt_elapsed(waits[1])}); `loopwright kill {run_id}` stops it now")
    elif kind == "kill":
        print(f"kill queued for run {run_id}: {where} stops it now (a command a tool is running is ended)")
    else:
        print(f"{kind} queued for run {run_id}: {where} applies it at the run's next safe point")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from loopwright.runtime.fleet.daemon import Daemon

    # the flags are config values given on the command line: checked, and refused, as the config's own are
    project = open_project(Path.cwd(), create=True, overrides={"backend": args.backend, "ray.address": args.address,
                                                               "max_parallel": args.max_parallel})
    if args.detach:
        return _detach(project, args)
    asyncio.run(Daemon(project).serve())
    return 0


def _detach(project: Project, args: argparse.Namespace) -> int:
    """`serve` in the background: done once it holds the project's lock, else its error in one line."""
    import subprocess

    from loopwright.runtime.fleet.daemon import DaemonError, daemon_pid

    log = project.log_dir / "daemon.log"
    argv = [sys.executable, "-m", "loopwright.cli.main", "serve"]
    for flag, value in (("--max-parallel", args.max_parallel), ("--backend", args.backend), ("--address", args.address)):
        argv += [flag, str(value)] if value is not None else []
    with log.open("a") as out:
        start = out.tell()
        child = subprocess.Popen(argv, cwd=project.root, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True)
    deadline = time.monotonic() + 15
    while daemon_pid(project) != child.pid:
        if child.poll() is not None:  # it stopped before taking the lock (another daemon holds it...), said why
            why = _first_error(log, start) or f"it exited with status {child.returncode}"
            raise DaemonError(f"the daemon did not start: {why} (see {log})")
        if time.monotonic() > deadline:
            raise DaemonError(f"the daemon (pid {child.pid}) has not taken the project's lock after 15 s; "
                              f"it may still be starting: see {log}")
        time.sleep(0.05)
    if args.json:
        _print_json({"pid": child.pid, "log": str(log)})
    else:
        print(f"daemon started (pid {child.pid}); log: {log}; stop it with: kill {child.pid}")
    return 0


def _first_error(log: Path, start: int) -> str | None:
    """What a process that stopped at once wrote into `log` after byte `start`: its `loopwright:` line, else its last."""
    with log.open(errors="replace") as f:
        f.seek(start)
        lines = [line.strip() for line in f if line.strip()]
    said = [line for line in lines if line.startswith("loopwright: ")]
    line = said[0] if said else lines[-1] if lines else None
    return line and line.removeprefix("loopwright: ").removeprefix("error: ")


def cmd_post(args: argparse.Namespace) -> int:
    from loopwright.runtime.fleet.daemon import daemon_pid
    from loopwright.runtime.posting import cli_flag, parse_request, post_task

    project = open_project(Path.cwd(), create=True)
    request = parse_request({k: getattr(args, k) for k in (
        "goal", "title", "check", "priority", "until", "max_attempts", "budget_usd", "target",
        "provider", "model", "base_url", "script", "keep", "skills")} | {"after": args.after or []})
    task = post_task(project, request, spell=cli_flag)
    pid = daemon_pid(project)
    if args.json:
        _print_json({"task": task.id, "status": task.status, "priority": task.priority, "after": request.after,
                     "daemon": pid})
    else:
        print(f"task {task.id} queued: {task.title}")
        if not pid:
            print("no daemon is running: start one with `loopwright serve` (or `loopwright serve --detach`)")
    return 0


def _task_row(store, t) -> dict:
    runs = store.runs(task_id=t.id)
    return {"task": t.id, "status": t.status, "priority": t.priority, "title": t.title, "reason": t.reason,
            "after": [d.id for d in store.dependencies(t.id)], "runs": [r.id for r in runs],
            "cost_usd": round(sum(r.cost_usd for r in runs), 6)}


def cmd_tasks(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    rows = [_task_row(project.store, t) for t in project.store.tasks()]
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no tasks yet (add one with: loopwright post \"<goal>\")")
    columns = shutil.get_terminal_size().columns
    for r in rows:
        after = f" after {','.join(map(str, r['after']))}" if r["after"] else ""
        line = f"{r['task']:>4}  {r['status']:<15} p{r['priority']:<3} {clip(r['title'], 60)}{after}"
        # the reason fills the rest of the terminal's width (at least 40 characters), cut between words
        print(line + (f"  ({clip(r['reason'], max(40, columns - len(line) - 4))})" if r["reason"] else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from loopwright.cli.sandbox import sandbox_status, status_line
    from loopwright.runtime.fleet.daemon import daemon_pid

    project = open_project(Path.cwd())
    store = project.store
    counts: dict[str, int] = {}
    for t in store.tasks():
        counts[t.status] = counts.get(t.status, 0) + 1
    active = [run_summary(r) for r in store.runs(statuses=("running",)) if r.owner_alive()]
    pid = daemon_pid(project)
    data = {"daemon": pid, "tasks": counts, "active_runs": active,
            "worktrees_bytes": tree_bytes(project.worktrees) if project.worktrees.exists() else 0,
            "closed_gates": closed_gates(store), "disk_floor": disk_floor(project),
            "sandbox": sandbox_status(project.config)}
    if args.json:
        _print_json(data)
        return 0
    if data["sandbox"]["warning"]:  # loud: first
        print(status_line(data["sandbox"]))
    print(f"daemon: {'running (pid %d)' % pid if pid else 'not running (start one with `loopwright serve`)'}")
    print("tasks:  " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    print(f"worktrees: {data['worktrees_bytes'] / 1e6:.1f} MB")
    if not data["sandbox"]["warning"]:
        print(status_line(data["sandbox"]))
    if data["disk_floor"]:
        print(f"held: {data['disk_floor']}")
    for g in data["closed_gates"]:
        then = "runs wait, then go staggered" if project.config.quota.auto_resume else "runs pause (quota.auto_resume off)"
        print(f"rate-limit gate {g['gate']}: closed for {g['closed_for_seconds']:.0f}s more ({g['reason']}); {then}")
    if not active:
        print("nothing is running")
    for r in active:
        print(f"  {r['run']}  task {r['task']}  step {r['step']}  {fmt_tokens(r['tokens'])} tok  ${r['cost_usd']:.4f}"
              f"  {r['last_action'][:60]}")
    return 0


def cmd_stop_run(args: argparse.Namespace) -> int:
    """pause / kill: the process that owns the run (daemon or foreground) pauses it at its next safe point (after
    the tool call running now), or kills it now."""
    from loopwright.runtime.fleet.daemon import daemon_pid

    project = open_project(Path.cwd())
    run = _target_run(project, args.run)
    kind = args.command
    if run.status == "running" and run.owner_alive():
        command = project.store.enqueue_command(run.id, kind, {"reason": f"{kind} requested from the CLI"})
        waits = running_tool_call(project.store, run.id) if kind == "pause" else None
        return _command_queued(args, run.id, kind, command, daemon_pid(project), waits)
    if kind == "kill" and run.status in ("paused", "budget_exceeded", "running"):
        project.store.transition_run(run.id, "killed", only_from=(run.status,), reason="killed from the CLI")
        if args.json:
            _print_json({"run": run.id, "status": "killed"})
        else:
            print(f"run {run.id} killed (it was {run.status}; its branch {run.branch} is kept)")
        return 0
    raise StoreError(f"run {run.id} is {run.status}, not running; nothing to {kind}")


def cmd_budget(args: argparse.Namespace) -> int:
    from loopwright.runtime.fleet.budget import FleetBudget

    project = open_project(Path.cwd())
    budget = FleetBudget(project.store, project.config.fleet)
    if args.action == "raise":
        if not (args.usd or args.tokens):
            raise UsageError("say how much: budget raise --usd X and/or --tokens N")
        budget.raise_by(usd=args.usd or 0.0, tokens=args.tokens or 0, total=args.total)
    usage = {**budget.usage(), "spent": budget.exhausted()}
    if args.json:
        _print_json(usage)
        return 0

    def cap(x, money):
        return "no limit" if x is None else (f"${x:.2f}" if money else f"{x:,}")

    print(f"budget day {usage['day']} (resets at {project.config.fleet.resets_at})")
    print(f"  today:    ${usage['day_usd']:.4f} of {cap(usage['day_usd_limit'], True)}, "
          f"{usage['day_tokens']:,} of {cap(usage['day_tokens_limit'], False)} tokens")
    print(f"  in total: ${usage['total_usd']:.4f} of {cap(usage['total_usd_limit'], True)}, "
          f"{usage['total_tokens']:,} of {cap(usage['total_tokens_limit'], False)} tokens")
    print(f"  {usage['spent']}" if usage["spent"] else "  model calls may start")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    store = project.store
    task = store.task(args.task)
    if store.set_task_status(task.id, "cancelled", reason="cancelled from the CLI", only_from=("queued",)):
        outcome = "cancelled (it had not started)"
    else:
        live = [r for r in store.runs(task_id=task.id) if r.status == "running" and r.owner_alive()]
        if not live:
            raise StoreError(f"task {task.id} is {task.status}; there is nothing to cancel")
        store.enqueue_command(live[-1].id, "kill", {"reason": "task cancelled"})
        outcome = f"cancelling: its run {live[-1].id} stops at its next safe point"
    if args.json:
        _print_json({"task": task.id, "result": outcome})
    else:
        print(f"task {task.id} {outcome}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    runs = project.store.runs()
    if args.json:
        _print_json([run_summary(r) for r in runs])
        return 0
    if not runs:
        print("no runs yet (start one with: loopwright run \"<goal>\")")
    for r in runs:
        title = project.store.task(r.task_id).title
        print(f"{r.id}  {r.status:<15} task {r.task_id:<4} step {r.step:<4} {fmt_tokens(r.tokens):>7} tok "
              f"${r.cost_usd:<8.4f} {title[:50]}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    run = project.store.run(args.run)
    if args.json:
        events = [{"id": i, "ts": ts, **e.model_dump(mode="json")} for i, ts, e in project.store.events(run.id)]
        _print_json({**run_summary(run), "scratchpad": project.store.scratchpad(run.id).read(),
                     "progress": project.store.progress(run.task_id), "events": events})
        return 0
    task = project.store.task(run.task_id)
    print(f"run {run.id} · task {task.id}: {task.title} · {run.status}" + (f" ({run.reason})" if run.reason else ""))
    print(f"worktree {run.worktree} · branch {run.branch} · {run.provider}:{run.model}")
    print()
    for line in transcript(project.store, run.id, full=args.full):
        print(line)
    pad = project.store.scratchpad(run.id).read()
    if pad:
        print("\nscratch pad:\n  " + pad.replace("\n", "\n  "))
    progress = project.store.progress(run.task_id)
    if progress:
        print(f"\nprogress file of task {task.id}:\n  " + progress.replace("\n", "\n  "))
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    run = project.store.run(args.run)
    cps = project.store.checkpoints(run.id)
    rows = [{"checkpoint": 0, "sha": run.base_commit, "step": 0, "message": "start (the target branch when the run began)"}]
    rows += [{"checkpoint": c.seq, "sha": c.sha, "step": c.step, "message": c.message} for c in cps]
    if args.json:
        _print_json(rows)
    else:
        for r in rows:
            print(f"{r['checkpoint']:>3}  {r['sha'][:10]}  step {r['step']:<4} {r['message'][:90]}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from loopwright.runtime.runner import rollback

    project = open_project(Path.cwd())
    run, seq, sha, how = rollback(project, args.run, to=args.to, steps=args.steps)
    if args.json:
        _print_json({"run": run.id, "checkpoint": seq, "sha": sha, "result": how})
    else:
        print(f"run {run.id} rolled back to checkpoint {seq} ({sha[:10]}): {how}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove finished runs' worktrees; with --dry-run, list them and the bytes removing them would free."""
    from loopwright.runtime.fleet.hygiene import deletes_branch, finished_worktrees, remove_worktree, worktree_bytes

    project = open_project(Path.cwd())
    listed, total = [], 0
    for run in finished_worktrees(project):
        total += worktree_bytes(project, run) if args.dry_run else remove_worktree(project, run)
        listed.append({"run": run.id, "worktree": run.worktree, "branch_deleted": deletes_branch(project, run)})
    if args.json:
        runs_key, bytes_key = ("would_remove", "bytes_to_free") if args.dry_run else ("removed", "bytes_freed")
        _print_json({runs_key: listed, bytes_key: total, "dry_run": args.dry_run})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in listed:
        print(f"{verb} {r['worktree']}" + (f" and branch lw/{r['run']}" if r["branch_deleted"] else ""))
    if args.dry_run:
        print(f"{len(listed)} worktree(s) would be removed; {total / 1e6:.1f} MB would be freed")
    else:
        print(f"{len(listed)} worktree(s) removed; {total / 1e6:.1f} MB freed")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from loopwright.runtime.demo import run_demo

    return run_demo(via=args.via, keep=True, json_out=args.json)


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> Parser:
    p = Parser(prog="loopwright", description="Run long-lived LLM coding agents in git worktrees.")
    p.add_argument("--version", action="version", version=f"loopwright {__import__('loopwright').__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def add(name: str, func, help: str, json_flag: bool = True) -> Parser:
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(func=func)
        if json_flag:
            sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    add("init", cmd_init, "create .loopwright/ (store, config, worktrees) in this git repository")

    sp = add("run", cmd_run, "run one task in the foreground in its own worktree")
    sp.add_argument("goal", help="what the agent should do")
    sp.add_argument("--check", help="acceptance command run in the worktree when the agent finishes, e.g. 'pytest -q'")
    sp.add_argument("--title", help="short title for the task (default: the goal's first line)")
    sp.add_argument("--provider", choices=["anthropic", "openai", "openai-responses", "scripted"])
    sp.add_argument("--model", help="model name (prices and window from the config)")
    sp.add_argument("--base-url", dest="base_url", help="API base URL, e.g. a local OpenAI-compatible server")
    sp.add_argument("--script", help="scripted model: a JSON file of assistant turns (no API key used)")
    sp.add_argument("--keep", action="store_true", help="keep the branch for review instead of merging on success")
    sp.add_argument("--target", metavar="BRANCH", help="branch to start from and merge into (default: the current one)")
    sp.add_argument("--skills", metavar="CHOICE", help="skills the agent sees: all, auto (the most relevant to the "
                                                      "goal), none, or names like pdf,tdd-loop (default: [skills] "
                                                      "select in the config)")

    sp = add("resume", cmd_resume, "continue a paused or interrupted run (through the daemon when one runs)")
    sp.add_argument("run", help="run id, or task number")

    add("runs", cmd_runs, "list runs")

    sp = add("serve", cmd_serve, "the daemon: run queued tasks in parallel until stopped (SIGTERM/Ctrl-C pause them)")
    sp.add_argument("--detach", action="store_true", help="run in the background (log in .loopwright/logs/daemon.log)")
    sp.add_argument("--max-parallel", type=int, help="runs at once (default: max_parallel in the config)")
    sp.add_argument("--backend", choices=["local", "ray"], help="where runs execute (default: backend in the config)")
    sp.add_argument("--address", metavar="ADDR", help="ray: the cluster, e.g. head-host:6379 (default: [ray] address; "
                                                     "unset: a local cluster)")

    sp = add("post", cmd_post, "queue a task for the daemon")
    sp.add_argument("goal")
    sp.add_argument("--check", help="acceptance command run in the worktree when the agent finishes")
    sp.add_argument("--title")
    sp.add_argument("--priority", type=int, default=0, help="higher starts first (default 0)")
    sp.add_argument("--after", type=int, nargs="+", metavar="TASK", help="start only after these tasks succeeded")
    sp.add_argument("--until", metavar="CMD", help="loop until done: fresh attempts until CMD passes in the worktree")
    sp.add_argument("--max-attempts", type=int, metavar="N", help="cap on --until attempts")
    sp.add_argument("--budget-usd", type=float, metavar="X", help="USD cap for this task (all attempts together)")
    sp.add_argument("--provider", choices=["anthropic", "openai", "openai-responses", "scripted"])
    sp.add_argument("--model")
    sp.add_argument("--base-url", dest="base_url")
    sp.add_argument("--script", help="scripted model: a JSON file of assistant turns (no API key used)")
    sp.add_argument("--keep", action="store_true", help="keep the branch for review instead of merging on success")
    sp.add_argument("--target", metavar="BRANCH", help="branch to start from and merge into (default: the current one)")
    sp.add_argument("--skills", metavar="CHOICE", help="skills the agent sees: all, auto (the most relevant to the "
                                                      "goal), none, or names like pdf,tdd-loop (default: [skills] "
                                                      "select in the config)")

    add("tasks", cmd_tasks, "list tasks with their status, priority and dependencies")
    add("status", cmd_status, "the daemon, the queue, active runs and worktree disk use")

    for name, text in (("pause", "pause a run (or a task's run) at its next safe point (after a running tool call)"),
                       ("kill", "stop a run for good now, ending the command a tool runs (its branch is kept)")):
        sp = add(name, cmd_stop_run, text)
        sp.add_argument("run", help="run id, or task number")

    sp = add("budget", cmd_budget, "the fleet budget: spent and left today and in total; `raise` adds to it")
    sp.add_argument("action", nargs="?", choices=["show", "raise"], default="show")
    sp.add_argument("--usd", type=float, help="with raise: add this many USD")
    sp.add_argument("--tokens", type=int, help="with raise: add this many tokens")
    sp.add_argument("--total", action="store_true", help="with raise: raise the all-time limit instead of today's")

    sp = add("cancel", cmd_cancel, "cancel a queued task, or stop the run of a running one")
    sp.add_argument("task", type=int)

    sp = add("show", cmd_show, "print a run's transcript")
    sp.add_argument("run")
    sp.add_argument("--full", action="store_true", help="do not clip tool output")

    sp = add("checkpoints", cmd_checkpoints, "list a run's checkpoints")
    sp.add_argument("run")

    sp = add("rollback", cmd_rollback, "reset a run's worktree to a checkpoint")
    sp.add_argument("run")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--to", help="checkpoint number (see `loopwright checkpoints RUN`; 0 is the start) or sha")
    g.add_argument("--steps", type=int, help="go back N checkpoints")

    sp = add("gc", cmd_gc, "remove worktrees of finished runs and report the disk freed")
    sp.add_argument("--dry-run", action="store_true", help="remove nothing: list what would go and the disk freed "
                                                          "(JSON: would_remove, bytes_to_free)")

    sp = add("demo", cmd_demo, "run the offline demo (scripted model, no API key) in a temporary repository")
    sp.add_argument("--via", choices=["scripted", "anthropic", "openai", "openai-responses"], default="scripted",
                    help="scripted: in-process; others: the real SDK against the loopback server")

    from loopwright.cli.chat import add_parsers as add_chat_parsers
    from loopwright.cli.lessons import add_parsers as add_lesson_parsers
    from loopwright.cli.sandbox import add_parsers as add_sandbox_parsers
    from loopwright.cli.selfplay import add_parsers as add_selfplay_parsers
    from loopwright.cli.skills import add_parsers as add_skill_parsers
    from loopwright.memory.artifacts import add_parsers as add_artifact_parsers
    from loopwright.runtime.learning.evaluate import add_parsers as add_eval_parsers
    from loopwright.tui.app import add_parsers as add_tui_parsers

    add_skill_parsers(sub, add)
    add_artifact_parsers(sub, add)
    add_lesson_parsers(sub, add)
    add_eval_parsers(sub, add)
    add_chat_parsers(sub, add)
    add_tui_parsers(sub, add)
    add_selfplay_parsers(sub, add)
    add_sandbox_parsers(sub, add)

    from loopwright.harness import loopback

    loopback.add_arguments(add("loopback", loopback.serve, loopback.DESCRIPTION, json_flag=False))
    return p


def _crash_log() -> Path:
    try:
        project_dir = Path.cwd()
        from loopwright.runtime.project import _top

        d = _top(project_dir) / ".loopwright" / "logs"
        if d.is_dir():
            return d / "crash.log"
    except Exception:
        pass
    return Path(tempfile.gettempdir()) / "loopwright-crash.log"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away is seen here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # stdout's reader stopped reading (`| head`): not an error, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
        return 141
    except UsageError as e:
        print(f"loopwright: error: {e}", file=sys.stderr)
        return 2
    except USER_ERRORS as e:
        print(f"loopwright: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loopwright: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep the traceback out of the user's face, but keep it
        log = _crash_log()
        with log.open("a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} argv {sys.argv}\n")
            f.write(traceback.format_exc())
        print(f"loopwright: internal error: {type(e).__name__}: {e} (traceback in {log})", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
