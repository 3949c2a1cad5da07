"""The commands of the fleet: the daemon (`serve`), its queue (`post`, `tasks`, `cancel`), `status`, the fleet
`budget` and `gc` of finished runs' worktrees."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from pathlib import Path

from loopwright.cli.common import UsageError, add_model_and_merge_flags, print_json
from loopwright.harness.statuses import CommandKind, RunStatus, TaskStatus
from loopwright.memory.store import StoreError
from loopwright.runtime.display import clip, fmt_tokens, run_summary
from loopwright.runtime.fleet.hygiene import disk_floor, orphans
from loopwright.runtime.fleet.quota import closed_gates
from loopwright.runtime.project import Project, open_project
from loopwright.workspaces.repository import tree_bytes


def cmd_serve(args: argparse.Namespace) -> int:
    from loopwright.runtime.fleet.daemon import Daemon

    # the flags are config values given on the command line: checked, and refused, as the config's own are
    project = open_project(Path.cwd(), create=True, overrides={"backend": args.backend, "ray.address": args.address,
                                                               "max_parallel": args.max_parallel,
                                                               "http.listen": args.http})
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
    for flag, value in (("--max-parallel", args.max_parallel), ("--backend", args.backend),
                        ("--address", args.address), ("--http", args.http)):
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
        print_json({"pid": child.pid, "log": str(log)})
    else:
        print(f"daemon started (pid {child.pid}); log: {log}; stop it with: kill {child.pid}")
    return 0


def _first_error(log: Path, start: int) -> str | None:
    """What a process that stopped at once wrote into `log` after byte `start`: its `loopwright:` line, else its
    last."""
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
        "provider", "model", "base_url", "script", "keep", "skills", "agent", "agent_command")}
        | {"after": args.after or []})
    task = post_task(project, request, spell=cli_flag)
    pid = daemon_pid(project)
    if args.json:
        print_json({"task": task.id, "status": task.status, "priority": task.priority, "after": request.after,
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
        print_json(rows)
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
    active = [run_summary(r) for r in store.runs(statuses=(RunStatus.RUNNING,)) if r.owner_alive()]
    pid = daemon_pid(project)
    found = orphans(project)
    data = {"daemon": pid, "tasks": counts, "active_runs": active,
            "worktrees_bytes": tree_bytes(project.worktrees) if project.worktrees.exists() else 0,
            "orphans": {"worktrees": sum(o.worktree is not None for o in found),
                        "branches": sum(o.branch is not None for o in found)},
            "closed_gates": closed_gates(store), "disk_floor": disk_floor(project),
            "sandbox": sandbox_status(project.config)}
    if args.json:
        print_json(data)
        return 0
    if data["sandbox"]["warning"]:  # loud: first
        print(status_line(data["sandbox"]))
    print(f"daemon: {f'running (pid {pid})' if pid else 'not running (start one with `loopwright serve`)'}")
    print("tasks:  " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"))
    print(f"worktrees: {data['worktrees_bytes'] / 1e6:.1f} MB")
    if found:
        n, m = data["orphans"]["worktrees"], data["orphans"]["branches"]
        print(f"{n} orphaned worktree{'s' * (n != 1)}, {m} orphaned branch{'es' * (m != 1)}: no run owns them "
              f"(a kill while they were being made); `loopwright gc` removes them")
    if not data["sandbox"]["warning"]:
        print(status_line(data["sandbox"]))
    if data["disk_floor"]:
        print(f"held: {data['disk_floor']}")
    for g in data["closed_gates"]:
        then = ("runs wait, then go staggered" if project.config.quota.auto_resume
                else "runs pause (quota.auto_resume off)")
        print(f"rate-limit gate {g['gate']}: closed for {g['closed_for_seconds']:.0f}s more ({g['reason']}); {then}")
    if not active:
        print("nothing is running")
    for r in active:
        cost = "cost unknown" if r["cost_usd"] is None else f"${r['cost_usd']:.4f}"
        print(f"  {r['run']}  task {r['task']}  step {r['step']}  {fmt_tokens(r['tokens'])} tok  {cost}"
              f"  cache {r['cache_hit_share']:.0%} (saved ${r['cache_saved_usd']:.4f})  {r['last_action'][:60]}")
    return 0


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
        print_json(usage)
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
    if store.set_task_status(task.id, TaskStatus.CANCELLED, reason="cancelled from the CLI",
                             only_from=(TaskStatus.QUEUED,)):
        outcome = "cancelled (it had not started)"
    else:
        live = [r for r in store.runs(task_id=task.id) if r.status == RunStatus.RUNNING and r.owner_alive()]
        if not live:
            raise StoreError(f"task {task.id} is {task.status}; there is nothing to cancel")
        store.enqueue_command(live[-1].id, CommandKind.KILL, {"reason": "task cancelled"})
        outcome = f"cancelling: its run {live[-1].id} stops at its next safe point"
    if args.json:
        print_json({"task": task.id, "result": outcome})
    else:
        print(f"task {task.id} {outcome}")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    """Remove finished runs' worktrees and orphaned ones; with --dry-run, list them and the bytes removing them would
    free."""
    from loopwright.memory.intents import drop_dead_claims
    from loopwright.runtime.fleet.hygiene import (
        deletes_branch,
        finished_worktrees,
        orphan_bytes,
        remove_orphan,
        remove_worktree,
        worktree_bytes,
    )

    project = open_project(Path.cwd())
    listed, total = [], 0
    for run in finished_worktrees(project):
        total += worktree_bytes(project, run) if args.dry_run else remove_worktree(project, run)
        listed.append({"run": run.id, "worktree": run.worktree, "branch_deleted": deletes_branch(project, run),
                       "orphan": False})
    for orphan in orphans(project):
        total += orphan_bytes(orphan) if args.dry_run else remove_orphan(project, orphan)
        listed.append({"run": orphan.run_id, "worktree": orphan.worktree and str(orphan.worktree),
                       "branch_deleted": orphan.branch is not None, "orphan": True})
    if not args.dry_run:
        drop_dead_claims(project.store)
    if args.json:
        runs_key, bytes_key = ("would_remove", "bytes_to_free") if args.dry_run else ("removed", "bytes_freed")
        print_json({runs_key: listed, bytes_key: total, "dry_run": args.dry_run})
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for r in listed:
        what = f"orphaned worktree {r['worktree']}" if r["orphan"] else r["worktree"]
        branch = f"branch lw/{r['run']}" if r["branch_deleted"] else ""
        print(f"{verb} " + (" and ".join(w for w in (r["worktree"] and what, branch) if w)))
    if args.dry_run:
        print(f"{len(listed)} worktree(s) would be removed; {total / 1e6:.1f} MB would be freed")
    else:
        print(f"{len(listed)} worktree(s) removed; {total / 1e6:.1f} MB freed")
    return 0



def add_parsers(sub, add) -> None:
    """Register these commands on the main parser (`add(name, func, help)` makes a subparser with --json)."""
    sp = add("serve", cmd_serve, "the daemon: run queued tasks in parallel until stopped (SIGTERM/Ctrl-C pause them)")
    sp.add_argument("--detach", action="store_true", help="run in the background (log in .loopwright/logs/daemon.log)")
    sp.add_argument("--max-parallel", type=int, help="runs at once (default: max_parallel in the config)")
    sp.add_argument("--backend", choices=["local", "ray"], help="where runs execute (default: backend in the config)")
    sp.add_argument("--address", metavar="ADDR", help="ray: the cluster, e.g. head-host:6379 (default: [ray] address; "
                                                     "unset: a local cluster)")
    sp.add_argument("--http", metavar="HOST:PORT", help="also serve the chat API over HTTP (default: [http] listen; "
                                                       "PORT alone: 127.0.0.1; README: Chat over HTTP)")

    sp = add("post", cmd_post, "queue a task for the daemon")
    sp.add_argument("goal")
    sp.add_argument("--check", help="acceptance command run in the worktree when the agent finishes")
    sp.add_argument("--title")
    sp.add_argument("--priority", type=int, default=0, help="higher starts first (default 0)")
    sp.add_argument("--after", type=int, nargs="+", metavar="TASK", help="start only after these tasks succeeded")
    sp.add_argument("--until", metavar="CMD", help="loop until done: fresh attempts until CMD passes in the worktree")
    sp.add_argument("--max-attempts", type=int, metavar="N", help="cap on --until attempts")
    sp.add_argument("--budget-usd", type=float, metavar="X", help="USD cap for this task (all attempts together)")
    add_model_and_merge_flags(sp)

    add("tasks", cmd_tasks, "list tasks with their status, priority and dependencies")
    add("status", cmd_status, "the daemon, the queue, active runs and worktree disk use")

    sp = add("budget", cmd_budget, "the fleet budget: spent and left today and in total; `raise` adds to it")
    sp.add_argument("action", nargs="?", choices=["show", "raise"], default="show")
    sp.add_argument("--usd", type=float, help="with raise: add this many USD")
    sp.add_argument("--tokens", type=int, help="with raise: add this many tokens")
    sp.add_argument("--total", action="store_true", help="with raise: raise the all-time limit instead of today's")

    sp = add("cancel", cmd_cancel, "cancel a queued task, or stop the run of a running one")
    sp.add_argument("task", type=int)

    sp = add("gc", cmd_gc, "remove worktrees of finished runs and orphaned ones, and report the disk freed")
    sp.add_argument("--dry-run", action="store_true", help="remove nothing: list what would go and the disk freed "
                                                          "(JSON: would_remove, bytes_to_free)")
