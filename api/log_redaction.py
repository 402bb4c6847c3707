"""Keeps secrets that travel in URLs out of the server's log.

uvicorn writes every request's path with its query string (its access log) and every
WebSocket's (``"WebSocket /ws?token=…" [accepted]`` on ``uvicorn.error``). Two secrets travel
there:
- access tokens: browsers cannot set headers on a WebSocket, so they put the token in the
  query string (``?token=``, ``access_token=``…);
- invite codes: ``POST /api/invites/{code}/accept`` (issue 16, finding 15; clients should
  send the code in the body of ``POST /api/invites/accept`` instead).
Whoever read the log could act as the user, or join the workspace. One filter on uvicorn's
loggers replaces both values with ``[redacted]``.
"""

from __future__ import annotations

import logging
import re

# A query parameter whose name ends in "token", and its value.
_QUERY_TOKEN = re.compile(r"([?&][^=&\s\"]*token=)[^&\s\"]+", re.IGNORECASE)
# The code segment of an invite's accept path (not the body route ``/api/invites/accept``).
_INVITE_PATH = re.compile(r"(/api/invites/)(?!accept\b)[^/\s?\"]+(/accept)")
LOGGERS = ("uvicorn.error", "uvicorn.access")


def redact(value: object) -> object:
    if not isinstance(value, str):
        return value
    return _INVITE_PATH.sub(r"\1[redacted]\2", _QUERY_TOKEN.sub(r"\1[redacted]", value))


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: redact(arg) for key, arg in record.args.items()}
        return True


def keep_secrets_out_of_logs() -> None:
    """Installs ``RedactSecrets`` on uvicorn's loggers (once per process)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
