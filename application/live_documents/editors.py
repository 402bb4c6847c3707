"""What the live documents need of a connected editor, and how they close one."""

from __future__ import annotations

import asyncio
from typing import Protocol

from application.live_documents.awareness import AwarenessRate

# Close codes: 4400-4499 tell y-websocket clients not to retry; 1012/1013 make them
# reconnect (and re-send what the server lacks). docs/API.md has the whole table.
CLOSE_DELETED = 4410
CLOSE_NO_ACCESS = 4404
CLOSE_RELOAD = 1012
CLOSE_TRY_LATER = 1013
# Past the user's edit budget: transient, the client retries (with backoff: it is refused
# on opening until the refused edit would fit).
CLOSE_OVER_BUDGET = 1013


class Peer(Protocol):
    """One connected editor (see api/yjs/endpoint.py)."""

    user_id: str
    document_id: str
    # The document's workspace, once the editor's first access check has passed.
    workspace_id: str | None
    # Access checks of one editor run one at a time: the last to end saw the newest state.
    checking: asyncio.Lock
    # Who the connection's user is, as the server knows them: stamped on its awareness.
    display_name: str
    can_edit: bool
    awareness_clients: set[int]
    awareness_rate: AwarenessRate

    async def send(self, data: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...

    def suspend(self) -> None:
        """Holds what is sent to the editor until ``resume`` (its access is being checked)."""

    def resume(self) -> None:
        """Sends what was held (once every ``suspend`` has been resumed)."""

    async def resumed(self) -> None:
        """Returns once the editor is not suspended (or is closed)."""
