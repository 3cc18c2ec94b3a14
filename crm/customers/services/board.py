"""The pipeline board: cards in columns by stage, each at a position of its column.

A new customer goes to the top of its stage's column. Positions are floats BOARD_STEP apart,
so a card dropped between two takes the middle; a column whose neighbours touch is renumbered.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import NamedTuple

from flask_babel import gettext as _
from sqlalchemy import func, select, text, true, tuple_
from sqlalchemy.orm import aliased, joinedload
from sqlalchemy.sql import ColumnElement

from crm import events
from crm.customers.models import Customer, PipelineTotal, SalesStage
from crm.customers.services import scoring
from crm.customers.services.activities import log_automatic
from crm.customers.services.fields import check_id
from crm.customers.services.stages import check_stage
from crm.errors import ValidationError
from crm.extensions import db
from crm.foundation.models import User
from crm.pagination import decode_cursor, encode_cursor
from crm.tenancy import current_organization_id
from crm.validation import collect
from crm.versions import record_edit

BOARD_STEP = 1024.0


def move_customer(actor: User | None, customer: Customer, stage_id: object,
                  before_id: object = None, after_id: object = None) -> Customer:
    """Drop a card on the board: into `stage_id`, directly above the card `before_id` and/or
    directly below the card `after_id` (neither: the top of the column).

    A change of stage logs a stage_changed activity and publishes `customer.stage_changed`;
    every move publishes `customer.moved` for the boards of the rest of the team.
    """
    stage = check_stage(stage_id)
    if stage is None:
        raise ValidationError({"stage_id": _("Choose a stage of the pipeline.")})
    neighbours = collect({"before_id": lambda: check_id(before_id, "before_id"),
                           "after_id": lambda: check_id(after_id, "after_id")})
    position = _slot(stage.id, customer.id, neighbours["before_id"], neighbours["after_id"])
    previous = customer.stage_id
    if previous != stage.id:  # another stage is an edit; a new place in the column is not
        change_stage(actor, customer, stage, position)
        record_edit(customer, actor)
    else:
        customer.board_position = position
    events.publish("customer.moved", {"customer_id": customer.id, "stage_id": stage.id,
                                      "from_stage_id": previous, "position": position})
    return customer


def change_stage(actor: User | None, customer: Customer, stage: SalesStage | None,
                  position: float) -> None:
    old = customer.stage
    customer.stage_id = stage.id if stage else None
    customer.stage = stage
    customer.board_position = position
    log_automatic(customer, "stage_changed", data={
        "from_stage_id": old.id if old else None, "to_stage_id": stage.id if stage else None,
        "from_name_ar": old.name_ar if old else "", "from_name_en": old.name_en if old else "",
        "to_name_ar": stage.name_ar if stage else "", "to_name_en": stage.name_en if stage else ""},
        actor=actor)
    scoring.recompute_score(customer)
    events.publish("customer.stage_changed", {
        "customer_id": customer.id, "from_stage_id": old.id if old else None,
        "to_stage_id": customer.stage_id})


def _slot(stage_id: int, moving_id: int, before_id: int | None, after_id: int | None) -> float:
    """A board position between the neighbours (renumbering the column when they touch)."""
    for _attempt in range(2):
        above = _position_of(after_id, stage_id, moving_id, "after_id")
        below = _position_of(before_id, stage_id, moving_id, "before_id")
        if above is None and below is None:
            below = _edge(stage_id, moving_id, None, lowest=True)
            return 0.0 if below is None else below - BOARD_STEP
        if below is None:
            below = _edge(stage_id, moving_id, above, lowest=True)
            if below is None:
                return above + BOARD_STEP
        if above is None:
            above = _edge(stage_id, moving_id, below, lowest=False)
            if above is None:
                return below - BOARD_STEP
        if below - above > 1e-6:
            return (above + below) / 2
        _renumber(stage_id)
    raise ValidationError({"before_id": _("These cards are not next to each other.")})


def _position_of(card_id: int | None, stage_id: int, moving_id: int, name: str) -> float | None:
    if card_id is None:
        return None
    position = db.session.scalar(select(Customer.board_position).where(
        Customer.id == card_id, Customer.stage_id == stage_id, Customer.id != moving_id,
        Customer.merged_into_id.is_(None)))
    if position is None:
        raise ValidationError({name: _("Choose a card of this column.")})
    return position


def _edge(stage_id: int, moving_id: int, beyond: float | None, *, lowest: bool) -> float | None:
    """The nearest position below (lowest=True: above) `beyond` in the column."""
    query = select(func.min(Customer.board_position) if lowest
                   else func.max(Customer.board_position)).where(
        Customer.stage_id == stage_id, Customer.id != moving_id,
        Customer.merged_into_id.is_(None))
    if beyond is not None:
        query = query.where(Customer.board_position > beyond if lowest
                            else Customer.board_position < beyond)
    return db.session.scalar(query)


def _renumber(stage_id: int) -> None:
    """Spread a column's positions out again, keeping its order (imports start all at 0)."""
    db.session.execute(text("""
        UPDATE customers c SET board_position = o.n * :step
        FROM (SELECT id, row_number() OVER (ORDER BY board_position, id) AS n
              FROM customers WHERE organization_id = :org AND stage_id = :stage) o
        WHERE c.id = o.id AND c.organization_id = :org"""),
        {"step": BOARD_STEP, "org": current_organization_id(), "stage": stage_id})
    db.session.expire_all()


class StageTotal(NamedTuple):
    """A column's customers and their expected value."""

    customers: int
    value: Decimal


