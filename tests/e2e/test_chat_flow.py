"""The foundation's story, told over real HTTP: three people, one private workspace."""

from __future__ import annotations

from tests.fixtures.chorus import Running, User


def test_three_people_collaborate_in_a_private_workspace(chorus: Running) -> None:
    api = chorus.api
    ada, bob, cy = api.signup("ada"), api.signup("bob"), api.signup("cy")
    dee = api.signup("dee")

    # Ada creates a private workspace: she is its owner; outsiders cannot even see it.
    ws = api.ok(api.post("/api/workspaces", ada, {"name": "Acme", "visibility": "private"}), 201)
    wsid = ws["id"]
    assert api.get(f"/api/workspaces/{wsid}", bob).status_code == 404
    assert api.post(f"/api/workspaces/{wsid}/join", bob).status_code == 404

    # An invite for two: Bob and Cy get in, Dee is refused.
    code = api.ok(api.post(f"/api/workspaces/{wsid}/invites", ada, {"max_uses": 2}), 201)["code"]
    assert api.ok(api.post(f"/api/invites/{code}/accept", bob))["workspace_id"] == wsid
    api.ok(api.post(f"/api/invites/{code}/accept", cy))
    refused = api.post(f"/api/invites/{code}/accept", dee)
    assert refused.status_code == 410, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    info = api.ok(api.get(f"/api/workspaces/{wsid}", bob))
    assert info["member_count"] == 3 and info["owner_id"] == ada.user_id
    members = api.ok(api.get(f"/api/workspaces/{wsid}/members", ada))["items"]
    assert {m["user_id"]: m["roles"] for m in members} == {
        ada.user_id: ["owner"],
        bob.user_id: ["member"],
        cy.user_id: ["member"],
    }

    # A public and a private channel; only explicit members see the private one.
    general = api.ok(api.post(f"/api/workspaces/{wsid}/channels", ada, {"name": "general"}), 201)
    secret = api.ok(
        api.post(f"/api/workspaces/{wsid}/channels", ada, {"name": "secret", "private": True}), 201
    )
    api.ok(api.post(f"/api/channels/{secret['id']}/members", ada, {"user_id": bob.user_id}))

    def names(user: User) -> set[str]:
        listing = api.ok(api.get(f"/api/workspaces/{wsid}/channels", user))
        return {c["name"] for c in listing["items"]}

    assert names(bob) == {"general", "secret"}
    assert names(cy) == {"general"}
    assert api.post(f"/api/channels/{secret['id']}/messages", cy, {"text": "hi"}).status_code == 404
    # Plain members cannot create channels.
    assert api.post(f"/api/workspaces/{wsid}/channels", bob, {"name": "x"}).status_code == 403

    # Members post, edit, react, reply and delete.
    ch = general["id"]
    first = api.ok(
        api.post(f"/api/channels/{ch}/messages", bob, {"text": "Hello @" + cy.username}), 201
    )
    api.ok(api.patch(f"/api/messages/{first['id']}", bob, {"text": "Hello everyone"}))
    assert api.patch(f"/api/messages/{first['id']}", cy, {"text": "hijack"}).status_code == 403
    api.ok(api.put(f"/api/messages/{first['id']}/reactions/👍", cy))
    api.ok(api.put(f"/api/messages/{first['id']}/reactions/👍", ada))
    reply = api.ok(
        api.post(f"/api/channels/{ch}/messages", cy, {"text": "hi Bob", "reply_to": first["id"]}),
        201,
    )
    doomed = api.ok(api.post(f"/api/channels/{ch}/messages", cy, {"text": "oops"}), 201)
    api.ok(api.delete(f"/api/messages/{doomed['id']}", cy))

    # A plain member cannot delete someone else's message; a `mod` can.
    assert api.delete(f"/api/messages/{reply['id']}", bob).status_code == 403
    api.ok(
        api.post(
            f"/api/workspaces/{wsid}/roles",
            ada,
            {"name": "mod", "permissions": ["view_channels", "send_messages", "manage_messages"]},
        ),
        201,
    )
    # Nobody can grant themselves a role, owner or not; plain members cannot grant at all.
    assert (
        api.put(f"/api/workspaces/{wsid}/members/{bob.user_id}/roles/mod", bob).status_code == 403
    )
    assert (
        api.put(f"/api/workspaces/{wsid}/members/{ada.user_id}/roles/mod", ada).status_code == 403
    )
    api.ok(api.put(f"/api/workspaces/{wsid}/members/{cy.user_id}/roles/mod", ada))
    spam = api.ok(api.post(f"/api/channels/{ch}/messages", bob, {"text": "spam"}), 201)
    api.ok(api.delete(f"/api/messages/{spam['id']}", cy))

    # The timeline shows edits, reactions, reply counts and tombstones, newest first.
    timeline = api.ok(api.get(f"/api/channels/{ch}/messages", bob))["items"]
    by_id = {m["id"]: m for m in timeline}
    assert [m["id"] for m in timeline] == [spam["id"], doomed["id"], reply["id"], first["id"]]
    assert by_id[first["id"]]["text"] == "Hello everyone"
    assert by_id[first["id"]]["edited_at"] is not None
    assert by_id[first["id"]]["reactions"] == {"👍": [cy.user_id, ada.user_id]}
    assert by_id[first["id"]]["reply_count"] == 1
    assert by_id[reply["id"]]["reply_to"] == first["id"]
    assert by_id[doomed["id"]]["deleted"] is True and by_id[doomed["id"]]["text"] == ""
    assert by_id[spam["id"]]["deleted"] is True

    # The owner (view_audit) sees every change as a past-tense event with its actor.
    events = api.ok(api.get("/api/events", ada, limit=200))["items"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)
    types = [e["type"] for e in events]
    for expected in (
        "WorkspaceCreated", "InviteCreated", "MemberJoined", "ChannelCreated",
        "ChannelMemberAdded", "MessageSent", "MessageEdited", "ReactionAdded",
        "MessageDeleted", "RoleCreated", "RoleGranted",
    ):  # fmt: skip
        assert expected in types
    assert all(e["type"].endswith("ed") or e["type"].endswith("Sent") for e in events)
    edit = next(e for e in events if e["type"] == "MessageEdited")
    assert edit["actor"] == bob.user_id and edit["data"]["text"] == "Hello everyone"
    sent = next(e for e in events if e["type"] == "MessageSent" and e["stream"] == first["id"])
    assert sent["data"]["text"] == "Hello @" + cy.username  # history is kept in the log
    assert sent["data"]["mentions"] == [cy.user_id]
    # Cy, without view_audit, sees only what she may view: not the private channel.
    cy_streams = {e["stream"] for e in api.ok(api.get("/api/events", cy, limit=200))["items"]}
    assert secret["id"] not in cy_streams and ch in cy_streams
    # Dee, outside, sees nothing of the workspace.
    dee_events = api.ok(api.get("/api/events", dee, limit=200))["items"]
    assert {e["stream"] for e in dee_events} == {dee.user_id}
