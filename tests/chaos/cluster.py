"""A throwaway PostgreSQL cluster of this machine's server packages, to stop, restart and freeze.

Debian's postgresql-common creates it on a free port (``pg_createcluster``), owned by the
``postgres`` user, trusting loopback connections, never started by the boot scripts, and
drops it afterwards with its data and log. The shared server (port 5432) is never touched:
outages here would break every other test running against it.

``freeze()`` sends SIGSTOP to the postmaster and then to every backend it forked, so
connections stay open and TCP connects still complete (the kernel answers them) while
nothing is ever answered: what a database on a stalled disk or a paused VM looks like.
``thaw()`` sends SIGCONT to the same processes. ``set_read_only()`` makes every
transaction read-only, as on a standby.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.e2e.processes import free_port, run_to_end

CONTROL_SECONDS = 60.0
"""The longest a ``pg_ctlcluster`` or ``pg_createcluster`` call may take."""

SETTINGS = {
    # Two API processes and three workers keep up to 20 pooled connections each.
    "max_connections": "250",
    # Power loss is not under test, so nothing needs to reach the disk. A server crash
    # (an immediate shutdown) is: commits stay synchronous, or the last ones before it
    # would be lost with the server's WAL buffers, and 202s with them.
    "fsync": "off",
    "full_page_writes": "off",
}


def missing_tools() -> str | None:
    """Why no cluster can be created here, or ``None``."""
    for tool in ("pg_createcluster", "pg_ctlcluster", "pg_dropcluster", "pg_lsclusters"):
        if shutil.which(tool) is None:
            return f"{tool} not found (Debian's postgresql-common and a PostgreSQL server)"
    if os.geteuid() != 0:
        return "pg_createcluster needs root to create a cluster owned by postgres"
    if not installed_versions():
        return "no PostgreSQL server version is installed"
    return None


def installed_versions() -> list[str]:
    """The PostgreSQL major versions whose server is installed (Debian's layout), oldest first."""
    servers = Path("/usr/lib/postgresql").glob("*/bin/initdb")
    return sorted((path.parent.parent.name for path in servers), key=int)


@dataclass
class ThrowawayCluster:
    version: str
    name: str
    port: int
    data_dir: Path
    log_file: Path
    _frozen: list[int] = field(default_factory=list)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def conninfo(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    # -- control ------------------------------------------------------------------------

    async def start(self) -> None:
        await self._control("start")

    async def stop(self) -> None:
        """A fast shutdown: open transactions roll back, every connection is closed."""
        await self._control("stop", "fast")

    async def restart(self, mode: str = "fast") -> None:
        """``fast``: a clean shutdown; ``immediate``: the server dies without a checkpoint,
        so it starts with crash recovery (connections meanwhile: "the database system is
        starting up" / "in recovery mode")."""
        await self._control("restart", mode)

    async def _control(self, action: str, mode: str | None = None) -> None:
        command = self._pg_ctlcluster(action, *(["--mode", mode] if mode else []))
        code, stdout, stderr = await run_to_end(command, timeout=CONTROL_SECONDS)
        if code != 0:
            raise RuntimeError(
                f"pg_ctlcluster {action} failed:\n{stdout.decode()}{stderr.decode()}\n"
                + self.log_tail()
            )

    async def set_read_only(self, read_only: bool) -> None:
        """Make every transaction read-only (or writable again), as on a standby a failover
        pointed the service at: sessions already open follow at their next statement, once
        the server has reloaded its configuration."""
        change = "SET" if read_only else "RESET"
        async with await psycopg.AsyncConnection.connect(self.conninfo(), autocommit=True) as conn:
            setting = "default_transaction_read_only" + (" = on" if read_only else "")
            await conn.execute(f"ALTER SYSTEM {change} {setting}".encode())
            await conn.execute(b"SELECT pg_reload_conf()")

    def _pg_ctlcluster(self, action: str, *options: str) -> list[str]:
        return [
            "pg_ctlcluster",
            "--skip-systemctl-redirect",
            *options,
            self.version,
            self.name,
            action,
        ]

    def postmaster_pid(self) -> int | None:
        with suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        return None

    # -- freezing -----------------------------------------------------------------------

    def freeze(self) -> list[int]:
        """SIGSTOP the postmaster, then every process it forked; the pids stopped."""
        postmaster = self.postmaster_pid()
        if postmaster is None:
            raise RuntimeError(f"cluster {self.name} is not running")
        os.kill(postmaster, signal.SIGSTOP)
        self._frozen.append(postmaster)
        # A stopped postmaster forks nothing more, so one more pass finds any child that
        # was being forked during the first.
        for _ in range(2):
            for child in children_of(postmaster):
                if child not in self._frozen:
                    with suppress(ProcessLookupError):
                        os.kill(child, signal.SIGSTOP)
                        self._frozen.append(child)
        return list(self._frozen)

    def thaw(self) -> None:
        """SIGCONT to every frozen process (backends first, the postmaster last)."""
        for pid in reversed(self._frozen):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen.clear()

    # -- logs ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        with suppress(OSError):
            text = self.log_file.read_text(errors="replace")
            return f"--- postgres {self.name} log ---\n" + "\n".join(text.splitlines()[-lines:])
        return f"(no postgres log at {self.log_file})"


def children_of(parent: int) -> list[int]:
    """The pids whose parent is ``parent``, read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(entry.name))
    return found


@contextmanager
def throwaway_cluster() -> Iterator[ThrowawayCluster]:
    """Create and start a cluster; thaw, stop and drop it on the way out, whatever happened."""
    version = installed_versions()[-1]
    name = f"chaos_{secrets.token_hex(4)}"
    port = free_port()
    options = [option for guc, value in SETTINGS.items() for option in ("-o", f"{guc}={value}")]
    subprocess.run(
        [
            "pg_createcluster", version, name, "--port", str(port), "--start-conf=manual",
            "--quiet", *options, "--", "--auth=trust", "--no-sync",
        ],
        check=True, capture_output=True, timeout=CONTROL_SECONDS,
    )  # fmt: skip
    cluster: ThrowawayCluster | None = None
    try:
        data_dir, log_file = _paths(version, name)
        cluster = ThrowawayCluster(version, name, port, data_dir, log_file)
        subprocess.run(cluster._pg_ctlcluster("start"), check=True, timeout=CONTROL_SECONDS)
        yield cluster
    finally:
        if cluster is not None:
            cluster.thaw()
        subprocess.run(
            ["pg_dropcluster", "--stop", version, name],
            check=False, capture_output=True, timeout=CONTROL_SECONDS,
        )  # fmt: skip


def _paths(version: str, name: str) -> tuple[Path, Path]:
    """The data directory and log file postgresql-common chose for the cluster."""
    listed = subprocess.run(
        ["pg_lsclusters", "--no-header", version, name],
        check=True, capture_output=True, text=True, timeout=CONTROL_SECONDS,
    ).stdout.split()  # fmt: skip
    # version, cluster, port, status, owner, data directory, log file
    return Path(listed[5]), Path(listed[6])
