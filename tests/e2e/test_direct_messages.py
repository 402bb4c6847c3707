"""Direct messages reach only people who share a workspace with the sender and have not
blocked them (issue 17, finding 13)."""

from __future__ import annotations

from tests.fixtures.chorus import Running


def test_a_stranger_cannot_open_a_direct_channel(chorus: Running) -> None:
    api = chorus.api
    stranger, target = api.signup("str"), api.signup("tgt")
    before = chorus.events()
    refused = api.post("/api/dms", stranger, {"user_id": target.user_id})
    unknown = api.post("/api/dms", stranger, {"user_id": "5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"})
    # Someone you share no workspace with answers exactly as nobody does.
    assert (refused.status_code, refused.json()) == (404, unknown.json())
    assert chorus.events() == before
    # Naming a workspace only one of them is in does not help.
    ws = api.acquaint(stranger)
    named = api.post("/api/dms", stranger, {"user_id": target.user_id, "workspace_id": ws})
    assert (named.status_code, named.json()) == (404, unknown.json())
    # Once they share one, the channel opens (found for them, or named).
    api.ok(api.post(f"/api/workspaces/{ws}/join", target))
    opened = api.ok(api.post("/api/dms", stranger, {"user_id": target.user_id}), 201)
    again = api.ok(api.post("/api/dms", target, {"user_id": stranger.user_id, "workspace_id": ws}))
    assert again["channel_id"] == opened["channel_id"]


def test_a_blocked_user_can_neither_message_nor_mention_the_blocker(chorus: Running) -> None:
    api = chorus.api
    pest, me, friend = api.signup("pest"), api.signup("me"), api.signup("friend")
    ws = api.acquaint(me, pest, friend)
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", me, {"name": "all"}), 201)["id"]
    dm = api.ok(api.post("/api/dms", pest, {"user_id": me.user_id}), 201)["channel_id"]

    api.ok(api.put(f"/api/users/me/blocks/{pest.user_id}", me))
    assert api.put(f"/api/users/me/blocks/{pest.user_id}", me).status_code == 409
    assert api.put(f"/api/users/me/blocks/{me.user_id}", me).status_code == 422
    blocked = api.ok(api.get("/api/users/me/blocks", me))["items"]
    assert [(b["user_id"], b["username"]) for b in blocked] == [(pest.user_id, pest.username)]
    # Blocks are private: nobody else's list shows them.
    assert api.ok(api.get("/api/users/me/blocks", pest))["items"] == []

    before = chorus.events()
    for attempt in (
        api.post(f"/api/channels/{dm}/messages", pest, {"text": "hello?"}),
        api.post("/api/dms", pest, {"user_id": me.user_id}),
        # Nor, the other way, does the blocker message the one they block.
        api.post(f"/api/channels/{dm}/messages", me, {"text": "go away"}),
    ):
        assert attempt.status_code == 403, attempt.text
    assert chorus.events() == before
    # In a shared channel the pest still speaks, but its mention does not reach me.
    text = f"@{me.username} @{friend.username} look"
    sent = api.ok(api.post(f"/api/channels/{ch}/messages", pest, {"text": text}), 201)
    shown = api.ok(api.get(f"/api/channels/{ch}/messages", me, min_position=sent["position"]))
    assert shown["items"][0]["mentions"] == [friend.user_id]

    api.ok(api.delete(f"/api/users/me/blocks/{pest.user_id}", me))
    assert api.delete(f"/api/users/me/blocks/{pest.user_id}", me).status_code == 404
    api.ok(api.post(f"/api/channels/{dm}/messages", pest, {"text": "sorry"}), 201)
    assert api.ok(api.get("/api/users/me/blocks", me))["items"] == []
