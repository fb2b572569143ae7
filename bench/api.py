"""API throughput: ``GET /hooks/{id}`` against a bare constant-JSON endpoint, same stack.

Both endpoints are served by one ``bench.server`` process; a separate load generator
(``wrk`` when installed, else ``bench.loadgen``) drives each in turn after a warm-up.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.common import (
    SECRET,
    TENANT,
    BenchError,
    api_process_args,
    bench_env,
    free_port,
    process_env,
    run_cli,
    settings_for,
    started,
    wait_http_ready,
)
from crohooks.auth.local import mint_local_token

CONNECTIONS = 32
WARMUP_SECONDS = 1.0


@dataclass(frozen=True)
class ApiFigures:
    hook_rps: float
    bare_rps: float
    driver: str

    @property
    def ratio(self) -> float:
        return self.hook_rps / self.bare_rps


def driver_name() -> str:
    return "wrk" if shutil.which("wrk") else "bench.loadgen (aiohttp)"


async def _drive(url: str, seconds: float, headers: dict[str, str], workdir: Path) -> float:
    wrk = shutil.which("wrk")
    if wrk:
        args = [wrk, "-t1", f"-c{CONNECTIONS}", f"-d{max(1, round(seconds))}s"]
        for name, value in headers.items():
            args += ["-H", f"{name}: {value}"]
        args.append(url)
    else:
        args = [sys.executable, "-m", "bench.loadgen", url, str(seconds), str(CONNECTIONS)]
        args += [f"{name}: {value}" for name, value in headers.items()]
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=workdir,
        env=bench_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    text = stdout.decode()
    if process.returncode != 0:
        raise BenchError(f"the load generator failed: {stderr.decode()[-2000:]}")
    if wrk:
        if "Non-2xx" in text:
            raise BenchError(f"{url} answered errors under load:\n{text}")
        match = re.search(r"Requests/sec:\s+([0-9.]+)", text)
        if match is None:
            raise BenchError(f"no figure in wrk's output:\n{text}")
        return float(match.group(1))
    rate, bad = text.split()
    if int(bad):
        raise BenchError(f"{url} answered {bad} errors under load")
    return float(rate)


async def measure(workdir: Path, database_url: str, *, seconds: float) -> ApiFigures:
    env = process_env(database_url)
    await run_cli("migrate", env=env, workdir=workdir)
    token = mint_local_token(
        settings_for(database_url), subject="bench", roles=["Admin"], tenants=[TENANT]
    )
    headers = {"Authorization": f"Bearer {token}", "x-tenant-id": str(TENANT)}
    port = free_port()
    server_env = {**bench_env(), **env}
    async with started("api-server", api_process_args(port), env=server_env, workdir=workdir) as p:
        base_url = f"http://127.0.0.1:{port}"
        await wait_http_ready(base_url, p)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{base_url}/hooks",
                json={"url": "http://127.0.0.1:9/hook", "events": ["Job"], "secret": SECRET},
                headers=headers,
            ) as response,
        ):
            if response.status != 200:
                raise BenchError(f"creating the hook failed: {await response.text()}")
            hook_id = (await response.json())["id"]
        hook_url = f"{base_url}/hooks/{hook_id}"
        bare_url = f"{base_url}/bench/constant"
        await _drive(hook_url, WARMUP_SECONDS, headers, workdir)
        await _drive(bare_url, WARMUP_SECONDS, headers, workdir)
        hook_rps = await _drive(hook_url, seconds, headers, workdir)
        bare_rps = await _drive(bare_url, seconds, headers, workdir)
        await p.stop()
    return ApiFigures(hook_rps, bare_rps, driver_name())
