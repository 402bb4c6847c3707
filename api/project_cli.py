"""``chorus project``: the projection runner in a process of its own.

Servers started with ``CHORUS_PROJECTIONS=external`` project nothing, so a request never shares
its process (and its GIL) with projection work; they follow the read models' positions through
the NOTIFY this runner sends with each step. Any number may run: the tracking rows' locks
serialise them, as they do the in-process runners.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from api.contexts import all_projections
from api.log_cli import require_database_url
from infrastructure.settings import Settings

log = logging.getLogger("chorus")


def project(args: argparse.Namespace, settings: Settings) -> int:
    url = require_database_url(settings, "project")
    if url is None:
        return 2
    from api.bootstrap import migrate
    from projections.runner import ProjectionRunner

    migrate(url, all_projections())
    if settings.otlp_endpoint is not None:
        # Its steps continue the traces of the writes they apply (infrastructure/tracing.py).
        from infrastructure import tracing

        tracing.configure(endpoint=settings.otlp_endpoint)
    stop = threading.Event()

    def stopping(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, stopping) for sig in (signal.SIGINT, signal.SIGTERM)}
    pool: ConnectionPool[Any] = ConnectionPool(
        url,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True, "row_factory": dict_row},
        check=ConnectionPool.check_connection,
        open=True,
        name="chorus-projector",
    )
    runner = ProjectionRunner(pool, url, all_projections(), announce=True)
    try:
        runner.start()
        log.info("projecting the log into the read models until stopped")
        # A timed wait: the handlers run between waits, whatever the platform's locks do.
        while not stop.wait(0.5):
            pass
    finally:
        runner.stop()
        pool.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("stopped at position %d", runner.position())
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser(
        "project",
        help="run the projections in this process (for servers with CHORUS_PROJECTIONS=external)",
        description="Keeps every read model up to date with the event log, in this process,"
        " until stopped (SIGINT or SIGTERM), and announces each step to the servers started"
        " with CHORUS_PROJECTIONS=external. Needs DATABASE_URL.",
    )
    p.set_defaults(run=project)
