"""Sending one webhook request, and the lock that lets one process at a time send.

The request goes to an address checked by infrastructure/ssrf.py: the host is resolved
once, every address it resolves to must be allowed, and the connection is made to that
checked address, with the URL's host in ``Host`` and in TLS's SNI (and certificate check),
so a second resolution cannot send it elsewhere. Redirects are not followed (a 3xx is a
failed attempt), proxies from the environment are not used, the whole exchange has a time
limit and at most ``max_response_bytes`` of the answer are read.
"""

from __future__ import annotations

import contextlib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg

from infrastructure.ssrf import (
    AddressRefused,
    HostUnresolved,
    IPAddress,
    OutboundPolicy,
    checked_addresses,
)

ERROR_CHARS = 300
USER_AGENT = "Chorus-Webhooks/1"
# pg_try_advisory_lock(key1, key2): the reactions use 7140412.
LOCK_CLASS = 7140413
_UNREACHED = "could not connect to "


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: the HTTP status, if an answer came, and an error (one line
    of printable text), if it failed."""

    status_code: int | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


def one_line(text: str) -> str:
    """Printable, one line, bounded: it is stored in an event and shown to admins."""
    return "".join(c if c.isprintable() else " " for c in text)[:ERROR_CHARS]


class WebhookSender:
    def __init__(
        self,
        policy: OutboundPolicy,
        *,
        timeout_s: float = 10.0,
        max_response_bytes: int = 64 * 1024,
        addresses: Callable[[str, int, OutboundPolicy], list[IPAddress]] = checked_addresses,
        ca_file: str | None = None,
    ) -> None:
        self.policy = policy
        self.timeout_s = timeout_s
        self.max_response_bytes = max_response_bytes
        self.addresses = addresses
        # Certificates are always checked: against ``ca_file``'s CAs when the operator gives
        # one (a private CA), else the usual public ones.
        verify: ssl.SSLContext | bool = (
            True if ca_file is None else ssl.create_default_context(cafile=ca_file)
        )
        self.client = httpx.Client(
            verify=verify,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: it would connect for us
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=0),
        )

    def close(self) -> None:
        self.client.close()

    def send(self, url: str, headers: dict[str, str], body: bytes) -> Outcome:
        try:
            target = httpx.URL(url)
        except httpx.InvalidURL as exc:
            return Outcome(None, one_line(f"invalid url: {exc}"))
        schemes = ("https", "http") if self.policy.allow_http else ("https",)
        if target.scheme not in schemes or not target.host:
            return Outcome(None, "url refused: https only")
        port = target.port or (443 if target.scheme == "https" else 80)
        try:
            addresses = self.addresses(target.host, port, self.policy)
        except (AddressRefused, HostUnresolved) as exc:
            return Outcome(None, one_line(f"address refused: {exc}"))
        host_header = target.host if target.port is None else f"{target.host}:{target.port}"
        if ":" in target.host and not target.host.startswith("["):
            host_header = f"[{target.host}]" + ("" if target.port is None else f":{target.port}")
        request_headers = {
            **headers,
            "host": host_header,
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        deadline = time.monotonic() + self.timeout_s
        outcome = Outcome(None, "no address")
        # Each checked address in turn while none takes the connection (a name may resolve
        # to ::1 and 127.0.0.1 with a receiver on one of them); nothing else is retried here.
        for address in addresses:
            outcome = self._post(target, address, request_headers, body, deadline)
            if outcome.error is None or not outcome.error.startswith(_UNREACHED):
                break
        return outcome

    def _post(
        self,
        target: httpx.URL,
        address: IPAddress,
        headers: dict[str, str],
        body: bytes,
        deadline: float,
    ) -> Outcome:
        # The checked address is connected to; the URL's host names it in SNI, so the
        # certificate is checked against the name the admin gave.
        extensions: dict[str, Any] = {"sni_hostname": target.host}
        try:
            with self.client.stream(
                "POST",
                target.copy_with(host=str(address)),
                content=body,
                headers=headers,
                extensions=extensions,
            ) as response:
                read = 0
                for chunk in response.iter_raw():
                    read += len(chunk)
                    if read > self.max_response_bytes:
                        break  # enough: the status is what counts
                    if time.monotonic() > deadline:
                        return Outcome(response.status_code, "timed out reading the answer")
                status = response.status_code
        except httpx.TimeoutException:
            return Outcome(None, "timed out")
        except httpx.ConnectError as exc:
            return Outcome(None, one_line(f"{_UNREACHED}{address}: {exc}"))
        except httpx.HTTPError as exc:
            return Outcome(None, one_line(f"{type(exc).__name__}: {exc}"))
        if 200 <= status < 300:
            return Outcome(status, None)
        if 300 <= status < 400:
            return Outcome(status, "redirects are not followed")
        return Outcome(status, f"HTTP {status}")


class SenderLock:
    """A session advisory lock on a connection of its own: held, one process sends; lost
    with the connection when that process dies, and another takes over."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False

    def hold(self) -> bool:
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.database_url, autocommit=True)
                self._held = False
            if not self._held:
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(%s, 0)", (LOCK_CLASS,)
                ).fetchone()
                self._held = bool(row and row[0])
            else:
                self._conn.execute("SELECT 1")  # still connected: still held
        except psycopg.Error:
            self.release()
            return False
        return self._held

    def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn, self._held = None, False
