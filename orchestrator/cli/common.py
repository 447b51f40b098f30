"""What every command shares: the common options, opening settings and the database, `--since`,
checking and writing `--out`, JSON and table output."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from orchestrator import exits
from orchestrator.settings import Settings
from orchestrator.store import iso, utcnow

if TYPE_CHECKING:
    from orchestrator.stores import AnyStore

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite database file or postgresql:// URL (default: $ORCHESTRATOR_DB or the user data dir).",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document instead of a table."
)
redact_option = click.option(
    "--redact",
    is_flag=True,
    help="Mask phone numbers (last four digits kept) and the caller's name and place, "
    "for output shared beyond this database's owner.",
)


def open_store(db: Path | None, *, create: bool = False) -> AnyStore:
    """The database of --db or the settings; by default only one that exists (reading never makes one)."""
    from orchestrator import stores

    settings = Settings.from_env()
    return stores.open_store(db or settings.db, create=create)


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([mhd])")
_AGE_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class Since(click.ParamType):
    """An ISO date or time (a time without a zone is UTC, as the `created` column shows), or an age
    such as 30m, 12h or 7d; converted to the stored form (2026-11-24T10:00:00.000Z) for comparing."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value).strip()
        age = _AGE.fullmatch(text)
        try:
            if age:
                at = utcnow() - timedelta(**{_AGE_UNITS[age.group(2)]: float(age.group(1))})
            else:
                at = datetime.fromisoformat(text.replace("Z", "+00:00"))
                if at.tzinfo is None:
                    at = at.replace(tzinfo=timezone.utc)
        except (ValueError, OverflowError):
            self.fail(
                f"{text!r} is not a time: give an ISO date or time (2026-11-24, 2026-11-24T10:00) "
                "or an age (30m, 12h, 7d)",
                param,
                ctx,
            )
        return iso(at)


since_option = click.option(
    "--since",
    type=Since(),
    help="Only calls created at or after this time: ISO "
    "(2026-11-24, 2026-11-24T10:00; UTC unless it says) or an age (30m, 12h, 7d).",
)


def check_out(out: Path) -> None:
    """Refuse an --out file that cannot be written, before any work (a demo finds out only after its calls)."""
    folder = out.parent
    if out.is_dir():
        raise exits.UserError(f"--out {out} is a folder: give a file name in it")
    if not folder.is_dir():
        raise exits.UserError(f"--out {out}: folder {folder} does not exist (create it, or write elsewhere)")
    if not os.access(folder, os.W_OK):
        raise exits.UserError(f"--out {out}: folder {folder} is not writable")


def write_out(out: Path, text: str) -> None:
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise exits.UserError(f"--out {out}: cannot write it ({exc.strerror or exc})") from exc


def emit(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=False))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=False)) for r in rows]
    return "\n".join(out)
