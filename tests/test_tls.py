"""The bridge over TLS: a throwaway CA, a mosquitto TLS listener, `mqtt.tls_ca` in the configuration."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from semookii_bridge.api import RetryPolicy
from semookii_bridge.config.secret import Secret
from semookii_bridge.service import Service
from semookii_bridge.simulator import RunningSimulator

from .support.bridges import TOKEN, bridge_config_for
from .support.broker import Mosquitto, free_port


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[tuple[Mosquitto, Path]]:
    """mosquitto with only a TLS listener, its certificate signed by a CA made for this test."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    certs = tmp_path / "certs"
    certs.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=certs)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost", "-keyout", "server.key",
            "-out", "server.csr", cwd=certs)  # fmt: skip
    (certs / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
            "-extfile", "san.ext", "-out", "server.crt", cwd=certs)  # fmt: skip
    port = free_port()
    workdir = tmp_path / "broker"
    workdir.mkdir()
    config = (f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\ncafile {certs}/ca.crt\n"
              f"certfile {certs}/server.crt\nkeyfile {certs}/server.key\nset_tcp_nodelay true\nlog_dest none\n")  # fmt: skip
    broker = Mosquitto(workdir, config_text=config, port=port)
    broker.start()
    yield broker, certs
    broker.stop()


async def test_lifecycle_over_tls(tls_broker: tuple[Mosquitto, Path], sim: RunningSimulator, tmp_path: Path) -> None:
    """With mqtt.tls_ca the bridge connects over TLS and a command completes; its states arrive over TLS too."""
    import ssl

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    broker, certs = tls_broker
    config = bridge_config_for(broker.port, sim, tmp_path, mqtt={"tls_ca": str(certs / "ca.crt"), "host": "localhost"})
    service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
    await service.start()
    try:
        group_id = sim.simulator.state.list_groups()[0].id
        received: list[bytes] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.tls_set(ca_certs=str(certs / "ca.crt"), cert_reqs=ssl.CERT_REQUIRED)
        client.on_message = lambda c, u, m: received.append(m.payload)
        client.connect("localhost", broker.port)
        client.loop_start()
        client.subscribe(f"vpp/group/{group_id}/state", qos=1)
        await asyncio.sleep(0.3)
        client.publish(f"vpp/group/{group_id}/set", b'{"type":"manual","action":"stop","request_id":"tls-1"}', qos=1)
        for _ in range(200):
            if any(b'"completed"' in p and b"tls-1" in p for p in received):
                break
            await asyncio.sleep(0.05)
        client.loop_stop()
        client.disconnect()
        assert any(b'"completed"' in p and b"tls-1" in p for p in received)
    finally:
        await service.stop()


async def test_untrusted_broker_certificate_is_refused(
    tls_broker: tuple[Mosquitto, Path], sim: RunningSimulator, tmp_path: Path
) -> None:
    """A CA file that did not sign the broker's certificate: the bridge does not connect."""
    broker, _ = tls_broker
    other = tmp_path / "other"
    other.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other-ca",
            "-keyout", "o.key", "-out", "o.crt", cwd=other)  # fmt: skip
    config = bridge_config_for(broker.port, sim, tmp_path, mqtt={"tls_ca": str(other / "o.crt"), "host": "localhost"})
    service = Service(config, Secret(TOKEN), retry=RetryPolicy.instant())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(service.start(), 2.0)
    await service.stop()
    assert service.link is not None and not service.link.connected
    connector = service.link._connector
    assert connector is None or connector.done(), "the reconnect loop must stop with the service"
