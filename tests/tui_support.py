"""Helpers shared by the TUI tests: waiting through Textual's pilot, the screen as text, and SVG snapshots.

Snapshots live in tests/snapshots/tui/; after a deliberate change to the views, rewrite them with
LOOPWRIGHT_UPDATE_SNAPSHOTS=1 and look at the new SVGs before committing them.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

from rich.console import Console

SNAPSHOTS = Path(__file__).parent / "snapshots" / "tui"
UPDATE = bool(os.environ.get("LOOPWRIGHT_UPDATE_SNAPSHOTS"))  # read before the fixtures clear LOOPWRIGHT_*
SETTLE_SECONDS = 10.0


async def wait(pilot, condition, what: str, timeout: float = 60.0) -> None:
    """Let the app run until `condition()` holds; fail saying `what` did not happen in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await pilot.pause(0.05)


def screen_text(app) -> str:
    """What the terminal shows, as plain text."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True,
                      legacy_windows=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


async def assert_snapshot(pilot, app, name: str) -> None:
    """The screen, once it has stopped changing, is the one in SNAPSHOTS/<name>.svg.

    A screenshot taken while a scroll or a refresh is still pending differs from the stored one on a slow
    machine, so the picture is taken again until two in a row agree (or SETTLE_SECONDS pass).
    """
    deadline = time.monotonic() + SETTLE_SECONDS
    svg = app.export_screenshot(title=name)
    while True:
        await pilot.pause(0.1)
        again = app.export_screenshot(title=name)
        if again == svg or time.monotonic() > deadline:
            break
        svg = again
    path = SNAPSHOTS / f"{name}.svg"
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(svg)
    assert path.exists(), f"no snapshot {path}: run with LOOPWRIGHT_UPDATE_SNAPSHOTS=1 to write it"
    if svg != path.read_text():
        got = path.with_suffix(".actual.svg")
        got.write_text(svg)
        raise AssertionError(f"{name} differs from {path} (this run's is {got}):\n{screen_text(app)}")
