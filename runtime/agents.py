"""Which agent does a task's runs: `loopwright` (its own loop) or an external command-line agent
(`harness.agents`), from the config's `agent` (and `--agent` on `run` and `post`).

`cli_agent(config)` maps the name to a `CliAgent` (None for loopwright's own loop); a name it does not know, or
a `command` without a usable template, is a ConfigError said in one line. `agent_sandbox` is the sandbox its CLI
runs in: the run's, with the network allowed only to the agent's API hosts and its config folders shown
read-only.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from loopwright.harness.agents.base import AgentOptions, CliAgent
from loopwright.harness.agents.claude_code import ClaudeCodeAgent
from loopwright.harness.agents.codex import CodexAgent
from loopwright.harness.agents.command import CommandAgent
from loopwright.harness.models import ModelInfo
from loopwright.harness.sandbox import Sandbox
from loopwright.runtime.config import DEFAULT_MODELS, Config, ConfigError, is_local_url

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


def agent_options(config: Config, name: str, appended: str = "") -> AgentOptions:
    """What `[agents.NAME]` says to the CLI, and the text loopwright appends to its instructions."""
    section = config.agents.get(name)
    if section is None:
        return AgentOptions(appended_instructions=appended)
    return AgentOptions(model=section.model, max_turns=section.max_turns, permission_mode=section.permission_mode,
                        allowed_tools=tuple(section.allowed_tools), extra_args=tuple(section.extra_args),
                        appended_instructions=appended)


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


def agent_sandbox(base: Sandbox, agent: CliAgent, config: Config) -> tuple[Sandbox, dict[str, str]]:
    """The sandbox the agent's CLI runs in, and variables to set after the sandbox's own.

    The run's policy, with the agent's config folders read-only (`home_allow`) and, unless the network is on
    for every command, the network allowed only to the policy's hosts and the agent's API hosts (plus the base
    URL's host when it is local, reached through the proxy too). A sandbox that is not bwrap limits nothing."""
    policy = base.policy
    home = [*policy.home_allow, *(d for d in agent.config_dirs if d not in policy.home_allow)]
    if base.mode != "bwrap" or policy.network == "on":
        return base.variant(home_allow=home), {}
    local = loopback_host(config)
    hosts = [*policy.allow_hosts, *agent.api_hosts, *([local] if local else [])]
    box = base.variant(network="allow", allow_hosts=hosts, home_allow=home)
    return box, ({"NO_PROXY": "", "no_proxy": ""} if local else {})
