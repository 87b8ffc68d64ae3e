"""With the public development SECRET_KEY, answer nobody but this machine.

Settings accept that key only in development on a loopback address, but the
address is what the process was told (`conch serve --host` tells it); uvicorn
started by hand with `--host 0.0.0.0` does not. This middleware, installed only
while the development key is in use, checks the address each request really
arrived on and refuses any other than loopback.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.core.errors import error_response
from control_plane.core.secret_rules import is_loopback


class LoopbackOnly:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = scope.get("server")
        if scope["type"] != "http" or server is None or is_loopback(str(server[0])):
            await self.app(scope, receive, send)
            return
        refusal = error_response(
            503,
            "ServiceUnavailableError",
            "this server uses the development SECRET_KEY and answers on loopback only: "
            "set SECRET_KEY to a random value to serve other hosts",
        )
        await refusal(scope, receive, send)
