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
    hub = request.app.state.receiver.dashboard
    sub = hub.subscribe(metrics=_names(metrics), services=_names(service))

    async def events() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\nevent: hello\ndata: {}\n\n"
            while True:
                frame = await sub.next_frame()
                if frame is None:
                    yield b'event: dropped\ndata: {"reason": "client too slow"}\n\n'
                    return
                if await request.is_disconnected():
                    return
                if not frame:
                    yield b": keep-alive\n\n"
                    continue
                yield b"event: points\ndata: " + json.dumps(frame, default=str).encode() + b"\n\n"
        finally:
            hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