def stage_totals(owner_id: int | None = None) -> dict[int | None, StageTotal]:
    """Each stage's customers and value (None: those without a stage), all owners' or one's.

    Read from `pipeline_totals`, which triggers keep (a few rows, however many customers).
    """
    query = (select(PipelineTotal.stage_id, func.sum(PipelineTotal.customers),
                    func.sum(PipelineTotal.value))
             .group_by(PipelineTotal.stage_id))
    if owner_id is not None:
        query = query.where(PipelineTotal.owner_id == owner_id)
    return {stage_id or None: StageTotal(int(count), value)
            for stage_id, count, value in db.session.execute(query) if count}


def board_columns(stage_ids: list[int], limit: int = 50
                  ) -> dict[int, tuple[list[Customer], str | None]]:
    """The first page of several columns in one query (a LATERAL scan of each column's
    index): six columns of the board cost one statement, not six to plan and send."""
    stages = select(SalesStage.id).where(SalesStage.id.in_(stage_ids)).subquery()
    cards = (select(Customer).where(Customer.stage_id == stages.c.id,
                                    Customer.merged_into_id.is_(None))
             .order_by(Customer.board_position, Customer.id).limit(limit + 1).lateral())
    columns: dict[int, list[Customer]] = {stage_id: [] for stage_id in stage_ids}
    for customer in db.session.scalars(select(aliased(Customer, cards))
                                       .select_from(stages).join(cards, true())):
        columns[customer.stage_id].append(customer)
    return {stage_id: _board_page(rows, limit) for stage_id, rows in columns.items()}


def _board_page(rows: list[Customer], limit: int) -> tuple[list[Customer], str | None]:
    """A column's page from `limit` + 1 rows in board order, and the cursor after it."""
    rows.sort(key=lambda c: (c.board_position, c.id))
    last = rows[limit - 1] if len(rows) > limit else None
    return rows[:limit], encode_cursor("board", (last.board_position, last.id) if last else None)


def board_column(stage_id: int | None, after: str | None = None, limit: int = 50
                 ) -> tuple[list[Customer], str | None]:
    """One column of the board, top to bottom, keyset-paginated on (position, id)."""
    query = (select(Customer).options(joinedload(Customer.owner))
             .where(in_stage(stage_id), Customer.merged_into_id.is_(None)))
    if key := decode_cursor(after, "board", (float, int)):
        query = query.where(tuple_(Customer.board_position, Customer.id) > key)
    return _board_page(list(db.session.scalars(
        query.order_by(Customer.board_position, Customer.id).limit(limit + 1))), limit)


def top_of(stage_id: int | None) -> float:
    lowest = db.session.scalar(select(func.min(Customer.board_position)).where(
        in_stage(stage_id), Customer.merged_into_id.is_(None)))
    return 0.0 if lowest is None else lowest - BOARD_STEP


def in_stage(stage_id: int | None) -> ColumnElement[bool]:
    if stage_id is None:
        return Customer.stage_id.is_(None)
    return Customer.stage_id == stage_id


# -- the order a board posts ----------------------------------------------------------------

class Card(NamedTuple):
    """A card as the board drew it: the stage it was in and its position then."""

    id: int
    stage_id: int
    position: float


class Move(NamedTuple):
    card: Card
    stage_id: int
    after_id: int | None  # the card just above where it was dropped
    before_id: int | None  # the card just below


def read_board(values: list[str]) -> dict[int, list[Card]]:
    """The board's posted order: each column's marker ("stage:<id>"), then its cards
    ("<id>:<stage id>:<position>"), top to bottom."""
    columns: dict[int, list[Card]] = {}
    cards: list[Card] | None = None
    try:
        for value in values:
            if value.startswith("stage:"):
                cards = columns.setdefault(_posted_id(value.removeprefix("stage:")), [])
            elif cards is not None:
                card_id, stage_id, position = value.split(":")
                cards.append(Card(_posted_id(card_id), _posted_id(stage_id),
                                  _posted_position(position)))
            else:
                raise ValueError(value)
    except (ValueError, ValidationError):
        raise ValidationError({"order": _("The board sent an order that makes no sense. "
                                          "Reload the page.")}) from None
    return columns


def _posted_id(raw: str) -> int:
    value = check_id(raw, "order")
    if value is None:
        raise ValueError(raw)
    return value


def _posted_position(raw: str) -> float:
    position = float(raw)
    if not math.isfinite(position):
        raise ValueError(raw)
    return position


def find_move(columns: dict[int, list[Card]]) -> Move | None:
    """The card a drag moved: one drawn in another column than it now sits in, else the one
    whose place in its column changed (None when nothing moved)."""
    for stage_id, cards in columns.items():
        for index, card in enumerate(cards):
            if card.stage_id != stage_id:
                return _move(stage_id, cards, index)
    for stage_id, cards in columns.items():
        drawn = sorted(cards, key=lambda card: (card.position, card.id))
        changed = [index for index, (now, before) in enumerate(zip(cards, drawn, strict=True))
                   if now != before]
        if changed:
            first, last = changed[0], changed[-1]
            # A card dragged up lands first in the changed stretch; one dragged down, last.
            moved = drawn[last] if cards[first] == drawn[last] else drawn[first]
            return _move(stage_id, cards, cards.index(moved))
    return None


def _move(stage_id: int, cards: list[Card], index: int) -> Move:
    above = cards[index - 1].id if index > 0 else None
    below = cards[index + 1].id if index + 1 < len(cards) else None
    return Move(cards[index], stage_id, above, below)
