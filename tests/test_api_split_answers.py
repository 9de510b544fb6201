"""Answers that arrive in pieces: the client reads each whole, over plain TCP and TLS, up to the size limit."""

from __future__ import annotations

import asyncio
import json
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from semookii_bridge.api import BadResponse, CloudClient, ControlParams, RetryPolicy
from semookii_bridge.api import answers as client_module
from semookii_bridge.config.secret import Secret

PARAMS = ControlParams(super_type=2, mode=3, manual_mode=0)


class SplitServer:
    """An HTTP/1.1 server that writes each answer in the given pieces, `gap` seconds apart."""

    def __init__(self, pieces: Sequence[bytes], gap: float, *, chunked: bool = False) -> None:
        self.pieces, self.gap, self.chunked = pieces, gap, chunked
        self.requests = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
            await reader.readexactly(length)
            self.requests += 1
            body = b"".join(self.pieces)
            framing = b"Transfer-Encoding: chunked" if self.chunked else b"Content-Length: %d" % len(body)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + framing + b"\r\n\r\n")
            for piece in self.pieces:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece)
                await writer.drain()
                await asyncio.sleep(self.gap)
            if self.chunked:
                writer.write(b"0\r\n\r\n")
            await writer.drain()


async def serve(server: SplitServer, tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    return srv, srv.sockets[0].getsockname()[1]


def pieces_of(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


@pytest.fixture
async def answer() -> AsyncIterator[object]:
    servers: list[asyncio.Server] = []

    async def start(server: SplitServer, tls: ssl.SSLContext | None = None, scheme: str = "http") -> str:
        srv, port = await serve(server, tls)
        servers.append(srv)
        return f"{scheme}://127.0.0.1:{port}"

    yield start
    for srv in servers:
        srv.close()


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_control_answer_in_two_writes_is_one_answer(answer: object, chunked: bool) -> None:
    """`{"success":true,"result":<id>}` sent in two writes 300 ms apart is the command id, sent once."""
    server = SplitServer([b'{"success":true,"result":', b"1028902640000123456}"], 0.3, chunked=chunked)
    url = await answer(server)  # type: ignore[operator]
    async with CloudClient(url, Secret("t"), timeout=5, retry=RetryPolicy.instant()) as c:
        assert await c.group_control("1", PARAMS) == "1028902640000123456"
    assert server.requests == 1


async def test_a_large_list_in_small_pieces_is_read_whole(answer: object) -> None:
    """A 200 KB group list written in 4 KB pieces 10 ms apart decodes completely."""
    rows = [{"id": str(10**18 + i), "name": f"group-{i:06d}-" + "x" * 40} for i in range(3000)]
    body = json.dumps({"success": True, "result": {"num": len(rows), "list": rows}}).encode()
    assert len(body) > 200_000
    url = await answer(SplitServer(pieces_of(body, 4096), 0.002))  # type: ignore[operator]
    async with CloudClient(url, Secret("t"), timeout=10, retry=RetryPolicy.instant()) as c:
        page = await c.group_find_all(1, 3000)
    assert len(page.items) == 3000 and page.items[-1].name == rows[-1]["name"]


async def test_an_answer_over_the_size_limit_is_a_bad_response(answer: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body larger than MAX_BODY is refused as `bad_response`, with or without a Content-Length."""
    monkeypatch.setattr(client_module, "MAX_BODY", 1000)
    body = json.dumps({"success": True, "result": {"num": 1, "list": [{"id": "1", "name": "y" * 2000}]}}).encode()
    for chunked in (False, True):
        url = await answer(SplitServer(pieces_of(body, 300), 0.001, chunked=chunked))  # type: ignore[operator]
        async with CloudClient(url, Secret("t"), timeout=5, retry=RetryPolicy.instant()) as c:
            with pytest.raises(BadResponse, match="exceeds 1000"):
                await c.group_find_all(1, 10)


@pytest.fixture
def server_cert(tmp_path: Path) -> Path:
    """A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in the returned directory)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", "key.pem", "-out", "cert.pem"],
                   cwd=tmp_path, check=True, capture_output=True, timeout=60)  # fmt: skip
    return tmp_path


async def test_a_split_answer_over_tls_is_read_whole(answer: object, server_cert: Path) -> None:
    """Over TLS, a body larger than one 16 KB record and sent in pieces is read whole."""
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(server_cert / "cert.pem", server_cert / "key.pem")
    rows = [{"id": str(10**18 + i), "name": "z" * 60} for i in range(1000)]
    body = json.dumps({"success": True, "result": {"num": len(rows), "list": rows}}).encode()
    url = await answer(SplitServer(pieces_of(body, 20_000), 0.01), tls, "https")  # type: ignore[operator]
    trust = ssl.create_default_context(cafile=str(server_cert / "cert.pem"))
    async with CloudClient(url, Secret("t"), timeout=10, retry=RetryPolicy.instant(), ssl_context=trust) as c:
        page = await c.group_find_all(1, 1000)
    assert len(page.items) == 1000
