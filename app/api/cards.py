"""Card routes: detail with comments and history, and verification on demand."""

from __future__ import annotations

from flask import Response, jsonify

from app import runs
from app.api import schemas
from app.api.blueprint import v1
from app.api.errors import ApiError
from app.api.openapi import route
from app.engine.cards import CardRepository, has_fixture
from app.engine.verify import verify_card
from app.models.runtime import Issue
from app.services import current_services


@route(
    v1,
    "/cards/<card_id>",
    "GET",
    "One card with its comments and status history, oldest first",
    response=schemas.CardDetailOut,
    errors=(404,),
)
def card_detail(card_id: str) -> Response:
    with current_services().runtime_db.reader() as session:
        card = session.get(Issue, card_id)
        if card is None:
            raise ApiError(404)
        return jsonify(runs.card_to_dict(card, session=session, with_detail=True))


# Verification -------------------------------------------------------------------------


@route(
    v1,
    "/cards/<card_id>/verify",
    "POST",
    "Run the card's fixture now and store the result on the card",
    response=schemas.VerifyOut,
    errors=(404, 409),
)
def verify(card_id: str) -> Response:
    services = current_services()
    with services.runtime_db.reader() as session:
        card = session.get(Issue, card_id)
    if card is None:
        raise ApiError(404)
    if not has_fixture(card):
        raise ApiError(409, "Card has no verification fixture")

    # The fixture runs with no transaction open (DB-1); the result is stored after.
    cards = CardRepository(services.runtime_db, services.events)
    result = verify_card(services.settings, cards, services.events, card)
    return jsonify({"card_id": card_id, "result": result})
