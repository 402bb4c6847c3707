"""The rules of documents: who creates, views, edits, renames and deletes them, what an
update event records, and how root kinds are learnt."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest

from domain.documents import MAX_ROOT_NAME, MAX_ROOTS, Document, DocumentDeleted, newly_known_roots
from domain.errors import InvalidValue, NotAMember, PermissionDenied
from domain.rules import MAX_DOCUMENT_EVENT_BYTES, MAX_DOCUMENT_TITLE
from domain.workspaces import Workspace
from tests.fixtures.domain import (
    ADAM,
    MAX,
    MIA,
    OLIVIA,
    OSCAR,
    VIC,
    build_workspace,
    by,
    nothing_recorded,
    recorded,
    refused,
    replayed,
)

UPDATE = b"\x01\x01\x02\x00\x04\x01\x07content\x02hi\x00"


def workspace() -> Workspace:
    """Olivia owns it; Adam is an admin, Mia and Max members, Vic a viewer."""
    return build_workspace(
        members={ADAM: {"admin"}, MIA: {"member"}, MAX: {"member"}, VIC: {"viewer"}}
    )


def mias_document(ws: Workspace) -> Document:
    document = Document.create(uuid4(), ws, "Plan", by(MIA))
    document.collect_events()
    return document


# -- creating -------------------------------------------------------------------------------


def test_a_member_creates_a_document() -> None:
    ws = workspace()
    document = Document.create(uuid4(), ws, "  Plan  ", by(MIA))
    recorded(document, "DocumentCreated", by(MIA), title="Plan", workspace_id=ws.id)
    assert document.created_by == MIA and not document.deleted and document.roots == {}


@pytest.mark.parametrize(("actor", "error"), [(VIC, PermissionDenied), (OSCAR, NotAMember)])
def test_viewers_and_outsiders_cannot_create(actor: str, error: type[Exception]) -> None:
    with refused(error):  # type: ignore[arg-type]
        Document.create(uuid4(), workspace(), "Plan", by(actor))


@pytest.mark.parametrize("title", ["", "   ", "x" * (MAX_DOCUMENT_TITLE + 1), "a\x00b"])
def test_a_title_must_be_sensible(title: str) -> None:
    with refused(InvalidValue):
        Document.create(uuid4(), workspace(), title, by(MIA))


# -- viewing and editing ------------------------------------------------------------------------


def test_members_and_viewers_view_outsiders_do_not() -> None:
    ws = workspace()
    document = mias_document(ws)
    for actor in (OLIVIA, MIA, MAX, VIC):
        document.check_can_view(actor, ws)
    with refused(NotAMember):
        document.check_can_view(OSCAR, ws)


def test_a_viewer_is_read_only() -> None:
    ws = workspace()
    document = mias_document(ws)
    assert document.can_edit(MAX, ws) and not document.can_edit(VIC, ws)
    with refused(PermissionDenied, "read-only"):
        document.apply_update(UPDATE, {}, ws, by(VIC))
    nothing_recorded(document)


def test_an_outsider_cannot_edit() -> None:
    ws = workspace()
    document = mias_document(ws)
    with refused(NotAMember):
        document.apply_update(UPDATE, {}, ws, by(OSCAR))


def test_an_update_records_its_bytes_actor_and_new_roots() -> None:
    ws = workspace()
    document = mias_document(ws)
    document.apply_update(UPDATE, {"content": "text"}, ws, by(MAX))
    event = recorded(
        document,
        "DocumentUpdateApplied",
        by(MAX),
        update=UPDATE,
        roots={"content": "text"},
        restored_from=None,
    )
    assert document.roots == {"content": "text"} and document.update_count == 1
    # A root already known is not recorded again.
    document.apply_update(UPDATE, {"content": "text"}, ws, by(MAX))
    recorded(document, "DocumentUpdateApplied", by(MAX), roots={})
    assert event.update == UPDATE


def test_an_update_must_not_be_empty_nor_too_big() -> None:
    ws = workspace()
    document = mias_document(ws)
    with refused(InvalidValue, "empty"):
        document.apply_update(b"", {}, ws, by(MIA))
    with refused(InvalidValue, "at most"):
        document.apply_update(b"x" * (MAX_DOCUMENT_EVENT_BYTES + 1), {}, ws, by(MIA))
    document.apply_update(b"x" * MAX_DOCUMENT_EVENT_BYTES, {}, ws, by(MIA))


def test_a_restore_names_a_position_of_the_log() -> None:
    ws = workspace()
    document = mias_document(ws)
    with refused(InvalidValue, "restored_from"):
        document.apply_update(UPDATE, {}, ws, by(MIA), restored_from=0)
    document.apply_update(UPDATE, {}, ws, by(MIA), restored_from=7)
    recorded(document, "DocumentUpdateApplied", by(MIA), restored_from=7)


# -- renaming and deleting ----------------------------------------------------------------------


def test_the_creator_renames_their_document() -> None:
    ws = workspace()
    document = mias_document(ws)
    document.rename(" Plan B ", ws, by(MIA))
    recorded(document, "DocumentRenamed", by(MIA), title="Plan B")
    document.rename("Plan B", ws, by(MIA))
    nothing_recorded(document)


def test_others_need_manage_documents_to_rename_or_delete() -> None:
    ws = workspace()
    document = mias_document(ws)
    with refused(PermissionDenied, "manage_documents"):
        document.rename("Mine now", ws, by(MAX))
    with refused(PermissionDenied, "manage_documents"):
        document.delete(ws, by(MAX))
    nothing_recorded(document)
    document.rename("Tidied", ws, by(ADAM))
    recorded(document, "DocumentRenamed", by(ADAM), title="Tidied")


def test_a_creator_who_became_a_viewer_manages_nothing() -> None:
    ws = build_workspace(members={MIA: {"member"}})
    document = mias_document(ws)
    demoted = build_workspace(members={MIA: {"viewer"}})
    with refused(PermissionDenied, "edit_documents"):
        document.rename("x", demoted, by(MIA))


def test_a_deleted_document_takes_no_edits() -> None:
    ws = workspace()
    document = mias_document(ws)
    document.delete(ws, by(OLIVIA))
    recorded(document, "DocumentDeleted", by(OLIVIA))
    assert not document.can_edit(MIA, ws)
    with refused(DocumentDeleted):
        document.apply_update(UPDATE, {}, ws, by(MIA))
    with refused(DocumentDeleted):
        document.rename("x", ws, by(MIA))
    with refused(DocumentDeleted):
        document.delete(ws, by(OLIVIA))


def test_replaying_the_events_rebuilds_the_document() -> None:
    ws = workspace()
    document = Document.create(uuid4(), ws, "Plan", by(MIA))
    document.apply_update(UPDATE, {"content": "text"}, ws, by(MIA))
    document.apply_update(UPDATE, {"shapes": "map"}, ws, by(MAX))
    document.rename("Plan B", ws, by(MIA))
    again: Any = replayed(document.collect_events())
    assert again.title == "Plan B"
    assert again.roots == {"content": "text", "shapes": "map"}
    assert again.update_count == 2 and again.created_by == MIA


# -- root kinds ---------------------------------------------------------------------------------


def test_root_kinds_only_get_more_specific() -> None:
    assert newly_known_roots({}, {"a": "array"}) == {"a": "array"}
    assert newly_known_roots({"a": "array"}, {"a": "text"}) == {"a": "text"}
    assert newly_known_roots({"a": "text"}, {"a": "array"}) == {}
    assert newly_known_roots({"a": "text"}, {"a": "map"}) == {"a": "map"}
    assert newly_known_roots({"a": "map"}, {"a": "text"}) == {}
    assert newly_known_roots({"a": "xml"}, {"a": "xml"}) == {}


def test_root_kinds_and_names_are_checked() -> None:
    with refused(InvalidValue, "kind"):
        newly_known_roots({}, {"a": "set"})
    with refused(InvalidValue, "root name"):
        newly_known_roots({}, {"": "text"})
    with refused(InvalidValue, "root name"):
        newly_known_roots({}, {"x" * (MAX_ROOT_NAME + 1): "text"})
    many = {f"r{i}": "text" for i in range(MAX_ROOTS)}
    assert len(newly_known_roots({}, many)) == MAX_ROOTS
    with refused(InvalidValue, "at most"):
        newly_known_roots(many, {"one_more": "map"})
