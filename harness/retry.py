"""Retries of model calls with tenacity: 429, 5xx, 529/overloaded, connection trouble and unreadable answers.

`retry-after-ms` / `retry-after` (seconds or an HTTP date) are honoured, capped
by `max_backoff`; otherwise tenacity's exponential backoff with jitter
(`initial_backoff * 2**n + uniform(0, jitter)`, capped by `max_backoff`). Like
the SDKs, a 409 (lock timeout), a 408 and an `x-should-retry: true` header are
retried too. Past the ceiling (`max_attempts`, or a next wait that would take
the total past `max_total_wait_seconds`) the call raises `ModelUnavailable` and
the run pauses.
Auth errors, bad requests and unknown models raise `FatalModelError` at once;
anything else (a budget error, a cancellation, a `ScriptError`) passes through
untouched.

What counts as an unreadable answer, as the SDKs report it: a body cut short
(`APIConnectionError` caused by httpx2's "incomplete message body"
`RemoteProtocolError`), a body that is not JSON (`json.JSONDecodeError`, raised
bare by both SDKs), httpx2's `DecodingError`, and `APIResponseValidationError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import httpx2
import openai
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_any
from tenacity.wait import wait_base, wait_exponential_jitter

from .messages import ModelResponse
from .models import FatalModelError, ModelAdapter, ModelUnavailable

_STATUS_ERRORS = (anthropic.APIStatusError, openai.APIStatusError)
_TIMEOUTS = (anthropic.APITimeoutError, openai.APITimeoutError, httpx2.TimeoutException)
_CONNECTION_ERRORS = (anthropic.APIConnectionError, openai.APIConnectionError, httpx2.TransportError)
_BAD_RESPONSE = (anthropic.APIResponseValidationError, openai.APIResponseValidationError, json.JSONDecodeError,
                 httpx2.DecodingError)


class RetryPolicy(BaseModel):
    """How hard to retry one model call."""

    max_attempts: int = Field(default=6, ge=1)
    max_total_wait_seconds: float = Field(default=300.0, gt=0)
    initial_backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=1.0, ge=0, description="up to this many seconds added at random to a backoff")


def classify(err: BaseException) -> str | None:
    """A short reason ("429 rate limited", "connection reset", ...) when `err` is worth retrying, else None."""
    if isinstance(err, _STATUS_ERRORS):
        code = err.status_code
        if code == 429:
            return "429 rate limited"
        if code == 529 or isinstance(err, anthropic.OverloadedError):
            return "529 overloaded"
        if code == 408:
            return "408 request timeout"
        if code == 409:
            return "409 conflict"
        if code >= 500:
            return f"{code} server error"
        if err.response.headers.get("x-should-retry") == "true":
            return f"{code} retry requested by the server"
        return None
    if isinstance(err, _BAD_RESPONSE):
        return "invalid JSON response" if isinstance(err, json.JSONDecodeError) else "unreadable response"
    if isinstance(err, _TIMEOUTS):
        return "timeout"
    if isinstance(err, _CONNECTION_ERRORS):
        cause = _transport_cause(err)
        text = str(cause).lower()
        if isinstance(cause, httpx2.RemoteProtocolError) and ("message body" in text or "incomplete" in text):
            return "truncated response"
        if isinstance(cause, httpx2.ConnectError):
            return "connection error"  # refused, DNS, TLS: nothing was sent
        if isinstance(cause, (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError, ConnectionResetError)):
            return "connection reset"
        return "connection error"
    return None


def _transport_cause(err: BaseException) -> BaseException:
    seen: BaseException | None = err
    for _ in range(10):  # the SDKs wrap the transport error once or twice
        seen = seen.__cause__ or seen.__context__ if seen is not None else None
        if seen is None:
            break
        if isinstance(seen, (httpx2.TransportError, OSError)):
            return seen
    return err


def retry_after(err: BaseException | None) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or retry-after (seconds or an HTTP date)."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if not headers:
        return None
    try:
        if ms := headers.get("retry-after-ms"):
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def fatal(err: BaseException, model: str) -> FatalModelError | None:
    """The one-line fatal error for an SDK status error that retrying cannot fix."""
    if not isinstance(err, _STATUS_ERRORS) or classify(err) is not None:
        return None
    code, message = err.status_code, _short(err)
    if code == 401:
        return FatalModelError(f"the provider refused the API key (401): {message}")
    if code == 403:
        return FatalModelError(f"the provider refused the API key for this request (403 permission denied): {message}")
    if code == 404:
        return FatalModelError(f"model '{model}' was not found by the provider (404; check the model name and "
                               f"base_url): {message}")
    return FatalModelError(f"the provider rejected the request ({code}): {message}")


def _short(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return " ".join(str(inner["message"]).split())[:200]
    text = str(getattr(err, "message", None) or err)
    cause = _transport_cause(err)
    if cause is not err and str(cause):
        text = f"{text} ({str(cause).splitlines()[0]})"
    elif cause is not err:
        text = f"{text} ({type(cause).__name__})"
    return " ".join(text.split())[:200] or type(err).__name__


def _label(reason: str) -> str:
    """'429 rate limited' -> 'rate limited (429)'; other reasons unchanged."""
    code, _, rest = reason.partition(" ")
    return f"{rest} ({code})" if code.isdigit() and rest else reason


class _Wait(wait_base):
    """The server's retry-after when it sent one, else exponential backoff with jitter; both capped."""

    def __init__(self, policy: RetryPolicy):
        self.max = policy.max_backoff
        self.backoff = wait_exponential_jitter(multiplier=policy.initial_backoff, max=policy.max_backoff,
                                               jitter=policy.jitter)

    def __call__(self, state: RetryCallState) -> float:
        asked = retry_after(state.outcome.exception() if state.outcome else None)
        if asked is not None:
            return min(asked, self.max)
        return self.backoff(state)


