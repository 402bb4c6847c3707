"""An operator's decision that a stuck read model, or a stuck reaction policy, passes over one
stored event."""

from __future__ import annotations

from application.chorus import Chorus
from domain.operations import ReactionSkip, ReadModelSkip


def record_skip(app: Chorus, name: str, position: int, error: str, reason: str, who: str) -> int:
    """Appends the skip to the log (hash-chained like every event) and returns its position."""
    recordings = app.save(ReadModelSkip.record(name, position, error, reason, who))
    return max(int(r.notification.id) for r in recordings)


def record_reaction_skip(
    app: Chorus, policy: str, position: int, error: str, reason: str, who: str
) -> int:
    """As ``record_skip``, for a reaction policy."""
    recordings = app.save(ReactionSkip.record(policy, position, error, reason, who))
    return max(int(r.notification.id) for r in recordings)
