"""Real ``crohooks`` processes for end-to-end tests, always stopped, with logs kept on disk.

Every process is ``sys.executable -m crohooks.cli ...`` in a clean environment (no
``CROHOOKS_*`` variable or proxy inherited), its stdout and stderr in one log file. The
context managers kill and reap whatever is still running when they exit, so a failing
test leaves no process behind; a test that wants a clean stop calls ``stop()`` itself and
checks the exit code.

Waits are polls with a deadline: they end early when the process exits, and a timeout
fails the test with the log's tail.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Row
from sqlalchemy.pool import NullPool

from crohooks.store.migrate import sync_url
from tests.conftest import TEST_JWT_SECRET

CLI = (sys.executable, "-m", "crohooks.cli")
STARTUP_SECONDS = 30.0
STOP_SECONDS = 20.0
POLL_SECONDS = 0.05
TENANT = 34


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def process_env(database_url: str, **settings: str | float) -> dict[str, str]:
    """This environment without crohooks settings or proxies, plus a crohooks configuration.

    ``settings`` are ``CROHOOKS_<NAME>`` values: ``lease_seconds=2`` sets
    ``CROHOOKS_LEASE_SECONDS=2``.
    """
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("CROHOOKS_") and "PROXY" not in name.upper()
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["PYTHONUNBUFFERED"] = "1"
    env["CROHOOKS_DATABASE_URL"] = database_url
    env["CROHOOKS_JWT_SECRET"] = TEST_JWT_SECRET
    env["CROHOOKS_ALLOWED_NETWORKS"] = "127.0.0.0/8"
    env["CROHOOKS_LOG_FORMAT"] = "json"
    for name, value in settings.items():
        env[f"CROHOOKS_{name.upper()}"] = str(value)
    return env


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def run_to_end(
    command: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[int, bytes, bytes]:
    """Run a short command to its end: its exit code, stdout and stderr. One that is still
    running after ``timeout`` is killed and reaped, and ``TimeoutError`` raised."""
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def run_cli(*args: str, env: Mapping[str, str], cwd: Path, timeout: float = 60.0) -> str:
    """Run one short ``crohooks`` command to its end; its stdout, or the test fails."""
    code, stdout, stderr = await run_to_end([*CLI, *args], timeout=timeout, env=env, cwd=cwd)
    if code != 0:
        pytest.fail(f"crohooks {' '.join(args)} exited with {code}:\n{stderr.decode()}")
    return stdout.decode()


async def mint_token(env: Mapping[str, str], cwd: Path) -> str:
    """A System + Admin token for the test tenant, from ``crohooks token``."""
    printed = await run_cli(
        "token", "--sub", "e2e", "--role", "System", "--role", "Admin",
        "--tenant", str(TENANT), env=env, cwd=cwd,
    )  # fmt: skip
    return printed.strip()


class Crohooks:
    """One running ``crohooks`` process."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.process = process
        self.log = log

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (other lines are skipped)."""
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            with suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records

    def log_tail(self) -> str:
        return f"--- {self.name} (pid {self.pid}) log ---\n{tail(self.log)}"

    async def wait_for_log(self, event: str, timeout: float = STARTUP_SECONDS) -> dict[str, Any]:
        """The first log record whose ``event`` is ``event``, waiting (bounded) for it."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.log_lines():
                if record.get("event") == event:
                    return record
            if not self.running:
                pytest.fail(f"{self.name} exited with {self.process.returncode}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                pytest.fail(f"{self.name} logged no {event!r} in {timeout} s\n{self.log_tail()}")
            await self.pause()

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        if self.running:
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self, timeout: float = STOP_SECONDS) -> int:
        """SIGTERM and wait for a clean exit; a process that hangs fails the test."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.process.wait()
        except TimeoutError:
            await self.kill()
            pytest.fail(
                f"{self.name} did not stop within {timeout} s of SIGTERM\n{self.log_tail()}"
            )

    async def pause(self) -> None:
        """A short poll interval that ends early if the process exits."""
        with suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):
                await self.process.wait()


@asynccontextmanager
async def started(
    name: str, args: Sequence[str], *, env: Mapping[str, str], logdir: Path
) -> AsyncIterator[Crohooks]:
    """Start ``crohooks <args>``; on the way out, kill and reap it if it still runs."""
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            *CLI, *args, cwd=logdir, env=dict(env), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    running = Crohooks(name, process, log)
    try:
        yield running
    finally:
        await running.kill()


@dataclass(frozen=True)
class Api:
    """A ``crohooks serve --no-worker`` process that answers (once ready) on ``base_url``."""

    process: Crohooks
    base_url: str

    async def ready(self) -> None:
        """Wait (bounded) until it answers ``OPTIONS /hooks``."""
        process = self.process
        deadline = time.monotonic() + STARTUP_SECONDS
        async with httpx.AsyncClient(trust_env=False, timeout=1.0) as http:
            while time.monotonic() < deadline:
                if not process.running:
                    pytest.fail(
                        f"{process.name} exited with {process.process.returncode}\n"
                        + process.log_tail()
                    )
                with suppress(httpx.TransportError):
                    if (await http.options(f"{self.base_url}/hooks")).status_code == 200:
                        return
                await process.pause()
        pytest.fail(f"{process.name} did not answer in {STARTUP_SECONDS} s\n{process.log_tail()}")

    async def stop(self) -> None:
        """Stop it with SIGTERM and check it went cleanly.

        uvicorn shuts down gracefully on SIGTERM and then re-raises the signal it caught
        (uvicorn >= 0.29), so a clean exit is 0 or death by that SIGTERM.
        """
        code = await self.process.stop()
        assert code in (0, -signal.SIGTERM), self.process.log_tail()


@asynccontextmanager
async def api_server(name: str, *, env: Mapping[str, str], logdir: Path) -> AsyncIterator[Api]:
    """Start ``crohooks serve --no-worker`` on a free loopback port; ``ready()`` waits for it."""
    port = free_port()
    args = ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"]
    async with started(name, args, env=env, logdir=logdir) as process:
        yield Api(process, f"http://127.0.0.1:{port}")


@dataclass(frozen=True)
class Worker:
    """A ``crohooks worker`` process."""

    process: Crohooks

    async def ready(self) -> str:
        """Wait (bounded) until it has started; the worker id it announced."""
        record = await self.process.wait_for_log("worker started")
        return str(record["worker_id"])

    async def stop(self) -> None:
        """SIGTERM: it finishes what is in flight, writes it down and exits 0."""
        code = await self.process.stop()
        assert code == 0, self.process.log_tail()


@asynccontextmanager
async def worker(
    name: str, *, env: Mapping[str, str], logdir: Path, concurrency: int | None = None
) -> AsyncIterator[Worker]:
    """Start ``crohooks worker``; ``ready()`` waits for it."""
    args = ["worker"] + (["--concurrency", str(concurrency)] if concurrency else [])
    async with started(name, args, env=env, logdir=logdir) as process:
        yield Worker(process)


async def query(database_url: str, sql: str, **params: Any) -> list[Row[Any]]:
    """Read the database directly, as an operator would (one short-lived connection)."""
    engine = create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def api_headers(token: str) -> dict[str, str]:
    """The headers of a JSON request to the test tenant with ``token``."""
    return {
        "Authorization": f"Bearer {token}",
        "x-tenant-id": str(TENANT),
        "Content-Type": "application/json",
    }


class Publisher:
    """Creates hooks and publishes events over HTTP, as the platform's backend would."""

    def __init__(self, http: httpx.AsyncClient, token: str) -> None:
        self._http = http
        self._headers = api_headers(token)

    async def create_hook(self, base_url: str, url: str, events: Sequence[str]) -> int:
        response = await self._http.post(
            f"{base_url}/hooks", headers=self._headers, json={"url": url, "events": list(events)}
        )
        assert response.status_code == 200, response.text
        hook_id: int = response.json()["id"]
        return hook_id

    async def publish_batch(
        self, base_url: str, events: Sequence[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        response = await self._http.post(
            f"{base_url}/events/batch", headers=self._headers, json={"events": list(events)}
        )
        assert response.status_code == 202, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results
