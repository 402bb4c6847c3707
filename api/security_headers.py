"""Security headers on every HTTP response, errors and the router's 404s included.

A ``before_send`` hook of the application (it sees every message the app sends, unlike route
middleware, which a request for an unknown path never reaches). The API answers JSON, so
browsers are told never to sniff it into something else, frame it, run anything in it, or
send its URL on as a referrer; responses that carry tokens or private data are not stored
by any cache. The browsable OpenAPI pages under ``/schema`` load their scripts and styles
from elsewhere, so they get only the framing rule, and stay cacheable.

HSTS is left to the TLS-terminating proxy in front of ``chorus serve``, which binds plain
HTTP on loopback by default.
"""

from __future__ import annotations

from typing import Any, Final

from litestar.datastructures import MutableScopeHeaders

__all__ = ["API_CSP", "SCHEMA_CSP", "add_security_headers"]

API_CSP: Final = "default-src 'none'; frame-ancestors 'none'"
SCHEMA_CSP: Final = "frame-ancestors 'none'"
_ALWAYS: Final = (
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Frame-Options", "DENY"),
)
_AUTH_PREFIX: Final = "/api/auth/"
_SCHEMA_PREFIX: Final = "/schema"


async def add_security_headers(message: Any, scope: Any) -> None:
    """The hook: adds the headers to the start of each HTTP response (a header the handler
    set itself is kept, but tokens are never cacheable)."""
    if message.get("type") != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in _ALWAYS:
        if name not in headers:
            headers[name] = value
    path = str(scope.get("path", ""))
    is_schema = path == _SCHEMA_PREFIX or path.startswith(_SCHEMA_PREFIX + "/")
    if "Content-Security-Policy" not in headers:
        headers["Content-Security-Policy"] = SCHEMA_CSP if is_schema else API_CSP
    carries_tokens = path.startswith(_AUTH_PREFIX)
    if carries_tokens or (not is_schema and "Cache-Control" not in headers):
        headers["Cache-Control"] = "no-store"
