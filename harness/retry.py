"""Retries of model calls with tenacity: 429, 5xx, 529/overloaded, connection trouble and unreadable answers.

`retry-after` / `retry-after-ms` are honoured; otherwise exponential backoff
with jitter. Past the ceiling (attempts, or total wait) the call raises
`ModelUnavailable` and the run pauses. Auth errors, bad requests and unknown
models raise `FatalModelError` at once; anything else (a budget error, a
cancellation) passes through untouched.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from typing import Any, Awaitable, Callable

import anthropic
import httpx2
import openai
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_any, stop_after_attempt

from .messages import ModelResponse
from .models import FatalModelError, ModelAdapter, ModelUnavailable

_STATUS_ERRORS = (anthropic.APIStatusError, openai.APIStatusError)
_CONNECTION_ERRORS = (anthropic.APIConnectionError, openai.APIConnectionError, httpx2.TransportError)
_BAD_RESPONSE = (anthropic.APIResponseValidationError, openai.APIResponseValidationError, json.JSONDecodeError,
                 httpx2.DecodingError)


class RetryPolicy(BaseModel):
    max_attempts: int = Field(default=6, ge=1)
    max_total_wait_seconds: float = Field(default=300.0, gt=0)
    initial_backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=0.25, ge=0, description="random extra wait, as a share of the backoff")


def classify(err: BaseException) -> str | None:
    """A short reason when `err` is worth retrying, else None."""
    if isinstance(err, _STATUS_ERRORS):
        code = err.status_code
        if code == 429:
            return "429 rate limited"
        if code == 529 or isinstance(err, getattr(anthropic, "OverloadedError", ())):
            return "529 overloaded"
        if code >= 500 or code == 408:
            return f"{code} server error"
        return None
    if isinstance(err, (anthropic.APITimeoutError, openai.APITimeoutError, httpx2.TimeoutException)):
        return "timeout"
    if isinstance(err, _CONNECTION_ERRORS):
        return "connection error"
    if isinstance(err, _BAD_RESPONSE):
        return "unreadable response"
    return None


def retry_after(err: BaseException) -> float | None:
    """Seconds the server asked us to wait, from retry-after-ms or retry-after (seconds or an HTTP date)."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def fatal(err: BaseException, model: str) -> FatalModelError | None:
    """The one-line fatal error for SDK errors that retrying cannot fix."""
    if not isinstance(err, _STATUS_ERRORS):
        return None
    code = err.status_code
    message = _short(err)
    if code in (401, 403):
        return FatalModelError(f"the provider refused the API key ({code}): {message}")
    if code == 404:
        return FatalModelError(f"model '{model}' was not found by the provider (404): {message}")
    return FatalModelError(f"the provider rejected the request ({code}): {message}")


def _short(err: BaseException) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:200]
    return str(getattr(err, "message", err)).splitlines()[0][:200]


async def call_model(adapter: ModelAdapter, policy: RetryPolicy, *,
                     on_retry: Callable[[int, float, str], None] | None = None,
                     sleep: Callable[[float], Awaitable[Any]] | None = None, **complete_kwargs: Any) -> ModelResponse:
    """One model call with retries; see the module docstring for what is retried and how it ends."""
    waited = 0.0
    started = time.monotonic()

    def wait(state: RetryCallState) -> float:
        nonlocal waited
        err = state.outcome.exception() if state.outcome else None
        backoff = min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        asked = retry_after(err) if err else None
        seconds = min(asked, policy.max_backoff) if asked is not None else backoff * (1 + random.random() * policy.jitter)
        waited += seconds
        if on_retry:
            on_retry(state.attempt_number, seconds, classify(err) or "error")
        return seconds

    def out_of_time(state: RetryCallState) -> bool:
        err = state.outcome.exception() if state.outcome else None
        asked = retry_after(err) if err else None
        next_wait = min(asked, policy.max_backoff) if asked is not None else \
            min(policy.max_backoff, policy.initial_backoff * 2 ** (state.attempt_number - 1))
        return waited + next_wait > policy.max_total_wait_seconds

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: classify(e) is not None),
        stop=stop_any(stop_after_attempt(policy.max_attempts), out_of_time),
        wait=wait, sleep=sleep or asyncio.sleep, reraise=True)
    attempts = 0
    try:
        async for attempt in retrying:
            with attempt:
                attempts += 1
                return await adapter.complete(**complete_kwargs)
    except BaseException as err:
        reason = classify(err)
        if reason is not None:
            raise ModelUnavailable(f"{reason} {attempts} time(s) in {time.monotonic() - started:.0f}s; "
                                   f"last: {_short(err)}") from err
        failure = fatal(err, getattr(adapter, "model", ""))
        if failure is not None:
            raise failure from err
        raise
    raise AssertionError("unreachable: tenacity either returns, retries or raises")
