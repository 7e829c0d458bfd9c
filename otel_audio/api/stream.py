"""Live updates by server push: ``GET /api/v1/stream`` as server-sent events.

Each event is one coalesced frame from :mod:`otel_audio.dashboard.hub` (at most one per 250 ms per
client): ``event: points`` with ``{"points": [{metric, service, series, attributes, t, value,
count, type}], "spans": {service: n}, "sent_ms": ...}``. A comment line keeps idle connections
open; a client too slow to keep up gets ``event: dropped`` and the stream ends.

The stream is behind the API's bearer token like every other route; browsers read it with
``fetch`` (which can send ``Authorization``), not ``EventSource`` (which cannot).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

router = APIRouter(prefix="/api/v1", tags=["dashboard"])

KEEPALIVE_S = 15.0  # a comment line this often keeps idle connections (and proxies) open
_POLL_S = 0.5  # how soon a stream notices that the receiver is stopping


def _names(values: list[str] | None) -> list[str]:
    return [name.strip() for value in values or [] for name in value.split(",") if name.strip()]


@router.get("/stream", summary="Server-sent events: new points of the chosen metrics, as they arrive")
async def stream(
    request: Request,
    metrics: Annotated[
        list[str] | None, Query(description="metric names, comma-separated or repeated")
    ] = None,
    service: Annotated[list[str] | None, Query(description="service names; all when absent")] = None,
) -> StreamingResponse:
    receiver = request.app.state.receiver
    hub = receiver.dashboard
    sub = hub.subscribe(metrics=_names(metrics), services=_names(service))

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\nevent: hello\ndata: {}\n\n"
            idle = 0.0
            while receiver.serving:  # a stopping receiver ends its streams instead of waiting on them
                frame = await sub.next_frame(timeout_s=_POLL_S)
                if frame is None:
                    yield b'event: dropped\ndata: {"reason": "client too slow"}\n\n'
                    return
                if await request.is_disconnected():
                    return
                if not frame:
                    idle += _POLL_S
                    if idle >= KEEPALIVE_S:
                        idle = 0.0
                        yield b": keep-alive\n\n"
                    continue
                idle = 0.0
                yield b"event: points\ndata: " + json.dumps(frame, default=str).encode() + b"\n\n"
        finally:
            hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
