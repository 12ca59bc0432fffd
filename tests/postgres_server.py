"""A throwaway PostgreSQL server on loopback for the leaderboard's PostgreSQL cases.

Started from Debian's own binaries (`initdb`, `pg_ctl`) in a fresh folder under /tmp, on a free
port, with trust authentication for one database; stopped and removed after the module. As
root it runs as the `postgres` user (PostgreSQL refuses root). Where the binaries or the
driver are missing the cases are skipped with the reason, never counted as passed.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from test_leaderboard_helpers import free_port


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


class Postgres:
    """``with Postgres() as pg: pg.url`` -> ``postgresql+psycopg://lb@127.0.0.1:PORT/lb``."""

    def __init__(self):
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (Debian: postgresql)")
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pytest.skip("the psycopg driver is not installed (the `server` extra brings it)")
        self.as_user: list[str] = []
        self.owner = None
        if os.geteuid() == 0:               # initdb refuses root: run the server as `postgres`
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` user to run PostgreSQL as")
            self.as_user, self.owner = ["runuser", "-u", "postgres", "--"], (pw.pw_uid, pw.pw_gid)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="datacurate-pg-"))
        self.url = f"postgresql+psycopg://lb@127.0.0.1:{self.port}/lb"

    def _run(self, *argv: str) -> None:
        r = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=120)
        if r.returncode:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({r.returncode}): {(r.stdout + r.stderr)[-2000:]}")

    def __enter__(self) -> "Postgres":
        if self.owner:
            os.chown(self.root, *self.owner)
        data = self.root / "data"
        self._run(self.initdb, "-D", str(data), "-A", "trust", "-U", "lb", "-E", "UTF8", "--no-sync")
        self._run(self.pg_ctl, "-D", str(data), "-l", str(self.root / "server.log"), "-w", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -F", "start")
        import psycopg

        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=lb dbname=postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE lb")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._run(self.pg_ctl, "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
