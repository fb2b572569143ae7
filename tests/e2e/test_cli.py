"""The ``crohooks`` console script and ``make run``'s demo, as real processes on loopback."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from crohooks.store.migrate import alembic_config
from crohooks.store.schema import metadata
from tests.conftest import TEST_JWT_SECRET, fresh_postgres_database

JWT = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
STARTUP_SECONDS = 20.0
CONSOLE_SCRIPT = Path(sys.executable).with_name("crohooks")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any crohooks setting or proxy, plus ``extra``."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("CROHOOKS_") and "PROXY" not in name.upper()
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env.update(extra)
    return env


def crohooks(*args: str, cwd: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crohooks.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextmanager
def running(command: list[str], *, cwd: Path, env: Mapping[str, str], port: int) -> Iterator[str]:
    """Start a server, wait (bounded) until it answers on loopback, and always stop it."""
    logs = cwd / f"server-{port}-{time.monotonic_ns()}"
    with (
        logs.with_suffix(".out").open("w") as stdout,
        logs.with_suffix(".err").open("w") as stderr,
    ):
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr)
        try:
            base_url = f"http://127.0.0.1:{port}"
            _wait_until_answering(process, base_url, logs)
            yield base_url
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=15)


def _wait_until_answering(process: subprocess.Popen[bytes], base_url: str, logs: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    with httpx.Client(trust_env=False, timeout=1.0) as http:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(
                    f"server exited with {process.returncode}:\n"
                    + logs.with_suffix(".err").read_text()
                )
            try:
                if http.options(f"{base_url}/hooks").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.1)  # a pause that ends early if the server exits
    pytest.fail(f"server did not answer within {STARTUP_SECONDS} s")


def request(method: str, url: str, token: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    with httpx.Client(trust_env=False, timeout=10.0) as http:
        return http.request(method, url, headers=headers, **kwargs)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def env(workdir: Path) -> dict[str, str]:
    return clean_env(CROHOOKS_DATABASE_URL=f"sqlite:///{workdir / 'cli.db'}")


def test_migrate_creates_the_schema_in_the_working_directory(workdir: Path) -> None:
    """Through the installed console script, and with the default database URL; each run
    says in one line what it did, and Alembic's narration stays out of the way."""
    assert CONSOLE_SCRIPT.exists(), "the crohooks console script is not installed"
    command = [str(CONSOLE_SCRIPT)]
    head = _head_revision()
    said = []
    for _ in range(2):
        result = subprocess.run(
            [*command, "migrate"],
            cwd=workdir,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        said.append(result.stdout)
    assert said == [
        f"database created at revision {head} (sqlite:///crohooks.db)\n",
        f"database at revision {head} (sqlite:///crohooks.db)\n",
    ]

    engine = create_engine(f"sqlite:///{workdir / 'crohooks.db'}")
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert tables == set(metadata.tables) | {"alembic_version"}


def test_tenant_add_says_what_it_did(workdir: Path, env: dict[str, str]) -> None:
    """On a new SQLite file it also says that it created the schema; nothing on stderr."""
    where = env["CROHOOKS_DATABASE_URL"]
    first = crohooks(
        "tenant", "add", "--id", "34", "--name", "Demo Courier", "--code", "DEMO",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert first.stderr == ""
    assert first.stdout.splitlines() == [
        f"database created at revision {_head_revision()} ({where})",
        f'tenant 34 "Demo Courier" (code DEMO) added ({where})',
    ]

    second = crohooks(
        "tenant", "add", "--id", "35", "--name", "Night Runs", "--code", "NITE", "--inactive",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert second.stderr == ""
    assert second.stdout == f'tenant 35 "Night Runs" (code NITE, inactive) added ({where})\n'


def test_tenant_add_refuses_an_existing_id(workdir: Path, env: dict[str, str]) -> None:
    add = ("tenant", "add", "--id", "34", "--name", "Demo Courier", "--code", "DEMO")
    first = crohooks(*add, cwd=workdir, env=env)
    assert first.returncode == 0, first.stderr

    again = crohooks(*add[:-1], "OTHER", cwd=workdir, env=env)
    assert again.returncode == 2
    assert again.stdout == ""
    assert "tenant 34 already exists" in again.stderr
    assert "Traceback" not in again.stderr


@pytest.mark.postgres
def test_tenant_add_on_an_unmigrated_database_says_to_migrate(workdir: Path) -> None:
    with fresh_postgres_database("crohooks_cli_unmigrated") as url:
        env = clean_env(CROHOOKS_DATABASE_URL=url, CROHOOKS_JWT_SECRET=TEST_JWT_SECRET)
        result = crohooks(
            "tenant", "add", "--id", "1", "--name", "A", "--code", "A", cwd=workdir, env=env
        )
    assert result.returncode == 2
    assert "run crohooks migrate" in result.stderr
    assert "Traceback" not in result.stderr


def test_token_prints_one_jwt_and_nothing_else(workdir: Path, env: dict[str, str]) -> None:
    result = crohooks(
        "token", "--sub", "ops", "--role", "Admin", "--role", "Dispatcher", "--role", "System",
        "--tenant", "34", "--tenant", "35", "--ttl", "2592000", "--client-id", "dashboard",
        cwd=workdir, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.split("\n")
    assert len(lines) == 2
    assert lines[1] == ""
    assert JWT.match(lines[0])
    assert len("Bearer " + lines[0]) <= 256


def test_token_refuses_an_unknown_role(workdir: Path, env: dict[str, str]) -> None:
    result = crohooks(
        "token", "--sub", "ops", "--role", "Root", "--tenant", "34", cwd=workdir, env=env
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "invalid choice: 'Root'" in result.stderr


@pytest.mark.slow
def test_serve_accepts_tokens_minted_by_the_cli_across_restarts(
    workdir: Path, env: dict[str, str]
) -> None:
    added = crohooks(
        "tenant", "add", "--id", "34", "--name", "Demo Courier", "--code", "DEMO",
        "--email", "ops@example.com", cwd=workdir, env=env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    minted = crohooks(
        "token", "--sub", "ops", "--role", "Admin", "--tenant", "34", cwd=workdir, env=env
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    assert (workdir / "cli.db.jwt-secret").stat().st_mode & 0o077 == 0

    port = free_port()
    serve = [sys.executable, "-m", "crohooks.cli", "serve", "--port", str(port), "--no-worker"]
    with running(serve, cwd=workdir, env=env, port=port) as base_url:
        created = request(
            "POST",
            f"{base_url}/hooks",
            token,
            headers={"x-tenant-id": "34"},
            json={"url": "https://receiver.example/hook", "events": ["Customer"]},
        )
        assert created.status_code == 200, created.text
        assert created.json()["url"] == "https://receiver.example/hook"

        listed = request("GET", f"{base_url}/tenants", token)
        assert listed.status_code == 200, listed.text
        assert [(t["id"], t["name"], t["email"]) for t in listed.json()["results"]] == [
            (34, "Demo Courier", "ops@example.com")
        ]
    (said,) = _migration_lines(workdir, port)
    assert json.loads(said)["event"] == f"database at revision {_head_revision()}"

    with running(serve, cwd=workdir, env=env, port=port) as base_url:
        hooks = request("GET", f"{base_url}/hooks", token, headers={"x-tenant-id": "34"})
        assert hooks.status_code == 200, hooks.text
        assert [hook["url"] for hook in hooks.json()["results"]] == [
            "https://receiver.example/hook"
        ]


def _assert_opens_a_portal_session(link: str, base_url: str, role: str) -> None:
    code = link.split("code=", 1)[1]
    with httpx.Client(trust_env=False, timeout=10.0) as http:
        entered = http.post(f"{base_url}/portal/enter", data={"code": code})
        assert entered.status_code == 303, entered.text
        page = http.get(f"{base_url}/portal/hooks")
        assert page.status_code == 200
        assert f"Tenant 34 · operator ({role})" in page.text


@pytest.mark.slow
def test_portal_link_prints_one_link_that_serve_redeems(workdir: Path, env: dict[str, str]) -> None:
    port = free_port()
    serve = [sys.executable, "-m", "crohooks.cli", "serve", "--port", str(port), "--no-worker"]
    with running(serve, cwd=workdir, env=env, port=port) as base_url:
        printed = crohooks(
            "portal-link", "--tenant", "34", "--role", "Dispatcher", "--ttl", "60",
            "--base-url", base_url, cwd=workdir, env=env,
        )  # fmt: skip
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.split("\n")
        assert len(lines) == 2
        assert lines[1] == ""
        assert lines[0].startswith(f"{base_url}/portal/enter?code=")
        _assert_opens_a_portal_session(lines[0], base_url, "Dispatcher")
    refused = crohooks("portal-link", "--tenant", "34", "--ttl", "0", cwd=workdir, env=env)
    assert refused.returncode == 2
    assert "--ttl" in refused.stderr


def _head_revision() -> str:
    (head,) = ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads()
    return head


def _demo_output(workdir: Path, port: int, stream: str = "out") -> str:
    (out,) = workdir.glob(f"server-{port}-*.{stream}")
    return out.read_text()


def _banner_lines(text: str) -> tuple[str, str, dict[str, str]]:
    """The token, its ``export`` line and the ``curl`` lines keyed by what they do; the
    token is printed once, in the ``export`` line, and so is the banner."""
    lines = text.splitlines()
    (export,) = [line for line in lines if line.startswith("export CROHOOKS_TOKEN=")]
    token = export.removeprefix("export CROHOOKS_TOKEN=")
    assert JWT.match(token), export
    assert text.count(token) == 1, text
    assert sum(line.startswith("crohooks demo on ") for line in lines) == 1, text
    curls: dict[str, str] = {}
    for comment, line in pairwise(lines):
        if line.startswith("curl ") and comment.startswith("# "):
            curls[comment.removeprefix("# ")] = line
    return token, export, curls


def _migration_lines(workdir: Path, port: int) -> list[str]:
    """The lines of a server's output, stdout and stderr, that speak of the schema; none
    of them Alembic's own."""
    stderr = _demo_output(workdir, port, "err")
    assert "alembic" not in stderr.lower(), stderr
    text = _demo_output(workdir, port) + stderr
    return [line for line in text.splitlines() if "revision" in line]


@pytest.mark.slow
def test_demo_prints_a_working_token_and_curl_lines(workdir: Path) -> None:
    port = free_port()
    demo = [sys.executable, "-m", "crohooks.demo", "--port", str(port)]
    env = clean_env()

    with running(demo, cwd=workdir, env=env, port=port) as base_url:
        text = _demo_output(workdir, port)
        token, export, curls = _banner_lines(text)
        assert export == f"export CROHOOKS_TOKEN={token}"
        assert "127.0.0.0/8" in text
        assert "CROHOOKS_ALLOWED_NETWORKS" in text
        list_hooks = curls["list hooks"]
        assert list_hooks.endswith(f" {base_url}/hooks")
        assert any(line.endswith(f"{base_url}/events") for line in curls.values())
        assert any(line.endswith(f"{base_url}/hooks/1/ping") for line in curls.values())
        assert _migration_lines(workdir, port) == [
            f"database created at revision {_head_revision()}."
        ]

        if shutil.which("curl") and shutil.which("sh"):
            create_hook = next(line for key, line in curls.items() if key.startswith("create"))
            shell = subprocess.run(
                ["sh", "-c", f"{export}\n{create_hook}\necho\n{list_hooks}"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert shell.returncode == 0, shell.stderr
            created, listed = shell.stdout.split("\n")
            assert '"id": 1' in created
            assert '"total_count": 1' in listed
        else:
            response = request(
                "GET", list_hooks.rsplit(" ", 1)[1], token, headers={"x-tenant-id": "34"}
            )
            assert response.status_code == 200, response.text

        tenants = request("GET", f"{base_url}/tenants", token)
        assert [(t["id"], t["name"], t["code"]) for t in tenants.json()["results"]] == [
            (34, "Demo Courier", "DEMO")
        ]
        (link,) = [line for line in text.splitlines() if "/portal/enter?code=" in line]
        assert link.startswith(f"{base_url}/portal/enter?code=")
        _assert_opens_a_portal_session(link, base_url, "Admin")

    assert (workdir / "crohooks.db").exists()
    assert (workdir / "crohooks.db.jwt-secret").exists()

    second_port = free_port()
    demo_again = [sys.executable, "-m", "crohooks.demo", "--port", str(second_port)]
    with running(demo_again, cwd=workdir, env=env, port=second_port) as base_url:
        response = request("GET", f"{base_url}/hooks", token, headers={"x-tenant-id": "34"})
        assert response.status_code == 200, response.text
        new_token, _, _ = _banner_lines(_demo_output(workdir, second_port))
        assert _migration_lines(workdir, second_port) == [
            f"database at revision {_head_revision()}."
        ]
        assert request("GET", f"{base_url}/tenants", new_token).status_code == 200
