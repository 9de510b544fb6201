"""The HTTP edge for operations: `GET /healthz` and `GET /metrics` on aiohttp.

Handlers only render what `Observability` computes; nothing else here.
"""

from __future__ import annotations

from aiohttp import web

from . import wire
from .observability import Observability

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def make_app(obs: Observability) -> web.Application:
    """The aiohttp application for health and metrics."""

    async def healthz(request: web.Request) -> web.Response:
        ok, doc = obs.health()
        return web.Response(body=wire.encode(doc), status=200 if ok else 503, content_type="application/json")

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=obs.render(), headers={"Content-Type": PROMETHEUS_TEXT})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def start(obs: Observability, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve until `runner.cleanup()`; returns the runner and the bound port (port 0 picks one)."""
    runner = web.AppRunner(make_app(obs), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port
