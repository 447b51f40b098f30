"""`orchestrator doctor`: what is wrong with this setup, and how to fix it."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from orchestrator.errors import OrchestratorError
from orchestrator.settings import Settings, check_e164


@dataclass
class Finding:
    check: str
    ok: bool | None  # None: could not be decided (not applicable)
    detail: str


def run_checks(settings: Settings) -> list[Finding]:
    out: list[Finding] = []

    def attempt(name: str, fn: object) -> None:
        try:
            detail = fn()  # type: ignore[operator]
            out.append(Finding(name, True, str(detail)))
        except OrchestratorError as exc:
            out.append(Finding(name, False, str(exc)))

    attempt("twilio credentials", lambda: (settings.require_twilio(), "set")[1])
    attempt("from number", lambda: check_e164(settings.twilio_from_number or "", "TWILIO_FROM_NUMBER"))
    attempt("public url", settings.require_public_url)
    out.append(Finding("carrier", True, f"emulator at {settings.twilio_api_base_url}" if settings.twilio_api_base_url
                       else "Twilio (api.twilio.com)"))

    def database() -> str:
        from orchestrator.store import Store

        store = Store(settings.db, migrate=False)
        pending = [m["name"] for m in store.migration_status() if not m["applied_at"]]
        store.close()
        return f"{settings.db}" + (f" (pending migrations: {', '.join(pending)}; run `orchestrator migrate`)"
                                    if pending else " (schema up to date)")

    attempt("database", database)
    if settings.public_url:
        from orchestrator.serve_cli import probe_health

        healthy = asyncio.run(probe_health(settings.public_url))
        out.append(Finding("tunnel", healthy,
                           f"{settings.public_url}/healthz answered" if healthy else
                           f"{settings.public_url}/healthz did not answer: is `orchestrator serve` running and the "
                           "tunnel up?"))
    out.append(Finding("espeak-ng", shutil.which("espeak-ng") is not None,
                       "found" if shutil.which("espeak-ng") else
                       "not found: the emulator's spoken caller needs it (apt-get install espeak-ng / brew install "
                       "espeak-ng)"))
    out.append(model_finding(settings))
    out.append(file_limit_finding(settings))
    return out


def file_limit_finding(settings: Settings, minimum: int = 256) -> Finding:
    """The open-file limit bounds the connections the server holds (orchestrator.web.limits)."""
    from orchestrator.web.limits import connection_cap, file_limit

    soft, hard = file_limit()
    cap = connection_cap(settings.max_connections, soft)
    detail = (f"soft {soft}, hard {hard}: up to {cap} connections held "
              f"(MAX_CONNECTIONS {settings.max_connections or 'from the limit'}), {soft - cap} descriptors kept for "
              "the database, recordings, backends and new callers")
    if soft < minimum:
        return Finding("open files", False, detail + f"; raise it (ulimit -n {max(4096, minimum)}) before serving")
    return Finding("open files", True, detail)


def model_finding(settings: Settings) -> Finding:
    if settings.backend != "moshi":
        return Finding("model", None, f"backend {settings.backend} needs no model")
    try:
        from orchestrator.models_cli import model_status
    except ImportError as exc:
        return Finding("model", False, f"the moshi extra is not installed: pip install -e '.[moshi]' ({exc})")
    status = model_status(settings)
    return Finding("model", bool(status.get("ready")), str(status.get("detail", status)))


@click.command()
@click.option("--db", type=click.Path(dir_okay=False, path_type=Path), default=None, help="SQLite database file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def doctor(db: Path | None, as_json: bool) -> None:
    """Check settings, database, tunnel, tools and the model cache; say how to fix what is wrong.

    Example: orchestrator doctor
    """
    findings = run_checks(Settings.from_env().with_overrides(db=db))
    if as_json:
        settings = Settings.from_env().with_overrides(db=db)
        click.echo(json.dumps({"findings": [asdict(f) for f in findings], "settings": settings.redacted(),
                               "ok": all(f.ok is not False for f in findings)}, indent=2))
        return
    for f in findings:
        mark = {True: "ok  ", False: "FIX ", None: "-   "}[f.ok]
        click.echo(f"{mark} {f.check:20s} {f.detail}")
