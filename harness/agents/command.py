"""The `command` agent: any command-line agent given by a template such as `aider --message {prompt} --yes-always`.

The template is split like a shell would (shlex) and `{prompt}` is replaced by the prompt as one argument, so
nothing in a prompt is ever read by a shell. It has no event stream and no session: the supervisor checkpoints
on the file changes it sees, keeps stdout and stderr as the transcript, and a resume runs the template again on
the new prompt (the task with what happened meanwhile, or the failed check's output).
"""

from __future__ import annotations

import os
import shlex

from loopwright.errors import LoopwrightError
from loopwright.harness.agents.base import AgentEvent, AgentOptions

PLACEHOLDER = "{prompt}"


class AgentTemplateError(LoopwrightError):
    """A command template that cannot run a prompt, said in one line."""


def template_argv(template: str, where: str) -> list[str]:
    """The template split into words, with `{prompt}` in one of them; `where` names it in the error."""
    try:
        words = shlex.split(template)
    except ValueError as e:
        raise AgentTemplateError(f"{where} `{template}` cannot be split into words ({e}); check its quotes") from None
    if not words:
        raise AgentTemplateError(f"{where} is empty: give the command that runs the agent, e.g. "
                                 f"'aider --message {PLACEHOLDER} --yes-always'")
    if not any(PLACEHOLDER in w for w in words):
        raise AgentTemplateError(f"{where} `{template}` has no {PLACEHOLDER}: say where the prompt goes, e.g. "
                                 f"'{words[0]} --message {PLACEHOLDER}'")
    return words


class CommandAgent:
    """A `CliAgent` for a command template (see the module docstring)."""

    streams_events = False
    api_hosts: tuple[str, ...] = ()
    config_dirs: tuple[str, ...] = ()

    def __init__(self, template: str, *, name: str = "command", where: str = "--agent-command",
                 hosts: tuple[str, ...] = (), config_dirs: tuple[str, ...] = (), keys: tuple[str, ...] = (),
                 key_hint: str = ""):
        self.name, self.template = name, template
        self.words = template_argv(template, where)
        self.api_hosts, self.config_dirs, self.keys = hosts, config_dirs, keys
        self.key_hint = key_hint or (f"whatever `{self.words[0]}` needs to start (its key variable or login; "
                                     f"key variables pass through from loopwright's environment)")

    def command(self, prompt: str, options: AgentOptions, *, session_id: str | None = None) -> list[str]:
        if options.appended_instructions:  # no system prompt to append to: it goes with the prompt
            prompt = f"{prompt}\n\n{options.appended_instructions}"
        return [w.replace(PLACEHOLDER, prompt) for w in self.words] + list(options.extra_args)

    def environment(self) -> dict[str, str]:
        return {k: os.environ[k] for k in self.keys if k in os.environ}

    def parse(self, line: str) -> list[AgentEvent]:
        return []
