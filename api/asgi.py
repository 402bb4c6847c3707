"""The ASGI factory that ``chorus serve --workers N`` hands to uvicorn's worker processes."""

from __future__ import annotations

from litestar import Litestar

from api.app import create_app
from infrastructure.settings import Settings, SettingsError


def app() -> Litestar:
    settings = Settings.from_env()
    if settings.database_url is None:
        raise SettingsError(["workers need DATABASE_URL (chorus serve sets it)"])
    return create_app(settings, settings.database_url)
