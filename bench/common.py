"""What every benchmark shares: processes, databases, the machine, payloads and the table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
from sqlalchemy.engine import make_url

from crohooks.settings import Settings

CLI = (sys.executable, "-m", "crohooks.cli")
ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "bench-secret-of-at-least-thirty-two-bytes!"
TENANT = 34
SECRET = "VGhlIGxhenkgYnJvd24gZG9n"
POSTGRES_ADMIN_URL = os.environ.get(
    "CROHOOKS_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
PROFILE_DIR = os.environ.get("CROHOOKS_BENCH_PROFILE")
"""When set, every crohooks process is sampled by py-spy into ``<dir>/<name>.txt``."""
STARTUP_SECONDS = 60.0
RATE_LIMIT = 1_000_000_000
STOP_SECONDS = 30.0


class BenchError(RuntimeError):
    """A benchmark could not run; its message says why."""


# -- payloads -------------------------------------------------------------------------


def event_data(number: int) -> dict[str, Any]:
    """A Job event of a typical size (about 400 bytes rendered)."""
    return {
        "job_id": 100000 + number,
        "status": "dispatched",
        "customer": {"id": 4711, "name": "Acme Building Supply", "phone": "+1 555 0100"},
        "location": {
            "address": "1200 Industrial Pkwy",
            "city": "Springfield",
            "state": "IL",
            "zip": "62704",
        },
        "truck": {"id": 17, "plate": "IL-4471-TX"},
        "scheduled_for": "2022-08-20T14:30:00.000000",
        "notes": "Deliver to the loading dock at the back of the building.",
    }


# -- the machine ----------------------------------------------------------------------


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy since boot (all processes, all cores):
    user, nice, system, irq, softirq and steal from ``/proc/stat``."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    busy = sum(int(fields[index]) for index in (1, 2, 3, 6, 7, 8))
    return busy / os.sysconf("SC_CLK_TCK")


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bench_env() -> dict[str, str]:
    """This environment, able to import ``bench`` from any working directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def process_env(database_url: str, **settings: object) -> dict[str, str]:
    """This environment without crohooks settings or proxies, plus a crohooks configuration."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("CROHOOKS_") and "PROXY" not in name.upper()
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["PYTHONUNBUFFERED"] = "1"
    env["CROHOOKS_DATABASE_URL"] = database_url
    env["CROHOOKS_JWT_SECRET"] = JWT_SECRET
    env["CROHOOKS_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    env["CROHOOKS_LOG_FORMAT"] = "json"
    env["CROHOOKS_LOG_LEVEL"] = "INFO"
    # The rate limits stay on (their bookkeeping is part of every request's cost) but
    # high enough never to refuse the benchmarks' load.
    env["CROHOOKS_RATE_LIMIT_API_PER_MINUTE"] = str(RATE_LIMIT)
    env["CROHOOKS_RATE_LIMIT_PING_PER_MINUTE"] = str(RATE_LIMIT)
    for name, value in settings.items():
        env[f"CROHOOKS_{name.upper()}"] = str(value)
    return env


def settings_for(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "jwt_secret": JWT_SECRET,
        "allowed_networks": "127.0.0.0/8",
    }
    values.update(overrides)
    return Settings(**values)


@dataclass
class Process:
    """A child process the benchmarks started; ``stop()`` or the context manager ends it."""

    name: str
    process: asyncio.subprocess.Process
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_mib(self) -> float:
        """Resident set size, from /proc (Linux)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise BenchError(f"no VmRSS for {self.name}")
        return int(match.group(1)) / 1024.0

    async def stop(self) -> None:
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(STOP_SECONDS):
                    await self.process.wait()
            except TimeoutError:
                self.process.kill()
                await self.process.wait()

    async def kill(self) -> None:
        if self.running:
            self.process.kill()
        await self.process.wait()


@asynccontextmanager
async def started(
    name: str, args: Sequence[str], *, env: Mapping[str, str], workdir: Path, pipe: bool = False
) -> AsyncIterator[Process]:
    """Start a child process; it is killed and reaped on the way out whatever happened."""
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *args,
            cwd=workdir,
            env=dict(env),
            stdout=asyncio.subprocess.PIPE if pipe else out,
            stderr=out if pipe else asyncio.subprocess.STDOUT,
        )
    running = Process(name, process, log)
    profiled = len(args) > 2 and args[1] == "-m" and args[2] in ("crohooks.cli", "bench.server")
    profiler = await _profile(name, process.pid) if profiled else None
    try:
        yield running
    finally:
        await running.kill()
        if profiler is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(STOP_SECONDS):
                    await profiler.wait()


