"""What a context declares (``Context``) and what is derived from a set of them
(``Catalogue``). The declarations themselves are in api/contexts.py."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from litestar.types import ControllerRouterHandler

from application.commands import SERVER_ONLY, Command
from application.decisions import Handler
from application.handlers import join
from application.reactions import Policy
from domain.base import ChorusAggregate
from domain.scopes import StreamKinds
from projections.base import Projection
from projections.streams import StreamsProjection


@dataclass(frozen=True)
class Context:
    """One bounded context: the aggregates whose events it owns, the read models that show
    them, and the routes that take its commands and answer its queries."""

    name: str
    aggregates: tuple[type[ChorusAggregate], ...]
    handlers: Mapping[type[Command], Handler] = field(default_factory=dict)
    read_models: tuple[Callable[[], Projection], ...] = ()
    # Reactions: policies turning its events (or others') into commands.
    policies: tuple[Policy, ...] = ()
    routes: tuple[ControllerRouterHandler, ...] = ()


@dataclass(frozen=True)
class Catalogue:
    """Everything derived from a set of contexts."""

    contexts: tuple[Context, ...]
    kinds: StreamKinds = field(init=False)
    # Every context's command handlers, by command type (a type handled twice is refused).
    handlers: Mapping[type[Command], Handler] = field(init=False)
    # How often each aggregate that declares a ``snapshot_interval`` is snapshotted.
    snapshotting: Mapping[type[ChorusAggregate], int] = field(init=False)

    def __post_init__(self) -> None:
        names = [c.name for c in self.contexts]
        if len(set(names)) != len(names):
            raise ValueError(f"a context is declared twice: {names}")
        aggregates = [a for c in self.contexts for a in c.aggregates]
        object.__setattr__(self, "kinds", StreamKinds(aggregates))
        object.__setattr__(self, "handlers", join(c.handlers for c in self.contexts))
        intervals = {a: getattr(a, "snapshot_interval", None) for a in aggregates}
        object.__setattr__(
            self, "snapshotting", {a: i for a, i in intervals.items() if isinstance(i, int)}
        )

    def with_context(self, context: Context) -> Catalogue:
        return Catalogue((*self.contexts, context))

    @property
    def aggregates(self) -> list[type[ChorusAggregate]]:
        return [a for c in self.contexts for a in c.aggregates]

    def read_models(self) -> list[Projection]:
        """A fresh instance of every read model: the streams model (derived from the stream
        kinds) first, then each context's."""
        return [
            StreamsProjection(self.kinds),
            *(make() for c in self.contexts for make in c.read_models),
        ]

    @cached_property
    def client_commands(self) -> dict[str, type[Command]]:
        """The commands a client may send over ``/ws`` (by type name): every handled one
        but those only the server issues."""
        return {c.__name__: c for c in self.handlers if c not in SERVER_ONLY}

    @property
    def policies(self) -> list[Policy]:
        return [p for c in self.contexts for p in c.policies]

    @property
    def routes(self) -> list[ControllerRouterHandler]:
        return [r for c in self.contexts for r in c.routes]
