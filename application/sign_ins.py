"""What the log says of a sign-in (a session), for the refresh path."""

from __future__ import annotations

import uuid

from application.chorus import Chorus
from domain.identity import SignIn


def ended_in_log(app: Chorus, session_id: str) -> bool:
    """Whether the session's sign-in has ended; False for a family issued before sign-ins
    were recorded (it has no stream)."""
    uid = uuid.UUID(session_id)
    if not app.exists(uid):
        return False
    return not app.load(SignIn, uid, "session").live
