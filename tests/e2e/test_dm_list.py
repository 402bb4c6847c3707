"""The direct-message list (issue 19): each of my direct channels with the other person,
the newest message (its text unless deleted) and my counts, the most recently active first,
paged; nobody else's."""

from __future__ import annotations

from typing import Any

from tests.fixtures.chorus import Running, User


def _dms(chorus: Running, user: User, **params: Any) -> dict[str, Any]:
    return dict(chorus.api.ok(chorus.api.get("/api/dms", user, **params)))


def test_my_direct_channels_newest_activity_first_with_counts(chorus: Running) -> None:
    api = chorus.api
    me, bob, cat, dan = (api.signup(n) for n in ("me", "bob", "cat", "dan"))
    api.acquaint(me, bob, cat, dan)
    with_bob = api.ok(api.post("/api/dms", me, {"user_id": bob.user_id}), 201)["channel_id"]
    with_cat = api.ok(api.post("/api/dms", cat, {"user_id": me.user_id}), 201)["channel_id"]
    quiet = api.ok(api.post("/api/dms", me, {"user_id": dan.user_id}), 201)["channel_id"]
    # Not mine: never listed to me.
    api.ok(api.post("/api/dms", bob, {"user_id": cat.user_id}), 201)

    api.ok(api.post(f"/api/channels/{with_bob}/messages", bob, {"text": f"hi @{me.username}"}), 201)
    api.ok(api.post(f"/api/channels/{with_cat}/messages", cat, {"text": "first"}), 201)
    gone = api.ok(api.post(f"/api/channels/{with_cat}/messages", cat, {"text": "oops"}), 201)
    api.ok(api.delete(f"/api/messages/{gone['id']}", cat))

    items = _dms(chorus, me)["items"]
    assert [i["channel_id"] for i in items] == [with_cat, with_bob, quiet]
    cat_row, bob_row, quiet_row = items
    assert cat_row["other"] == {
        "id": cat.user_id, "username": cat.username, "display_name": cat.username
    }  # fmt: skip
    # The newest message is the deleted one: shown as such, without its text.
    last = cat_row["last_message"]
    assert (last["id"], last["author_id"], last["deleted"], last["text"]) == (
        gone["id"], cat.user_id, True, None
    )  # fmt: skip
    assert (cat_row["unread_count"], cat_row["mention_count"]) == (1, 0)
    assert bob_row["last_message"]["text"] == f"hi @{me.username}"
    assert (bob_row["unread_count"], bob_row["mention_count"]) == (1, 1)
    assert quiet_row["last_message"] is None and quiet_row["unread_count"] == 0

    # Reading one clears its counts; a reply there makes it the most recent.
    api.ok(api.put(f"/api/channels/{with_bob}/read", me, json={"up_to": 2**62}))
    api.ok(api.post(f"/api/channels/{with_bob}/messages", me, {"text": "hello bob"}), 201)
    items = _dms(chorus, me)["items"]
    assert items[0]["channel_id"] == with_bob
    assert (items[0]["unread_count"], items[0]["mention_count"]) == (0, 0)
    assert items[0]["last_read"] is not None

    # Paged: one at a time, the same order, then the end.
    pages, cursor = [], None
    while True:
        page = _dms(chorus, me, limit=1, **({"before": cursor} if cursor else {}))
        pages += [i["channel_id"] for i in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert pages == [i["channel_id"] for i in items]
    # Bob sees his two: with me and with cat; dan only his one with me.
    assert len(_dms(chorus, bob)["items"]) == 2
    assert [i["other"]["id"] for i in _dms(chorus, dan)["items"]] == [me.user_id]


def test_bad_cursors_and_limits_are_refused(chorus: Running) -> None:
    api = chorus.api
    me = api.signup("me")
    for params in (
        {"before": "x"},
        {"before": "12"},
        {"before": "12.not-a-uuid"},
        {"before": "-1.5b1e61a6-2b48-4a8e-9d4e-2a62d4c7e001"},
        {"limit": 0},
        {"limit": 100000},
    ):
        assert api.get("/api/dms", me, **params).status_code == 422, params
    assert api.get("/api/dms", None).status_code == 401
