"""The receiver example of docs/ordering.md does what the page says it does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "ordering.md"


def _example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)
    assert len(blocks) == 1
    return str(blocks[0])


def _body(sequence: int | None, state: str) -> bytes:
    delivery: dict[str, Any] = {"data": {"state": state}, "event": "Job"}
    if sequence is not None:
        delivery.update(ordering_key="Job:4711", sequence=sequence)
    return json.dumps(delivery, sort_keys=True).encode()


def test_the_receiver_applies_each_update_once_and_never_goes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example keeps its state.db in the working directory
    namespace: dict[str, Any] = {}
    exec(compile(_example(), str(PAGE), "exec"), namespace)
    handle, db = namespace["handle"], namespace["db"]
    try:
        for sequence, state in [
            (1, "Scheduled"),
            (1, "Scheduled"),  # at least once: the same delivery again
            (4, "Completed"),  # 2 and 3 were superseded
            (2, "Dispatched"),  # a redelivered old update
            (None, "unkeyed"),
        ]:
            assert handle(_body(sequence, state), {}) == 200
        [(sequence, state)] = db.execute("SELECT sequence, state FROM entity").fetchall()
    finally:
        db.close()
    assert (sequence, json.loads(state)) == (4, {"state": "Completed"})
    assert "Job:4711: updates 2..3 were superseded or failed" in capsys.readouterr().out
