"""Outbound deliveries: signing, the SSRF-guarded HTTP client, retries and the worker loop."""
