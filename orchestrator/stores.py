"""Which store a database setting names: a SQLite file path, or a PostgreSQL URL.

`open_store(target)` is the one place that decides. `ORCHESTRATOR_DB=postgresql://user:pw@host/db`
(or `postgres://`) selects `orchestrator.store_pg.PgStore`; anything else is a path for the SQLite
`orchestrator.store.Store`, the embedded default. Both have the same methods and return the same rows.
Errors are one line (StoreError; StoreUnreachable, exit 3, when the server does not answer), and a
password in the URL is never printed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.store import Store
from orchestrator.store_pg_url import is_pg_url, mask_url

if TYPE_CHECKING:
    from typing import TypeAlias

    from orchestrator.store_pg import PgStore

    #: what a database setting opens: the two engines have the same methods (mypy checks each use on both)
    AnyStore: TypeAlias = Store | PgStore

__all__ = ["as_target", "is_pg_url", "mask_url", "open_store", "shown_target"]

_MANGLED = re.compile(r"^(postgres(?:ql)?):/(?!/)", re.IGNORECASE)


def open_store(target: str | Path, *, migrate: bool = True, create: bool = True) -> AnyStore:
    """The store for `target`: `PgStore` for a postgresql:// or postgres:// URL, else `Store` on a path.

    `migrate` and `create` mean what they mean for `Store`; for PostgreSQL `create=False` refuses a
    database with none of our tables yet (the database itself is never created here).
    """
    text = as_target(target)
    if is_pg_url(text):
        from orchestrator.store_pg import PgStore

        return PgStore(text, migrate=migrate, create=create)
    return Store(target, migrate=migrate, create=create)


def as_target(target: str | Path) -> str:
    """`target` as a string, with a URL that went through `Path()` mended: Path collapses `//`
    (`postgresql://u@h/db` -> `postgresql:/u@h/db`), and a SQLite file must not be made under that name
    (a folder called `postgresql:` holding the password in its path). A URL with an empty host
    (`postgresql:///db?host=/run/postgresql`) cannot be mended that way: pass such a URL as a string."""
    text = str(target)
    if isinstance(target, Path):
        mended = _MANGLED.sub(r"\1://", text, count=1)
        if mended != text:
            return mended
    return text


def shown_target(target: str | Path) -> str:
    """How to name `target` in a message: a path as it is, a URL without its password."""
    text = as_target(target)
    return mask_url(text) if is_pg_url(text) else text
