"""The ASGI factory that ``chorus serve --workers N`` hands to uvicorn's worker processes."""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app
from api.logs import configure as configure_logs
from infrastructure.settings import Settings, SettingsError


def app() -> Litestar:
    settings = Settings.from_env()
    # A worker is a fresh process: its log is set up as ``chorus serve``'s own.
    configure_logs(settings.log_format)
    if settings.database_url is None:
        raise SettingsError(["workers need DATABASE_URL (chorus serve sets it)"])
    return create_app(settings, settings.database_url)
