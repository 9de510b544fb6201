"""Operators see and trust it: a refused token is loud and recovers, liveness stays apart from readiness, the
metrics follow the Prometheus rules, and the operations server asks for its token beyond loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from semookii_bridge import config as bridge_config
from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator
from semookii_bridge.simulator.faults import Fault

from .support.bridges import TOKEN, bridge_config_for, write_config
from .support.broker import Mosquitto, Probe, free_port

WRONG = "not-the-token-0000000000000000"


async def get(service: Service, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    url = f"http://127.0.0.1:{service.http_port}{path}"
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers or {}) as r:
        return r.status, await r.text()


async def start(broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, token: str, **sections: dict[str, object]) -> Service:
    service = Service(bridge_config_for(broker.port, sim, tmp_path, **sections), Secret(token), retry=RetryPolicy.instant())
    await service.start()
    return service


async def test_a_refused_token_is_loud_costs_no_calls_and_recovers(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A wrong token: one check at start, an ERROR naming the cause, `unauthorized` on /readyz, bridge/info and
    the budget, commands failing `unauthorized` without a call (a stop is still attempted: one call); once the
    vendor accepts it, commands flow."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe, caplog.at_level(logging.INFO):
        service = await start(broker, sim, tmp_path, WRONG, api={"token_recheck": 1.0, "check_token": True})
        try:
            await probe.wait_for(lambda: service.auth.state == "unauthorized")
            assert any(r.levelno == logging.ERROR and r.msg.startswith("api_unauthorized") for r in caplog.records)
            status, body = await get(service, "/readyz")
            assert status == 503 and '"token":"unauthorized"' in body and '"failing":["api"]' in body
            await probe.wait_for(lambda: any(m.json().get("api") == "unauthorized" for m in probe.on("vpp/bridge/info")))
            await probe.wait_for(lambda: any(m.json()["api"] == "unauthorized" for m in probe.on("vpp/bridge/budget")))
            probe.publish(f"vpp/group/{group_id}/set", {"type": "power_control", "active_power": 100, "duration": 60,
                                                        "timeout": 10, "request_id": "w1"})  # fmt: skip
            failed = await probe.wait_status(f"vpp/group/{group_id}/state", "w1", "failed")
            assert failed["error"]["code"] == "unauthorized"
            assert failed["error"]["message"].startswith("the API refused the token (tokenId is invalid or expired)")
            assert sim.simulator.calls_to("/commandapi/groupControl") == []
            checks = sim.simulator.calls_to("/vppgroup/findAll")
            assert checks and len(checks) == len(sim.simulator.calls)  # the start-up check and 1 s re-checks only
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "w1s"})
            stop = await probe.wait_status(f"vpp/group/{group_id}/state", "w1s", "failed")
            assert stop["error"]["code"] == "unauthorized" and len(sim.simulator.calls_to("/commandapi/groupControl")) == 1
            sim.simulator.config.tokens.append(WRONG)  # the operator fixes the token at the vendor
            await probe.wait_for(lambda: service.auth.state == "authorized", timeout=5)
            await probe.wait_for(lambda: any(m.json().get("api") == "authorized" for m in probe.on("vpp/bridge/info")))
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "w2"})
            await probe.wait_status(f"vpp/group/{group_id}/state", "w2", "completed")
        finally:
            await service.stop()


@pytest.mark.parametrize("answer", ["reject", "http_403"])
async def test_an_answer_that_mentions_a_token_only_makes_the_bridge_check_it(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path, answer: str
) -> None:
    """A control call's answer reads like a token refusal (the vendor echoing the serial `token.invalid`, or a
    stray HTTP 403): that command fails with the vendor's words, one token check follows and finds the token
    accepted, and the next command goes out; nothing is blocked."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        service = await start(broker, sim, tmp_path, TOKEN, api={"check_token": True})
        try:
            await probe.wait_for(lambda: service.auth.state == "authorized")
            checks = len(sim.simulator.calls_to("/vppgroup/findAll"))
            sim.simulator.inject(Fault(answer, path="/commandapi/singleControl",  # type: ignore[arg-type]
                                       message="Inverter token.invalid does not exist"))  # fmt: skip
            probe.publish("vpp/inverter/token.invalid/set", {"type": "power_control", "active_power": 100,
                                                             "duration": 60, "timeout": 10, "request_id": "t1"})  # fmt: skip
            failed = await probe.wait_status("vpp/inverter/token.invalid/state", "t1", "failed")
            assert failed["error"]["code"] in ("api_error", "http_error")
            await probe.wait_for(lambda: len(sim.simulator.calls_to("/vppgroup/findAll")) > checks, timeout=5)
            assert service.auth.state == "authorized"
            probe.publish(f"vpp/group/{group_id}/set", {"type": "power_control", "active_power": 100, "duration": 60,
                                                        "timeout": 10, "request_id": "t2"})  # fmt: skip
            await probe.wait_status(f"vpp/group/{group_id}/state", "t2", "completed")
        finally:
            await service.stop()


