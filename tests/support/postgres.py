"""A throwaway PostgreSQL 15 server for the tests: initdb in a temp dir (as the `postgres` user when run as
root, since initdb refuses root), on a free loopback port, trust authentication, fsync off."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from .broker import free_port


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server program from Debian's package (not on PATH there)."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Postgres:
    """`start()`, `url`, `stop()`; `kill()` and `start()` again for a crash; `sql()` runs one statement."""

    def __init__(self) -> None:
        # Its own directory under /tmp: pytest's tmp_path is private to root, where the server's user cannot go.
        self.workdir = Path(tempfile.mkdtemp(prefix="semookii-pg-"))
        self.data = self.workdir / "pgdata"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._init()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _init(self) -> None:
        initdb = pg_bin("initdb")
        if initdb is None:
            raise RuntimeError("PostgreSQL is not installed; `make test` installs it")
        self.data.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
            shutil.chown(self.data, "postgres")
        subprocess.run(_as_owner([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                                  "--no-sync"]), check=True, stdout=subprocess.DEVNULL, timeout=120)  # fmt: skip

    def start(self) -> None:
        postgres = pg_bin("postgres")
        assert postgres is not None
        argv = [postgres, "-D", str(self.data), "-p", str(self.port), "-k", str(self.workdir), "-c",
                "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off", "-c",
                "synchronous_commit=on", "-c", "max_connections=50"]  # fmt: skip
        log = (self.workdir / "postgres.log").open("ab")
        self.proc = subprocess.Popen(_as_owner(argv), stdout=log, stderr=log, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run([pg_bin("pg_isready") or "pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not start; see {self.workdir / 'postgres.log'}")

    def stop(self) -> None:
        """A fast shutdown (SIGINT): open transactions are rolled back, clients disconnected."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            self.proc.wait(30)
        self.proc = None

    def remove(self) -> None:
        """Stop and delete the data directory."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the whole server, as a crashed host would leave it."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None

    def sql(self, statement: str) -> str:
        """Run one statement with psql; its unaligned output."""
        psql = shutil.which("psql") or pg_bin("psql") or "psql"
        out = subprocess.run([psql, self.url, "-XAtc", statement], capture_output=True, text=True, timeout=30,
                             check=True)  # fmt: skip
        return out.stdout.strip()
