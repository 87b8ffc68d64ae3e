"""The lifecycle as a FastAPI dependency."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from control_plane.core.components import provided
from control_plane.lifecycle.manager import ModelLifecycle

LifecycleDep = Annotated[ModelLifecycle, Depends(provided(ModelLifecycle))]
