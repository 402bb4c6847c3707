"""Which PostgreSQL a ``chorus`` command uses: ``DATABASE_URL``, or the private one in the
data directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from infrastructure.embedded_postgres import EmbeddedPostgres
from infrastructure.settings import Settings

log = logging.getLogger("chorus")


@contextmanager
def database(settings: Settings) -> Iterator[str]:
    """``DATABASE_URL``, or a private PostgreSQL in ``<data dir>/pg`` for as long as we run."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    server = EmbeddedPostgres(settings.data_dir / "pg")
    log.info("no DATABASE_URL: starting a private PostgreSQL in %s", server.data_dir)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@contextmanager
def shared_database(settings: Settings) -> Iterator[str]:
    """``database``, but when ``chorus serve`` already runs the private PostgreSQL, that one
    (a console command beside a running server)."""
    if settings.database_url is None:
        running = EmbeddedPostgres(settings.data_dir / "pg").url_of_running()
        if running is not None:
            yield running
            return
    with database(settings) as url:
        yield url


class NoPasswords:
    """The password port of an application that a console command builds to append events
    with no password in them: nothing is hashed (argon2's pool is not started)."""

    def hash(self, password: str) -> str:
        raise NotImplementedError("this command hashes no password")

    def verify(self, stored_hash: str | None, password: str) -> bool:
        raise NotImplementedError("this command checks no password")
