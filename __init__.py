"""loopwright: a runtime for fleets of long-running LLM agents.

The small public API: the store, the config, the internal message model and
the one-task runner that the CLI and the daemon share.
"""

__version__ = "0.1.0"
