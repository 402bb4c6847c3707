"""The payload cap (application/webhook_delivery.py ``fitted``): an envelope over it loses
its largest data fields, named under ``redacted`` beside those withheld already."""

from __future__ import annotations

import msgspec

from application.webhook_delivery import fitted


def envelope(**data: object) -> bytes:
    return msgspec.json.encode({"position": 7, "type": "MessageSent", "data": data})


def test_a_body_that_fits_is_sent_as_it_is() -> None:
    body = envelope(text="hi")
    assert fitted(body, len(body)) is body


def test_the_largest_fields_go_first_and_join_those_withheld_already() -> None:
    body = envelope(text="x" * 500, update="y" * 300, id="abc", redacted=["mentions"])
    out = fitted(body, len(body) - 400)
    assert out is not None and len(out) <= len(body) - 400
    sent = msgspec.json.decode(out)
    assert sent["data"] == {
        "text": None, "update": "y" * 300, "id": "abc", "redacted": ["mentions", "text"],
    }  # fmt: skip
    assert sent["position"] == 7
    both = msgspec.json.decode(fitted(body, len(body) - 700) or b"{}")
    assert both["data"]["redacted"] == ["mentions", "text", "update"]


def test_none_when_even_the_envelope_without_its_data_does_not_fit() -> None:
    assert fitted(envelope(text="x" * 500), 40) is None
