"""Retries of model calls with tenacity: 429, 5xx, 529/overloaded, connection trouble, unreadable and empty answers.

`retry-after-ms` / `retry-after` (seconds or an HTTP date) are honoured, and
failing those the reset time of the exhausted rate limit (Anthropic's
`anthropic-ratelimit-*-reset`, OpenAI's `x-ratelimit-reset-*`), capped by
`max_backoff`; otherwise tenacity's exponential backoff with jitter
(`initial_backoff * 2**n + uniform(0, jitter)`, capped by `max_backoff`). Like
the SDKs, a 409 (lock timeout), a 408 and an `x-should-retry: true` header are
retried too. Past the ceiling (`max_attempts`, or a next wait that would take
the total past `max_total_wait_seconds`) the call raises `ModelUnavailable` and
the run pauses.
With a `QuotaGate` (one per provider and model, shared by the fleet), a 429
closes the gate for every run instead: the call waits at the gate, the wait
is not an attempt, and the gate decides when it may go again (or pauses the
run past its own ceiling).
An answer with no text and no tool calls (no content blocks, no choices) is
retried once, then counts as the model being unavailable.
What a person must fix raises `NeedsAttention` at once (the run pauses): a
refused key (401), billing (OpenAI's `insufficient_quota` 429, Anthropic's
`billing_error` or "credit balance is too low"). A request too long for the
context window raises `ContextOverflow` (the loop compacts). Other bad
requests and unknown models raise `FatalModelError` at once; anything else (a
budget error, a cancellation, a `ScriptError`) passes through untouched.

What counts as an unreadable answer, as the SDKs report it: a body cut short
(`APIConnectionError` caused by aiohttp's `ClientPayloadError`, or on httpx2's
own transport by its "incomplete message body" `RemoteProtocolError`), a body
that is not JSON (`json.JSONDecodeError`, raised bare by both SDKs), httpx2's
`DecodingError`, and `APIResponseValidationError`. A streamed answer that
stalled, passed its deadline or was cut short (`StreamInterrupted`) is retried
as a connection error.
"""

from __future__ import annotations

import asyncio
import email.utils
import inspect
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import httpx2
from pydantic import BaseModel, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception
from tenacity.wait import wait_base, wait_exponential_jitter

from loopwright.harness.messages import ModelResponse
from loopwright.harness.models import (
    ContextOverflow,
    FatalModelError,
    ModelAdapter,
    ModelError,
    ModelUnavailable,
    NeedsAttention,
    StreamInterrupted,
)

EMPTY = "empty response"


def _sdk_errors(name: str, *others: type) -> tuple[type, ...]:
    """The SDKs' exception class `name`, from those already imported: importing both costs seconds at start-up,
    and an SDK that was never imported raised nothing."""
    found = (getattr(sys.modules.get(sdk), name, None) for sdk in ("anthropic", "openai"))
    return tuple(cls for cls in found if cls is not None) + others


class RetryPolicy(BaseModel):
    """How hard to retry one model call."""

    max_attempts: int = Field(default=6, ge=1)
    max_total_wait_seconds: float = Field(default=300.0, gt=0)
    initial_backoff: float = Field(default=1.0, ge=0)
    max_backoff: float = Field(default=60.0, gt=0)
    jitter: float = Field(default=1.0, ge=0, description="up to this many seconds added at random to a backoff")


class EmptyAnswer(Exception):
    """The model answered with no text and no tool calls (not cut off at the output limit)."""


