"""crohooks: a self-hosted webhook service speaking the CRO Software webhooks API."""

from __future__ import annotations

__version__ = "0.1.0"
