"""The simulator's HTTP face: an aiohttp app that answers like the Semookii Cloud Control API.

It checks the token, applies a per-token rate limit (HTTP 429 + Retry-After), adds latency, injects
faults, and records every call (without the token) so tests can assert what a client sent.
Admin routes under `/_sim/` inspect calls, inject faults and show the fleet.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiohttp import web

from ..budget.quota import zone
from ..budget.ratelimit import TokenBucket
from .faults import BEFORE, Fault, ban_text, fault_after, fault_before
from .routes import ROUTES, envelope
from .state import CloudState, Rejected, SimTimings
from .validation import InvalidParams

log = logging.getLogger(__name__)


class SimConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How the simulated cloud behaves."""

    tokens: list[str] = msgspec.field(default_factory=lambda: ["sim-token"])
    rate: float = 0.0
    burst: int = 10
    latency: float = 0.0
    ban_after: int = 0
    """After this many over-limit calls in a row the token is banned (0: never), like the vendor's penalty."""
    ban_for: float = 3600.0
    """Seconds a ban lasts; every call in it is refused."""
    task_delay: float = 0.2
    result_delay: float = 0.5
    groups: int = 2
    inverters_per_group: int = 3
    seed: int = 1
    query_success_key: Literal["success", "isSuccess", "mixed"] = "mixed"
    tz: str = "UTC"
    """The site's time zone, in which the API writes createTime/updateTime (the document: "the time zone of
    the site")."""
    silent_devices: int = 0
    """Devices that never answer a command (their result stays "null"): the first inverter of each group,
    group after group; `/_sim/devices/<sn>/silent` toggles one at run time."""
    record_calls: bool = True

    def __repr__(self) -> str:
        return f"SimConfig(tokens=<{len(self.tokens)}>, rate={self.rate}, latency={self.latency})"


class CallRecord(msgspec.Struct):
    """One call as the simulator saw it; the token is never recorded, only whether it was valid."""

    seq: int
    ts: float
    path: str
    params: dict[str, str]
    body: dict[str, Any] | None
    token: Literal["valid", "invalid", "missing"]
    status: int = 0
    outcome: str = "pending"
    answered: float = 0.0


@dataclass
class _FaultSlot:
    fault: Fault
    left: int


