"""The commands about single runs: `init`, `run` and `resume` in the foreground, `runs`, `show`, `checkpoints`,
`rollback`, `pause` and `kill`, and the offline `demo`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

from loopwright.cli.common import UsageError, add_model_and_merge_flags, print_json
from loopwright.harness.statuses import CommandKind, RunStatus
from loopwright.memory.store import StoreError
from loopwright.runtime.display import (
    ProgressPrinter,
    fmt_cache,
    fmt_cost,
    fmt_elapsed,
    fmt_tokens,
    run_summary,
    running_tool_call,
    transcript,
)
from loopwright.runtime.project import Project, init_project, open_project


def _model_overrides(args: argparse.Namespace) -> dict:
    over = {"provider": getattr(args, "provider", None), "model": getattr(args, "model", None),
            "base_url": getattr(args, "base_url", None), "script": getattr(args, "script", None),
            "agent": getattr(args, "agent", None), "agent_command": getattr(args, "agent_command", None)}
    if over["agent_command"] and not over["agent"]:
        over["agent"] = "command"
    if over["script"] and not over["provider"]:
        over["provider"] = "scripted"
    if getattr(args, "keep", False):
        over["on_success"] = "keep"
    if getattr(args, "target", None):
        over["target_branch"] = args.target
    return over


def cmd_init(args: argparse.Namespace) -> int:
    root, created = init_project(Path.cwd())
    if args.json:
        print_json({"root": str(root), "created": created})
    else:
        word = "initialised" if created else "already initialised"
        print(f"{word}: {root / '.loopwright'} (config: .loopwright/config.toml; its local state is hidden from "
              f"git via .git/info/exclude, skills.json, skills.lock.json and skills/ are meant to be committed)")
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
                runner.request_stop(RunStatus.PAUSED, "stopped by the user (Ctrl-C)", True)

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
        print_json(run_summary(run))
    else:
        print(f"run {run.id}: {run.status}" + (f" — {run.reason}" if run.reason else ""))
        print(f"  {run.step} steps, {fmt_tokens(run.tokens)} tokens, {fmt_cost(run)}, "
              f"{fmt_elapsed(run.active_seconds)}; {fmt_cache(run)}; branch {run.branch}")
        if run.status == RunStatus.PAUSED:
            print(f"  continue with: loopwright resume {run.id}")
    if run.status == RunStatus.SUCCEEDED:
        return 0
    return 130 if run.status == RunStatus.PAUSED and "Ctrl-C" in run.reason else 1


def cmd_run(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd(), create=True, overrides=_model_overrides(args))
    goal = args.goal.strip()
    if not goal:
        raise UsageError("the goal is empty: say what the agent should do, e.g. "
                         "loopwright run \"fix the failing test\"")
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
        command = project.store.enqueue_command(run.id, CommandKind.RESUME)
        return _command_queued(args, run.id, CommandKind.RESUME, command, pid)
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
        print_json({"run": run_id, "command": kind, "id": command, "handled_by": pid or "run owner",
                     "waits_for": waits[0] if waits else None})
    elif waits:
        print(f"{kind} queued for run {run_id}: it takes effect when the current tool call ends ({waits[0]}, "
              f"running for {fmt_elapsed(waits[1])}); `loopwright kill {run_id}` stops it now")
    elif kind == CommandKind.KILL:
        print(f"kill queued for run {run_id}: {where} stops it now (a command a tool is running is ended)")
    else:
        print(f"{kind} queued for run {run_id}: {where} applies it at the run's next safe point")
    return 0


def cmd_stop_run(args: argparse.Namespace) -> int:
    """pause / kill: the process that owns the run (daemon or foreground) pauses it at its next safe point (after
    the tool call running now), or kills it now."""
    from loopwright.runtime.fleet.daemon import daemon_pid

    project = open_project(Path.cwd())
    run = _target_run(project, args.run)
    kind = CommandKind(args.command)
    if run.status == RunStatus.RUNNING and run.owner_alive():
        command = project.store.enqueue_command(run.id, kind, {"reason": f"{kind} requested from the CLI"})
        waits = running_tool_call(project.store, run.id) if kind == CommandKind.PAUSE else None
        return _command_queued(args, run.id, kind, command, daemon_pid(project), waits)
    if kind == CommandKind.KILL and run.status in (RunStatus.PAUSED, RunStatus.BUDGET_EXCEEDED, RunStatus.RUNNING):
        project.store.transition_run(run.id, RunStatus.KILLED, only_from=(run.status,), reason="killed from the CLI")
        if args.json:
            print_json({"run": run.id, "status": RunStatus.KILLED})
        else:
            print(f"run {run.id} killed (it was {run.status}; its branch {run.branch} is kept)")
        return 0
    raise StoreError(f"run {run.id} is {run.status}, not running; nothing to {kind}")


def cmd_runs(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    runs = project.store.runs()
    if args.json:
        print_json([run_summary(r) for r in runs])
        return 0
    if not runs:
        print("no runs yet (start one with: loopwright run \"<goal>\")")
    for r in runs:
        title = project.store.task(r.task_id).title
        print(f"{r.id}  {r.status:<15} task {r.task_id:<4} step {r.step:<4} {fmt_tokens(r.tokens):>7} tok "
              f"{fmt_cost(r):<9} {title[:50]}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    run = project.store.run(args.run)
    if args.json:
        events = [{"id": i, "ts": ts, **e.model_dump(mode="json")} for i, ts, e in project.store.events(run.id)]
        print_json({**run_summary(run), "scratchpad": project.store.scratchpad(run.id).read(),
                     "progress": project.store.progress(run.task_id), "events": events})
        return 0
    task = project.store.task(run.task_id)
    print(f"run {run.id} · task {task.id}: {task.title} · {run.status}" + (f" ({run.reason})" if run.reason else ""))
    who = f"{run.provider}:{run.model}" if run.agent == "loopwright" else f"agent {run.agent}"
    print(f"worktree {run.worktree} · branch {run.branch} · {who}")
    print(f"{fmt_tokens(run.tokens)} tokens · {fmt_cost(run)} · {fmt_cache(run)}")
    if run.last_action:
        print(f"last action: {run.last_action}")
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
    rows = [{"checkpoint": 0, "sha": run.base_commit, "step": 0,
             "message": "start (the target branch when the run began)"}]
    rows += [{"checkpoint": c.seq, "sha": c.sha, "step": c.step, "message": c.message} for c in cps]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            print(f"{r['checkpoint']:>3}  {r['sha'][:10]}  step {r['step']:<4} {r['message'][:90]}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from loopwright.runtime.runner import rollback

    project = open_project(Path.cwd())
    run, seq, sha, how = rollback(project, args.run, to=args.to, steps=args.steps)
    if args.json:
        print_json({"run": run.id, "checkpoint": seq, "sha": sha, "result": how})
    else:
        print(f"run {run.id} rolled back to checkpoint {seq} ({sha[:10]}): {how}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from loopwright.runtime.demo import run_demo

    say = (lambda s: None) if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    demo = run_demo(via=args.via, say=say, progress=not args.json)
    run = demo.run
    if args.json:
        print_json({**run_summary(run), "repository": str(demo.repository), "store": str(demo.store),
                    "checkpoints": demo.checkpoints, "events": demo.events, "model": demo.how})
    else:
        print(f"\nresult: {run.status} — {run.reason}")
        print(f"model:       {demo.how}")
        print(f"repository:  {demo.repository}")
        print(f"store:       {demo.store} ({demo.events} events for this run)")
        print(f"worktree:    {run.worktree} (branch {run.branch})")
        print(f"checkpoints: {demo.checkpoints} on {run.branch} (commits with Loopwright-Run/Loopwright-Step trailers)")
        print(f"merged:      {run.target_branch} is now at {demo.merged}")
        print(f"lessons:     {demo.lessons} learned by reflection (scripted reply)")
        print(f"\nlook around: cd {demo.repository} && loopwright show {run.id} && loopwright checkpoints {run.id} && "
              f"loopwright lessons list")
    return 0 if run.status == RunStatus.SUCCEEDED else 1



def add_parsers(sub, add) -> None:
    """Register these commands on the main parser (`add(name, func, help)` makes a subparser with --json)."""
    add("init", cmd_init, "create .loopwright/ (store, config, worktrees) in this git repository")

    sp = add("run", cmd_run, "run one task in the foreground in its own worktree")
    sp.add_argument("goal", help="what the agent should do")
    sp.add_argument("--check", help="acceptance command run in the worktree when the agent finishes, e.g. 'pytest -q'")
    sp.add_argument("--title", help="short title for the task (default: the goal's first line)")
    add_model_and_merge_flags(sp)

    sp = add("resume", cmd_resume, "continue a paused or interrupted run (through the daemon when one runs)")
    sp.add_argument("run", help="run id, or task number")

    add("runs", cmd_runs, "list runs")

    for name, text in (("pause", "pause a run (or a task's run) at its next safe point (after a running tool call)"),
                       ("kill", "stop a run for good now, ending the command a tool runs (its branch is kept)")):
        sp = add(name, cmd_stop_run, text)
        sp.add_argument("run", help="run id, or task number")

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

    sp = add("demo", cmd_demo, "run the offline demo (scripted model, no API key) in a temporary repository")
    sp.add_argument("--via", choices=["scripted", "anthropic", "openai", "openai-responses"], default="scripted",
                    help="scripted: in-process; others: the real SDK against the loopback server")
