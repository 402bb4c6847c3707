"""The rules of read markers: the user's own, only forward, only to a message's position; a
snapshot reads back as the markers."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from domain.base import Cause, ChorusAggregate
from domain.errors import InvalidValue, PermissionDenied
from domain.read_markers import ReadMarkers, ReadMarkersState, read_markers_id
from infrastructure.serialisation import MsgspecMapper

ME, SOMEONE = str(uuid4()), str(uuid4())


def by(actor: str) -> Cause:
    return Cause(actor_id=actor, command_id="cmd-1")


def event_names(aggregate: ChorusAggregate) -> list[str]:
    return [type(e).__name__ for e in aggregate.collect_events()]


def _markers() -> ReadMarkers:
    markers = ReadMarkers.open(ME, by(ME))
    markers.collect_events()
    return markers


def test_markers_live_at_a_fixed_id_of_their_owner() -> None:
    assert ReadMarkers.open(ME, by(ME)).id == read_markers_id(ME) != read_markers_id(SOMEONE)
    with pytest.raises(PermissionDenied):
        ReadMarkers.open(ME, by(SOMEONE))


def test_a_marker_moves_only_forward() -> None:
    markers, channel, message = _markers(), uuid4(), uuid4()
    assert markers.marker(channel) == 0
    assert markers.mark_read(channel, 10, message, by(ME)) is True
    (moved,) = markers.collect_events()
    assert type(moved).__name__ == "ChannelRead"
    assert (moved.up_to, moved.previous, moved.user_id) == (10, 0, ME)  # type: ignore[attr-defined]
    # Back, or to where it is: nothing recorded, the marker stays.
    for older in (10, 9, 1):
        assert markers.mark_read(channel, older, message, by(ME)) is False
    assert event_names(markers) == []
    assert markers.marker(channel) == 10
    assert markers.mark_read(channel, 25, message, by(ME)) is True
    assert markers.collect_events()[0].previous == 10  # type: ignore[attr-defined]
    # Each channel has its own.
    assert markers.marker(uuid4()) == 0


def test_only_the_owner_moves_a_marker_and_only_to_a_position() -> None:
    markers, channel = _markers(), uuid4()
    with pytest.raises(PermissionDenied):
        markers.mark_read(channel, 5, uuid4(), by(SOMEONE))
    for bad in (0, -3):
        with pytest.raises(InvalidValue):
            markers.mark_read(channel, bad, uuid4(), by(ME))
    assert event_names(markers) == []


def test_a_snapshot_reads_back_as_the_markers() -> None:
    markers = _markers()
    channels = [uuid4() for _ in range(3)]
    for i, channel in enumerate(channels):
        markers.mark_read(channel, 100 + i, uuid4(), by(ME))
    mapper = MsgspecMapper()
    snapshot = ReadMarkers.Snapshot.take(markers)
    restored = mapper.to_domain_event(mapper.to_stored_event(snapshot)).mutate(None)  # type: ignore[attr-defined]
    assert isinstance(restored, ReadMarkers)
    assert restored.markers == markers.markers
    assert restored.marker(channels[2]) == 102
    assert isinstance(restored.id, UUID)
    # The snapshot's type names every attribute (a new one would be lost otherwise).
    assert set(ReadMarkersState.__annotations__) == set(vars(markers)) - {
        "_id", "_version", "_pending_events"
    }  # fmt: skip
