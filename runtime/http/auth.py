"""People's API tokens, and how many requests each may make.

A token is 32 random bytes (URL-safe text) shown once by `loopwright people add`; the store keeps only its
SHA-256. A request's token is hashed and looked up by that hash (which tells nothing about any other token), then
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time

from loopwright.errors import LoopwrightError
from loopwright.memory import people
from loopwright.memory.store import Store

PERSON_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")  # as a chat author may be named (and mentioned)
TOKEN_PREFIX = "lw_"


class PeopleError(LoopwrightError):
    """A person cannot be added or revoked; said in one line."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_person(store: Store, name: str) -> str:
    """A new person (or a revoked one again) with a fresh token: the token, which is never stored."""
    if not PERSON_NAME.match(name):
        raise PeopleError(f"'{name}' is not a person's name: letters, digits, '-', '_' or '.', up to 64")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    if not people.add(store, name, digest(token)):
        raise PeopleError(f"{name} has a token already; revoke it first (`loopwright people revoke {name}`), "
                          f"then add {name} again for a new one")
    return token


def revoke_person(store: Store, name: str) -> None:
    if not people.revoke(store, name):
        known = [p["name"] for p in people.everyone(store) if p["revoked_at"] is None]
        raise PeopleError(f"no person '{name}' with a token in use (people: {', '.join(known) or 'none'})")


def person_of(store: Store, token: str) -> str | None:
    """The person whose token this is; None for an unknown or revoked one."""
    hashed = digest(token)
    found = people.holder(store, hashed)
    if found is None or not hmac.compare_digest(found[1], hashed):
        return None
    return found[0]


class RateLimit:
    """A token bucket per key (a person, or the address of a client whose token failed): `per_minute` requests a
    minute, as a burst of up to `per_minute`."""

    def __init__(self, per_minute: int, clock=time.monotonic):
        self.rate, self.clock = per_minute / 60.0, clock
        self.capacity = float(per_minute)
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens left, when counted)

    def take(self, key: str) -> float:
        """0 when the request may go ahead (one is counted); else the seconds until one may."""
        now = self.clock()
        if len(self.buckets) > 10_000:  # many addresses with bad tokens: forget those whose bucket is full again
            self.buckets = {k: (t, w) for k, (t, w) in self.buckets.items()
                            if t + (now - w) * self.rate < self.capacity}
        tokens, then = self.buckets.get(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if tokens >= 1:
            self.buckets[key] = (tokens - 1, now)
            return 0.0
        self.buckets[key] = (tokens, now)
        return max(1.0, math.ceil((1 - tokens) / self.rate))
