"""Presence upkeep: each WebSocket session is a session in the user's presence stream; this
instance heartbeats, and closes the sessions of instances that stopped heartbeating."""

from __future__ import annotations

import logging
import threading
import uuid
from typing import TYPE_CHECKING

from application.commands import EndSession, StartSession
from domain.base import Cause
from infrastructure.instances import Instances
from projections.presence import sessions_on_instance

if TYPE_CHECKING:
    from api.bootstrap import Services

log = logging.getLogger(__name__)

# An instance silent for this many heartbeats is taken for dead; with the sweep running
# every heartbeat, its sessions are closed within (MISSED_BEATS + 1) heartbeats.
MISSED_BEATS = 3


class PresenceKeeper:
    def __init__(self, services: Services, heartbeat_s: float) -> None:
        self.services = services
        self.heartbeat_s = heartbeat_s
        self.instance_id = uuid.uuid4().hex
        self.instances = Instances(services.auth_pool, self.instance_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._open: dict[str, str] = {}  # session id -> user id, on this instance
        self._lock = threading.Lock()

    # -- sessions (called from worker threads) ------------------------------------------------

    def session_started(self, user_id: str) -> str:
        session_id = str(uuid.uuid4())
        command = StartSession(session_id=session_id, instance_id=self.instance_id)
        self.services.app.execute(command, Cause(user_id))
        with self._lock:
            self._open[session_id] = user_id
        return session_id

    def session_ended(self, user_id: str, session_id: str, reason: str) -> None:
        command = EndSession(session_id=session_id, reason=reason)
        self.services.app.execute(command, Cause(user_id))
        with self._lock:
            self._open.pop(session_id, None)

    # -- heartbeat and sweep -------------------------------------------------------------------

    def start(self) -> None:
        self.instances.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        try:
            with self._lock:
                still_open = dict(self._open)
            for session_id, user_id in still_open.items():
                self.session_ended(user_id, session_id, "server stopped")
            self.instances.forget(self.instance_id)
        except Exception as exc:
            # Left registered, the instance is swept by the others once its beat is stale.
            log.warning("presence: could not close this instance's sessions: %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.instances.beat()
                self.sweep()
            except Exception as exc:  # keep beating through database restarts
                log.warning("presence: %s", exc)

    def sweep(self) -> None:
        """Closes the sessions of every instance silent for MISSED_BEATS heartbeats."""
        for dead in self.instances.silent_for(self.heartbeat_s * MISSED_BEATS):
            with self.services.read_pool.connection() as conn, conn.cursor() as cur:
                sessions = sessions_on_instance(cur, dead)
            if not sessions:
                self.instances.forget(dead)
                continue
            for session in sessions:
                command = EndSession(session_id=session["session_id"], reason="instance lost")
                self.services.app.execute(command, Cause(None))
            log.info("presence: closed %d sessions of lost instance %s", len(sessions), dead)