class Simulator:
    """The simulated Cloud API: state, rate limits, faults and the call log behind one aiohttp app."""

    def __init__(self, config: SimConfig | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SimConfig()
        self.state = CloudState(
            timings=SimTimings(self.config.task_delay, self.config.result_delay),
            clock=clock,
            seed=self.config.seed,
            tz=zone(self.config.tz),
        )
        self.state.seed_fleet(self.config.groups, self.config.inverters_per_group)
        self.state.silence(self.config.silent_devices)
        self.calls: list[CallRecord] = []
        self._faults: list[_FaultSlot] = []
        self._buckets: dict[str, TokenBucket] = {}
        self._violations: dict[str, int] = {}
        self._banned_until: dict[str, float] = {}
        self.bans = 0
        self._clock = clock
        self._seq = itertools.count(1)
        self._query_calls = itertools.count()

    # ---- test helpers ---------------------------------------------------------------------------

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each hits the next matching calls."""
        self._faults.extend(_FaultSlot(f, f.times) for f in faults)

    def calls_to(self, path: str) -> list[CallRecord]:
        """Recorded calls to one endpoint path, oldest first."""
        return [c for c in self.calls if c.path == path]

    def app(self) -> web.Application:
        """The aiohttp application serving the API and the `/_sim/` admin routes."""
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_get("/_sim/calls", self._admin_calls)
        app.router.add_delete("/_sim/calls", self._admin_clear)
        app.router.add_post("/_sim/faults", self._admin_faults)
        app.router.add_get("/_sim/fleet", self._admin_fleet)
        app.router.add_post("/_sim/devices/{sn}/silent", self._admin_silent)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    # ---- the API --------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"].lstrip("/")
        query = {k: request.query.getone(k) for k in request.query}
        body = await _json_body(request) if path == "/api/regsn" else None
        token = (
            ((body or {}).get("tokenId") or (body or {}).get("token")) if path == "/api/regsn" else query.get("tokenId")
        )
        record = CallRecord(
            seq=next(self._seq),
            ts=time.time(),
            path=path,
            params={k: v for k, v in query.items() if k != "tokenId"},
            body={k: v for k, v in body.items() if k not in ("token", "tokenId")} if body is not None else None,
            token="missing" if not token else ("valid" if token in self.config.tokens else "invalid"),
        )
        if self.config.record_calls:
            self.calls.append(record)
        response = await self._respond(request, record, path, query, body, str(token or ""))
        record.answered = time.time()
        if response is not None:
            record.status = response.status
        return response if response is not None else web.Response(status=500)

    async def _respond(
        self,
        request: web.Request,
        record: CallRecord,
        path: str,
        query: Mapping[str, str],
        body: dict[str, Any] | None,
        token: str,
    ) -> web.StreamResponse | None:
        handler = ROUTES.get(path)
        if handler is None:
            record.outcome = "not_found"
            return web.json_response({"exception": "Not Found", "result": None, "success": False}, status=404)
        if request.method != "POST":
            record.outcome = "method_not_allowed"
            return web.Response(status=405, headers={"Allow": "POST"})
        refusal = self._admit(record, token)
        if refusal is not None:
            return refusal
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        fault = self._take_fault(path)
        if fault is not None and fault.kind in BEFORE:
            record.outcome = f"fault:{fault.kind}"
            return fault_before(request, fault)
        try:
            payload: web.StreamResponse = handler(self, query, body)
            record.outcome = "ok"
        except (Rejected, InvalidParams) as exc:
            record.outcome = "rejected"
            payload = envelope(None, ok=False, exception=str(exc))
        if fault is not None:
            record.outcome = f"fault:{fault.kind}"
            return await fault_after(request, fault, payload)
        return payload

    def _admit(self, record: CallRecord, token: str) -> web.Response | None:
        """The vendor's gate: a bad token, a banned one, or one over its rate (429, and a ban after
        `ban_after` in a row) is refused before the call is processed; None lets the call through."""
        if record.token != "valid":
            record.outcome = "bad_token"
            return envelope(None, ok=False, exception="tokenId is invalid or expired")
        banned = self._ban_left(token)
        if banned > 0:
            record.outcome = "banned"
            return envelope(None, ok=False, exception=ban_text(banned))
        wait = self._bucket(token).delay()
        if not self._bucket(token).try_take():
            record.outcome = "rate_limited"
            if self._violation(token):
                record.outcome = "banned"
                return envelope(None, ok=False, exception=ban_text(self.config.ban_for))
            return web.Response(status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self._violations.pop(token, None)
        return None

    def _ban_left(self, token: str) -> float:
        """Seconds left of the token's ban (0 when not banned)."""
        return max(0.0, self._banned_until.get(token, 0.0) - self._clock())

    def _violation(self, token: str) -> bool:
        """Count an over-limit call; True when it starts a ban."""
        self._violations[token] = self._violations.get(token, 0) + 1
        if self.config.ban_after and self._violations[token] >= self.config.ban_after:
            self._violations.pop(token)
            self._banned_until[token] = self._clock() + self.config.ban_for
            self.bans += 1
            return True
        return False

    def _bucket(self, token: str) -> TokenBucket:
        bucket = self._buckets.get(token)
        if bucket is None:
            bucket = TokenBucket(self.config.rate, self.config.burst, clock=self._clock)
            self._buckets[token] = bucket
        return bucket

    def _take_fault(self, path: str) -> Fault | None:
        for slot in self._faults:
            if slot.left > 0 and slot.fault.path in (None, path):
                slot.left -= 1
                return slot.fault
        return None

    def query_envelope(self, result: Any) -> web.Response:
        """Query endpoints: the document shows `isSuccess`, its examples `success`; `mixed` alternates."""
        key = self.config.query_success_key
        if key == "mixed":
            key = "isSuccess" if next(self._query_calls) % 2 == 0 else "success"
        return web.json_response({"exception": None, "result": result, key: True})

    # ---- admin ----------------------------------------------------------------------------------

    async def _admin_calls(self, request: web.Request) -> web.Response:
        return web.Response(body=msgspec.json.encode(self.calls), content_type="application/json")

    async def _admin_clear(self, request: web.Request) -> web.Response:
        self.calls.clear()
        return web.json_response({"cleared": True})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        try:
            faults = msgspec.json.decode(await request.read(), type=list[Fault])
        except msgspec.MsgspecError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        self.inject(*faults)
        return web.json_response({"queued": len(faults)})

    def fleet(self) -> dict[str, Any]:
        """Groups with their inverters, and every dongle with whether it is bound (for people and tools)."""
        s = self.state
        return {
            "groups": [
                {"id": g.id, "name": g.name, "inverters": [i.inverter_sn for i in s.group_members(g.id)]}
                for g in s.list_groups()
            ],
            "devices": [
                {"wifi_sn": d.wifi_sn, "inverter_sn": d.inverter_sn, "bound": d.bound} for d in s.devices.values()
            ],
        }

    async def _admin_fleet(self, request: web.Request) -> web.Response:
        return web.json_response(self.fleet())

    async def _admin_silent(self, request: web.Request) -> web.Response:
        """`POST /_sim/devices/<sn>/silent?on=true|false`: a device stops (or resumes) answering commands."""
        silent = request.query.get("on", "true").lower() != "false"
        if not self.state.set_silent(request.match_info["sn"], silent):
            return web.json_response({"error": "unknown device"}, status=404)
        return web.json_response({"sn": request.match_info["sn"], "silent": silent})


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        doc = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        return None
    return doc if isinstance(doc, dict) else None


@dataclass
class RunningSimulator:
    """A simulator listening on a loopback port."""

    simulator: Simulator
    base_url: str
    port: int


@asynccontextmanager
async def serve(
    config: SimConfig | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.monotonic,
) -> AsyncIterator[RunningSimulator]:
    """Run the simulator until the block exits; port 0 picks a free port."""
    simulator = Simulator(config, clock=clock)
    runner = web.AppRunner(simulator.app(), access_log=None, handle_signals=False, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    bound_port = sockets[0].getsockname()[1] if sockets else port
    try:
        yield RunningSimulator(simulator, f"http://{host}:{bound_port}", bound_port)
    finally:
        await runner.cleanup()
