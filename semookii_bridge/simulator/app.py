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

from ..quota import zone
from ..ratelimit import TokenBucket
from .state import CloudState, Rejected, SimTimings
from .validation import InvalidParams, parse_control

log = logging.getLogger(__name__)

FaultKind = Literal[
    "http_500", "http_502", "http_503", "http_429", "drop_before", "drop_after", "slow", "malformed", "reject"
]
_BEFORE = {"http_500", "http_502", "http_503", "http_429", "drop_before", "reject"}


class Fault(msgspec.Struct, frozen=True):
    """One injected failure for the next `times` calls to `path` (any path when None).

    `*_before` kinds fail without processing; `drop_after`, `slow` and `malformed` process the call first,
    the way a real outage leaves a client not knowing whether its command landed.
    """

    kind: FaultKind
    path: str | None = None
    times: int = 1
    delay: float = 0.0
    retry_after: float | None = None
    message: str = "Simulated failure"


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


Handler = Callable[["Simulator", Mapping[str, str], dict[str, Any] | None], web.StreamResponse]


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
        if record.token != "valid":
            record.outcome = "bad_token"
            return _envelope(None, ok=False, exception="tokenId is invalid or expired")
        banned = self._ban_left(token)
        if banned > 0:
            record.outcome = "banned"
            return _envelope(None, ok=False, exception=ban_text(banned))
        wait = self._bucket(token).delay()
        if not self._bucket(token).try_take():
            record.outcome = "rate_limited"
            if self._violation(token):
                record.outcome = "banned"
                return _envelope(None, ok=False, exception=ban_text(self.config.ban_for))
            return web.Response(status=429, headers={"Retry-After": str(max(1, math.ceil(wait)))})
        self._violations.pop(token, None)
        if self.config.latency > 0:
            await asyncio.sleep(self.config.latency)
        fault = self._take_fault(path)
        if fault is not None and fault.kind in _BEFORE:
            record.outcome = f"fault:{fault.kind}"
            return _fault_before(request, fault)
        try:
            payload: web.StreamResponse = handler(self, query, body)
            record.outcome = "ok"
        except (Rejected, InvalidParams) as exc:
            record.outcome = "rejected"
            payload = _envelope(None, ok=False, exception=str(exc))
        if fault is not None:
            record.outcome = f"fault:{fault.kind}"
            return await _fault_after(request, fault, payload)
        return payload

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


# ---- endpoint handlers: (simulator, query, body) -> response --------------------------------------


def _envelope(result: Any, *, ok: bool = True, exception: str | None = None) -> web.Response:
    return web.json_response({"exception": exception, "result": result, "success": ok})


def _need(query: Mapping[str, str], name: str) -> str:
    value = query.get(name, "").strip()
    if not value:
        raise InvalidParams(f"Required parameter '{name}' is not present")
    return value


def _int_param(query: Mapping[str, str], name: str) -> int:
    value = _need(query, name)
    if not value.isdigit():
        raise InvalidParams(f"Parameter '{name}' must be a number")
    return int(value)


def _id_list(query: Mapping[str, str]) -> list[str]:
    """Batch deletes: the table says `id`, the example sends `ids`; accept either."""
    raw = query.get("ids") or query.get("id") or ""
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    if not ids:
        raise InvalidParams("Required parameter 'ids' is not present")
    return ids


