import threading

import pytest

from app.config import Settings
from app.webhook.ratelimit import (
    Decision,
    SlidingWindow,
    WebhookRateLimiter,
    client_ip,
)


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


def test_window_allows_up_to_the_limit_then_refuses(clock):
    window = SlidingWindow(limit=3, window_sec=60, clock=clock)

    results = [window.hit() for _ in range(4)]

    assert [r.allowed for r in results] == [True, True, True, False]


def test_retry_after_counts_until_the_oldest_hit_leaves(clock):
    window = SlidingWindow(limit=2, window_sec=60, clock=clock)
    window.hit()
    clock.advance(10)
    window.hit()
    clock.advance(5.5)

    refused = window.hit()

    assert refused == Decision(allowed=False, retry_after=45)


def test_retry_after_is_at_least_one_second(clock):
    window = SlidingWindow(limit=1, window_sec=60, clock=clock)
    window.hit()
    clock.advance(59.999)

    assert window.hit().retry_after == 1


def test_window_slides_rather_than_resetting(clock):
    window = SlidingWindow(limit=2, window_sec=60, clock=clock)
    window.hit()
    clock.advance(30)
    window.hit()
    clock.advance(30)

    assert window.hit().allowed  # the first hit has left the window
    assert not window.hit().allowed  # the second one is still inside
    clock.advance(30)
    assert window.hit().allowed


def test_refused_hits_do_not_extend_the_wait(clock):
    window = SlidingWindow(limit=1, window_sec=60, clock=clock)
    window.hit()
    for _ in range(10):
        clock.advance(5)
        window.hit()

    clock.advance(10)

    assert window.hit().allowed


def test_window_is_thread_safe():
    window = SlidingWindow(limit=500, window_sec=60)
    allowed = []

    def worker():
        for _ in range(100):
            allowed.append(window.hit().allowed)

    threads = [threading.Thread(target=worker) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert allowed.count(True) == 500


@pytest.mark.parametrize("limit, window", [(0, 60), (5, 0)])
def test_window_rejects_nonsense_limits(limit, window):
    with pytest.raises(ValueError):
        SlidingWindow(limit=limit, window_sec=window)


def make_limiter(clock, signed=3, failed=2, window=60):
    return WebhookRateLimiter(
        signed_limit=signed, failed_limit=failed, window_sec=window, clock=clock
    )


def test_signed_bucket_is_global(clock):
    limiter = make_limiter(clock, signed=2)

    assert limiter.hit_signed().allowed
    assert limiter.hit_signed().allowed
    refused = limiter.hit_signed()

    assert not refused.allowed
    assert refused.retry_after == 60


def test_failed_signatures_fill_a_bucket_per_ip(clock):
    limiter = make_limiter(clock, failed=2)

    assert limiter.hit_failed_signature("10.0.0.1").allowed
    assert limiter.hit_failed_signature("10.0.0.1").allowed
    assert not limiter.hit_failed_signature("10.0.0.1").allowed
    assert limiter.hit_failed_signature("10.0.0.2").allowed


def test_forged_traffic_does_not_starve_signed_deliveries(clock):
    limiter = make_limiter(clock, signed=3, failed=2)
    for _ in range(50):
        limiter.hit_failed_signature("10.0.0.1")

    assert all(limiter.hit_signed().allowed for _ in range(3))


def test_failed_bucket_reports_retry_after(clock):
    limiter = make_limiter(clock, failed=1)
    limiter.hit_failed_signature("10.0.0.1")
    clock.advance(20)

    assert limiter.hit_failed_signature("10.0.0.1").retry_after == 40


def test_first_refusal_is_reported_then_one_report_per_interval(clock):
    limiter = make_limiter(clock)
    ip = "203.0.113.9"

    assert limiter.refusal_report(ip) == 1
    quiet = [limiter.refusal_report(ip) for _ in range(4)]
    clock.advance(60)
    assert quiet == [None] * 4
    assert limiter.refusal_report(ip) == 5  # the four quiet ones plus this one
    assert limiter.refusal_report(ip) is None


def test_refusal_reports_are_per_ip(clock):
    limiter = make_limiter(clock)

    assert limiter.refusal_report("10.0.0.1") == 1
    assert limiter.refusal_report("10.0.0.2") == 1
    assert limiter.refusal_report("10.0.0.1") is None


def test_idle_ip_buckets_are_forgotten(clock):
    limiter = make_limiter(clock, failed=1)
    for n in range(100):
        limiter.hit_failed_signature(f"10.0.1.{n}")
    clock.advance(61)

    limiter.hit_failed_signature("10.0.0.1")

    assert list(limiter._failed) == ["10.0.0.1"]


def test_limiter_reads_its_limits_from_settings(tmp_path):
    settings = Settings(
        data_dir=tmp_path, rate_limit=1, unsigned_rate_limit=1, rate_window_sec=5
    )
    limiter = WebhookRateLimiter.from_settings(settings)

    assert limiter.hit_signed().allowed
    refused = limiter.hit_signed()

    assert not refused.allowed
    assert refused.retry_after == 5


@pytest.mark.parametrize(
    "remote, forwarded, hops, expected",
    [
        ("10.0.0.5", "1.2.3.4", 0, "10.0.0.5"),
        ("10.0.0.5", "1.2.3.4", 1, "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4", 1, "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 172.16.0.2", 2, "1.2.3.4"),
        ("10.0.0.5", "1.2.3.4", 2, "10.0.0.5"),
        ("10.0.0.5", None, 1, "10.0.0.5"),
        ("10.0.0.5", "not-an-ip", 1, "10.0.0.5"),
        ("10.0.0.5", "2001:db8::1", 1, "2001:db8::1"),
        (None, None, 0, "unknown"),
    ],
    ids=[
        "untrusted-header-ignored",
        "one-hop",
        "client-prefix-ignored",
        "two-hops",
        "header-shorter-than-hops",
        "no-header",
        "garbage",
        "ipv6",
        "no-peer",
    ],
)
def test_client_ip_trusts_only_the_configured_hops(remote, forwarded, hops, expected):
    assert client_ip(remote, forwarded, hops) == expected
