"""Handlers of instance commands: roles granted at the command line."""

from __future__ import annotations

from application.commands import GrantInstanceRole, RevokeInstanceRole
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.identity import User
from domain.instance import INSTANCE_ID, Instance

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def _instance(app: DecisionContext, cause: Cause) -> Instance:
    """The instance aggregate, created with its first grant."""
    if app.exists(INSTANCE_ID):
        return app.load(Instance, INSTANCE_ID)
    return Instance.create(cause)


@HANDLERS.on(GrantInstanceRole)
def grant_instance_role(app: DecisionContext, cmd: GrantInstanceRole, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    instance = _instance(app, cause)
    instance.grant(str(user.id), cmd.role, cmd.granted_by, cause)
    return Decision([instance])


@HANDLERS.on(RevokeInstanceRole)
def revoke_instance_role(app: DecisionContext, cmd: RevokeInstanceRole, cause: Cause) -> Decision:
    user = app.load(User, cmd.user_id, "user")
    instance = _instance(app, cause)
    instance.revoke(str(user.id), cmd.role, cmd.granted_by, cause)
    return Decision([instance])
