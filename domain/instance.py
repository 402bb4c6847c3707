"""The instance: roles held across the whole server, apart from any workspace's.

An ``auditor`` verifies the whole log (its count and head are global facts no workspace
role may see); an ``operator`` runs the server. Only the command line grants them: a
workspace owner, who anyone can become by creating a workspace, never holds them.
"""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Conflict, InvalidValue, NotFound
from domain.scopes import OPERATORS, StreamKind

INSTANCE_ID = uuid5(NAMESPACE_URL, "chorus:instance")
AUDITOR = "auditor"
OPERATOR = "operator"
INSTANCE_ROLES = frozenset({AUDITOR, OPERATOR})
MAX_GRANTED_BY = 200


class Instance(ChorusAggregate):
    """The one instance aggregate (a fixed id): who holds which instance role."""

    stream_kind = StreamKind("instance", OPERATORS)

    @classmethod
    @caused
    def create(cls, cause: Cause) -> Instance:
        return cls(id=INSTANCE_ID)

    @event("InstanceCreated")
    def __init__(self, id: UUID) -> None:
        self.roles: dict[str, set[str]] = {}

    def holds(self, user_id: str, role: str) -> bool:
        return role in self.roles.get(user_id, set())

    @caused
    def grant(self, user_id: str, role: str, granted_by: str, cause: Cause) -> None:
        """``granted_by`` says who ran the command (the operator at the console), since
        no signed-in user does."""
        _check(role, granted_by)
        if self.holds(user_id, role):
            raise Conflict(f"already holds the instance role {role!r}")
        self._granted(
            user_id=user_id,
            role=role,
            granted_by=granted_by,
        )

    @event("InstanceRoleGranted")
    def _granted(
        self,
        user_id: str,
        role: str,
        granted_by: str,
    ) -> None:
        self.roles.setdefault(user_id, set()).add(role)

    @caused
    def revoke(self, user_id: str, role: str, granted_by: str, cause: Cause) -> None:
        _check(role, granted_by)
        if not self.holds(user_id, role):
            raise NotFound(f"does not hold the instance role {role!r}")
        self._revoked(
            user_id=user_id,
            role=role,
            granted_by=granted_by,
        )

    @event("InstanceRoleRevoked")
    def _revoked(
        self,
        user_id: str,
        role: str,
        granted_by: str,
    ) -> None:
        self.roles[user_id].discard(role)
        if not self.roles[user_id]:
            del self.roles[user_id]


def _check(role: str, granted_by: str) -> None:
    if role not in INSTANCE_ROLES:
        raise InvalidValue(f"instance roles are {', '.join(sorted(INSTANCE_ROLES))}")
    if not granted_by.strip() or len(granted_by) > MAX_GRANTED_BY:
        raise InvalidValue(f"granted_by must be 1 to {MAX_GRANTED_BY} characters")
