"""Threads, read side (issue 19): a message's replies, paged, for readers of its channel
only; the parent carries its reply count and last reply time in the timeline."""

from __future__ import annotations

from typing import Any

from tests.fixtures.chorus import Running


def test_replies_are_paged_oldest_first_and_the_parent_counts_them(chorus: Running) -> None:
    api = chorus.api
    ann, ben, out = api.signup("ann"), api.signup("ben"), api.signup("out")
    ws = api.acquaint(ann, ben)
    ch = api.ok(api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "t"}), 201)["id"]
    secret = api.ok(
        api.post(f"/api/workspaces/{ws}/channels", ann, {"name": "s", "private": True}), 201
    )["id"]

    def send(text: str, reply_to: str | None = None) -> str:
        body: dict[str, Any] = {"text": text} | ({"reply_to": reply_to} if reply_to else {})
        return str(api.ok(api.post(f"/api/channels/{ch}/messages", ben, body), 201)["id"])

    def parent_row(message_id: str) -> dict[str, Any]:
        items = api.ok(api.get(f"/api/channels/{ch}/messages", ann))["items"]
        (row,) = [m for m in items if m["id"] == message_id]
        return dict(row)

    parent = send("parent")
    assert parent_row(parent)["reply_count"] == 0 and parent_row(parent)["last_reply_at"] is None
    replies = [send(f"reply {i}", parent) for i in range(5)]
    send("not in the thread")

    page = api.ok(api.get(f"/api/messages/{parent}/replies", ann, limit=2))
    seen = [m["id"] for m in page["items"]]
    while page["next"] is not None:
        page = api.ok(api.get(f"/api/messages/{parent}/replies", ann, limit=2, after=page["next"]))
        seen += [m["id"] for m in page["items"]]
    assert seen == replies

    newest = api.ok(api.get(f"/api/messages/{parent}/replies", ann))["items"][-1]
    shown = parent_row(parent)
    assert (shown["reply_count"], shown["last_reply_at"]) == (5, newest["created_at"])
    # Deleting the newest reply: the thread's last reply is the one before it.
    api.ok(api.delete(f"/api/messages/{replies[-1]}", ben))
    before_last = api.ok(api.get(f"/api/messages/{parent}/replies", ann))["items"][-2]
    shown = parent_row(parent)
    assert (shown["reply_count"], shown["last_reply_at"]) == (4, before_last["created_at"])

    # Who cannot read the channel is answered as for an unknown message.
    unknown = api.get("/api/messages/5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001/replies", out)
    assert unknown.status_code == 404
    assert api.get(f"/api/messages/{parent}/replies", out).json() == unknown.json()
    # Nor does a member of the workspace outside a private channel learn of its threads.
    hidden = api.ok(api.post(f"/api/channels/{secret}/messages", ann, {"text": "hidden"}), 201)
    refused = api.get(f"/api/messages/{hidden['id']}/replies", ben)
    assert (refused.status_code, refused.json()) == (404, unknown.json())
    assert api.ok(api.get(f"/api/messages/{hidden['id']}/replies", ann))["items"] == []
    for bad in ({"limit": 0}, {"after": "x"}, {"limit": 201}):
        assert api.get(f"/api/messages/{parent}/replies", ann, **bad).status_code == 422