def _single(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    sn = _need(q, "sn")
    return _envelope(int(sim.state.control(f"inverter:{sn}", [sn], request)))


def _batch(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    sns = [s.strip() for s in _need(q, "snList").split(",") if s.strip()]
    return _envelope(int(sim.state.control("batch", sns, request)))


def _group_control(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    request = parse_control(q)
    return _envelope(int(sim.state.control_group(_need(q, "groupId"), request)))


def _group_add(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    return _envelope(int(sim.state.add_group(_need(q, "name"))))


def _group_update(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.update_group(_need(q, "id"), _need(q, "name"))
    return _envelope(None)


def _group_delete(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_groups([_need(q, "id")])
    return _envelope(None)


def _group_delete_batch(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_groups(_id_list(q))
    return _envelope(None)


def _page(rows: list[Any], q: Mapping[str, str]) -> tuple[int, list[Any]]:
    current, size = _int_param(q, "current"), _int_param(q, "size")
    if current < 1 or size < 1:
        raise InvalidParams("current and size must be positive")
    return len(rows), rows[(current - 1) * size : current * size]


def _group_json(sim: Simulator, group: Any, *, id_as_number: bool) -> dict[str, Any]:
    return {
        "id": int(group.id) if id_as_number else group.id,
        "name": group.name,
        "num": len(sim.state.group_members(group.id)),
        "createTime": group.create_time,
        "updateTime": group.update_time,
    }


def _group_find_all(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    total, rows = _page(sim.state.list_groups(), q)
    return _envelope({"num": total, "list": [_group_json(sim, g, id_as_number=True) for g in rows]})


def _group_find_like(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    rows = sim.state.list_groups(_need(q, "name"))
    return _envelope({"num": len(rows), "list": [_group_json(sim, g, id_as_number=False) for g in rows]})


def _inverter_json(sim: Simulator, row: Any) -> dict[str, Any]:
    return {
        "id": int(row.id),
        "groupId": int(row.group_id),
        "wifiSn": sim.state.wifi_sn_of(row.inverter_sn),
        "inverterSn": row.inverter_sn,
        "groupStatus": 1,
        "ratePower": sim.state.rate_power_of(row.inverter_sn),
        "createTime": row.create_time,
        "updateTime": row.update_time,
    }


def _inverter_add(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    return _envelope(sim.state.add_inverter(_need(q, "groupId"), _need(q, "inverterSn")))


def _inverter_delete(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_inverters([_need(q, "id")])
    return _envelope(None)


def _inverter_delete_batch(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.delete_inverters(_id_list(q))
    return _envelope(None)


def _inverter_update(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    sim.state.replace_inverter(_need(q, "id"), _need(q, "newInverterSn"))
    return _envelope(None, exception="update succeeded")


def _inverter_find_by_group(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    total, rows = _page(sim.state.list_inverters(_need(q, "groupId")), q)
    return _envelope({"num": total, "list": [_inverter_json(sim, r) for r in rows]})


def _inverter_find_like(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    rows = sim.state.list_inverters(_need(q, "groupId"), q.get("wifiSn"), q.get("inverterSn"))
    return _envelope({"num": len(rows), "list": [_inverter_json(sim, r) for r in rows]})


def _query_command(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    return sim.query_envelope({"taskId": sim.state.query_command(_need(q, "commandId"))})


def _query_result(sim: Simulator, q: Mapping[str, str], _: Any) -> web.Response:
    return sim.query_envelope(sim.state.query_result(_need(q, "taskId")))


def _regsn(sim: Simulator, _: Mapping[str, str], body: dict[str, Any] | None) -> web.Response:
    raw = str((body or {}).get("sns") or "")
    sns = [s.strip() for s in raw.split(",") if s.strip()]
    if not sns:
        raise InvalidParams("sns is required")
    if len(sns) > 100:
        raise InvalidParams("At most 100 sns per request")
    answer: dict[str, Any] = {"exception": None, "code": 0, "success": True}
    answer.update({k: ",".join(v) for k, v in sim.state.bind(sns).items() if v})
    return web.json_response(answer)


ROUTES: dict[str, Handler] = {
    "/commandapi/singleControl": _single,
    "/commandapi/batchTempControl": _batch,
    "/commandapi/groupControl": _group_control,
    "/vppgroup/add": _group_add,
    "/vppgroup/updateById": _group_update,
    "/vppgroup/deleteById": _group_delete,
    "/vppgroup/deleteBatch": _group_delete_batch,
    "/vppgroup/findAll": _group_find_all,
    "/vppgroup/findLikeName": _group_find_like,
    "/vppinverter/add": _inverter_add,
    "/vppinverter/deleteById": _inverter_delete,
    "/vppinverter/deleteBatch": _inverter_delete_batch,
    "/vppinverter/updateById": _inverter_update,
    "/vppinverter/findByGroupId": _inverter_find_by_group,
    "/vppinverter/findByLike": _inverter_find_like,
    "/commandapi/queryCommand": _query_command,
    "/commandapi/getQueryResult": _query_result,
    "/api/regsn": _regsn,
}


async def _json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        doc = msgspec.json.decode(await request.read())
    except msgspec.DecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def ban_text(seconds: float) -> str:
    """The vendor's words for a ban (SolaX: several violations in a row, then no calls for an hour)."""
    return f"Several violations in a row, prohibit calls within the next {math.ceil(seconds)} seconds"


def _fault_before(request: web.Request, fault: Fault) -> web.StreamResponse | None:
    if fault.kind == "drop_before":
        _drop(request)
        return None
    if fault.kind == "reject":
        return _envelope(None, ok=False, exception=fault.message)
    if fault.kind == "http_429":
        retry = fault.retry_after if fault.retry_after is not None else 1
        return web.Response(status=429, headers={"Retry-After": f"{retry:g}"})
    return web.Response(status=int(fault.kind.removeprefix("http_")), text=fault.message)


async def _fault_after(request: web.Request, fault: Fault, payload: web.StreamResponse) -> web.StreamResponse | None:
    if fault.kind == "drop_after":
        _drop(request)
        return None
    if fault.kind == "slow":
        await asyncio.sleep(fault.delay)
        return payload
    return web.Response(body=b'{"exception":null,"result":', content_type="application/json")


def _drop(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.close()


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
