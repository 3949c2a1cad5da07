"""The providers' prompt caches as the loopback server keeps them, so tests and benchmarks see cache reads and writes
offline, counted the way the APIs count them.

Tokens are estimated at four characters of the request's JSON each. Anthropic: only prefixes ending at a block
marked with `cache_control` (at most four) and at least 1,024 tokens long (2,048 for Haiku) are written, for
their `ttl` (5m or 1h; a hit renews it); a request reads the longest live prefix that ends at one of its
breakpoints or at one of the 20 blocks before each; `cache_creation_input_tokens` is what lies between that and
its last breakpoint, `input_tokens` the rest. OpenAI (Chat and Responses): every prompt of 1,024+ tokens is cached
by itself, up to its last 128-token step, for 5 minutes (renewed on a hit), per model and `prompt_cache_key`;
`cached_tokens` is the longest live prefix a request starts with. (The API also keeps the shorter steps, so a
prompt that parts from a cached one midway reads up to there; here it reads only whole cached prompts.)
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from loopwright.harness.messages import Usage

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_BLOCKS = 20
OPENAI_MIN, OPENAI_STEP, OPENAI_TTL = 1024, 128, 300.0


def tokens(text: str) -> int:
    """The estimate every count here uses: four characters a token, rounded up."""
    return -(-len(text) // 4)


def _json(value: Any) -> str:
    # in the order sent (an SDK serialises a given message the same way every time): sorting keys would cost more
    return json.dumps(value, ensure_ascii=False)


def anthropic_min_tokens(model: str) -> int:
    return 2048 if "haiku" in model else 1024


class PromptCache:
    """Prefix hashes with their expiry time, for both formats (thread-safe; `clock` may be replaced in tests)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self._live: dict[str, tuple[float, float]] = {}  # prefix hash -> (expires at, its ttl in seconds)
        self._sizes: dict[str, set[int]] = {}  # OpenAI: per model and cache key, the prefix lengths cached
        self._lock = threading.Lock()

    def _hit(self, key: str, now: float) -> bool:
        entry = self._live.get(key)
        return entry is not None and entry[0] > now

    def _keep(self, key: str, now: float, ttl: float) -> None:
        """Write a prefix, or renew it (a hit renews an entry for its own ttl; a shorter one never cuts it)."""
        old = self._live.get(key)
        self._live[key] = (max(now + ttl, old[0] if old else 0.0), max(ttl, old[1] if old else 0.0))

    def anthropic(self, body: dict, output_tokens: int) -> Usage:
        """A Messages request's usage: uncached input, read and written tokens."""
        model = str(body.get("model", ""))
        h = hashlib.sha256(f"anthropic\0{model}".encode())
        bounds: list[tuple[int, str, str | None]] = []  # per block: tokens so far, prefix hash, its breakpoint's ttl
        total = 0
        for role, block in _anthropic_blocks(body):
            mark = block.get("cache_control")
            text = role + _json({k: v for k, v in block.items() if k != "cache_control"} if mark else block)
            h.update(text.encode())
            total += tokens(text)
            bounds.append((total, h.hexdigest(), mark.get("ttl", "5m") if mark else None))
        breakpoints = [i for i, (size, _, ttl) in enumerate(bounds)
                       if ttl is not None and size >= anthropic_min_tokens(model)]
        with self._lock:
            now = self.clock()
            hit = -1
            for bp in breakpoints:
                for i in range(bp, max(-1, bp - LOOKBACK_BLOCKS - 1), -1):
                    if self._hit(bounds[i][1], now):
                        hit = max(hit, i)
                        break
            read = bounds[hit][0] if hit >= 0 else 0
            if hit >= 0:
                self._keep(bounds[hit][1], now, self._live[bounds[hit][1]][1])
            written = written_1h = 0
            covered = read
            for bp in breakpoints:
                size, key, ttl = bounds[bp]
                self._keep(key, now, TTL_SECONDS.get(ttl or "5m", 300.0))
                if size > covered:
                    written += size - covered
                    written_1h += (size - covered) if ttl == "1h" else 0
                    covered = size
        return Usage(input_tokens=total - read - written, output_tokens=output_tokens, cache_read_tokens=read,
                     cache_write_tokens=written, cache_write_1h_tokens=written_1h)

    def openai(self, fmt: str, body: dict, output_tokens: int) -> Usage:
        """A Chat or Responses request's usage: uncached input and the cached tokens (OpenAI reports no writes).

        Each request leaves its prompt in the cache up to its last 128-token step; a later request reads the
        longest such prefix it starts with (a conversation's next turn: the whole previous prompt, rounded down).
        """
        text = "".join(_json(part) for part in _openai_parts(fmt, body)).encode()
        total = -(-len(text) // 4)
        seed = f"openai\0{body.get('model', '')}\0{body.get('prompt_cache_key') or ''}"
        end = total // OPENAI_STEP * OPENAI_STEP
        with self._lock:
            now = self.clock()
            sizes = sorted({*self._sizes.get(seed, ()), end} if end >= OPENAI_MIN else self._sizes.get(seed, ()))
            h, done, cached, hit, mine = hashlib.sha256(seed.encode()), 0, 0, "", ""
            for size in (s for s in sizes if s <= total):
                h.update(text[done:size * 4])
                done = size * 4
                key = h.hexdigest()
                if self._hit(key, now):
                    cached, hit = size, key
                if size == end:
                    mine = key
            for key in filter(None, (hit, mine)):  # a hit renews its prefix; this prompt is written
                self._keep(key, now, OPENAI_TTL)
            if mine:
                self._sizes.setdefault(seed, set()).add(end)
        return Usage(input_tokens=total - cached, output_tokens=output_tokens, cache_read_tokens=cached)


def _anthropic_blocks(body: dict) -> Iterable[tuple[str, dict]]:
    """The request in cache order: tools, system, then each message's blocks, with what they belong to."""
    for tool in body.get("tools") or []:
        yield "tool", tool
    system = body.get("system")
    for block in [{"type": "text", "text": system}] if isinstance(system, str) and system else system or []:
        yield "system", block
    for m in body.get("messages") or []:
        content = m.get("content")
        for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
            yield str(m.get("role")), block


def _openai_parts(fmt: str, body: dict) -> Iterable[Any]:
    """The request in prompt order: tools, then the instructions and input (Responses) or the messages (Chat)."""
    yield body.get("tools") or []
    if fmt == "chat":
        yield from body.get("messages") or []
        return
    yield body.get("instructions") or ""
    items = body.get("input")
    yield from items if isinstance(items, list) else [items or ""]
