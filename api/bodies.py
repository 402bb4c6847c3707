"""Request bodies are JSON, or refused with a 4xx before a handler sees them."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import ClientException, HTTPException

JSON_MEDIA_TYPES = ("application/json",)


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, in UTF-8 (RFC 8259 allows no other
    encoding); media type and charset are case-insensitive."""
    if not content_type:
        return False
    media_type, *parameters = (part.strip().lower() for part in content_type.split(";"))
    kind, _, subtype = media_type.partition("/")
    if not (
        media_type in JSON_MEDIA_TYPES or (kind == "application" and subtype.endswith("+json"))
    ):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            return False
    return True


class JsonRequest(Request[Any, Any, Any]):
    """Litestar parses any body as JSON whatever its Content-Type, and lets two kinds of bad
    JSON escape its parser as 500s: nesting past the recursion limit and bytes that are not
    UTF-8. Here a body that does not say it is JSON is 415 (a cross-site form can send
    ``text/plain`` without a CORS preflight), and the two escapes are 400."""

    async def json(self) -> Any:
        if not is_json(self.headers.get("content-type")):
            raise HTTPException(
                status_code=415, detail="the body must be JSON (Content-Type: application/json)"
            )
        try:
            return await super().json()
        except RecursionError:
            raise ClientException("malformed JSON: nested too deeply") from None
        except UnicodeDecodeError:
            raise ClientException("malformed JSON: not UTF-8") from None
