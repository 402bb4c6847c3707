"""Instance roles: granted and revoked at the console, each change an event."""

from __future__ import annotations

import pytest

from domain.base import Cause
from domain.errors import Conflict, InvalidValue, NotFound
from domain.instance import INSTANCE_ID, Instance
from tests.fixtures.domain import event_names, refused, replayed

CONSOLE = Cause(None, "cli-1")


def instance() -> Instance:
    made = Instance.create(CONSOLE)
    made.collect_events()
    return made


def test_the_instance_has_one_fixed_id() -> None:
    assert Instance.create(CONSOLE).id == INSTANCE_ID


def test_a_role_is_granted_and_revoked_with_who_ran_the_command() -> None:
    inst = instance()
    inst.grant("ada", "auditor", "root@host", CONSOLE)
    assert inst.holds("ada", "auditor") and not inst.holds("ada", "operator")
    inst.revoke("ada", "auditor", "root@host", CONSOLE)
    assert not inst.holds("ada", "auditor")
    events = inst.collect_events()
    assert [type(e).__name__ for e in events] == ["InstanceRoleGranted", "InstanceRoleRevoked"]
    assert all(vars(e)["granted_by"] == "root@host" for e in events)


@pytest.mark.parametrize("role", ["owner", "admin", "view_audit", "", "Auditor"])
def test_only_instance_roles_are_granted(role: str) -> None:
    inst = instance()
    with refused(InvalidValue, match="instance roles"):
        inst.grant("ada", role, "root@host", CONSOLE)
    assert event_names(inst) == []


@pytest.mark.parametrize("by", ["", "   ", "x" * 201])
def test_a_grant_says_who_ran_it(by: str) -> None:
    with refused(InvalidValue, match="granted_by"):
        instance().grant("ada", "auditor", by, CONSOLE)


def test_a_role_is_not_granted_twice_nor_revoked_when_not_held() -> None:
    inst = instance()
    inst.grant("ada", "auditor", "root@host", CONSOLE)
    inst.collect_events()
    with refused(Conflict, match="already holds"):
        inst.grant("ada", "auditor", "root@host", CONSOLE)
    with refused(NotFound, match="does not hold"):
        inst.revoke("ada", "operator", "root@host", CONSOLE)
    assert event_names(inst) == []


def test_instance_roles_survive_replay() -> None:
    inst = Instance.create(CONSOLE)
    inst.grant("ada", "auditor", "root@host", CONSOLE)
    inst.grant("bob", "operator", "root@host", CONSOLE)
    inst.revoke("ada", "auditor", "root@host", CONSOLE)
    again = replayed(inst.collect_events())
    assert isinstance(again, Instance) and again.roles == {"bob": {"operator"}}
