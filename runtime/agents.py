"""Which agent does a task's runs: `loopwright` (its own loop) or an external command-line agent
(`harness.agents`), from the config's `agent` (and `--agent` on `run` and `post`).

`cli_agent(config)` maps the name to a `CliAgent` (None for loopwright's own loop); a name it does not know, or
a `command` without a usable template, is a ConfigError said in one line. `agent_sandbox` is the sandbox its CLI
runs in: the run's, with the network allowed only to the agent's API hosts, its config folders shown read-only,
and, for a CLI that writes into its config folder (`config_home`), a writable per-run copy of it in their place.

A per-run copy (`agent_home`) lives in the user's loopwright folder (`agent-homes/<project>/<run>`, mode 0700),
outside the repository and its store: it holds the CLI's own login and settings, copied once when the run starts,
and its sessions, so a resume (after a pause or a crash) finds them. It is removed when the run ends for good
(`discard_agent_home`), or by `loopwright gc`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from loopwright.harness.agents.base import AgentOptions, CliAgent, ConfigHome
from loopwright.harness.agents.claude_code import ClaudeCodeAgent
from loopwright.harness.agents.codex import CodexAgent
from loopwright.harness.agents.command import CommandAgent
from loopwright.harness.agents.driver import DriverSettings
from loopwright.harness.budget import FleetGate
from loopwright.harness.events import NetworkRefused
from loopwright.harness.models import ModelInfo
from loopwright.harness.sandbox import Sandbox, SandboxError
from loopwright.memory.paths import loopwright_home
from loopwright.memory.store import Store
from loopwright.runtime.config import DEFAULT_MODELS, Config, ConfigError, is_local_url
from loopwright.runtime.sandboxing import run_sandbox
from loopwright.workspaces.repository import tree_bytes

LOOPWRIGHT = "loopwright"


def _command(config: Config) -> CliAgent:
    if not config.agent_command:
        raise ConfigError("--agent command needs its template: --agent-command 'aider --message {prompt} "
                          "--yes-always' (or agent_command = \"...\" in the config)")
    return CommandAgent(config.agent_command)


# the built-in CLI agents, by name
BUILTIN: dict[str, Callable[[Config], CliAgent]] = {
    "command": _command,
    "claude-code": lambda config: ClaudeCodeAgent(),
    "codex": lambda config: CodexAgent(),
}


def agent_names(config: Config) -> list[str]:
    return [LOOPWRIGHT, *BUILTIN, *(n for n in config.agents if n not in BUILTIN)]


def cli_agent(config: Config) -> CliAgent | None:
    """The CLI agent the config names (None: loopwright's own loop); ConfigError for a name it does not know."""
    name = config.agent
    if name == LOOPWRIGHT:
        return None
    if name in BUILTIN:
        return BUILTIN[name](config)
    section = config.agents.get(name)
    if section is None or not section.command:
        known = ", ".join(agent_names(config))
        raise ConfigError(f"unknown agent '{name}' (known: {known}); or define it in the config: "
                          f"[agents.{name}] command = \"yourcli {{prompt}}\"")
    return CommandAgent(section.command, name=name, where=f"[agents.{name}] command",
                        hosts=tuple(section.hosts), config_dirs=tuple(section.config_dirs), keys=tuple(section.keys))


def agent_options(config: Config, name: str, appended: str = "", folder: Path | None = None) -> AgentOptions:
    """What `[agents.NAME]` says to the CLI, the text loopwright appends to its instructions, and the run's copy of
    its config folder (`run_config_folder`)."""
    section = config.agents.get(name)
    if section is None:
        return AgentOptions(appended_instructions=appended, config_folder=folder)
    return AgentOptions(model=section.model, max_turns=section.max_turns, permission_mode=section.permission_mode,
                        allowed_tools=tuple(section.allowed_tools), extra_args=tuple(section.extra_args),
                        appended_instructions=appended, config_folder=folder)


def model_prices(config: Config, model: str | None) -> ModelInfo | None:
    """The prices of a model a CLI named in its usage: the config's table, then the built-in one."""
    if model is None:
        return None
    return config.models.get(model) or DEFAULT_MODELS.get(model)


def loopback_host(config: Config) -> str | None:
    """host:port of the configured base URL when it is on this machine (the loopback server of the tests)."""
    if not config.base_url or not is_local_url(config.base_url):
        return None
    url = urlsplit(config.base_url)
    return f"{url.hostname}:{url.port}" if url.port else url.hostname


def run_config_folder(base: Sandbox, agent: CliAgent, root: Path, run_id: str) -> Path | None:
    """The run's copy of the agent's config folder (`agent_home`), under bwrap for a CLI that writes into its
    folder; None: the CLI uses its own folder (no jail keeps it from writing there)."""
    if base.mode != "bwrap" or agent.config_home is None:
        return None
    return agent_home(agent.config_home, root, run_id)


def agent_sandbox(base: Sandbox, agent: CliAgent, config: Config,
                  folder: Path | None = None) -> tuple[Sandbox, dict[str, str]]:
    """The sandbox the agent's CLI runs in, and variables to set after the sandbox's own.

    The run's policy, with the agent's config folders read-only (`home_allow`), the run's copy of its config folder
    `folder` (`run_config_folder`) writable and named by the agent's variable, and, unless the network is on for
    every command, the network allowed only to the policy's hosts and the agent's API hosts (plus the base URL's
    host when it is local, reached through the proxy too). A sandbox that is not bwrap limits nothing."""
    policy = base.policy
    home_allow = [*policy.home_allow, *(d for d in agent.config_dirs if d not in policy.home_allow)]
    if base.mode != "bwrap":
        return base.variant(home_allow=home_allow), {}
    override: dict[str, str] = {}
    writable = list(policy.writable)
    if folder is not None and agent.config_home is not None:
        writable.append(str(folder))
        override[agent.config_home.variable] = str(folder)
    if policy.network == "on":
        return base.variant(home_allow=home_allow, writable=writable), override
    local = loopback_host(config)
    hosts = [*policy.allow_hosts, *agent.api_hosts, *([local] if local else [])]
    box = base.variant(network="allow", allow_hosts=hosts, home_allow=home_allow, writable=writable)
    return box, override | ({"NO_PROXY": "", "no_proxy": ""} if local else {})


def supervision(base: Sandbox, agent: CliAgent, config: Config, *, root: Path, worktree: Path, run_id: str,
                task_id: int, text: str, recalled: str, record: Callable[[NetworkRefused], None],
                fleet: FleetGate | None = None) -> tuple[Sandbox, DriverSettings]:
    """The run's view of the sandbox its agent's CLI runs in (`agent_sandbox`; close it when the run ends) and its
    supervisor's settings: the task `text`, the caps, the prices, and the sandbox's rules and the `recalled` lessons
    appended to the agent's instructions. `root`: the repository the worktree belongs to (on this machine)."""
    folder = run_config_folder(base, agent, root, run_id)
    agent_box, override = agent_sandbox(base, agent, config, folder)
    jail = run_sandbox(agent_box, record)
    appended = "\n\n".join(t for t in (agent_box.rules(worktree), recalled.strip()) if t)
    settings = DriverSettings(
        task_text=text, options=agent_options(config, agent.name, appended, folder), budget=config.budget,
        price=lambda model: model_prices(config, model), fleet=fleet,
        env={"LOOPWRIGHT_RUN_ID": run_id, "LOOPWRIGHT_TASK_ID": str(task_id)}, env_override=override,
        transcript_cap=config.tools.output_cap, line_cap=max(config.tools.output_cap // 4, 1000))
    return jail, settings


def untold(store: Store, run_id: str) -> list[str]:
    """What a CLI agent was to be told but was not (recorded after its last prompt, then the run stopped)."""
    told: list[str] = []
    for _, _, event in store.events(run_id, types=("message", "notice")):
        if event.type == "message" and event.message.role == "user":
            told.clear()
        elif event.type == "notice":
            told.append(event.text)
    return told


def agent_homes(root: Path) -> Path:
    """The folder of a project's per-run copies of its CLI agents' config folders."""
    root = root.resolve()
    return loopwright_home() / "agent-homes" / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:12]}"


def agent_home(home: ConfigHome, root: Path, run_id: str) -> Path:
    """The run's writable copy of a CLI's config folder, made the first time: mode 0700, holding what `home.files`
    names of the user's folder (its login, settings). Copying the CLI's own credentials file is the user's login,
    used as the CLI would use it; loopwright stores no key."""
    path, part = _copies(root, run_id)
    if path.is_dir():  # kept while the run can resume: its sessions are there
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for folder in (path.parent.parent, path.parent):  # other users see no run's copy
        folder.chmod(0o700)
    source = Path(os.environ.get(home.variable) or Path.home() / home.default)
    try:
        shutil.rmtree(part, ignore_errors=True)  # a copy cut short by a crash is never taken for a whole one
        part.mkdir(mode=0o700)
        for name in home.files:
            if (source / name).is_dir():
                shutil.copytree(source / name, part / name, symlinks=True)
            elif (source / name).is_file():
                shutil.copy2(source / name, part / name)
        part.rename(path)
    except OSError as e:
        raise SandboxError(f"could not copy {source} (the CLI's config folder, {home.variable}) to {path} for the "
                           f"run: {e}; check that both are readable and the disk has room") from None
    return path


def home_run_id(path: Path) -> str:
    """The run a per-run config folder (or a copy of it cut short) belongs to."""
    return path.name.removeprefix(".").removesuffix(".part")


def _copies(root: Path, run_id: str) -> tuple[Path, Path]:
    """The run's copy of its agent's config folder, and one cut short."""
    return agent_homes(root) / run_id, agent_homes(root) / f".{run_id}.part"


def agent_home_bytes(root: Path, run_id: str) -> int:
    """The bytes of the run's copy of its agent's config folder (and of one cut short)."""
    return sum(tree_bytes(p) for p in _copies(root, run_id))


def discard_agent_home(root: Path, run_id: str) -> int:
    """Remove the run's copy of its agent's config folder (the run ended for good); the bytes freed."""
    freed = agent_home_bytes(root, run_id)
    for path in _copies(root, run_id):
        shutil.rmtree(path, ignore_errors=True)
    return freed
