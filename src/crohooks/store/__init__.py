"""Persistence: tables, tenant-scoped repositories, queue claims and migrations."""
