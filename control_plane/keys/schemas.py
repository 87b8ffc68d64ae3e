"""API key shapes: what is stored, what an authenticated request carries, what the API shows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from control_plane.core.setting_values import parse_rate
from control_plane.core.types import RequestBody, ResourceId

Scope = Literal["predict", "read", "write", "admin"]
ALL_SCOPES: tuple[Scope, ...] = ("predict", "read", "write", "admin")


@dataclass(frozen=True)
class Principal:
    """The verified caller of a request (cached in-process for a short TTL)."""

    key_id: int
    name: str
    scopes: frozenset[str]
    project_id: int | None
    expires_at: datetime | None
    rate_limit: str | None

    def has_scope(self, scope: str) -> bool:
        # admin implies every other scope.
        return "admin" in self.scopes or scope in self.scopes

    def may_access_project(self, project_id: int) -> bool:
        return self.project_id is None or self.project_id == project_id


class KeyCreate(RequestBody):
    name: str = Field("", max_length=200)
    scopes: list[Scope] = Field(min_length=1)
    project_id: ResourceId | None = None
    expires_at: AwareDatetime | None = Field(
        None, strict=False, description="With a timezone, e.g. 2030-01-01T00:00:00Z"
    )
    rate_limit: str | None = Field(None, description="e.g. '500/minute'; default from settings")

    @field_validator("expires_at", mode="before")
    @classmethod
    def _iso_text(cls, value: object) -> object:
        if value is not None and not isinstance(value, str | datetime):
            raise ValueError("expires_at must be an ISO 8601 date-time string")
        return value

    @field_validator("rate_limit")
    @classmethod
    def _valid_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    display_prefix: str
    scopes: list[str]
    project_id: int | None
    rate_limit: str | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime

    @field_validator("scopes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return value.split() if isinstance(value, str) else value


class KeyCreated(KeyRead):
    key: str = Field(description="The plaintext key. Shown once: store it now.")
