"""The metrics Chorus exports, in Prometheus' text format at ``/metrics`` (api/metrics.py).

Defined once here, counted where things happen. With ``chorus serve --workers N`` each worker
is a process of its own: ``serve`` then points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh
directory before the workers start, each writes its values there, and a scrape of any one of
them sums (or, for gauges, takes the max or the live sum of) every worker's.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

COMMANDS = Counter(
    "chorus_commands_total",
    "Clients' commands (HTTP and /ws), by type and outcome (accepted, refused by a rule, failed).",
    ["type", "outcome"],
)
EVENTS_APPENDED = Counter("chorus_events_appended_total", "Events committed to the store.")
GROUP_COMMIT_BATCH = Histogram(
    "chorus_group_commit_batch_commands",
    "Commands committed together in one group-commit transaction.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
GROUP_COMMIT_WAIT = Histogram(
    "chorus_group_commit_wait_seconds",
    "Time a command waited in the group-commit queue before its batch was decided.",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
SOCKETS = Gauge(
    "chorus_open_sockets",
    "Open WebSocket connections, by endpoint (/ws, /yjs).",
    ["endpoint"],
    multiprocess_mode="livesum",
)
SOCKET_CLOSES = Counter(
    "chorus_socket_closes_total",
    "WebSocket connections closed by the server, by endpoint and close code.",
    ["endpoint", "code"],
)
SUBSCRIPTIONS = Gauge(
    "chorus_ws_subscriptions",
    "Open /ws subscriptions.",
    multiprocess_mode="livesum",
)
DELIVERED = Counter("chorus_ws_events_delivered_total", "Events sent to /ws subscriptions.")
SLOW_CONSUMERS = Counter(
    "chorus_ws_slow_consumers_total", "/ws subscriptions ended because their consumer fell behind."
)
REFUSED = Counter(
    "chorus_rate_limited_total",
    "Requests, frames and sign-ins refused by a rate limit or budget, by which.",
    ["limit"],
)
READ_MODEL_LAG = Gauge(
    "chorus_read_model_lag_events",
    "Positions of the log a read model has yet to apply (at the scrape).",
    ["model"],
    multiprocess_mode="max",
)
READ_MODEL_STUCK = Gauge(
    "chorus_read_model_stuck",
    "1 while a read model is held at an event it cannot apply.",
    ["model"],
    multiprocess_mode="max",
)
REACTION_LAG = Gauge(
    "chorus_reaction_lag_events",
    "Positions of the log a reaction policy has yet to read (at the scrape).",
    ["policy"],
    multiprocess_mode="max",
)
POOL = Gauge(
    "chorus_db_pool_connections",
    "PostgreSQL pool connections, by pool and state (size, available, waiting requests).",
    ["pool", "state"],
    multiprocess_mode="livesum",
)
LOOP_LAG = Gauge(
    "chorus_event_loop_lag_max_seconds",
    "The latest the event loop has run a timer since the process started.",
    multiprocess_mode="max",
)
READ_MODEL_LAG_SECONDS = Gauge(
    "chorus_read_model_lag_seconds",
    "Age of the oldest event a read model has yet to apply (0 when caught up; at the scrape).",
    ["model"],
    multiprocess_mode="max",
)
REACTION_LAG_SECONDS = Gauge(
    "chorus_reaction_lag_seconds",
    "Age of the oldest event a reaction policy has yet to read (0 when caught up).",
    ["policy"],
    multiprocess_mode="max",
)
LIVE_DOCUMENTS = Gauge(
    "chorus_live_documents",
    "Documents open for live editing (/yjs) in memory.",
    multiprocess_mode="livesum",
)
LIVE_DOCUMENT_BYTES = Gauge(
    "chorus_live_document_bytes",
    "Encoded size of the documents open for live editing: what their memory grows with.",
    multiprocess_mode="livesum",
)
AWARENESS_STATES = Gauge(
    "chorus_awareness_states",
    "Awareness states (cursors, selections) held for open documents.",
    multiprocess_mode="livesum",
)
REDIS_UP = Gauge(
    "chorus_redis_up",
    "1 when Redis answered the scrape's PING (the signal bus's connection), else 0;"
    " absent without REDIS_URL.",
    multiprocess_mode="min",
)
REDIS_ERRORS = Counter(
    "chorus_redis_errors_total",
    "Redis operations that failed, by use (signals publish/subscribe, rate limits).",
    ["use"],
)
LAST_POSITION = Gauge(
    "chorus_log_position",
    "The last position of the event log (at the scrape).",
    multiprocess_mode="max",
)


# Every refusal kind and endpoint shows from the start (at 0), so that a dashboard or an
# alert on them has a series before the first one happens.
LIMITS = (
    "requests_per_address",
    "ws_frames",
    "ws_signals",
    "ws_catch_up",
    "sockets_per_user",
    "login_per_account",
    "login_per_address",
    "signups_per_address",
    "signups",
)
for _limit in LIMITS:
    REFUSED.labels(_limit)
for _endpoint in ("/ws", "/yjs"):
    SOCKETS.labels(_endpoint)
for _use in ("signals_publish", "signals_subscribe", "rate_limits"):
    REDIS_ERRORS.labels(_use)


def exposition() -> bytes:
    """Every metric of this process, or of every worker when they share a directory."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
