"""Ended sessions (issue 17, finding 6), kept in step with the log on every instance.

Every instance already follows the log (api/realtime/hub.py). Each ``SignedOut`` it sees ends
that session here: its access tokens are refused from then on (infrastructure/tokens.py keeps
the set, a dictionary look-up per request) and its open ``/ws`` and ``/yjs`` sockets are
closed with 4401 ``session ended``. The instance that committed the end also ends it at once,
before answering (read-your-writes), so its client's next request is refused even before the
event comes round. A starting instance learns the sessions ended recently enough for one of
their access tokens to be still unexpired from the refresh-token families revoked then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio.to_thread

from api.realtime.hub import Delivery, EventHub
from infrastructure.refresh_tokens import RefreshTokens
from infrastructure.tokens import AccessClaims, AccessTokens

log = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401
SESSION_ENDED = "session ended"


class SessionEnds:
    """One listener of the hub per process; sockets watch their session through it."""

    def __init__(
        self, hub: EventHub, access_tokens: AccessTokens, refresh_tokens: RefreshTokens
    ) -> None:
        self.hub = hub
        self.access_tokens = access_tokens
        self.refresh_tokens = refresh_tokens
        # Session id -> close callbacks of its open sockets (event loop thread only).
        self._sockets: dict[str, set[Callable[[], object]]] = {}

    async def start(self) -> None:
        """On the event loop, once the hub has started: listening first, so nothing after
        the hub's start position is missed; what ended before it, the families tell (a
        session's family is revoked as it ends)."""
        self.hub.add(self)
        tokens = self.access_tokens
        window = tokens.ttl_s + 120
        ended = await anyio.to_thread.run_sync(self.refresh_tokens.recently_ended, window)
        tokens.end_sessions(ended)

    def stop(self) -> None:
        self.hub.remove(self)

    def deliver(self, batch: list[Delivery]) -> None:
        ended = [str(d.event.stream) for d in batch if d.event.type == "SignedOut"]
        if ended:
            self.ended(ended)

    def ended(self, session_ids: list[str]) -> None:
        """On the event loop: refuse the sessions' tokens and close their sockets."""
        self.access_tokens.end_sessions(session_ids)
        for session_id in session_ids:
            for close in self._sockets.pop(session_id, ()):
                try:
                    close()
                except Exception:  # one socket's trouble must not spare the others
                    log.exception("could not close a socket of an ended session")

    def watch(self, claims: AccessClaims, close: Callable[[], object]) -> Callable[[], None]:
        """Calls ``close`` (on the event loop) when the socket's session ends, at once if it
        already has; returns what stops the watch. Tokens without a session (issued before
        sessions could end) are watched by their expiry alone."""
        session_id = claims.session_id
        if session_id is None:
            return _nothing
        if self.access_tokens.session_ended(session_id):
            close()
            return _nothing
        watchers = self._sockets.setdefault(session_id, set())
        watchers.add(close)

        def stop() -> None:
            left = self._sockets.get(session_id)
            if left is not None:
                left.discard(close)
                if not left:
                    del self._sockets[session_id]

        return stop


def _nothing() -> None:
    pass
