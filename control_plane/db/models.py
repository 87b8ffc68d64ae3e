"""Every table of the control plane. SQL is the source of truth for all replicas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from control_plane.db.base import Base, UTCDateTime, utcnow

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Sticky mode: the same user always lands on the same slot (hash of salt + user).
    sticky: Mapped[bool] = mapped_column(Boolean, default=False)
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    slots: Mapped[list[DeploymentSlot]] = relationship(
        back_populates="project", order_by="DeploymentSlot.id", lazy="raise"
    )


class Model(Base):
    """An exported model as registered: immutable once written."""

    __tablename__ = "models"
    # SQLite would otherwise give a deleted model's id to the next one registered.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    triton_name: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    framework: Mapped[str] = mapped_column(String(40))
    task: Mapped[str] = mapped_column(String(40))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    load_error: Mapped[str | None] = mapped_column(Text, default=None)
    # The project the model was registered into: its keys see it (keys/access.py).
    # None: a global model, seen by unrestricted keys and by projects whose slots name
    # it. Deleting the project makes the model global rather than deleting it: a
    # database cascade would unregister it without a model_deleted event or an audit
    # entry, and would fail outright if another project's slot serves it.
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="SET NULL"), default=None, index=True
    )


class DeploymentSlot(Base):
    __tablename__ = "deployment_slots"
    __table_args__ = (
        UniqueConstraint("project_id", "name"),
        CheckConstraint("weight >= 0 AND weight <= 100", name="weight_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    weight: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # The baseline of A/B comparisons; when none is flagged, the oldest slot is.
    is_control: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    project: Mapped[Project] = relationship(back_populates="slots", lazy="raise")


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # HMAC-SHA256(secret_key, token) in hex; the token itself is never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # First characters of the token, so an operator can tell keys apart.
    display_prefix: Mapped[str] = mapped_column(String(16))
    scopes: Mapped[str] = mapped_column(String(100))  # space-separated
    project_id: Mapped[int | None] = mapped_column(
        ForeignKey("projects.id", ondelete="CASCADE"), default=None
    )
    rate_limit: Mapped[str | None] = mapped_column(String(40), default=None)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConversionEvent(Base):
    __tablename__ = "conversion_events"
    # The dedup key: a client retrying a batch must not count an event twice.
    __table_args__ = (
        UniqueConstraint(
            "project_id", "slot_id", "user_id", "item_id", "event_type",
            "recommendation_request_id", name="uq_conversion_events_dedup",
        ),
        # A/B counts per slot and type, and the console's per day: ranges of this index.
        Index(
            "ix_conversion_events_slot_type_time",
            "project_id", "slot_id", "event_type", "created_at",
        ),
    )  # fmt: skip

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    slot_id: Mapped[int] = mapped_column(
        ForeignKey("deployment_slots.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(String(200))
    item_id: Mapped[str] = mapped_column(String(200))
    event_type: Mapped[str] = mapped_column(String(20))
    recommendation_request_id: Mapped[str] = mapped_column(String(64))
    metadata_json: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    api_key_id: Mapped[int | None] = mapped_column(Integer, default=None)
    action: Mapped[str] = mapped_column(String(60))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str] = mapped_column(String(60))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EngineConfig(Base):
    """Seed 002's engine configuration, one row (id 1) for every replica; no row means
    every setting is at its default. Each field is None at its default: a model's own
    exported batching, no concurrency limit, `max_loaded_models` from the settings.
    `revision` grows by one per change, so a replica never applies an older row it read
    late over a newer one it already applied (control_plane/lifecycle/tuning.py)."""

    __tablename__ = "engine_config"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # The dynamic batcher's target batch, capped per model by its export's max_batch_size.
    max_batch_size: Mapped[int | None] = mapped_column(Integer, default=None)
    # Triton's max_queue_delay_microseconds (the API speaks milliseconds).
    batch_timeout_us: Mapped[int | None] = mapped_column(Integer, default=None)
    max_concurrent_requests: Mapped[int | None] = mapped_column(Integer, default=None)
    model_cache_size: Mapped[int | None] = mapped_column(Integer, default=None)
    revision: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
