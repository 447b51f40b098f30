"""Fixtures of the integration tests: the store engines (SQLite and a throwaway PostgreSQL cluster, one
per session), defined in tests/integration/engines.py."""

from __future__ import annotations

from tests.integration.engines import engine, pg_cluster, pg_engine

__all__ = ["engine", "pg_cluster", "pg_engine"]
