"""A gateway per inference protocol on the session's Triton, for tests that compare them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conch_embedded.triton_server import EmbeddedTriton
from control_plane.triton.client import TritonGateway

PROTOCOLS = ("http", "grpc")


def gateway_over(
    protocol: str, triton: EmbeddedTriton, *, timeout_s: float = 30, coalesce_in_flight: int = 0
) -> TritonGateway:
    """Predictions over `protocol`; loads and config calls always go over gRPC."""
    return TritonGateway(
        triton.grpc_url,
        timeout_s=timeout_s,
        load_timeout_s=120,
        coalesce_in_flight=coalesce_in_flight,
        http_url=triton.http_url if protocol == "http" else None,
    )


@asynccontextmanager
async def loaded(triton: EmbeddedTriton, *names: str) -> AsyncIterator[None]:
    """`names` loaded in Triton for the duration (a module fixture's models)."""
    loader = gateway_over("grpc", triton)
    try:
        for name in names:
            await loader.load(name)
        yield
        for name in names:
            await loader.unload(name)
    finally:
        await loader.close()
