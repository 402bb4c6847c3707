"""Visible read receipts (issue 19, optional part): in direct and small private channels the
members see how far each other member has read, unless that member chose not to send them."""

from __future__ import annotations

from typing import Any

from tests.fixtures.chorus import Running, User


def _receipts(chorus: Running, user: User, ch: str) -> dict[str, Any]:
    items = chorus.api.ok(chorus.api.get(f"/api/channels/{ch}/receipts", user))["items"]
    return {i["user_id"]: i for i in items}


def test_members_see_each_others_markers_unless_turned_off(chorus: Running) -> None:
    api = chorus.api
    ann, ben, cat, out = (api.signup(n) for n in ("ann", "ben", "cat", "out"))
    ws = api.acquaint(ann, ben, cat, out)
    dm = api.ok(api.post("/api/dms", ann, {"user_id": ben.user_id}), 201)["channel_id"]
    room = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "r", "private": True}), 201
    )["id"]
    api.ok(api.post(f"/api/channels/{room}/members", ann, {"user_id": cat.user_id}))
    hello = api.ok(api.post(f"/api/channels/{dm}/messages", ann, {"text": "hello"}), 201)["id"]
    said = api.ok(api.post(f"/api/channels/{room}/messages", ann, {"text": "hi"}), 201)["id"]

    assert _receipts(chorus, ann, dm) == {}
    read = api.ok(api.put(f"/api/channels/{dm}/read", ben, json={"up_to": hello}))
    api.ok(api.put(f"/api/channels/{room}/read", cat, json={"up_to": said}))
    seen = _receipts(chorus, ann, dm)
    assert list(seen) == [ben.user_id]
    assert (seen[ben.user_id]["last_read"], seen[ben.user_id]["message_id"]) == (
        read["last_read"], hello
    )  # fmt: skip
    assert list(_receipts(chorus, ann, room)) == [cat.user_id]
    # One's own marker is not a receipt.
    assert _receipts(chorus, ben, dm) == {}

    # Cat stops sending them: gone everywhere, marker kept for cat's own badges.
    assert api.ok(api.get("/api/users/me/read-receipts", cat)) == {"send": True}
    api.ok(api.put("/api/users/me/read-receipts", cat, json={"send": False}))
    assert api.ok(api.get("/api/users/me/read-receipts", cat)) == {"send": False}
    assert _receipts(chorus, ann, room) == {}
    before = chorus.events()
    unchanged = api.ok(api.put("/api/users/me/read-receipts", cat, json={"send": False}))
    assert unchanged["position"] is None and chorus.events() == before
    api.ok(api.put("/api/users/me/read-receipts", cat, json={"send": True}))
    assert list(_receipts(chorus, ann, room)) == [cat.user_id]

    # Outsiders: as for an unknown channel. A public channel has no receipts.
    unknown = api.get("/api/channels/5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001/receipts", out)
    for channel in (dm, room):
        refused = api.get(f"/api/channels/{channel}/receipts", out)
        assert (refused.status_code, refused.json()) == (404, unknown.json())
    public = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "p"}), 201)["id"]
    assert api.get(f"/api/channels/{public}/receipts", ann).status_code == 422
    assert api.put("/api/users/me/read-receipts", cat, json={"send": "no"}).status_code == 422
