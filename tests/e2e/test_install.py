"""``make run`` installs the runtime dependencies only, ``make test`` the dev tools too,
and both at the versions pinned in ``constraints.txt``.

The pip commands are the ones ``make`` would run in a fresh clone (``make --dry-run
--always-make``), resolved by pip as for an empty environment (``--dry-run
--ignore-installed --report``), so the Makefile itself is what is checked. Resolving needs
the package index; when it can't be reached the test fails rather than skips.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
DEV_TOOLS = {"pytest", "mypy", "ruff", "schemathesis"}
RUNTIME_SAMPLE = {"fastapi", "uvicorn", "alembic", "asyncpg", "structlog"}


def pip_installs(target: str) -> list[list[str]]:
    """The arguments of each ``pip install`` that ``make <target>`` runs in a fresh clone,
    pip's own upgrade left out."""
    outer = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # when make test runs this: its own flags
    made = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", target],
        cwd=ROOT,
        env={name: value for name, value in os.environ.items() if name not in outer},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    installs = []
    for line in made.stdout.splitlines():
        words = shlex.split(line)
        if len(words) > 2 and words[0].endswith("/pip") and words[1] == "install":
            arguments = words[2:]
            if "pip" not in arguments:
                installs.append(arguments)
    return installs


def resolved(arguments: list[str], report: Path) -> dict[str, str]:
    """What pip would install into an empty environment: versions by canonical name."""
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", *arguments,
         "--dry-run", "--ignore-installed", "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if pip.returncode != 0:
        pytest.fail(f"pip could not resolve {shlex.join(arguments)}:\n{pip.stderr}")
    items = json.loads(report.read_text())["install"]
    return {
        canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in items
    }


def pinned() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.slow
@pytest.mark.parametrize(("target", "dev_tools"), [("run", False), ("test", True)])
def test_make_installs_the_pinned_versions_of_what_the_target_needs(
    target: str, dev_tools: bool, tmp_path: Path
) -> None:
    (arguments,) = pip_installs(target)
    assert "constraints.txt" in arguments

    versions = resolved(arguments, tmp_path / "report.json")

    assert versions.keys() >= RUNTIME_SAMPLE
    assert DEV_TOOLS & versions.keys() == (DEV_TOOLS if dev_tools else set())
    versions.pop("crohooks")
    pins = pinned()
    assert {name: pins.get(name) for name in versions} == versions
