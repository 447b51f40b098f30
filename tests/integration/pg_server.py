"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb and pg_ctl in a temp dir.

It listens on 127.0.0.1 only (and a Unix socket inside its own folder), on a free port, trusts local
connections (no password: nothing but this machine can reach it), and is removed by `stop()`.
PostgreSQL refuses to run as root: as root the cluster runs as an unprivileged user (`PGTEST_USER`,
default `nobody`) through `runuser`. `PG_BIN` names the folder of initdb/pg_ctl when they are not on
PATH nor under /usr/lib/postgresql/*/bin. `ORCHESTRATOR_TEST_PG=postgresql://...` uses a server that
is already running instead (its user must be allowed to CREATE DATABASE).

`fast=True` (tests) turns fsync off: a test database need not survive a power cut. Benchmarks keep
PostgreSQL's durable defaults.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

__all__ = ["PgCluster", "find_bin_dir", "why_unavailable"]

_names = itertools.count(1)


def find_bin_dir() -> Path | None:
    """The folder with initdb and pg_ctl, or None when PostgreSQL is not installed."""
    if os.environ.get("PG_BIN"):
        given = Path(os.environ["PG_BIN"])
        return given if (given / "initdb").exists() and (given / "pg_ctl").exists() else None
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def why_unavailable() -> str | None:
    """Why no cluster can be had here (None: one can)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    if os.environ.get("ORCHESTRATOR_TEST_PG"):
        return None
    if find_bin_dir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) are not installed (apt-get install postgresql)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgCluster:
    admin_url: str  # a superuser on the maintenance database
    root: Path | None = None  # None: an external server
    bin_dir: Path | None = None
    run_as: str | None = None
    port: int = 0
    created: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, *, fast: bool = True) -> PgCluster:
        external = os.environ.get("ORCHESTRATOR_TEST_PG")
        if external:
            return cls(admin_url=external)
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(why_unavailable() or "no PostgreSQL")
        run_as = os.environ.get("PGTEST_USER", "nobody") if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="orch-pg-"))
        if run_as:
            shutil.chown(root, user=run_as)
        cluster = cls(admin_url="", root=root, bin_dir=bin_dir, run_as=run_as)
        try:
            cluster._run(
                "initdb",
                "-D",
                str(root / "data"),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            opts = [
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={root}",
                "-c max_connections=200",
            ]
            if fast:
                opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
            for _attempt in range(3):  # a free port can be taken between the probe and the start
                port = _free_port()
                done = cluster._run(
                    "pg_ctl", "-D", str(root / "data"), "-l", str(root / "log"), "-w", "-t", "30",
                    "-o", " ".join([*opts, f"-c port={port}"]), "start", check=False,
                )  # fmt: skip
                if done.returncode == 0:
                    cluster.port = port
                    cluster.admin_url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
                    return cluster
            log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()} {log}")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert self.bin_dir is not None
        cmd = [str(self.bin_dir / tool), *args]
        if self.run_as:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        env = {**os.environ, "LC_ALL": "C.UTF-8", "HOME": str(self.root)}
        # cwd: the unprivileged user may not be allowed into the caller's folder
        return subprocess.run(
            cmd, capture_output=True, text=True, check=check, env=env, timeout=120, cwd=self.root
        )

    def url(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"{prefix}_{next(_names)}_{secrets.token_hex(3)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.created.append(name)
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    def stop_server(self) -> None:
        """Stop the server the way an administrator restarting it does (`-m fast`: sessions are ended,
        what they had not committed rolled back), keeping its data; `start_server()` brings it back."""
        assert self.root is not None, "a server started elsewhere (ORCHESTRATOR_TEST_PG) is not ours to stop"
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def start_server(self) -> None:
        """Start the server `stop_server()` stopped, on the same port with the same options (the ones
        postgres wrote to postmaster.opts: its binary, -D and the data folder, then the -c settings)."""
        assert self.root is not None, "a server started elsewhere (ORCHESTRATOR_TEST_PG) is not ours to start"
        data = self.root / "data"
        options = shlex.split((data / "postmaster.opts").read_text())[3:]
        self._run(
            "pg_ctl", "-D", str(data), "-l", str(self.root / "log"), "-w", "-t", "30",
            "-o", shlex.join(options), "start",
        )  # fmt: skip

    def stop(self) -> None:
        """Stop the server and remove its folder (an external server: drop the databases made here)."""
        if self.root is None:
            for name in list(self.created):
                self.drop_database(self.url(name))
            return
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
