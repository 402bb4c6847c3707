"""An operator's decision that a stuck read model passes over one stored event."""

from __future__ import annotations

from application.chorus import Chorus
from domain.operations import ReadModelSkip


def record_skip(app: Chorus, name: str, position: int, error: str, reason: str, who: str) -> int:
    """Appends the skip to the log (hash-chained like every event) and returns its position."""
    recordings = app.save(ReadModelSkip.record(name, position, error, reason, who))
    return max(int(r.notification.id) for r in recordings)
