"""Where loopwright keeps what belongs to the user rather than to one project."""

from __future__ import annotations

import os
from pathlib import Path


def loopwright_home() -> Path:
    """The user-level folder: `$LOOPWRIGHT_HOME`, else `~/.loopwright`."""
    return Path(os.environ.get("LOOPWRIGHT_HOME") or Path.home() / ".loopwright")
