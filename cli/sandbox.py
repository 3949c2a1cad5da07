"""`loopwright sandbox check` and `loopwright sandbox shell [RUN]`, and how the other commands say the sandbox.

`check` prints the mode, the bwrap binary and its version, then runs the
escape battery (harness/sandbox_battery.py) against a temporary repository and
worktree, one line per probe; it exits 1 when an escape gets through, an
allowed thing fails, or there is no sandbox at all. `shell` opens bash in a
run's jail (its worktree, the project's policy) for a person to see what the
agent sees.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from loopwright.harness.sandbox import Sandbox, SandboxError
from loopwright.runtime.config import Config, load_config
from loopwright.runtime.project import Project, ProjectError, open_project
from loopwright.runtime.sandboxing import describe, make_sandbox
from loopwright.workspaces.repository import WorkspaceError


def foreground_sandbox(project: Project, *, quiet: bool = False) -> Sandbox:
    """The sandbox of `loopwright run` / `resume`, made once as they start. Without one, the warning is said on
    stderr here when the progress lines (which say it too) are off."""
    box = make_sandbox(project.config)
    if box.warning and quiet:
        print(f"loopwright: WARNING: {box.warning}", file=sys.stderr, flush=True)
    return box


def sandbox_status(config: Config) -> dict:
    """For `status`: the mode this machine gives the project's policy, and the warning when it is none."""
    try:
        box = make_sandbox(config)
    except SandboxError as e:  # mode bwrap where it cannot run: runs refuse to start; status says why
        return {"mode": "unavailable", "detail": "", "warning": f"runs cannot start: {e}"}
    return {"mode": box.mode, "detail": describe(box), "warning": box.warning}


def status_line(status: dict) -> str:
    return f"WARNING: {status['warning']}" if status["warning"] else f"sandbox: bwrap: {status['detail']}"


def _config() -> Config:
    """The project's config around cwd; the defaults (and LOOPWRIGHT_* variables) outside a project."""
    try:
        return open_project(Path.cwd()).config
    except (ProjectError, WorkspaceError):  # not in a project, or not in a git repository
        return load_config(None)


def cmd_check(args: argparse.Namespace) -> int:
    from loopwright.harness.sandbox_battery import run_battery

    config = _config()
    box = make_sandbox(config)
    bwrap = str(getattr(box, "bwrap", "")) or None
    if not args.json:
        print(f"mode: {box.mode} ([sandbox] mode = \"{config.sandbox.mode}\")")
        if box.mode == "bwrap":
            print(f"bwrap: {bwrap} ({box.version()})")
            p = config.sandbox
            print(f"policy: {describe(box).split('), ', 1)[-1]}; checks {'jailed' if p.checks else 'NOT jailed'}; "
                  f"limits {p.max_processes} processes, {p.max_file_mb} MB per file, {p.max_memory_mb} MB per process"
                  + "".join(f"; {k}: {', '.join(v)}" for k, v in (("writable", p.writable), ("readable", p.readable),
                                                                   ("home_allow", p.home_allow)) if v))
        else:
            print(f"WARNING: {box.warning}")
        print("escape battery (a temporary repository, worktree, home and daemon stand-in):", flush=True)
    t0 = time.monotonic()

    def say(result) -> None:
        if not args.json:
            print(f"  {result.line()}", flush=True)

    results = run_battery(box.mode, bwrap=bwrap if box.mode == "bwrap" else None, on_result=say)
    escaped = [r for r in results if r.probe.kind == "escape" and r.worked]
    broken = [r for r in results if r.probe.kind == "allowed" and not r.worked]
    escapes = sum(1 for r in results if r.probe.kind == "escape")
    ok = box.mode == "bwrap" and not escaped and not broken
    if args.json:
        print(json.dumps({"mode": box.mode, "bwrap": bwrap, "version": box.version(), "warning": box.warning,
                          "ok": ok, "seconds": round(time.monotonic() - t0, 2),
                          "probes": [{"probe": r.probe.name, "kind": r.probe.kind, "verdict": r.verdict}
                                     for r in results]}, indent=2))
        return 0 if ok else 1
    print(f"{escapes - len(escaped)} of {escapes} escapes blocked, {len(results) - escapes - len(broken)} of "
          f"{len(results) - escapes} allowed things work ({time.monotonic() - t0:.1f} s)")
    if box.mode != "bwrap":
        print("FAILED: there is no sandbox here: agent commands run with this user's access")
    elif escaped or broken:
        print("FAILED: " + "; ".join([f"ALLOWED: {r.probe.name}" for r in escaped]
                                     + [f"FAILS: {r.probe.name}" for r in broken]))
    return 0 if ok else 1


def cmd_shell(args: argparse.Namespace) -> int:
    project = open_project(Path.cwd())
    store = project.store
    if args.run:
        run = store.run(args.run)
    else:
        run = next((r for r in reversed(store.runs()) if Path(r.worktree).is_dir()), None)
        if run is None:
            raise SandboxError("no run has a worktree to open a shell in (name one: loopwright sandbox shell RUN)")
    if not Path(run.worktree).is_dir():
        raise SandboxError(f"the worktree of run {run.id} is gone ({run.worktree})")
    box = make_sandbox(project.config)
    if box.mode != "bwrap":
        raise SandboxError(f"there is no jail to enter: {box.warning}")
    # a policy that does not fit this repository is a SandboxError, said in one line
    argv, env = box.wrap("exec /bin/bash --norc --noprofile -i", worktree=Path(run.worktree),
                         repo_root=project.root, new_session=False,
                         env={"PS1": f"[sandbox {run.id}] \\w\\$ ", "LOOPWRIGHT_RUN_ID": run.id})
    print(f"a shell in the jail of run {run.id} ({describe(box)}); `exit` leaves it", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the shell's
    try:
        return subprocess.run(argv, env=env).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
        box.close()


def add_parsers(sub, add) -> None:
    """Register `loopwright sandbox check|shell` (the CLI's `add(name, func, help)`)."""
    sp = add("sandbox", None, "the sandbox agent commands run in: check it, or open a shell in a run's jail",
             json_flag=False)
    inner = sp.add_subparsers(dest="sandbox_command", metavar="ACTION", parser_class=type(sp))
    sp.set_defaults(func=lambda a: (sp.print_help(), 2)[1])
    text = "mode, bwrap and its version, then the escape battery, one line per probe (exit 1 if one gets through)"
    check = inner.add_parser("check", help=text, description=text)
    check.set_defaults(func=cmd_check)
    check.add_argument("--json", action="store_true", help="machine-readable output")
    text = "an interactive shell in a run's jail: what its agent sees"
    shell = inner.add_parser("shell", help=text, description=text)
    shell.set_defaults(func=cmd_shell)
    shell.add_argument("run", nargs="?", help="run id (default: the latest run whose worktree exists)")
