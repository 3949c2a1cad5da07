"""The web chat page at `/`: one HTML document with its script and style inline, and the headers it is served with.

No build step and nothing fetched from elsewhere: page.html and page.js are package data, read once. The
Content-Security-Policy allows exactly that inline script and style (by their hashes) and requests to this
origin, so even a message that slipped past the script's text-only rendering could not run code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import re
from importlib.resources import files


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@functools.cache
def _template() -> tuple[str, dict[str, str]]:
    here = files("loopwright.runtime.http")
    script = here.joinpath("page.js").read_text(encoding="utf-8")
    assert "</script" not in script.lower()
    page = here.joinpath("page.html").read_text(encoding="utf-8").replace("{{script}}", script)
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    policy = (f"default-src 'none'; script-src {_hash(script)}; style-src {_hash(style.group(1))}; "
              "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    return page, {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def render(agent: str) -> tuple[str, dict[str, str]]:
    """The page for a chat whose agent answers to @`agent`, and the response headers it needs."""
    page, headers = _template()
    return page.replace("{{agent}}", html.escape(agent)), dict(headers)
