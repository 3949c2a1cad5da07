"""The sandbox of a process's runs (harness/sandbox.py), from the `[sandbox]` and `[secrets]` config.

`make_sandbox(config)` is called once where runs start — `loopwright run` and
resume, the daemon, a Ray worker — and the one it returns is passed down:
`run_sandbox` gives each run its own view of it (with network "allow", a proxy
whose refusals become `network_refused` events of that run), `setup_sandbox`
the one `[workspace] setup_command` runs in, `run_check` runs a run's
acceptance check (or --until command) in it. `Redactor` hides the values of
key variables in any text a tool returns, sandbox or not. A policy that cannot
be had raises `SandboxError` (a LoopwrightError: said in one line).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from loopwright.harness.commands import CommandResult, run_command
from loopwright.harness.events import NetworkRefused, SandboxChosen
from loopwright.harness.sandbox import MIN_SECRET_LEN, Sandbox, SandboxError, secret_names
from loopwright.harness.tools import ToolContext
from loopwright.runtime.config import Config

# the policy (JSON) handed to loopwright's own verifier processes (self-play checks), which jail what they run
POLICY_VARIABLE = "LW_SANDBOX_POLICY"


def hidden_names(config: Config) -> list[str]:
    """Variables kept out of commands and redacted besides those that look like keys: `[secrets] redact` and the
    provider key's own variable when it is named in `api_key_env`."""
    return [*config.secrets.redact, *([config.api_key_env] if config.api_key_env else [])]


def make_sandbox(config: Config) -> Sandbox:
    """The sandbox `[sandbox]` asks for (mode auto: bwrap if a jailed `true` runs here, else none with a warning).
    A policy that cannot be had is a SandboxError."""
    return Sandbox.for_policy(config.sandbox, hide_env=hidden_names(config))


_VERSIONS: dict[str, str] = {}  # bwrap binary -> its version (asked once per process)


def describe(box: Sandbox) -> str:
    """One line: bwrap's version and binary, the network; or the warning of mode none."""
    if box.mode != "bwrap":
        return box.warning or "sandbox off"
    binary = str(getattr(box, "bwrap", ""))
    if binary not in _VERSIONS:
        _VERSIONS[binary] = box.version()
    p = box.policy
    net = {"off": "network off", "on": "network on",
           "allow": f"network only to {', '.join(p.allow_hosts) or 'no host'}"}[p.network]
    return f"{_VERSIONS[binary]} ({binary}), {net}"


def chosen_event(box: Sandbox) -> SandboxChosen:
    return SandboxChosen(mode=box.mode, detail=describe(box) if box.mode == "bwrap" else "", warning=box.warning)


def run_sandbox(base: Sandbox, record: Callable[[NetworkRefused], None]) -> Sandbox:
    """The sandbox of one run, from the process's `base`: with network "allow" its own proxy, whose refusals are
    `record`ed as events from the event loop running now (the proxy calls from its own thread). Close it when the
    run ends if it is not `base`."""
    loop = asyncio.get_running_loop()

    def refused(host: str, port: int) -> None:
        loop.call_soon_threadsafe(record, NetworkRefused(host=host, port=port))

    return base.reporting_to(refused)


def setup_sandbox(base: Sandbox) -> Sandbox:
    """Where `[workspace] setup_command` runs: the run's jail, but with the network on when it is off (installing
    dependencies needs it); an explicit allow list stays."""
    return base.variant(network="on") if base.policy.network == "off" else base


def check_worktree(box: Sandbox, worktree: Path, repo_root: Path) -> None:
    """Refuse now (a SandboxError, one line) extra paths the policy names that would expose too much for this
    repository."""
    # network "allow" would start a proxy just to be asked: the paths do not depend on the network
    (box.variant(network="off") if box.policy.network == "allow" else box).wrap("true", worktree=worktree,
                                                                                repo_root=repo_root)


async def run_check(check: str, worktree: Path, config: Config, ctx: ToolContext, *,
                    trusted: bool = False) -> CommandResult:
    """The acceptance check (or --until command) in a jail of its own with the run's policy (`[sandbox] checks`; not
    the run's long-lived jail: the check gets a fresh /tmp and $HOME), its output redacted.

    `trusted`: loopwright's own verifier (a self-play attempt's check, `python -P -m loopwright...`), which runs
    outside and puts what it executes (the hidden tests, the project's suite) into a jail of the same policy."""
    box = ctx.sandbox if config.sandbox.checks and not trusted else None
    env = {POLICY_VARIABLE: ctx.sandbox.policy.model_copy(update={"mode": ctx.sandbox.mode}).model_dump_json()} \
        if trusted and ctx.sandbox is not None else None
    try:
        result = await run_command(check, cwd=worktree, timeout=config.check_timeout, cap=config.tools.output_cap,
                                   interrupt=ctx.interrupt, sandbox=box, repo_root=ctx.repo_root, env=env,
                                   processes=ctx.processes)
    except SandboxError as e:
        return CommandResult(exit_code=126, output=f"the sandbox could not be set up for the check: {e}\n",
                             timed_out=False, duration_ms=0.0)
    output = box.explain(result.output, result.exit_code) if box is not None else result.output
    return dataclasses.replace(result, output=ctx.redact(output) if ctx.redact is not None else output)


def verifier_sandbox() -> Sandbox | None:
    """In a self-play verifier process: the sandbox its parent run passed down (None: run things as before)."""
    from loopwright.harness.sandbox import SandboxPolicy

    raw = os.environ.get(POLICY_VARIABLE)
    if not raw:
        return None
    return Sandbox.for_policy(SandboxPolicy.model_validate_json(raw))


class Redactor:
    """`text` with the values of key variables (and `[secrets] redact` ones) replaced by `[redacted:NAME]`."""

    def __init__(self, config: Config, environ: Mapping[str, str] | None = None):
        env = dict(os.environ if environ is None else environ)
        names = secret_names(env, extra=hidden_names(config))
        self.values = sorted(((env[n], n) for n in names if len(env.get(n, "")) >= MIN_SECRET_LEN),
                             key=lambda vn: -len(vn[0]))

    def __call__(self, text: str) -> str:
        for value, name in self.values:
            if value in text:
                text = text.replace(value, f"[redacted:{name}]")
        return text
