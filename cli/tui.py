"""`loopwright tui`: supervise the fleet in the Textual app (tui/app.py, imported only when the command runs)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from loopwright.runtime.fleet.daemon import DaemonError, daemon_pid
from loopwright.runtime.project import Project, open_project
from loopwright.runtime.sandboxing import make_sandbox


def start_daemon(project: Project) -> int:
    """`loopwright serve --detach` in the project (unless a daemon runs already); the daemon's pid."""
    pid = daemon_pid(project)
    if pid:
        return pid
    done = subprocess.run([sys.executable, "-m", "loopwright.cli.main", "serve", "--detach"], cwd=project.root,
                          capture_output=True, text=True, timeout=60)
    pid = daemon_pid(project)
    if done.returncode != 0 or not pid:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise DaemonError(f"could not start the daemon: {why.removeprefix('loopwright: error: ')}")
    return pid


def cmd_tui(args: argparse.Namespace) -> int:
    from loopwright.tui.app import TuiApp

    project = open_project(Path.cwd())
    if args.serve:
        start_daemon(project)
    TuiApp(project, author=args.author, sandbox_warning=make_sandbox(project.config).warning).run()
    return 0


def add_parsers(sub, add) -> None:
    """Register `loopwright tui` (the CLI's `add(name, func, help)`)."""
    sp = add("tui", cmd_tui, "supervise the fleet in a terminal UI (without a daemon, new tasks and chat messages "
                             "wait in the store and run actions are refused; quitting leaves it running)",
             json_flag=False)
    sp.add_argument("--serve", action="store_true",
                    help="start the daemon in the background first (as `loopwright serve --detach`), then attach")
    sp.add_argument("--as", dest="author", metavar="NAME", help="who the chat view posts as (default: $USER)")
