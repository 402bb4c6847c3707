"""Keeps invite codes out of the server's log (issue #16, finding 15).

``POST /api/invites/{code}/accept`` puts a live invite code in the URL, and uvicorn's access
log writes every URL: whoever reads the log could join the workspace. This filter replaces the
code segment of such paths on uvicorn's loggers (``/api/invites/[redacted]/accept``), as
``RedactQueryTokens`` (api/realtime/socket.py) does for ``?token=``. Clients should send the
code in the body instead (``POST /api/invites/accept``)."""

from __future__ import annotations

import logging
import re

_INVITE_PATH = re.compile(r"(/api/invites/)(?!accept\b)[^/\s?\"]+(/accept)")
LOGGERS = ("uvicorn.error", "uvicorn.access")


def _redact(value: object) -> object:
    return _INVITE_PATH.sub(r"\1[redacted]\2", value) if isinstance(value, str) else value


class RedactInviteCodes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = _redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact(arg) for key, arg in record.args.items()}
        return True


def keep_invite_codes_out_of_logs() -> None:
    """Installs ``RedactInviteCodes`` on uvicorn's loggers (once per process)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactInviteCodes) for f in logger.filters):
            logger.addFilter(RedactInviteCodes())