def classify(err: BaseException) -> str | None:
    """A short reason ("429 rate limited", "connection reset", ...) when `err` is worth retrying, else None."""
    if isinstance(err, EmptyAnswer):
        return EMPTY
    if isinstance(err, _sdk_errors("APIStatusError")):
        sdk_err: Any = err  # an SDK's APIStatusError (its class is looked up at run time)
        code = sdk_err.status_code
        if is_billing(err):
            return None
        if code == 429:
            return "429 rate limited"
        if code == 529 or isinstance(err, _sdk_errors("OverloadedError")):
            return "529 overloaded"
        if code == 408:
            return "408 request timeout"
        if code == 409:
            return "409 conflict"
        if code >= 500:
            return f"{code} server error"
        if sdk_err.response.headers.get("x-should-retry") == "true":
            return f"{code} retry requested by the server"
        return None
    if isinstance(err, StreamInterrupted):
        return err.reason
    if isinstance(err, _sdk_errors("APIResponseValidationError", json.JSONDecodeError, httpx2.DecodingError)):
        return "invalid JSON response" if isinstance(err, json.JSONDecodeError) else "unreadable response"
    connection = isinstance(err, _sdk_errors("APIConnectionError", httpx2.TransportError))  # timeouts too
    if connection and any(isinstance(cause, ConnectionRefusedError) for cause in _causes(err)):
        return "connection refused"  # nothing listens there (the OpenAI SDK's transport calls it a timeout)
    if connection and (reason := _aiohttp_trouble(err)):
        return reason
    if isinstance(err, _sdk_errors("APITimeoutError", httpx2.TimeoutException)):
        return "timeout"
    if connection:
        return _httpx_trouble(_transport_cause(err))
    return None


def _aiohttp_trouble(err: BaseException) -> str | None:
    """The reason, from the aiohttp transport's own error under `err`: the SDKs' transports map a connection
    dropped after the request was sent to httpx2's ConnectError (Anthropic's: as if nothing had been sent) or
    ConnectTimeout (OpenAI's: as if it had timed out)."""
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is None:
        return None
    for cause in _causes(err):
        if isinstance(cause, aiohttp.ServerTimeoutError):  # its connect and read timeouts
            return "timeout"
        if isinstance(cause, aiohttp.ClientPayloadError):
            return "truncated response"
        if isinstance(cause, aiohttp.ClientConnectorError):
            return "connection error"  # refused, DNS, TLS: nothing was sent
        if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            return "connection reset"
    return None


def _httpx_trouble(cause: BaseException) -> str:
    text = str(cause).lower()
    if isinstance(cause, httpx2.RemoteProtocolError) and ("message body" in text or "incomplete" in text):
        return "truncated response"
    if isinstance(cause, httpx2.ConnectError):
        return "connection error"  # refused, DNS, TLS: nothing was sent
    if isinstance(cause, (httpx2.ReadError, httpx2.WriteError, httpx2.RemoteProtocolError, ConnectionResetError)):
        return "connection reset"
    return "connection error"


def _causes(err: BaseException):
    """The errors `err` was raised from or during, nearest first (the SDKs wrap a transport error once or twice,
    the aiohttp transport once more)."""
    seen: BaseException = err
    for _ in range(10):
        nearer = seen.__cause__ or seen.__context__
        if nearer is None:
            return
        seen = nearer
        yield seen


def _transport_cause(err: BaseException) -> BaseException:
    return next((c for c in _causes(err) if isinstance(c, (httpx2.TransportError, OSError))), err)


def retry_after(err: BaseException | None) -> float | None:
    """Seconds the server asked us to wait: retry-after-ms, retry-after (seconds or an HTTP date), else the reset
    time of the rate limit it says ran out."""
    headers = getattr(getattr(err, "response", None), "headers", None)
    if not headers:
        return None
    try:
        if ms := headers.get("retry-after-ms"):
            return max(0.0, float(ms) / 1000)
    except ValueError:
        pass
    value = headers.get("retry-after")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    return rate_limit_reset(headers)


_LIMITS = {"anthropic-ratelimit-": ("requests", "tokens", "input-tokens", "output-tokens"),
           "x-ratelimit-": ("requests", "tokens")}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")


def rate_limit_reset(headers) -> float | None:
    """Seconds until the exhausted rate limits reset (the longest of them), from the providers' headers.

    Anthropic: `anthropic-ratelimit-requests-remaining: 0` with `...-requests-reset: <RFC 3339 time>`;
    OpenAI: `x-ratelimit-remaining-requests: 0` with `x-ratelimit-reset-requests: 6m0s`. A 429 that says no
    limit ran out but carries reset times without their `remaining` (a gateway, an emulator) is taken at those.
    """
    exhausted, unsaid = [], []
    for prefix, kinds in _LIMITS.items():
        for kind in kinds:
            if prefix.startswith("x-"):
                remaining, reset = headers.get(f"{prefix}remaining-{kind}"), headers.get(f"{prefix}reset-{kind}")
            else:
                remaining, reset = headers.get(f"{prefix}{kind}-remaining"), headers.get(f"{prefix}{kind}-reset")
            seconds = _until(reset) if reset is not None else None
            if seconds is None:
                continue
            if remaining is None:
                unsaid.append(seconds)
            elif remaining.strip() in ("0", "0.0"):
                exhausted.append(seconds)
    waits = exhausted or unsaid
    return max(waits) if waits else None


