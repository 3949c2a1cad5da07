"""What every command module shares: the parser class, JSON output, the run a user names, the project folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, NoReturn

from loopwright.errors import LoopwrightError


class UsageError(LoopwrightError):
    """The command line itself is wrong: a missing or bad argument, said in one line with a hint."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line with a hint instead of a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def add_actions(parser: Parser, dest: str):
    """Subcommands under a command group (`lessons list`, `skills install`, ...): the group alone prints its help
    and exits 2; `action(name, func, help)` makes one with its own --json."""
    inner = parser.add_subparsers(dest=dest, metavar="ACTION", parser_class=type(parser))
    parser.set_defaults(func=lambda a: (parser.print_help(), 2)[1])

    def action(name: str, func, help: str) -> Parser:
        p = inner.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    return action


def project_root() -> Path | None:
    """The repository around the current folder; None outside one."""
    from loopwright.runtime.project import project_root as root_of

    try:
        return root_of(Path.cwd())
    except Exception:  # noqa: BLE001 — not a git repository
        return None



def add_model_and_merge_flags(sp: argparse.ArgumentParser) -> None:
    """The flags `run` and `post` share: which model does the task, and where its work goes."""
    sp.add_argument("--provider", choices=["anthropic", "openai", "openai-responses", "scripted"])
    sp.add_argument("--model", help="model name (prices and window from the config)")
    sp.add_argument("--base-url", dest="base_url", help="API base URL, e.g. a local OpenAI-compatible server")
    sp.add_argument("--script", help="scripted model: a JSON file of assistant turns (no API key used)")
    sp.add_argument("--keep", action="store_true", help="keep the branch for review instead of merging on success")
    sp.add_argument("--target", metavar="BRANCH", help="branch to start from and merge into (default: the current one)")
    sp.add_argument("--agent", help="who does the task: loopwright (default), claude-code, codex, command, or a "
                                     "name from [agents.NAME] in the config")
    sp.add_argument("--agent-command", dest="agent_command", metavar="TEMPLATE",
                    help="--agent command: the agent's command line, {prompt} where the prompt goes, e.g. "
                         "'aider --message {prompt} --yes-always'")
    sp.add_argument("--skills", metavar="CHOICE", help="skills the agent sees: all, auto (the most relevant to the "
                                                      "goal), none, or names like pdf,tdd-loop (default: [skills] "
                                                      "select in the config)")
