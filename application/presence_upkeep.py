"""Presence upkeep: a user's WebSockets on this instance share one session in the presence
stream; this instance heartbeats, and closes the sessions of instances that stopped
heartbeating.

Coalesced (issue #16, finding 13): only a user's first connect and last disconnect on an
instance are recorded, and the last disconnect only once the user has had no socket here for
``linger_s`` (a reconnect within it continues the same session). Each /ws connect and close
used to append two permanent events (~370/s from one client); now a user costs at most one
SessionStarted and one SessionEnded per instance per ``linger_s`` of absence, however fast
they reconnect. The price: a user shows online up to ``linger_s`` after their last socket
closed.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from application.chorus import Chorus
from application.commands import EndSession, StartSession
from domain.base import Cause
from infrastructure.instances import Instances

log = logging.getLogger(__name__)

# An instance silent for this many heartbeats is taken for dead; with the sweep running
# every heartbeat, its sessions are closed within (MISSED_BEATS + 1) heartbeats.
MISSED_BEATS = 3
START_TIMEOUT_S = 30.0


@dataclass
class _Shared:
    """The one open session of a user on this instance."""

    session_id: str
    sockets: int = 0
    idle_since: float | None = None  # monotonic time its last socket closed
    started: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class PresenceKeeper:
    def __init__(
        self,
        app: Chorus,
        instances: Instances,
        sessions_on: Callable[[str], list[str]],
        heartbeat_s: float,
        linger_s: float = 2.0,
    ) -> None:
        """``instances``: this instance's heartbeat row and the others'; ``sessions_on``:
        the open presence sessions of an instance (from the read models)."""
        self.app = app
        self.heartbeat_s = heartbeat_s
        self.linger_s = linger_s
        self.instances = instances
        self.instance_id = instances.instance_id
        self._sessions_on = sessions_on
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reaper: threading.Thread | None = None
        self._by_user: dict[str, _Shared] = {}  # this instance's sessions
        self._lock = threading.Condition()

    # -- sessions (called from worker threads) ------------------------------------------------

    def session_started(self, user_id: str) -> str:
        """The user's session on this instance: started (one event) for their first socket,
        the open one for the others."""
        with self._lock:
            shared = self._by_user.get(user_id)
            first = shared is None
            if shared is None:
                shared = self._by_user[user_id] = _Shared(str(uuid.uuid4()))
            shared.sockets += 1
            shared.idle_since = None
        if first:
            command = StartSession(session_id=shared.session_id, instance_id=self.instance_id)
            try:
                self.app.execute(command, Cause(user_id))
            except BaseException:
                with self._lock:
                    shared.failed = True
                    if self._by_user.get(user_id) is shared:
                        del self._by_user[user_id]
                shared.started.set()
                raise
            shared.started.set()
        elif not shared.started.wait(START_TIMEOUT_S) or shared.failed:
            with self._lock:
                shared.sockets -= 1
            raise RuntimeError("the user's session could not be started")
        return shared.session_id

    def session_ended(self, user_id: str, session_id: str, reason: str) -> None:
        """One socket of the session closed; the session ends ``linger_s`` after its last."""
        with self._lock:
            shared = self._by_user.get(user_id)
            if shared is None or shared.session_id != session_id:
                return  # already ended (at shutdown, say)
            shared.sockets -= 1
            if shared.sockets > 0:
                return
            if self.linger_s > 0:
                shared.idle_since = time.monotonic()
                self._lock.notify_all()
                return
            del self._by_user[user_id]
        self._end(user_id, session_id, reason)

    def _end(self, user_id: str, session_id: str, reason: str) -> None:
        command = EndSession(session_id=session_id, reason=reason)
        self.app.execute(command, Cause(user_id))

    def _reap(self) -> None:
        """Ends the sessions whose last socket closed ``linger_s`` ago."""
        while not self._stop.is_set():
            due: list[tuple[str, str]] = []
            with self._lock:
                now = time.monotonic()
                wait = self.heartbeat_s
                for user_id, shared in list(self._by_user.items()):
                    if shared.idle_since is None:
                        continue
                    left = shared.idle_since + self.linger_s - now
                    if left <= 0:
                        del self._by_user[user_id]
                        due.append((user_id, shared.session_id))
                    else:
                        wait = min(wait, left)
                if not due:
                    self._lock.wait(wait)
            for user_id, session_id in due:
                try:
                    self._end(user_id, session_id, "disconnected")
                except Exception as exc:  # the sweep closes it if this instance dies
                    log.warning("presence: could not end session %s: %s", session_id, exc)

    # -- heartbeat and sweep -------------------------------------------------------------------

    def start(self) -> None:
        self.instances.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="presence", daemon=True)
        self._thread.start()
        self._reaper = threading.Thread(target=self._reap, name="presence-linger", daemon=True)
        self._reaper.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        for thread in (self._thread, self._reaper):
            if thread is not None:
                thread.join(timeout=10)
        self._thread = self._reaper = None
        try:
            with self._lock:
                still_open = {u: s.session_id for u, s in self._by_user.items()}
                self._by_user.clear()
            for user_id, session_id in still_open.items():
                self._end(user_id, session_id, "server stopped")
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
            sessions = self._sessions_on(dead)
            if not sessions:
                self.instances.forget(dead)
                continue
            for session_id in sessions:
                command = EndSession(session_id=session_id, reason="instance lost")
                self.app.execute(command, Cause(None))
            log.info("presence: closed %d sessions of lost instance %s", len(sessions), dead)
