"""The live copy of a document in one process: applies what editors send, and what other
processes committed, and gathers accepted updates for saving as events.

Updates are checked twice before they count: their structure first (``inspect_update``,
which refuses length prefixes that would make the CRDT library allocate absurd amounts),
then by applying them to this copy. What is saved is not the bytes a client sent but the
*effective* update the copy's transaction produced: only what was new, never content still
waiting for a missing dependency. In the order they were produced, effective updates are
causally ordered, so replaying the log never leaves anything pending (a snapshot would drop
it). Consecutive updates of one editor are merged into one event when saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pycrdt import Doc, TransactionEvent, merge_updates

from domain.documents import check_roots
from domain.errors import InvalidValue
from domain.rules import MAX_LIVE_DOCUMENT_BYTES
from domain.yjs_update import (
    MalformedUpdate,
    check_applicable,
    decode_state_vector,
    inspect_update,
)

# merge_updates is superlinear in the number of updates: merge in small chunks.
_MERGE_CHUNK = 100
# A run is saved as one event: past this many bytes the editor's next update starts another,
# so a burst faster than the saving never makes one oversized event.
RUN_BYTES = 256 * 1024


class DocumentTooLarge(InvalidValue):
    """The document would grow past what one open document may hold."""


class DocumentBroken(Exception):
    """The CRDT library failed inside a transaction; this copy can no longer be trusted and
    must be reloaded from the log."""


@dataclass
class Run:
    """Consecutive accepted updates of one editor, not yet saved."""

    actor: str
    # The connection that sent them (the live copy does not send them back to it).
    origin: object = None
    updates: list[bytes] = field(default_factory=list)
    roots: dict[str, str] = field(default_factory=dict)
    size: int = 0

    def merged(self) -> bytes:
        updates = self.updates
        while len(updates) > 1:
            updates = [
                merge_updates(*updates[i : i + _MERGE_CHUNK])
                for i in range(0, len(updates), _MERGE_CHUNK)
            ]
        return updates[0]


# A state vector naming no client: what a peer holding nothing sends.
EMPTY_STATE_VECTOR = b"\x00"


class DocumentRoom:
    """One document's CRDT state in memory, and its updates waiting to be saved."""

    def __init__(
        self,
        document_id: str,
        doc: Doc[Any],
        version: int,
        max_update_bytes: int,
        size: int | None = None,
    ) -> None:
        self.document_id = document_id
        self.doc = doc
        # The highest version of the stream whose update this copy has applied.
        self.version = version
        self.max_update_bytes = max_update_bytes
        self.runs: list[Run] = []
        self.pending_updates = 0
        self.accepted_bytes = 0
        # Size at load (encoding a big document to learn it costs milliseconds: the caller
        # may know it) plus what was accepted since: bounds the copy's memory.
        self.size = len(doc.get_update()) if size is None else size
        self.max_size = MAX_LIVE_DOCUMENT_BYTES
        self._effective: list[bytes] = []
        # The whole state encoded, kept until the copy changes: every fresh editor asks for
        # it, and encoding a large document takes milliseconds with the GIL held.
        self._encoded: bytes | None = None
        self._subscription = doc.observe(self._on_transaction)
        # The names of the document's root types (None: to be read from the document again).
        self._root_names: set[str] | None = None

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._encoded = None
        self._effective.append(event.update)

    def keep_encoded(self, state: bytes) -> None:
        """``state`` encodes exactly this copy's content (what it was built from, when
        nothing was applied on top): given to fresh editors without encoding it again."""
        self._encoded = state

    def _apply(self, data: bytes) -> bytes | None:
        """Applies an update; returns what it changed (None when nothing was new)."""
        self._effective.clear()
        try:
            self.doc.apply_update(data)
        except Exception as exc:
            raise MalformedUpdate(f"not a valid Yjs update: {exc}") from None
        except BaseException as exc:
            # A panic in the library (pyo3's PanicException derives from BaseException):
            # the copy may be half-changed.
            if type(exc).__name__ == "PanicException":
                raise DocumentBroken(str(exc)) from None
            raise
        effective, self._effective = self._effective, []
        if not effective:
            return None
        return effective[0] if len(effective) == 1 else merge_updates(*effective)

    def receive(self, actor: str, data: bytes, origin: object = None) -> bytes | None:
        """An editor's update: checked, applied, queued for saving (``origin``: the
        connection that sent it). Returns the effective update (None when it changed
        nothing). Raises
        MalformedUpdate, DocumentTooLarge, or MissingDependencies when it builds on content
        this copy does not have (nothing applied in each case)."""
        shape = inspect_update(data, max_size=self.max_update_bytes)
        if shape.empty:
            return None
        if self._root_names is None:
            self._root_names = set(self.doc.keys())
        new_roots = [name for name in shape.roots if name not in self._root_names]
        if new_roots:
            # Checked before applying: a root the saving would refuse must never be shown.
            try:
                check_roots(self._root_names, new_roots)
            except InvalidValue as exc:
                raise MalformedUpdate(str(exc)) from None
        if self.size + len(data) > self.max_size:
            raise DocumentTooLarge(f"a document holds at most {self.max_size} bytes")
        # Nothing is left waiting for a missing dependency: the CRDT library can crash on
        # later updates that overlap such a gap. The caller asks the client to resync.
        check_applicable(shape, decode_state_vector(self.doc.get_state()))
        changed = self._apply(data)
        if changed is None:
            return None
        run = self.runs[-1] if self.runs else None
        if (
            run is None
            or run.actor != actor
            or run.origin is not origin
            or run.size + len(changed) > RUN_BYTES
        ):
            run = Run(actor, origin)
            self.runs.append(run)
        run.updates.append(changed)
        run.size += len(changed)
        for name, kind in shape.roots.items():
            run.roots.setdefault(name, kind)
        self._root_names.update(new_roots)
        self.pending_updates += 1
        self.accepted_bytes += len(changed)
        self.size += len(changed)
        return changed

    def apply_committed(self, update: bytes, version: int) -> bytes | None:
        """An update from the log (saved by this or another process). Applying one twice
        changes nothing, so no bookkeeping of who saved what is needed."""
        self.version = max(self.version, version)
        self._root_names = None  # it may bring roots
        changed = self._apply(update)
        if changed is not None:
            self.size += len(changed)
        return changed

    @property
    def pending_bytes(self) -> int:
        return sum(run.size for run in self.runs)

    def take_runs(self) -> list[Run]:
        """Hands over everything waiting to be saved, oldest first."""
        runs, self.runs = self.runs, []
        self.pending_updates = 0
        return runs

    def put_back(self, runs: list[Run]) -> None:
        """Returns runs that could not be saved, ahead of anything received since."""
        self.runs = runs + self.runs
        self.pending_updates += sum(len(r.updates) for r in runs)

    def state(self) -> bytes:
        if self._encoded is None:
            self._encoded = self.doc.get_update()
        return self._encoded

    def state_vector(self) -> bytes:
        return self.doc.get_state()

    def diff(self, state_vector: bytes) -> bytes:
        """What a peer with that state vector lacks (sync step 2)."""
        if state_vector == EMPTY_STATE_VECTOR:
            return self.state()
        try:
            return self.doc.get_update(state_vector)
        except Exception as exc:
            raise MalformedUpdate(f"not a valid state vector: {exc}") from None

    def close(self) -> None:
        self.doc.unobserve(self._subscription)
