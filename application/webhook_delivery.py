"""The delivery worker: sends each queued webhook delivery, records every attempt as an
event, and retries with exponential backoff.

- At least once on the wire, with one ``webhook-id`` per delivery: the id is derived from the
  webhook and the causing event (domain/webhooks.py), so a retry, or a resend after the
  process was killed between sending and recording, carries the same id (receivers
  deduplicate on it, as the Standard Webhooks spec says).
- Pending deliveries are the read model's (projections/webhooks.py), rebuilt from the log:
  nothing is lost with the process.
- One process at a time sends (a database advisory lock, released with its connection when
  the process dies: another server takes over).
- Each attempt is recorded with ``RecordWebhookAttempt``: its handler counts failures in a
  row and disables the webhook at ``disable_after``; while disabled, its deliveries wait and
  an admin's re-enable resumes them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol
from uuid import UUID

import msgspec
from standardwebhooks.webhooks import Webhook as Signer

from application.commands import RecordWebhookAttempt
from domain.base import Cause
from domain.errors import DomainError
from domain.webhooks import Due, message_id

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 64 * 1024
# The key naming withheld fields in an envelope's ``data``, as redaction names them
# (projections/redaction.py ``REDACTED``, which this layer may not import).
REDACTED = "redacted"


def fitted(body: bytes, limit: int) -> bytes | None:
    """The envelope ``body`` as sent: whole when it fits in ``limit`` bytes, else with its
    largest ``data`` fields withheld (nulled and named under ``redacted``, as content gone
    is withheld) until it fits, the rest (ids, type, position) kept, so that a receiver can
    still fetch the event with its own access. None when even that does not fit."""
    if len(body) <= limit:
        return body
    envelope = msgspec.json.decode(body)
    data = envelope.get("data")
    if not isinstance(data, dict):
        return None
    sizes = {k: len(msgspec.json.encode(v)) for k, v in data.items() if k != REDACTED}
    gone = [k for k in data.get(REDACTED) or [] if isinstance(k, str)]
    for key in sorted(sizes, key=lambda k: (-sizes[k], k)):
        if data[key] is None:
            continue
        data[key] = None
        gone.append(key)
        data[REDACTED] = sorted(set(gone))
        out = msgspec.json.encode(envelope)
        if len(out) <= limit:
            return out
    return None


class Queue(Protocol):
    """The deliveries due and the bytes each carries (projections/webhooks.py)."""

    def due(self, now: datetime, limit: int) -> Sequence[Due]: ...

    def payload(self, due: Due) -> bytes | None: ...


class Outcome(Protocol):
    @property
    def status_code(self) -> int | None: ...
    @property
    def error(self) -> str | None: ...
    @property
    def succeeded(self) -> bool: ...


class Sender(Protocol):
    """Sends one request where the URL's checked address is (infrastructure)."""

    def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome: ...

    def close(self) -> None: ...


class Lock(Protocol):
    def hold(self) -> bool: ...

    def release(self) -> None: ...


class Schedule:
    """When attempt ``n + 1`` follows a failed attempt ``n``: ``base_s`` doubling, at most
    ``max_s``; ``attempts`` in all."""

    def __init__(self, attempts: int, base_s: float, max_s: float) -> None:
        self.attempts = attempts
        self.base_s = base_s
        self.max_s = max_s

    def delay_s(self, attempt: int) -> float:
        return float(min(self.base_s * 2 ** min(attempt - 1, 40), self.max_s))

    def retry_after_ms(self, attempt: int) -> int | None:
        """None: ``attempt`` was the last."""
        return None if attempt >= self.attempts else round(self.delay_s(attempt) * 1000)


class DeliveryWorker:
    def __init__(
        self,
        queue: Queue,
        sender: Sender,
        lock: Lock,
        *,
        record: Callable[[RecordWebhookAttempt, Cause], int | None],
        wait_for: Callable[[int], object],
        secret: Callable[[str], str | None],
        schedule: Schedule,
        disable_after: int,
        max_payload_bytes: int = MAX_PAYLOAD_BYTES,
        poll_s: float = 0.25,
        batch: int = 20,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queue = queue
        self.sender = sender
        self.lock = lock
        self.record = record
        self.wait_for = wait_for
        self.secret = secret
        self.schedule = schedule
        self.disable_after = disable_after
        self.max_payload_bytes = max_payload_bytes
        self.poll_s = poll_s
        self.batch = batch
        self.clock = clock
        self.attempts_made = 0  # by this process (tests read it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.lock.release()
        self.sender.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = self.lock.hold() and self.run_once() > 0
            except Exception as exc:  # the database is away: tried again at the next poll
                log.warning("webhook deliveries: %s; retrying", exc)
            if not busy:
                self._stop.wait(self.poll_s)

    def run_once(self) -> int:
        """Makes the attempts due now; how many."""
        due = self.queue.due(self.clock(), self.batch)
        for delivery in due:
            if self._stop.is_set():
                break
            self.deliver(delivery)
        return len(due)

    def headers(self, delivery: Due, secret: str, body: bytes) -> dict[str, str]:
        """The Standard Webhooks headers: the delivery's id (the same on every attempt), the
        time of this attempt and ``v1,<base64 HMAC-SHA256 of id.timestamp.body>``."""
        now = self.clock()
        webhook_id = message_id(UUID(delivery.delivery_id))
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Signer(secret).sign(webhook_id, now, body.decode()),
        }

    def deliver(self, delivery: Due) -> None:
        secret = self.secret(delivery.webhook_id)
        body = self.queue.payload(delivery)
        if body is not None:
            body = fitted(body, self.max_payload_bytes)
        status: int | None
        error: str | None
        if secret is None or body is None:
            status, error, succeeded = (
                None,
                "nothing to send (no secret, no event or too large)",
                False,
            )
        else:
            outcome = self.sender.send(delivery.url, self.headers(delivery, secret, body), body)
            status, error, succeeded = outcome.status_code, outcome.error, outcome.succeeded
        self.attempts_made += 1
        command = RecordWebhookAttempt(
            delivery_id=delivery.delivery_id,
            attempt=delivery.attempt,
            status_code=status,
            error=error,
            succeeded=succeeded,
            retry_after_ms=None if succeeded else self.schedule.retry_after_ms(delivery.attempt),
            disable_after=self.disable_after,
        )
        try:
            position = self.record(command, Cause(actor_id=None))
        except DomainError as exc:
            # Recorded already (by a process that died before the read model showed it),
            # or the delivery ended: the log has the attempt it keeps.
            log.info("webhook delivery %s: %s", delivery.delivery_id, exc)
            return
        if position is not None:
            # The next look at what is due must see this attempt.
            self.wait_for(position)
