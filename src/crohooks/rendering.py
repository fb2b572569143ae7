"""The one JSON rendering of crohooks (spec 1.4), shared by API responses and deliveries."""

from __future__ import annotations

import json


def render_json(content: object) -> bytes:
    """Exactly ``json.dumps(obj, sort_keys=True)``: CRO's samples match it byte for byte."""
    return json.dumps(content, sort_keys=True).encode("ascii")
