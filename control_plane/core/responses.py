"""orjson-rendered JSON for bodies built by hand (errors, health).

Routes with a response model are serialized by pydantic straight to bytes,
which FastAPI now prefers over a custom response class.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)
        except orjson.JSONEncodeError as exc:
            # orjson stops at 64-bit integers; an error body quoting a caller's
            # out-of-range number must still render. Anything else is a bug: raise.
            if "64-bit" not in str(exc):
                raise
            return json.dumps(content, separators=(",", ":")).encode()
