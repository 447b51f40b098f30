"""PostgreSQL targets: recognising a URL, showing it without its password, and connection errors in words.

`ORCHESTRATOR_DB=postgresql://user:password@host:port/dbname` names a PostgreSQL database; anything
else is a SQLite path. What a user sees of a target (messages, `store.path`) is its masked form: the
password never leaves this module except inside the connection string handed to psycopg.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import StoreError, StoreUnreachable

__all__ = ["PgTarget", "connect_error", "is_pg_url", "mask_url", "parse_target"]

SCHEMES = ("postgresql://", "postgres://")
INSTALL_HINT = "pip install 'moshi-call-orchestrator[postgres]'"

_USERINFO_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:/@?#]*):[^@/?#]*@", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)


def is_pg_url(target: object) -> bool:
    return isinstance(target, str) and target.lower().startswith(SCHEMES)


def mask_url(url: str) -> str:
    """The URL with any password replaced by ***."""
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url))


@dataclass(frozen=True, slots=True)
class PgTarget:
    url: str  # as given, password included: for psycopg only
    shown: str  # masked
    host: str  # "127.0.0.1:5432", or "local socket /run/postgresql:5432"
    dbname: str
    user: str | None
    password: str | None

    def scrub(self, text: str) -> str:
        """`text` with the password (if it appears) and the URL masked."""
        text = text.replace(self.url, self.shown)
        if self.password:
            text = text.replace(self.password, "***")
        return text


def parse_target(url: str) -> PgTarget:
    """Parse a postgresql:// URL (StoreError if psycopg is missing or the URL is malformed)."""
    try:
        from psycopg import Error as PsycopgError
        from psycopg.conninfo import conninfo_to_dict
    except ImportError as exc:
        raise StoreError(
            f"{mask_url(url)} needs PostgreSQL support, which is not installed: {INSTALL_HINT}"
        ) from exc
    try:
        params: dict[str, Any] = conninfo_to_dict(url)
    except PsycopgError as exc:
        found = _USERINFO_PASSWORD.match(url) or _QUERY_PASSWORD.search(url)
        raw = found.group(0) if found else None
        why = _first_line(exc, raw).replace(url, mask_url(url))
        raise StoreError(
            f"ORCHESTRATOR_DB {mask_url(url)} is not a valid PostgreSQL URL ({why}); "
            "expected postgresql://user:password@host:port/dbname"
        ) from exc
    host = str(params.get("host") or "")
    port = str(params.get("port") or "5432")
    shown_host = (
        f"{host}:{port}"
        if host and not host.startswith("/")
        else f"local socket {host or '(default)'}:{port}"
    )
    user = params.get("user")
    password = params.get("password")
    return PgTarget(
        url=url,
        shown=mask_url(url),
        host=shown_host,
        dbname=str(params.get("dbname") or user or "(default)"),
        user=str(user) if user else None,
        password=str(password) if password else None,
    )


def _first_line(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else exc.__class__.__name__
    line = line.removeprefix("connection failed: ")
    return line.replace(password, "***") if password else line


def connect_error(exc: BaseException, target: PgTarget) -> StoreError:
    """One line for a failed connection; StoreUnreachable (exit 3) when the server did not answer."""
    text = target.scrub(str(exc))
    low = text.lower()
    where = f"PostgreSQL at {target.host}"
    if "connection refused" in low:
        return StoreUnreachable(
            f"cannot reach {where} (connection refused): start it or check ORCHESTRATOR_DB ({target.shown})"
        )
    if "failed to resolve host" in low or "could not translate host name" in low:
        return StoreUnreachable(f"cannot reach {where} (host name does not resolve): check ORCHESTRATOR_DB")
    if "timeout expired" in low or "timed out" in low:
        return StoreUnreachable(f"cannot reach {where} (no answer in time): is it up? check ORCHESTRATOR_DB")
    if "no such file or directory" in low and "socket" in low:
        return StoreUnreachable(
            f"cannot reach {where} (no server on that socket): start it or check ORCHESTRATOR_DB"
        )
    if re.search(r'database ".*" does not exist', low):
        return StoreError(
            f"{where} has no database {target.dbname!r}: create it (createdb {target.dbname}) or check "
            "ORCHESTRATOR_DB"
        )
    if "password authentication failed" in low or re.search(r'role ".*" does not exist', low):
        return StoreError(
            f"{where} refused user {target.user or '(default)'!r} ({_first_line(exc, target.password)}): "
            "check the user and password in ORCHESTRATOR_DB"
        )
    return StoreError(f"cannot use {where} ({target.shown}): {_first_line(exc, target.password)}")
