"""Bounded types for numbers that come from callers.

Ids are INTEGER columns (32-bit on PostgreSQL): an id beyond that range cannot
exist, so it is a 422 at validation, never a driver error or an unrenderable
integer in an error body.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

MAX_ID = 2**31 - 1

ResourceId = Annotated[int, Field(ge=1, le=MAX_ID)]


def _path_id(what: str) -> object:
    return Path(ge=1, le=MAX_ID, description=f"id of the {what}")


ModelIdPath = Annotated[int, _path_id("registered model")]
ProjectIdPath = Annotated[int, _path_id("project")]
SlotIdPath = Annotated[int, _path_id("deployment slot")]
KeyIdPath = Annotated[int, _path_id("API key")]


class RequestBody(BaseModel):
    """Every request body is strict: "5" is not a number, true is not 1, "1.5" is not a
    feature value. (Dates stay ISO strings: JSON has no date type.)"""

    model_config = ConfigDict(strict=True)
