"""The dashboard: a static single-page app served by the receiver, and its live-update hub.

``static/`` holds the page (plain HTML, JavaScript modules and CSS; no build step, nothing from a
CDN); plotly.js comes from the installed ``plotly`` package. :mod:`~otel_audio.dashboard.hub` is
the fan-out from the processor chain to the SSE clients of ``/api/v1/stream``;
:mod:`~otel_audio.dashboard.web` mounts the page. See ``docs/dashboard.md``.
"""
