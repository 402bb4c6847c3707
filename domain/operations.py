"""Operators' actions on the running system that the log must show: who did what, and why."""

from __future__ import annotations

from uuid import UUID, uuid4

from eventsourcing.domain import event

from domain.base import ChorusAggregate
from domain.scopes import OPERATORS, StreamKind


class ReadModelSkip(ChorusAggregate):
    """An operator's decision that one read model passes over one stored event it cannot
    apply (``chorus projections skip``). The projection runner honours it whenever that read
    model fails on that event, now or when projected again from 0: the decision is part of
    the log."""

    stream_kind = StreamKind("read_model_skip", OPERATORS)

    @classmethod
    def record(
        cls, projection: str, position: int, error: str, reason: str, operator: str
    ) -> ReadModelSkip:
        return cls(
            id=uuid4(),
            projection=projection,
            position=position,
            error=error,
            reason=reason,
            operator=operator,
            actor_id=None,
            command_id=None,
        )

    @event("ProjectionEventSkipped")
    def __init__(
        self,
        id: UUID,
        projection: str,
        position: int,
        error: str,
        reason: str,
        operator: str,
        actor_id: str | None,
        command_id: str | None,
    ) -> None:
        self.projection = projection
        self.position = position


class ReactionSkip(ChorusAggregate):
    """An operator's decision that one reaction policy passes over one stored event it
    cannot handle (``chorus reactions skip``): its function fails on it, or a command it
    causes fails other than by a business rule. The reaction runner honours it; the other
    policies and the read models are not concerned."""

    stream_kind = StreamKind("reaction_skip", OPERATORS)

    @classmethod
    def record(
        cls, policy: str, position: int, error: str, reason: str, operator: str
    ) -> ReactionSkip:
        return cls(
            id=uuid4(),
            policy=policy,
            position=position,
            error=error,
            reason=reason,
            operator=operator,
            actor_id=None,
            command_id=None,
        )

    @event("ReactionEventSkipped")
    def __init__(
        self,
        id: UUID,
        policy: str,
        position: int,
        error: str,
        reason: str,
        operator: str,
        actor_id: str | None,
        command_id: str | None,
    ) -> None:
        self.policy = policy
        self.position = position
