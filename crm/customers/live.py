"""The pipeline board, live: when a card moves, every open board of the organization swaps in
the columns it left and joined, rendered by the server.

One Socket.IO event goes to the organization's room with a swap per column and per language;
each browser applies those whose target matches its page (`html[lang=..] #column-<id>-cards`),
so everyone reads stage names and labels in their own language.
"""

from __future__ import annotations

from contextlib import nullcontext

from flask import current_app, has_request_context, render_template
from flask_babel import force_locale

from crm.customers import services
from crm.events import subscribe
from crm.i18n import LANGUAGES
from crm.realtime import emit_to_org

BOARD_PAGE = 30  # cards per column page: the board stays quick with thousands of customers
EVENT = "customerMoved"


@subscribe("customer.stage_changed")
def stage_changed(payload: dict) -> None:
    """Refresh the column the customer left and the one it joined."""
    refresh_columns([payload["from_stage_id"], payload["to_stage_id"]])


@subscribe("customer.moved")
def moved_within_column(payload: dict) -> None:
    """Refresh a column whose order changed (a change of stage is refreshed above)."""
    if payload["from_stage_id"] == payload["stage_id"]:
        refresh_columns([payload["stage_id"]])


def refresh_columns(stage_ids: list[int | None]) -> None:
    """Send the first page of each column (cards, totals, "Load more") to the team's boards."""
    totals = services.stage_totals()
    stages = services.list_stages()  # each card's list; hidden on boards that may not move
    pages = services.board_columns(list(dict.fromkeys(
        stage_id for stage_id in stage_ids if stage_id is not None)), BOARD_PAGE)
    swaps = []
    for stage_id, (customers, next_cursor) in pages.items():
        for language in LANGUAGES:
            swaps.append({"target": f'html[lang="{language}"] #column-{stage_id}-cards',
                          "swap": "innerHTML",
                          "html": _render(language, stage_id=stage_id, customers=customers,
                                          next_cursor=next_cursor, stages=stages,
                                          total=totals.get(stage_id))})
    if swaps:
        emit_to_org(EVENT, {"swaps": swaps})


def _render(language: str, **context) -> str:
    # A move made by a job has no request to build links in; one made in a page has.
    with (nullcontext() if has_request_context() else current_app.test_request_context()), \
            force_locale(language):
        return render_template("customers/_board_column.html", **context)
