"""`LoopwrightError`: the one base of every error a user can cause, said in one line (with an optional hint).

It sits at the package root, below every layer (`workspaces/`, the leaf, raises one too) and imports nothing.
The command line and the TUI catch this base: a `LoopwrightError` is printed as `loopwright: error: <line>` (exit
2) or shown as an error toast, never as a traceback; any other exception is a bug. Errors that steer control flow
inside a layer (a tool's error the model reads, a budget that stops a loop, an inbox file refused) are not
user-facing and do not subclass it, unless they are also said to a person as they are.

The subclasses, by layer: workspaces `WorkspaceError`; harness `ModelError` (with `ModelUnavailable`,
`NeedsAttention`, `ContextOverflow`, `FatalModelError`, `ScriptError`), `SandboxError`; memory `StoreError`,
`LessonError`, `ArtifactError`; skills `SkillError`; runtime `ConfigError`, `ProjectError`, `PostError`,
`DaemonError`, `ChatError`, `PeopleError`, `ListenError`, `EvalError`, `SelfPlayError`, the inbox's `Rejected`;
cli `UsageError`.
"""

from __future__ import annotations


class LoopwrightError(Exception):
    """A one-line message for the person who caused it; `hint`, when given, says what to do and follows it.

    `str(error)` is the line as printed: `message (hint)`, or the message alone. Most messages carry their hint
    inline already; `hint` is for errors whose hint is also wanted on its own (the inbox writes it in a file)."""

    def __init__(self, message: str = "", hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
