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

import os
import shutil
import sqlite3
import sys
import tempfile
import time
import traceback
from pathlib import Path

from loopwright.cli import artifacts as artifact_commands
from loopwright.cli import chat, fleet, lessons, people, runs, selfplay, skills
from loopwright.cli import evaluate as eval_commands
from loopwright.cli import sandbox as sandbox_commands
from loopwright.cli import tui as tui_commands
from loopwright.cli.common import Parser, project_root
from loopwright.errors import LoopwrightError
from loopwright.memory.database import disk_full_error
from loopwright.runtime.fleet.hygiene import DISK_FULL, FULL_MB


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

    for group in (runs, fleet, skills, artifact_commands, lessons, eval_commands, chat, people, tui_commands,
                  selfplay, sandbox_commands):
        group.add_parsers(sub, add)

    from loopwright.harness import loopback

    loopback.add_arguments(add("loopback", loopback.serve, loopback.DESCRIPTION, json_flag=False))
    return p


def _crash_log() -> Path:
    root = project_root()
    d = root / ".loopwright" / "logs" if root is not None else None
    if d is not None and d.is_dir():
        return d / "crash.log"
    return Path(tempfile.gettempdir()) / "loopwright-crash.log"


def _disk_full(e: Exception) -> str | None:
    """"disk full (N MB free)" when `e` is a write that failed for lack of space, or an SQLite error where the disk is
    full (opening the store there fails with "disk I/O error": its shared-memory file cannot be made)."""
    if not (disk_full_error(e) or isinstance(e, sqlite3.Error)):
        return None
    try:
        free = shutil.disk_usage(Path.cwd()).free / 1e6
    except OSError:
        return None
    return f"{DISK_FULL} ({free:,.0f} MB free)" if disk_full_error(e) or free < FULL_MB else None


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
    except LoopwrightError as e:  # a user's mistake or a state the user can fix: one line, never a traceback
        print(f"loopwright: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loopwright: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep the traceback out of the user's face, but keep it
        full = _disk_full(e)
        if full:  # not a bug, and there is no room for a crash log anyway
            print(f"loopwright: error: {full}: {e}; free space (or remove finished worktrees with `loopwright gc`), "
                  "then try again", file=sys.stderr)
            return 2
        log = _crash_log()
        where = f"traceback in {log}"
        try:
            with log.open("a") as f:
                f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} argv {sys.argv}\n")
                f.write(traceback.format_exc())
        except OSError as log_error:
            where = f"no traceback: {log} cannot be written: {log_error.strerror}"
        print(f"loopwright: internal error: {type(e).__name__}: {e} ({where})", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
