"""In-memory rate limits for the webhook ingress (SPEC WH-3).

Two kinds of bucket, both sliding windows of `ORKET_RATE_WINDOW_SEC` (60 s):

* one global bucket for deliveries whose signature checked out (`ORKET_RATE_LIMIT`);
* one bucket per client IP for requests whose signature did not
  (`ORKET_UNSIGNED_RATE_LIMIT`), so forged traffic fills its own bucket and can never
  use up the allowance Gitea's real deliveries need.

Why a small class and not flask-limiter (or the `limits` package under it): the
webhook runs as exactly one worker process, so shared storage buys nothing; the two
buckets are keyed differently and the failed-signature one is only charged *after*
the signature check, which decorator-style limits do not express; and WH-3 wants
`Retry-After` to be the exact whole seconds until the oldest hit leaves the window,
which a timestamp log gives directly. A shared store (Redis) is the path once the
ingress runs in more than one process.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from app.config import Settings

Clock = Callable[[], float]


@dataclass(frozen=True)
class Decision:
    """Whether a request may pass, and if not, the `Retry-After` seconds (>= 1)."""

    allowed: bool
    retry_after: int = 0


class SlidingWindow:
    """At most `limit` hits in any `window_sec` seconds; safe to share between threads.

    Only allowed hits are recorded, so a client that keeps knocking while refused
    does not push its own release further into the future.
    """

    def __init__(self, limit: int, window_sec: float, clock: Clock = time.monotonic):
        if limit < 1 or window_sec <= 0:
            raise ValueError("a window needs limit >= 1 and window_sec > 0")
        self.limit = limit
        self.window_sec = window_sec
        self._clock = clock
        self._hits: deque[float] = deque()
        self._lock = threading.Lock()

    def hit(self) -> Decision:
        """Record one hit if the window has room; otherwise say how long to wait."""
        with self._lock:
            now = self._clock()
            self._forget_before(now - self.window_sec)
            if len(self._hits) < self.limit:
                self._hits.append(now)
                return Decision(allowed=True)
            wait = self._hits[0] + self.window_sec - now
            return Decision(allowed=False, retry_after=max(1, math.ceil(wait)))

    def is_idle(self) -> bool:
        """True when no hit is left inside the window."""
        with self._lock:
            self._forget_before(self._clock() - self.window_sec)
            return not self._hits

    def _forget_before(self, cutoff: float) -> None:
        while self._hits and self._hits[0] <= cutoff:
            self._hits.popleft()


class WebhookRateLimiter:
    """The signed bucket, the per-IP failed-signature buckets and refusal reporting.

    Once an IP's failed-signature bucket is full, its refusals are not logged one
    by one: `refusal_report` lets one `delivery_rejected` event per IP per interval
    through, carrying how many refusals it stands for. Refusals after an IP's last
    report are counted into its next one; if the IP stays silent for two whole
    intervals, that remainder is dropped with its bookkeeping rather than kept
    forever for addresses that never return.
    """

    def __init__(
        self,
        signed_limit: int,
        failed_limit: int,
        window_sec: float,
        report_interval_sec: float | None = None,
        clock: Clock = time.monotonic,
    ):
        self._signed = SlidingWindow(signed_limit, window_sec, clock)
        self._failed_limit = failed_limit
        self._window_sec = window_sec
        self._report_interval = report_interval_sec or window_sec
        self._clock = clock
        self._failed: dict[str, SlidingWindow] = {}
        self._refusals: dict[str, _Refusals] = {}
        self._last_prune = clock()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookRateLimiter:
        return cls(
            signed_limit=settings.rate_limit,
            failed_limit=settings.unsigned_rate_limit,
            window_sec=settings.rate_window_sec,
        )

    def hit_signed(self) -> Decision:
        """Charge the global bucket for a delivery whose signature was valid."""
        return self._signed.hit()

    def hit_failed_signature(self, ip: str) -> Decision:
        """Charge `ip`'s bucket for a missing or wrong signature.

        Refused means the bucket was already full: answer 429, not 401.
        """
        with self._lock:
            self._prune_if_due()
            bucket = self._failed.get(ip)
            if bucket is None:
                bucket = SlidingWindow(
                    self._failed_limit, self._window_sec, self._clock
                )
                self._failed[ip] = bucket
            return bucket.hit()

    def refusal_report(self, ip: str) -> int | None:
        """Note one refusal for `ip`; the count to report now, or None to stay quiet."""
        with self._lock:
            now = self._clock()
            state = self._refusals.get(ip)
            if state is not None and now - state.reported_at < self._report_interval:
                state.pending += 1
                return None
            count = (state.pending if state else 0) + 1
            self._refusals[ip] = _Refusals(reported_at=now)
            return count

    def _prune_if_due(self) -> None:
        """Forget idle IPs, at most once per window, so memory follows live traffic."""
        now = self._clock()
        if now - self._last_prune < self._window_sec:
            return
        self._last_prune = now
        for ip in [ip for ip, bucket in self._failed.items() if bucket.is_idle()]:
            del self._failed[ip]
        for ip in [
            ip
            for ip, state in self._refusals.items()
            if now - state.reported_at >= 2 * self._report_interval
        ]:
            del self._refusals[ip]


@dataclass
class _Refusals:
    reported_at: float
    pending: int = 0


def client_ip(
    remote_addr: str | None, forwarded_for: str | None, trusted_proxies: int
) -> str:
    """The address to rate-limit by.

    With N trusted proxy hops, the N-th entry from the right of `X-Forwarded-For` is
    the address our outermost trusted proxy saw; entries further left were written by
    the client and may be forged. Without trusted hops, or when the header is shorter
    than promised or not an address, the socket peer is used.
    """
    fallback = remote_addr or "unknown"
    if trusted_proxies <= 0 or not forwarded_for:
        return fallback

    hops = [hop.strip() for hop in forwarded_for.split(",")]
    if len(hops) < trusted_proxies:
        return fallback
    try:
        return str(ipaddress.ip_address(hops[-trusted_proxies]))
    except ValueError:
        return fallback
