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
import sys
import tempfile
import time
import traceback
from pathlib import Path

from loopwright.cli import artifacts as artifact_commands
from loopwright.cli import chat, fleet, lessons, runs, selfplay, skills
from loopwright.cli import evaluate as eval_commands
from loopwright.cli import sandbox as sandbox_commands
from loopwright.cli import tui as tui_commands
from loopwright.cli.common import Parser, project_root
from loopwright.errors import LoopwrightError


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

    for group in (runs, fleet, skills, artifact_commands, lessons, eval_commands, chat, tui_commands, selfplay,
                  sandbox_commands):
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
        log = _crash_log()
        with log.open("a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()} argv {sys.argv}\n")
            f.write(traceback.format_exc())
        print(f"loopwright: internal error: {type(e).__name__}: {e} (traceback in {log})", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
