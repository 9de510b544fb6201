"""The README's "Try it by hand" block, run line by line as a new user would (each port it names replaced by
a free one, the status page's too): the group list answers, and the command it publishes is followed to
`completed`."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .support.broker import free_port, mosquitto_binary, wait_port

ROOT = Path(__file__).resolve().parents[1]
PORT = re.compile(r"(?<=--port )\d+|(?<=--mqtt-port )\d+|(?<=-p )\d+|(?<=127\.0\.0\.1:)\d+")
"""A port as the block's commands name it."""


def block() -> list[str]:
    """The commands of the README's by-hand block (continuations joined, comments and output lines dropped)."""
    text = (ROOT / "README.md").read_text()
    body = text.split("## Try it by hand", 1)[1].split("```sh\n", 1)[1].split("```", 1)[0]
    lines = body.replace("\\\n", " ").splitlines()
    return [re.sub(r"\s+# .*$", "", line).strip() for line in lines if line.strip() and not line.startswith("#")]


def sample_answer() -> str:
    """The README's sample of the group list's answer (the comment line after mosquitto_rr), without its `...`."""
    text = (ROOT / "README.md").read_text().split("## Try it by hand", 1)[1]
    line = text.split("mosquitto_rr", 1)[1].splitlines()[1]
    return line.removeprefix("# ").removesuffix("...")


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    """Every line of the block runs; mosquitto_rr prints the group the next lines command, beginning as the
    README's sample does, and the subscription shows that command's states up to `completed`."""
    if mosquitto_binary() is None or shutil.which("mosquitto_rr") is None:
        pytest.fail("mosquitto and mosquitto-clients are needed: `make test` installs them")
    ports = {port: free_port() for line in block() for port in PORT.findall(line)}
    page = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEMOOKII_BRIDGE_", "SEMOOKII_TOKEN"))}
    env.update(PATH=f"{Path(sys.executable).parent}:{os.path.dirname(mosquitto_binary() or '')}:{env['PATH']}",
               SEMOOKII_BRIDGE_HTTP_PORT=str(page), SEMOOKII_BRIDGE_JOURNAL_PATH=str(tmp_path / "j.db"))
    background: list[subprocess.Popen[bytes]] = []
    outputs: list[str] = []
    try:
        for line in block():
            if line.startswith(". .venv/bin/activate"):
                continue  # the test runs with this interpreter's environment already
            line = PORT.sub(lambda m: str(ports[m.group()]), line)
            if line.endswith("&"):
                log = (tmp_path / f"bg{len(background)}.log").open("wb")
                background.append(subprocess.Popen(["bash", "-c", line[:-1]], env=env, stdout=log, stderr=log,
                                                   cwd=tmp_path, start_new_session=True))  # fmt: skip
                if " run " in line:
                    assert wait_port(page)
                    time.sleep(1.0)  # connected, subscribed
                elif line.startswith(("semookii-bridge simulate", "mosquitto -p")):
                    assert wait_port(int(PORT.findall(line)[0]))
                else:
                    time.sleep(0.5)  # a subscriber: let it subscribe
                continue
            done = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=30,
                                  cwd=tmp_path)  # fmt: skip
            assert done.returncode == 0, (line, done.stdout, done.stderr)
            outputs.append(done.stdout)
        group = re.search(r"vpp/group/(\d+)/set", " ".join(block())).group(1)  # type: ignore[union-attr]
        assert '"status":"ok"' in outputs[0] and f'"id":"{group}"' in outputs[0]
        assert outputs[0].startswith(sample_answer()), (sample_answer(), outputs[0])
        states = tmp_path / f"bg{len(background) - 1}.log"
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and '"status":"completed"' not in states.read_text():
            time.sleep(0.1)
        seen = re.findall(r'"request_id":"r-42","status":"(\w+)"', states.read_text())
        assert seen == ["queued", "accepted", "dispatched", "completed"], states.read_text()
    finally:
        for proc in background:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