async def test_a_corrected_token_file_is_read_again_at_the_next_recheck(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """api.token_file holds a wrong token; the operator corrects the file: the next re-check (1 s) sends the new
    token, the bridge is `authorized` again and commands flow, without a restart."""
    token_file = tmp_path / "token"
    token_file.write_text(WRONG)
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        cfg = bridge_config_for(broker.port, sim, tmp_path, api={"token_recheck": 1.0, "check_token": True,
                                                                  "token_file": str(token_file)})  # fmt: skip
        service = Service(cfg, bridge_config.load_token(cfg.api), retry=RetryPolicy.instant())
        await service.start()
        try:
            await probe.wait_for(lambda: service.auth.state == "unauthorized")
            token_file.write_text(TOKEN + "\n")
            await probe.wait_for(lambda: service.auth.state == "authorized", timeout=5)
            probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "f1"})
            await probe.wait_status(f"vpp/group/{group_id}/state", "f1", "completed")
        finally:
            await service.stop()


def _run_without_env_token(config: Path) -> subprocess.Popen[bytes]:
    """`semookii-bridge run` as a process whose token comes from the file alone."""
    env = {k: v for k, v in os.environ.items() if k != "SEMOOKII_TOKEN"}
    return subprocess.Popen([sys.executable, "-m", "semookii_bridge.cli", "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


async def test_sighup_reads_the_token_file_again_and_checks_it_at_once(
    broker: Mosquitto, sim: RunningSimulator, tmp_path: Path
) -> None:
    """`run` with a wrong token in api.token_file and re-checks 5 minutes apart: after the file is corrected,
    SIGHUP makes the bridge say `authorized` within seconds."""
    import signal

    token_file = tmp_path / "token"
    token_file.write_text(WRONG)
    config = tmp_path / "bridge.toml"
    write_config(config, broker, sim, "bridge-hup", api={"check_token": True, "token_file": token_file},
                 journal={"path": tmp_path / "j.db"}, http={"enabled": False})
    proc = _run_without_env_token(config)
    try:
        with Probe(broker.port) as probe:
            await probe.wait_for(lambda: any(m.json().get("api") == "unauthorized" for m in probe.on("vpp/bridge/info")
                                        if m.payload), timeout=20)  # fmt: skip
            token_file.write_text(TOKEN)
            proc.send_signal(signal.SIGHUP)
            await probe.wait_for(lambda: any(m.json().get("api") == "authorized" for m in probe.on("vpp/bridge/info")
                                        if m.payload), timeout=5)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


async def test_livez_stays_up_while_the_cloud_is_down_and_readyz_says_why(
    make_bridge: Callable[..., Awaitable[Service]], broker: Mosquitto
) -> None:
    """With the API unreachable /livez answers 200 (no restart for a cloud outage); /readyz and /healthz 503."""
    service = await make_bridge(api={"base_url": f"http://127.0.0.1:{free_port()}", "attempts": 1})
    with Probe(broker.port) as probe:
        probe.publish("vpp/group/1/set", {"type": "manual", "action": "stop", "request_id": "down"})
        failed = await probe.wait_status("vpp/group/1/state", "down", "failed")
    assert re.match(r"cannot connect to 127\.0\.0\.1:\d+: .*refused", failed["error"]["message"], re.I)
    assert (await get(service, "/livez"))[0] == 200
    for path in ("/readyz", "/healthz"):
        status, body = await get(service, path)
        assert status == 503 and '"reachable":false' in body


async def test_metrics_follow_the_naming_rules(bridge: Service, broker: Mosquitto, sim: RunningSimulator) -> None:
    """build_info, process metrics, outcomes by code, no `_created`, no -1, no tokens gauge when unlimited."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "charge", "request_id": "bad"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "bad", "rejected")
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "good"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "good", "completed")
    _, text = await get(bridge, "/metrics")
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert re.search(r'^semookii_build_info\{interface="[\d.]+",python="[\d.]+",version="[^"]+"\} 1\.0$', text, re.M)
    assert any(s.startswith("process_resident_memory_bytes ") for s in samples)
    assert 'semookii_commands_finished_total{code="none",status="completed",target="group"} 1.0' in samples
    assert any(re.match(r'semookii_commands_finished_total\{code="validation_error",status="rejected"', s) for s in samples)
    assert 'semookii_command_accept_latency_seconds_count 1.0' in samples
    assert not [s for s in samples if "_created" in s.split(" ")[0]]
    assert not [s for s in samples if s.endswith(" -1.0") or s.endswith(" -1")]
    assert not [s for s in samples if s.startswith("semookii_ratelimit_tokens")]  # unlimited in these tests
    assert not [s for s in samples if s.startswith("semookii_quota_remaining_calls")]  # no daily quota
    assert 'semookii_api_token_state{state="authorized"} 1.0' in samples


async def test_the_status_page_needs_the_token_and_probes_stay_open(
    make_bridge: Callable[..., Awaitable[Service]],
) -> None:
    """With http.auth_token set the page, its data and /metrics answer 401 without it, 200 with it (bearer or
    basic); the probes stay open; `metrics_public` opens /metrics alone."""
    service = await make_bridge(http={"port": 0, "auth_token": "page-secret", "metrics_public": False})
    basic = "Basic " + base64.b64encode(b"anyone:page-secret").decode()
    for path in ("/", "/status.json", "/metrics"):
        assert (await get(service, path))[0] == 401
        assert (await get(service, path, {"Authorization": "Bearer wrong"}))[0] == 401
        assert (await get(service, path, {"Authorization": "Bearer page-secret"}))[0] == 200
        assert (await get(service, path, {"Authorization": basic}))[0] == 200
    for path in ("/livez", "/readyz", "/healthz"):
        assert (await get(service, path))[0] == 200


def test_the_status_page_beyond_loopback_requires_a_token() -> None:
    """http.host 0.0.0.0 without http.auth_token is refused at load, naming the fix."""
    with pytest.raises(bridge_config.ConfigError, match=r"set http\.auth_token"):
        bridge_config.load(None, environ={"SEMOOKII_BRIDGE_HTTP_HOST": "0.0.0.0"})
    cfg = bridge_config.load(None, environ={"SEMOOKII_BRIDGE_HTTP_HOST": "0.0.0.0",
                                            "SEMOOKII_BRIDGE_HTTP_AUTH_TOKEN": "t0ken"})  # fmt: skip
    assert cfg.http.token().reveal() == "t0ken" and bridge_config.redacted(cfg)["http"]["auth_token"] == "***"


async def test_every_answer_carries_the_security_headers_and_the_page_no_inline_script(bridge: Service) -> None:
    """nosniff, no framing and no referrer on the page, its files, its data, the metrics and the probes; the page's
    policy allows only its own script and style files and no framing; those files are served."""
    url = f"http://127.0.0.1:{bridge.http_port}"
    async with aiohttp.ClientSession() as session:
        for path in ("/", "/status.js", "/status.css", "/status.json", "/metrics", "/livez", "/readyz"):
            async with session.get(url + path) as r:
                assert r.status in (200, 503), path
                assert r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["X-Frame-Options"] == "DENY"
                assert r.headers["Referrer-Policy"] == "no-referrer", path
        async with session.get(url + "/") as r:
            csp, page = r.headers["Content-Security-Policy"], await r.text()
        async with session.get(url + "/status.js") as r:
            assert r.content_type == "text/javascript" and "status.json" in await r.text()
    assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "<script>" not in page and "<style>" not in page and "style=" not in page


async def test_the_loopback_page_answers_only_a_loopback_host(bridge: Service) -> None:
    """Without a token on loopback, a request naming another Host (a DNS-rebinding page) gets 421 and no data;
    localhost and 127.0.0.1 are answered, and the probes answer any Host."""
    for host in ("evil.example", "evil.example:80", "localhost.evil.example", "192.168.1.5"):
        for path in ("/", "/status.json", "/metrics"):
            status, body = await get(bridge, path, {"Host": host})
            assert status == 421 and '"wrong_host"' in body, (host, path)
        assert (await get(bridge, "/livez", {"Host": host}))[0] == 200
    for host in ("localhost", f"localhost:{bridge.http_port}", f"127.0.0.1:{bridge.http_port}", "[::1]"):
        assert (await get(bridge, "/status.json", {"Host": host}))[0] == 200, host


async def test_malformed_http_requests_get_400_and_one_debug_line_each(
    bridge: Service, caplog: pytest.LogCaptureFixture
) -> None:
    """A bad method, a bad Content-Length and TLS on the plain port are answered 400 and logged as one DEBUG
    line naming the cause, with no traceback; the server keeps answering."""
    caplog.set_level("DEBUG", logger="aiohttp.server")
    junk = [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40)]
    for request in junk:
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.http_port)
        writer.write(request)
        answer = await reader.read(100)
        writer.close()
        assert answer.startswith(b"HTTP/1.0 400"), answer
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert len(records) == 3 and all(r.levelname == "DEBUG" and not r.exc_info for r in records), records
    assert all(r.getMessage().startswith("http_bad_request status=400 cause=") for r in records)
    assert (await get(bridge, "/livez"))[0] == 200


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.5", "bridge.example", "::ffff:10.0.0.1"])
def test_a_bind_beyond_loopback_without_a_token_is_refused(host: str) -> None:
    """Any address that is not loopback (all interfaces, IPv6 any, a LAN address, a name) needs the token; a blank
    token is no token."""
    for env in ({}, {"SEMOOKII_BRIDGE_HTTP_AUTH_TOKEN": "   "}):
        with pytest.raises(bridge_config.ConfigError, match=r"set http\.auth_token"):
            bridge_config.load(None, environ={"SEMOOKII_BRIDGE_HTTP_HOST": host, **env})


async def test_the_status_data_shows_lifecycle_and_refusals(
    bridge: Service, broker: Mosquitto, sim: RunningSimulator
) -> None:
    """/status.json holds each target's latest command, the refusals with their codes and the budget."""
    group_id = sim.simulator.state.list_groups()[0].id
    with Probe(broker.port) as probe:
        probe.publish(f"vpp/group/{group_id}/set", {"type": "manual", "action": "stop", "request_id": "s1"})
        await probe.wait_status(f"vpp/group/{group_id}/state", "s1", "completed")
        probe.publish("vpp/group/abc/set", {"type": "manual", "action": "stop", "request_id": "s2"})
        probe.publish("vpp/bridge/request/group/rename", {"transaction": "t-9", "group_id": "x"})
        await probe.wait_response("group/rename")
    import json

    doc = json.loads((await get(bridge, "/status.json"))[1])
    latest = {row["target"]: row for row in doc["targets"]}
    assert latest[f"group/{group_id}"]["status"] == "completed" and latest[f"group/{group_id}"]["request_id"] == "s1"
    assert doc["bridge"]["role"] == "leader" and doc["ready"] is True
    assert doc["budget"]["api"] == "authorized" and doc["counts"]["queued"] == 0
    refused, rejected = doc["problems"][0], doc["problems"][1]
    assert refused["target"] == "bridge/request/group/rename" and refused["status"] == "error" and refused["code"]
    assert refused["request_id"] == "t-9"
    assert rejected["status"] == "rejected" and rejected["code"] == "validation_error"
    assert "group/abc" not in latest  # a refused command is not a target's latest
