"""Every Prometheus metric of the application, in one place (API-12).

The objects live in the default prometheus-client registry, so `/metrics` can
render them without knowing who updates them. This module holds metric objects
only: code that counts imports the object it needs from here.
"""

from prometheus_client import Counter, Gauge, Histogram

RUNS = Counter(
    "orket_runs_total",
    "Runs that reached a terminal status.",
    ["status"],
)
HTTP_REQUESTS = Counter(
    "orket_http_requests_total",
    "HTTP requests answered by the API.",
    ["endpoint", "method", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "orket_http_request_duration_seconds",
    "Time taken to answer an HTTP request.",
)
WS_CLIENTS = Gauge(
    "orket_ws_clients",
    "WebSocket clients connected to /ws/events.",
)
EVENT_WRITE_FAILURES = Counter(
    "orket_event_write_failures_total",
    "Events whose database insert failed (the log line was still written).",
)
MODEL_CALLS = Counter(
    "orket_model_calls_total",
    "Model provider calls, by provider and outcome (ok or error).",
    ["provider", "outcome"],
)
VERIFICATIONS = Counter(
    "orket_verifications_total",
    "Fixture verifications, by outcome.",
    ["outcome"],
)