def _until(reset: str) -> float | None:
    """An RFC 3339 time, a Go-style duration ("1.5s", "6m0s", "20ms"), plain seconds or a unix time as seconds
    from now."""
    reset = reset.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", reset):
        value = float(reset)
        return max(0.0, value - time.time()) if value > 1e9 else value
    if re.fullmatch(r"(?:\d+(?:\.\d+)?(?:ms|h|m|s))+", reset):
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
        return sum(float(n) * scale[unit] for n, unit in _DURATION.findall(reset))
    try:
        from datetime import datetime

        return max(0.0, datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - time.time())
    except ValueError:
        return None


def is_rate_limit(err: BaseException) -> bool:
    """A 429: the provider's rate limit for this key and model, which every run of the fleet shares."""
    return (isinstance(err, _sdk_errors("APIStatusError")) and getattr(err, "status_code", None) == 429
            and not is_billing(err))


def _error_fields(err: BaseException) -> tuple[str, str]:
    """The error body's (type and code, message), lower-cased: what tells a quota from a rate limit."""
    body = getattr(err, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    if not isinstance(inner, dict):
        return "", str(getattr(err, "message", "") or "").lower()
    kinds = f"{inner.get('type') or ''} {inner.get('code') or ''}"
    return kinds.lower(), str(inner.get("message") or "").lower()


def is_billing(err: BaseException) -> bool:
    """Out of money rather than rate limited: OpenAI's `insufficient_quota`, Anthropic's `billing_error` (402) or
    its "credit balance is too low" (a 400)."""
    if not isinstance(err, _sdk_errors("APIStatusError")):
        return False
    kinds, message = _error_fields(err)
    return (getattr(err, "status_code", None) == 402 or "insufficient_quota" in kinds or "billing_error" in kinds
            or "credit balance" in message)


def is_context_overflow(err: BaseException) -> bool:
    """The request is too long for the model: Anthropic's "prompt is too long" (or 413 request_too_large),
    OpenAI's `context_length_exceeded`, as vLLM and llama.cpp say it too."""
    if not isinstance(err, _sdk_errors("APIStatusError")) or getattr(err, "status_code", None) not in (400, 413):
        return False
    kinds, message = _error_fields(err)
    return ("context_length_exceeded" in kinds or "request_too_large" in kinds or "exceed_context_size" in kinds
            or "prompt is too long" in message or "maximum context length" in message
            or "exceeds the context window" in message or "exceeds the available context size" in message)


class QuotaGate(Protocol):
    """The fleet's gate for one provider and model (runtime.quota.StoreQuotaGate)."""

    async def wait(self, on_wait: Callable[[float, str], None]) -> None: ...
    def close(self, reason: str, server_wait: float | None, sent_at: float) -> None: ...
    def opened(self) -> None: ...


def refusal(err: BaseException, model: str) -> ModelError | None:
    """The one-line error for an SDK status error that retrying cannot fix: what a person must fix first
    (`NeedsAttention`), a context overflow, or else a `FatalModelError`."""
    if not isinstance(err, _sdk_errors("APIStatusError")) or classify(err) is not None:
        return None
    code, message = getattr(err, "status_code", 0), _short(err)
    if is_billing(err):
        return NeedsAttention(f"billing: the provider refused for lack of credit or quota ({code}): {message}; "
                              f"add credit, then resume")
    if is_context_overflow(err):
        return ContextOverflow(f"context overflow ({code}): {message}")
    if code == 401:
        return NeedsAttention(f"the API key was refused (401): {message}; fix the key, then resume")
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


def _told(reason: str, err: BaseException | None) -> str:
    """The reason as a retry tells it: a refused connection names the server that is not there."""
    url = getattr(getattr(err, "request", None), "url", None)
    if reason != "connection refused" or url is None:
        return reason
    return f"no server at {url.scheme}://{url.netloc.decode()}"


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
                     sleep: Callable[[float], Awaitable[Any]] | None = None, gate: QuotaGate | None = None,
                     on_gate: Callable[[int, float, str], None] | None = None,
                     **complete_kwargs: Any) -> ModelResponse:
    """`adapter.complete(**complete_kwargs)` with retries; see the module docstring for what is retried.

    `on_retry(attempt, wait_seconds, reason)` (sync or async) is called before each sleep, from the first
    failure on, so the caller can log it (a refused connection's reason is "no server at URL"); `sleep` replaces
    asyncio.sleep (tests pass one that does not wait). With a `gate`, each attempt first waits at it, and a 429
    closes it for the fleet (and does not count as an attempt); `on_gate(wait_number, wait_seconds, reason)` is
    told of each wait at a closed gate (default: `on_retry`).
    """
    reasons: list[str] = []
    counted = 0  # attempts that count against max_attempts: everything but a gated 429
    gate_waits = 0
    started = time.monotonic()

    def out_of_time(state: RetryCallState) -> bool:
        # tenacity computes the next wait before it checks stop conditions
        return state.idle_for + state.upcoming_sleep > policy.max_total_wait_seconds

    def out_of_attempts(state: RetryCallState) -> bool:
        return counted >= policy.max_attempts or reasons.count(EMPTY) > 1  # an empty answer is retried once

    def gated(state: RetryCallState) -> bool:
        err = state.outcome.exception() if state.outcome else None
        return gate is not None and err is not None and is_rate_limit(err)

    async def before_sleep(state: RetryCallState) -> None:
        if gated(state):
            return  # the gate says how long, when the next attempt waits at it
        told = _told(reasons[-1], state.outcome.exception() if state.outcome else None)
        if on_retry is not None and inspect.isawaitable(
                result := on_retry(state.attempt_number, state.upcoming_sleep, told)):
            await result

    def waiting(seconds: float, why: str) -> None:
        nonlocal gate_waits
        gate_waits += 1
        told = on_gate or on_retry
        if told is not None:
            told(gate_waits, seconds, why)

    async def attempt() -> ModelResponse:
        nonlocal counted
        if gate is not None:
            await gate.wait(waiting)
        sent_at = time.time()
        try:
            response = await adapter.complete(**complete_kwargs)
            if gate is not None:
                gate.opened()
            message = response.message
            if not message.tool_calls and not message.text.strip() and response.stop_reason != "max_tokens":
                raise EmptyAnswer(f"the model answered with no text and no tool calls "
                                  f"(stop reason {response.stop_reason})")
        except Exception as err:
            if (reason := classify(err)) is not None:
                reasons.append(reason)
                if gate is not None and is_rate_limit(err):
                    gate.close(_label(reason), retry_after(err), sent_at)
                else:
                    counted += 1
            raise
        return response

    wait = _Wait(policy)

    def next_wait(state: RetryCallState) -> float:
        return 0.0 if gated(state) else wait(state)

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: classify(e) is not None),
        stop=lambda state: out_of_attempts(state) or out_of_time(state),
        wait=next_wait, before_sleep=before_sleep, sleep=sleep or asyncio.sleep, reraise=True)
    try:
        return await retrying(attempt)
    except Exception as err:
        if classify(err) is not None:
            raise ModelUnavailable(_unavailable(reasons, time.monotonic() - started, policy, _short(err))) from err
        failure = refusal(err, getattr(adapter, "model", ""))
        if failure is not None:
            raise failure from err
        raise


def _unavailable(reasons: list[str], elapsed: float, policy: RetryPolicy, last: str) -> str:
    n = len(reasons)
    kinds = list(dict.fromkeys(_label(r) for r in reasons))
    times = "once" if n == 1 else f"{n} times"
    head = f"{kinds[0]} {times}" if len(kinds) == 1 else f"{n} failed attempts ({', '.join(kinds)})"
    limit = policy.max_total_wait_seconds
    out_of_time = n < policy.max_attempts and reasons.count(EMPTY) < 2
    why = f", next wait would pass the {limit:g}s retry limit" if out_of_time else ""
    return f"{head} in {elapsed:.0f}s{why}; last: {last}"