async def call_model(adapter: ModelAdapter, policy: RetryPolicy, *,
                     on_retry: Callable[[int, float, str], Awaitable[None] | None] | None = None,
                     sleep: Callable[[float], Awaitable[Any]] | None = None, **complete_kwargs: Any) -> ModelResponse:
    """`adapter.complete(**complete_kwargs)` with retries; see the module docstring for what is retried.

    `on_retry(attempt, wait_seconds, reason)` (sync or async) is called before each sleep, so the caller can
    log it; `sleep` replaces asyncio.sleep (tests pass one that does not wait).
    """
    reasons: list[str] = []
    started = time.monotonic()

    def out_of_time(state: RetryCallState) -> bool:
        # tenacity computes the next wait before it checks stop conditions
        return state.idle_for + state.upcoming_sleep > policy.max_total_wait_seconds

    async def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and inspect.isawaitable(
                result := on_retry(state.attempt_number, state.upcoming_sleep, reasons[-1])):
            await result

    async def attempt() -> ModelResponse:
        try:
            return await adapter.complete(**complete_kwargs)
        except Exception as err:
            if (reason := classify(err)) is not None:
                reasons.append(reason)
            raise

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: classify(e) is not None),
        stop=stop_any(stop_after_attempt(policy.max_attempts), out_of_time),
        wait=_Wait(policy), before_sleep=before_sleep, sleep=sleep or asyncio.sleep, reraise=True)
    try:
        return await retrying(attempt)
    except Exception as err:
        if classify(err) is not None:
            raise ModelUnavailable(_unavailable(reasons, time.monotonic() - started, policy, _short(err))) from err
        failure = fatal(err, getattr(adapter, "model", ""))
        if failure is not None:
            raise failure from err
        raise


def _unavailable(reasons: list[str], elapsed: float, policy: RetryPolicy, last: str) -> str:
    n = len(reasons)
    kinds = list(dict.fromkeys(_label(r) for r in reasons))
    times = "once" if n == 1 else f"{n} times"
    head = f"{kinds[0]} {times}" if len(kinds) == 1 else f"{n} failed attempts ({', '.join(kinds)})"
    limit = policy.max_total_wait_seconds
    why = "" if n >= policy.max_attempts else f", next wait would pass the {limit:g}s retry limit"
    return f"{head} in {elapsed:.0f}s{why}; last: {last}"
