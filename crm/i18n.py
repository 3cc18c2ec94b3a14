"""Language and time zone of each request; formatting helpers for templates.

Language: the user's preference, then the organization's default, then Accept-Language, then
Arabic. `<html lang dir>` follows it.
"""

from __future__ import annotations

from datetime import datetime

from flask import Flask, has_request_context, request
from flask_babel import format_datetime, format_decimal, get_locale
from flask_login import current_user

from crm.config import ROOT
from crm.extensions import babel

LANGUAGES = ("ar", "en")
RTL_LANGUAGES = frozenset({"ar"})


def init_app(app: Flask) -> None:
    babel.init_app(app, locale_selector=select_language, timezone_selector=select_timezone,
                   default_translation_directories=str(ROOT / "translations"))
    app.jinja_env.globals.update(text_direction=text_direction, current_language=current_language)
    app.jinja_env.filters["datetime"] = _datetime_filter
    app.jinja_env.filters["number"] = format_decimal


def select_language() -> str:
    """The user's preference, the organization's default, a visitor's choice, the browser's."""
    if not has_request_context():
        return "ar"  # jobs and commands choose with force_locale where it matters
    if current_user.is_authenticated:
        return current_user.preferred_language or current_user.organization.default_language
    for choice in (request.args.get("lang"), request.cookies.get("lang")):
        if choice in LANGUAGES:
            return choice
    return request.accept_languages.best_match(LANGUAGES, default="ar")


def select_timezone() -> str | None:
    if has_request_context() and current_user.is_authenticated:
        return current_user.organization.timezone
    return None


def current_language() -> str:
    return str(get_locale() or "ar")


def text_direction() -> str:
    return "rtl" if current_language() in RTL_LANGUAGES else "ltr"


def _datetime_filter(value: datetime | None, style: str = "medium") -> str:
    return format_datetime(value, style) if value else ""