async def _profile(name: str, pid: int) -> asyncio.subprocess.Process | None:
    """Attach py-spy (raw, collapsed stacks) to a crohooks process, if profiling is on."""
    if not PROFILE_DIR:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(PROFILE_DIR) / f"{name}-{pid}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    return await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--threads",
        "--output", str(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


@asynccontextmanager
async def receiver(workdir: Path) -> AsyncIterator[Receiver]:
    """The counting receiver (``bench.receiver``) in a process of its own."""
    args = (sys.executable, "-m", "bench.receiver")
    async with started("receiver", args, env=bench_env(), workdir=workdir, pipe=True) as process:
        assert process.process.stdout is not None
        async with asyncio.timeout(STARTUP_SECONDS):
            line = (await process.process.stdout.readline()).decode()
        if not line.startswith("ready "):
            raise BenchError(f"the receiver did not start: {line!r}\n{process.log_tail()}")
        found = Receiver(process, int(line.split()[1]))
        async with aiohttp.ClientSession() as http:
            found.http = http
            try:
                yield found
            finally:
                await process.stop()


@dataclass
class Receiver:
    process: Process
    port: int
    http: aiohttp.ClientSession | None = None

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def count(self) -> tuple[int, int]:
        """Requests received and distinct ``webhook-id``s among them."""
        assert self.http is not None
        async with self.http.get(self.url_for("/_count")) as response:
            requests, unique = (await response.text()).split()
            return int(requests), int(unique)

    async def latencies(self) -> list[float]:
        """Seconds from each delivery's scheduled send time to its first arrival."""
        assert self.http is not None
        async with self.http.get(self.url_for("/_latencies")) as response:
            return [float(line) for line in (await response.text()).split()]

    async def reset(self) -> None:
        assert self.http is not None
        async with self.http.post(self.url_for("/_reset")) as response:
            await response.read()


async def run_cli(*args: str, env: Mapping[str, str], workdir: Path) -> str:
    process = await asyncio.create_subprocess_exec(
        *CLI, *args, cwd=workdir, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    stdout, stderr = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"crohooks {' '.join(args)} failed:\n{stderr.decode()}")
    return stdout.decode()


async def wait_http_ready(base_url: str, process: Process) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if not process.running:
                raise BenchError(f"{process.name} exited\n{process.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.options(f"{base_url}/hooks") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise BenchError(f"{process.name} did not answer within {STARTUP_SECONDS} s")


async def wait_log(process: Process, text: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if text in process.log.read_text(errors="replace"):
            return
        if not process.running:
            raise BenchError(f"{process.name} exited\n{process.log_tail()}")
        await asyncio.sleep(0.05)
    raise BenchError(f"{process.name} logged no {text!r} within {STARTUP_SECONDS} s")


def api_process_args(port: int) -> list[str]:
    """``bench.server``: the crohooks app plus a bare endpoint, served like ``crohooks serve``."""
    return [sys.executable, "-m", "bench.server", str(port)]


@asynccontextmanager
async def api_process(
    name: str, env: Mapping[str, str], workdir: Path, *, worker: bool
) -> AsyncIterator[str]:
    """``crohooks serve`` on a free port (with its in-process worker if asked); its base URL."""
    port = free_port()
    args = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)]
    if not worker:
        args.append("--no-worker")
    async with started(name, args, env=env, workdir=workdir) as process:
        base_url = f"http://127.0.0.1:{port}"
        await wait_http_ready(base_url, process)
        try:
            yield base_url
        finally:
            await process.stop()


# -- databases ------------------------------------------------------------------------


def _admin_conninfo() -> str:
    return make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=False)


def postgres_problem() -> str | None:
    """Why PostgreSQL can't be used, or ``None`` when it can."""
    try:
        with psycopg.connect(_admin_conninfo(), connect_timeout=3):
            return None
    except psycopg.Error as error:
        return str(error).strip().splitlines()[0]


@contextmanager
def postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sync_query(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    """One short query straight through the driver (for polling progress)."""
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
            return list(conn.execute(sql))
    conninfo = make_url(database_url).set(drivername="postgresql")
    with psycopg.connect(conninfo.render_as_string(hide_password=False)) as conn:
        return list(conn.execute(sql))


# -- the machine ----------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with contextlib.suppress(OSError, AttributeError):
        match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        if match:
            ram = f"{int(match.group(1)) / 1024 / 1024:.1f} GiB"
    postgres = "unreachable"
    with (
        contextlib.suppress(psycopg.Error),
        psycopg.connect(_admin_conninfo(), connect_timeout=3) as conn,
    ):
        row = conn.execute("SHOW server_version").fetchone()
        postgres = str(row[0]) if row else "unknown"
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "ram": ram,
        "os": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres,
    }


# -- figures --------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    """One line of the results table."""

    benchmark: str
    measured: str
    baseline: str
    result: str
    target: str
    met: bool | None
    notes: list[str] = field(default_factory=list)


def render_table(rows: Sequence[Row]) -> str:
    header = ("benchmark", "crohooks", "baseline", "result", "target", "met")
    lines = [
        (
            row.benchmark,
            row.measured,
            row.baseline,
            row.result,
            row.target,
            "n/a" if row.met is None else ("yes" if row.met else "NO"),
        )
        for row in rows
    ]
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    out = [fmt(header), fmt(["-" * w for w in widths])]
    out.extend(fmt(line) for line in lines)
    return "\n".join(out)


def render_markdown(rows: Sequence[Row]) -> str:
    out = [
        "| benchmark | crohooks | baseline | result | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = "n/a" if row.met is None else ("yes" if row.met else "**no**")
        out.append(
            f"| {row.benchmark} | {row.measured} | {row.baseline} | {row.result} | "
            f"{row.target} | {met} |"
        )
    return "\n".join(out)
