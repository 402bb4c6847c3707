"""The toy context's one registration: what api/contexts.py would list."""

from __future__ import annotations

from api.catalogue import Context
from tests.toy.api import BoardController
from tests.toy.application import HANDLERS
from tests.toy.domain import Board
from tests.toy.projections import BoardsProjection

BOARDS = Context(
    "boards",
    aggregates=(Board,),
    handlers=HANDLERS,
    read_models=(BoardsProjection,),
    routes=(BoardController,),
)
