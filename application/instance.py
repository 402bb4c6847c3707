"""Handlers of instance commands: roles granted at the command line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from application.commands import GrantInstanceRole, RevokeInstanceRole
from application.decisions import Decision, handles
from domain.base import Cause
from domain.identity import User
from domain.instance import INSTANCE_ID, Instance

if TYPE_CHECKING:
    from application.chorus import Chorus


def _instance(app: Chorus, cause: Cause) -> Instance:
    """The instance aggregate, created with its first grant."""
    if app.exists(INSTANCE_ID):
        return app.load(Instance, INSTANCE_ID)
    return Instance.create(cause)


@handles(GrantInstanceRole)
def grant_instance_role(app: Chorus, cmd: GrantInstanceRole, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    instance = _instance(app, cause)
    instance.grant(str(user.id), cmd.role, cmd.granted_by, cause)
    return Decision([instance])


@handles(RevokeInstanceRole)
def revoke_instance_role(app: Chorus, cmd: RevokeInstanceRole, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    instance = _instance(app, cause)
    instance.revoke(str(user.id), cmd.role, cmd.granted_by, cause)
    return Decision([instance])
