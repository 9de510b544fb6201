"""The HTTP edge for operations, on aiohttp: the status page `/` and its data `/status.json`, `/livez`,
`/readyz` (and `/healthz`, its alias) and `/metrics`.

Handlers only render what `Observability` and the status source compute. The probes are always open; the
page, its data and (unless `metrics_public`) the metrics ask for the token when one is set.
"""

from __future__ import annotations

import base64
import hmac
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from ..config import loopback
from ..config.secret import Secret
from ..interface import wire
from .observability import Observability

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
"""The page loads nothing from elsewhere (it works offline, next to a broker in a substation), runs no inline
script and cannot be framed."""
HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}
"""On every answer: no content sniffing, no framing (older browsers), no URL passed on."""
OPEN = frozenset({"/livez", "/readyz", "/healthz"})
WRONG_HOST = wire.encode(
    {
        "code": "wrong_host",
        "message": "this page answers only at a loopback name; serve it elsewhere with http.auth_token set",
    }
)
ASSETS = {"/status.css": "text/css", "/status.js": "text/javascript"}
"""The page's own files: no data in them, so served without the token."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def authorized(header: str, token: Secret) -> bool:
    """Whether an Authorization header carries the token: `Bearer <token>` or basic with it as password."""
    scheme, _, value = header.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            return False
    return bool(given) and hmac.compare_digest(given.encode(), token.reveal().encode())


def _guard(token: Secret, metrics_public: bool, loopback: bool) -> Any:
    """Middleware: 401 unless the path is open or authorized; on `/` with a basic-auth challenge, so a browser
    asks (not on the data, which the page's script fetches: no prompt there). Bound to loopback, only a loopback
    Host is answered (beyond the probes): a web page elsewhere cannot read it by DNS rebinding."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback and request.path not in OPEN and not _loopback_name(request.host):
            return web.Response(status=421, body=WRONG_HOST, content_type="application/json")
        public = request.path in OPEN or request.path in ASSETS or (metrics_public and request.path == "/metrics")
        if token and not public and not authorized(request.headers.get("Authorization", ""), token):
            body = wire.encode({"code": "unauthorized", "message": "this page needs http.auth_token"})
            challenge = {"WWW-Authenticate": 'Basic realm="semookii-bridge"'} if request.path == "/" else {}
            return web.Response(status=401, body=body, content_type="application/json", headers=challenge)
        return await handler(request)

    return guard


def _loopback_name(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port)."""
    name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.rpartition(":")[0] or host
    return loopback(name)


async def _secure(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(HEADERS)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=wire.encode(doc), status=status, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


def make_app(
    obs: Observability,
    status: Callable[[], dict[str, Any]] | None = None,
    *,
    token: Secret | None = None,
    metrics_public: bool = False,
    loopback: bool = False,
) -> web.Application:
    """The aiohttp application: probes, metrics, and (given `status`) the page, its files and its data."""
    page = resources.files(__package__).joinpath("status.html").read_bytes()

    async def probe(request: web.Request) -> web.Response:
        ok, doc = obs.liveness() if request.path == "/livez" else obs.readiness()
        return _json(doc, 200 if ok else 503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=obs.render(), headers={"Content-Type": PROMETHEUS_TEXT})

    async def index(request: web.Request) -> web.Response:
        return web.Response(
            body=page,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP},
        )

    async def data(request: web.Request) -> web.Response:
        return _json(status() if status is not None else {})

    app = web.Application(middlewares=[_guard(token or Secret(""), metrics_public, loopback)])
    app.on_response_prepare.append(_secure)
    for path in OPEN:
        app.router.add_get(path, probe)
    for path, kind in ASSETS.items():
        app.router.add_get(path, _asset(path, kind))
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", index)
    app.router.add_get("/status.json", data)
    return app


def _asset(path: str, kind: str) -> Handler:
    """A handler serving one of the page's files from the package."""
    body = resources.files(__package__).joinpath(path.lstrip("/")).read_bytes()

    async def asset(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=kind, charset="utf-8", headers={"Cache-Control": "no-cache"})

    return asset


class _BadRequests(logging.Filter):
    """aiohttp logs a malformed request (a scanner, TLS on the plain port) with a traceback, some at ERROR; it is
    the client's fault and answered 400: one DEBUG line naming the cause instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            cause = " ".join(str(exc.message).split())[:200]
            record.msg, record.args = "http_bad_request status=%s cause=%s", (exc.code, cause)
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.exc_info, record.exc_text = None, None
        return True


BAD_REQUESTS = _BadRequests()


async def start(
    obs: Observability,
    host: str,
    port: int,
    status: Callable[[], dict[str, Any]] | None = None,
    *,
    token: Secret | None = None,
    metrics_public: bool = False,
) -> tuple[web.AppRunner, int]:
    """Serve until `runner.cleanup()`; returns the runner and the bound port (port 0 picks one)."""
    logging.getLogger("aiohttp.server").addFilter(BAD_REQUESTS)
    local = loopback(host) and not token
    app = make_app(obs, status, token=token, metrics_public=metrics_public, loopback=local)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise PortBusy(host, port, os.strerror(exc.errno) if exc.errno else str(exc)) from None
    sockets = getattr(getattr(site, "_server", None), "sockets", None) or []
    return runner, int(sockets[0].getsockname()[1]) if sockets else port


class PortBusy(Exception):
    """The HTTP server could not bind its port (taken by another process, or not allowed)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot serve http on {host}:{port}: {reason} (set http.port, or http.enabled = false; "
            "or is this bridge already running?)"
        )
        self.host, self.port, self.reason = host, port, reason
